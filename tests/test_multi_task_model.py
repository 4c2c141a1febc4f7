"""MultiTaskModel, Task and the hard/soft sharing builders."""

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl import Task
from kerasmtl.testing.models import (
    classification_and_regression_data,
    classification_and_regression_tasks,
    small_model,
)
from kerasmtl.testing.references import log_softmax, to_numpy

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral


def _model(mask_a=None, seed=0):
    tasks = classification_and_regression_tasks(mask_value=mask_a)
    return small_model(tasks, num_features=8, units=16, seed=seed)


def _data(n=64, seed=0):
    return classification_and_regression_data(n, num_features=8, seed=seed)


def test_two_task_fit_with_dict_labels_logs_per_task_entries():
    model = _model()
    model.compile(optimizer="adam", loss_weights={"a": 1.0, "b": 0.5})
    x, y = _data()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for key in ("loss", "a_loss", "b_loss", "a_weight", "b_weight", "a_accuracy", "b_mae"):
        assert key in history.history, key
        assert np.all(np.isfinite(history.history[key]))
    assert history.history["b_weight"] == [0.5, 0.5]
    assert model.task_names == ["a", "b"]
    assert sorted(model.predict(x, verbose=0)) == ["a", "b"]


def test_total_loss_is_weighted_sum_of_task_losses():
    model = _model()
    model.compile(optimizer="sgd", loss_weights={"a": 2.0, "b": 0.25})
    x, y = _data(n=32)
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    pred = model.predict(x, verbose=0)
    loss_a = -np.mean(log_softmax(pred["a"])[np.arange(32), y["a"]])
    loss_b = np.mean((pred["b"] - y["b"]) ** 2)
    np.testing.assert_allclose(logs["a_loss"], loss_a, rtol=1e-5)
    np.testing.assert_allclose(logs["b_loss"], loss_b, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 2.0 * loss_a + 0.25 * loss_b, rtol=1e-5)


@pytest.mark.parametrize(
    "labels, match",
    [
        ({"a": "ok", "c": "b"}, r"Unknown label key\(s\) \['c'\].*Tasks: \['a', 'b'\]"),
        ({"a": "ok"}, r"No labels for task\(s\) \['b'\].*Tasks: \['a', 'b'\]"),
    ],
)
def test_wrong_label_keys_name_the_key_and_the_tasks(labels, match):
    model = _model()
    model.compile(optimizer="adam")
    x, y = _data(n=16)
    bad = {key: y[value] if value != "ok" else y[key] for key, value in labels.items()}
    with pytest.raises(ValueError, match=match):
        model.fit(x, bad, epochs=1, verbose=0)


def test_label_shape_and_dtype_errors_name_the_task():
    model = _model()
    model.compile(optimizer="adam")
    x, y = _data(n=16)
    with pytest.raises(ValueError, match=r"task 'b' have shape \((None|16), 3\).*\(None, 2\)"):
        model.fit(x, {"a": y["a"], "b": np.zeros((16, 3), "float32")}, verbose=0)
    with pytest.raises(ValueError, match=r"task 'a' have dtype"):
        model.fit(x, {"a": np.array(["x"] * 16), "b": y["b"]}, verbose=0)
    with pytest.raises(ValueError, match=r"must be a dict keyed by task name.*\['a', 'b'\]"):
        model.fit(x, [y["a"], y["b"]], verbose=0)


def test_label_key_error_from_a_tf_data_pipeline():
    import tensorflow as tf

    model = _model()
    model.compile(optimizer="adam")
    x, y = _data(n=16)
    dataset = tf.data.Dataset.from_tensor_slices((x, {"a": y["a"], "typo": y["b"]})).batch(8)
    with pytest.raises(ValueError, match=r"Unknown label key\(s\) \['typo'\].*Tasks: \['a', 'b'\]"):
        model.fit(dataset, epochs=1, verbose=0)


def test_compile_rejects_unknown_task_keys():
    model = _model()
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['z'\] in `loss`.*Tasks"):
        model.compile(loss={"z": "mse"})
    with pytest.raises(ValueError, match=r"`metrics` of a MultiTaskModel must be a dict"):
        model.compile(metrics=["mae"])
    with pytest.raises(ValueError, match=r"either static `loss_weights` or a `weighting`"):
        model.compile(loss_weights={"a": 1.0}, weighting="equal")
    with pytest.raises(ValueError, match=r"Unknown weighting strategy 'nope'. Valid names"):
        model.compile(weighting="nope")


def test_masked_loss_matches_numpy_on_labelled_samples_only():
    model = _model(mask_a=-1)
    model.compile(optimizer="sgd", loss_weights={"a": 1.0, "b": 1.0})
    x, y = _data(n=40, seed=3)
    y["a"][::3] = -1
    y["b"][::4, 0] = np.nan  # one NaN component: the whole sample counts as missing
    logs = model.evaluate(x, y, batch_size=40, verbose=0, return_dict=True)
    pred = model.predict(x, verbose=0)
    keep_a = y["a"] != -1
    keep_b = ~np.isnan(y["b"]).any(axis=1)
    loss_a = -np.mean(log_softmax(pred["a"][keep_a])[np.arange(keep_a.sum()), y["a"][keep_a]])
    loss_b = np.mean((pred["b"][keep_b] - y["b"][keep_b]) ** 2)
    np.testing.assert_allclose(logs["a_loss"], loss_a, rtol=1e-5)
    np.testing.assert_allclose(logs["b_loss"], loss_b, rtol=1e-5)
    accuracy = np.mean(pred["a"][keep_a].argmax(-1) == y["a"][keep_a])
    np.testing.assert_allclose(logs["a_accuracy"], accuracy, rtol=1e-6)
    mae = np.mean(np.abs(pred["b"][keep_b] - y["b"][keep_b]))
    np.testing.assert_allclose(logs["b_mae"], mae, rtol=1e-5)


def test_all_masked_batch_adds_exactly_zero_and_trains_without_nan():
    model = _model(mask_a=-1)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _data(n=16)
    y["a"][:] = -1
    losses, counts = model.compute_task_losses(y, model(x))
    assert float(to_numpy(losses[0])) == 0.0
    assert float(to_numpy(counts[0])) == 0.0
    pred = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        float(to_numpy(losses[1])), np.mean((pred["b"] - y["b"]) ** 2), rtol=1e-5
    )
    head_a_before = [to_numpy(w).copy() for w in model.get_layer("a").weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    # No label for task a: its loss and accuracy have no value (NaN, not a score of 0).
    assert np.isnan(logs["a_loss"]) and np.isnan(logs["a_accuracy"])
    assert np.isfinite(logs["b_loss"]) and np.isfinite(logs["loss"])
    assert all(np.all(np.isfinite(to_numpy(w))) for w in model.weights)
    # No label for task a: its head gets a zero gradient and does not move.
    for before, after in zip(head_a_before, model.get_layer("a").weights):
        np.testing.assert_array_equal(before, to_numpy(after))


def test_segmentation_ignore_label_is_masked_per_pixel():
    inputs = keras.Input((4, 4, 2), name="image")
    logits = keras.layers.Conv2D(3, 1, name="seg")(inputs)
    model = kerasmtl.MultiTaskModel(
        inputs,
        {"seg": logits},
        [
            Task(
                "seg",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                mask_value=255,
            )
        ],
    )
    model.compile(optimizer="sgd")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    y = rng.integers(0, 3, size=(2, 4, 4)).astype("int32")
    y[0, :2] = 255
    losses, _ = model.compute_task_losses({"seg": y}, model(x))
    pred = keras.ops.convert_to_numpy(model(x)["seg"])
    keep = y != 255
    log_p = log_softmax(pred)
    reference = -np.mean(
        np.take_along_axis(log_p, np.where(keep, y, 0)[..., None], -1)[..., 0][keep]
    )
    np.testing.assert_allclose(float(to_numpy(losses[0])), reference, rtol=1e-5)


def test_keras_round_trip_keeps_class_tasks_predictions_and_weights(tmp_path):
    model = _model(mask_a=-1)
    model.compile(optimizer="adam", loss_weights={"a": 1.0, "b": 0.5})
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    model.weighting.loss_weights.assign([0.3, 0.7])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert isinstance(loaded, kerasmtl.MultiTaskModel)
    assert loaded.task_names == ["a", "b"]
    assert loaded.tasks[0].mask_value == -1
    np.testing.assert_allclose(to_numpy(loaded.weighting.loss_weights), [0.3, 0.7])
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in ("a", "b"):
        np.testing.assert_array_equal(expected[name], got[name])
    logs = loaded.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["a_weight"], 0.3, rtol=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)


def _fit_reweighted_each_epoch():
    """Fits 4 epochs, assigning new static weights after each; counts compute_loss traces."""
    model = _model()
    model.compile(optimizer="sgd")
    traces = []
    original = model.compute_loss

    def counting_compute_loss(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    model.compute_loss = counting_compute_loss
    traces_after_first_epoch = []

    class Reweight(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                traces_after_first_epoch.append(len(traces))
            self.model.weighting.loss_weights.assign([0.5 ** (epoch + 1), 1.0])

    x, y = _data(n=32)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[Reweight()])
    return model, history, traces, traces_after_first_epoch


def test_changing_static_weights_by_assign_changes_loss():
    model, history, _, _ = _fit_reweighted_each_epoch()
    assert history.history["a_weight"] == [1.0, 0.5, 0.25, 0.125]
    x, y = _data(n=32)
    first = model.test_on_batch(x, y, return_dict=True)
    model.weighting.loss_weights.assign([0.0, 1.0])
    second = model.test_on_batch(x, y, return_dict=True)
    assert second["a_weight"] == 0.0
    np.testing.assert_allclose(second["loss"], second["b_loss"], rtol=1e-5)
    assert first["loss"] != second["loss"]


@pytest.mark.backend_only("tensorflow", "jax", reason="counts traces; torch runs eagerly")
def test_changing_static_weights_by_assign_does_not_retrace():
    _, _, traces, traces_after_first_epoch = _fit_reweighted_each_epoch()
    assert len(traces) == traces_after_first_epoch[0]


def test_multiple_named_inputs_and_unnamed_input_error():
    image = keras.Input((4, 4, 1), name="image")
    meta = keras.Input((3,), name="meta")

    def trunk(inputs):
        flat = keras.layers.Flatten()(inputs["image"])
        return keras.layers.Concatenate()([flat, inputs["meta"]])

    model = kerasmtl.hard_sharing(
        {"image": image, "meta": meta},
        trunk,
        [Task("score", head=1, loss="mse")],
    )
    model.compile(optimizer="sgd")
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(8, 4, 4, 1)), "meta": rng.normal(size=(8, 3))}
    model.fit(x, {"score": rng.normal(size=(8, 1))}, verbose=0)
    with pytest.raises(ValueError, match="has no name of its own"):
        kerasmtl.hard_sharing(keras.Input((3,)), keras.layers.Dense(2), [Task("t", head=1)])


def test_task_validation():
    with pytest.raises(ValueError, match="task name must be"):
        Task("bad name")
    with pytest.raises(ValueError, match=r"duplicates: \['a'\]"):
        kerasmtl.hard_sharing(
            {"x": (2,)}, keras.layers.Dense(2), [Task("a", head=1), Task("a", head=1)]
        )
    with pytest.raises(ValueError, match="Task 'a' has no loss"):
        kerasmtl.hard_sharing({"x": (2,)}, keras.layers.Dense(2), [Task("a", head=1)]).compile()
    head = keras.layers.Dense(1)
    model = kerasmtl.hard_sharing(
        {"x": (2,)}, keras.layers.Dense(2), [Task("t", head=head, loss="mse")]
    )
    # The layer is a template: the model holds a copy named after the task (issue 12).
    assert model.get_layer("t").name == "t" and model.get_layer("t") is not head
    assert head.name != "t"


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="a full keras.applications trunk compiles for 45-100 s on JAX's CPU; the matrix "
    "covers applications trunks with tests/test_representation_trunks.py",
)
def test_keras_applications_backbone_as_trunk(tmp_path):
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        include_top=False,
        weights=None,
        pooling="avg",
        minimalistic=True,
        include_preprocessing=False,
    )
    model = kerasmtl.hard_sharing(
        {"image": (32, 32, 3)},
        backbone,
        [
            Task(
                "label", head=5, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            ),
            Task("box", head=4, loss="mse"),
        ],
    )
    model.compile(optimizer="adam")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 32, 32, 3)).astype("float32")
    y = {"label": rng.integers(0, 5, 4), "box": rng.uniform(size=(4, 4)).astype("float32")}
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    path = tmp_path / "backbone.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)["box"], model.predict(x, verbose=0)["box"], atol=1e-6
    )


def _tower(task_name):
    return keras.Sequential(
        [keras.layers.Dense(6, activation="relu"), keras.layers.Dense(4, activation="relu")]
    )


def test_soft_sharing_penalty_matches_numpy_and_is_logged(tmp_path):
    keras.utils.set_random_seed(0)
    tasks = [
        Task("a", head=1, loss="mse"),
        Task("b", head=1, loss="mse"),
        Task("c", head=1, loss="mse"),
    ]
    model = kerasmtl.soft_sharing({"features": (5,)}, _tower, tasks, penalty=0.1)
    assert model.towers == ["a_tower", "b_tower", "c_tower"]
    weights = [[to_numpy(w) for w in model.get_layer(t).trainable_weights] for t in model.towers]
    reference = 0.0
    for i in range(3):
        for j in range(i + 1, 3):
            reference += sum(np.sum((u - v) ** 2) for u, v in zip(weights[i], weights[j]))
    np.testing.assert_allclose(float(to_numpy(model.sharing_penalty())), 0.1 * reference, rtol=1e-5)

    model.compile(optimizer="sgd")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = {name: rng.normal(size=(16, 1)).astype("float32") for name in "abc"}
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["sharing_penalty"], 0.1 * reference, rtol=1e-5)
    np.testing.assert_allclose(
        logs["loss"], logs["a_loss"] + logs["b_loss"] + logs["c_loss"] + 0.1 * reference, rtol=1e-5
    )
    # The penalty pulls the towers together.
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert float(to_numpy(model.sharing_penalty())) < 0.1 * reference

    path = tmp_path / "soft.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is kerasmtl.SoftSharingModel and loaded.penalty == 0.1
    np.testing.assert_allclose(
        float(to_numpy(loaded.sharing_penalty())),
        float(to_numpy(model.sharing_penalty())),
        rtol=1e-6,
    )


def test_soft_sharing_rejects_towers_that_cannot_be_paired():
    sizes = iter([4, 6])

    def uneven(task_name):
        return keras.layers.Dense(next(sizes))

    with pytest.raises(
        ValueError, match=r"'a_tower' and 'b_tower' cannot be paired.*\(5, 4\).*\(5, 6\)"
    ):
        kerasmtl.soft_sharing({"features": (5,)}, uneven, [Task("a", head=1), Task("b", head=1)])
    shared = keras.layers.Dense(3)
    shared.build((None, 5))
    with pytest.raises(ValueError, match="returned a built layer"):
        kerasmtl.soft_sharing(
            {"features": (5,)}, lambda name: shared, [Task("a", head=1), Task("b", head=1)]
        )


def test_fit_accepts_callbacks_by_position():
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data(n=16)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    history = model.fit(x, y, 8, 2, 0, [Record()])
    assert len(seen) == 2 and "a_loss" in seen[0]
    assert len(history.history["loss"]) == 2


def test_one_task_list_builds_independent_models():
    head = keras.layers.Dense(1)  # a template, unbuilt and not named after the task
    tasks = [
        Task("a", head=head, loss="mse", metrics=[keras.metrics.MeanAbsoluteError()]),
        Task("b", head=2, loss="mse"),
    ]
    first = kerasmtl.hard_sharing({"features": (3,)}, keras.layers.Dense(4, name="trunk"), tasks)
    second = kerasmtl.hard_sharing({"features": (3,)}, keras.layers.Dense(4, name="trunk"), tasks)
    for name in ("a", "b"):
        assert first.get_layer(name) is not second.get_layer(name)
        assert first.get_layer(name).kernel is not second.get_layer(name).kernel
    assert tasks[0].head is head and head.name != "a" and not head.built  # untouched
    first.compile(optimizer="sgd")
    second.compile(optimizer="sgd")
    x = np.ones((4, 3), "float32")
    y = {"a": np.ones((4, 1), "float32"), "b": np.ones((4, 2), "float32")}
    first.fit(x, y, epochs=1, verbose=0)
    # Training one model leaves the other's head (and its metric state) alone.
    assert not np.allclose(
        keras.ops.convert_to_numpy(first.get_layer("a").kernel),
        keras.ops.convert_to_numpy(second.get_layer("a").kernel),
    )
    assert second.evaluate(x, y, verbose=0, return_dict=True)["a_mean_absolute_error"] >= 0
    with pytest.raises(AttributeError, match=r"immutable.*task.replace\(head=...\)"):
        tasks[0].head = 3
    changed = tasks[0].replace(loss_weight=2.0)
    assert changed.loss_weight == 2.0 and tasks[0].loss_weight == 1.0


def test_built_head_template_is_copied_with_its_weights():
    template = keras.layers.Dense(2, name="a")
    template.build((None, 4))
    model = kerasmtl.hard_sharing(
        {"features": (3,)},
        keras.layers.Dense(4, name="trunk"),
        [Task("a", head=template, loss="mse"), Task("b", head=1, loss="mse")],
    )
    copy = model.get_layer("a")
    assert copy is not template
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(copy.kernel), keras.ops.convert_to_numpy(template.kernel)
    )
