"""Validation of weights, names, labels and sample weights, and what the logs say.

Backend-neutral: these run on every backend (the `tf.data` cases need TensorFlow
installed, not the TensorFlow backend, and are skipped without it).
"""

import math

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
from kerasmtl.testing.references import to_numpy

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

# === Helpers ===


def _model(tasks=None, seed=0):
    if tasks is None:
        tasks = classification_and_regression_tasks(mask_value=-1)
    return small_model(tasks, seed=seed)


def _data(n=32, seed=0):
    return classification_and_regression_data(n, seed=seed)


def _dataset(x, y, *extra, batch_size=8):
    tf = pytest.importorskip("tensorflow")  # an optional dependency

    return tf.data.Dataset.from_tensor_slices((x, y, *extra)).batch(batch_size)


# === Static weights ===


@pytest.mark.parametrize(
    "value, match",
    [
        (float("nan"), "must be finite"),
        (float("inf"), "must be finite"),
        (-0.5, "must be >= 0"),
        ("1.0", "must be a number"),
        (None, "must be a number"),
        (True, "must be a number"),
    ],
)
def test_bad_task_weight_names_the_task_and_the_value(value, match):
    with pytest.raises(ValueError, match=rf"Task 'depth': `loss_weight` {match}.*Received: "):
        Task("depth", head=1, loss="mse", loss_weight=value)


@pytest.mark.parametrize(
    "value, match",
    [
        (float("nan"), r"must be finite. Received: loss_weights\['b'\]=nan"),
        (-np.inf, r"must be finite. Received: loss_weights\['b'\]=-inf"),
        (-1, r"must be >= 0.0. Received: loss_weights\['b'\]=-1"),
        ("heavy", r"must be a number. Received: loss_weights\['b'\]='heavy'"),
    ],
)
def test_bad_compile_loss_weights_name_the_task_and_the_value(value, match):
    model = _model()
    with pytest.raises(ValueError, match=rf"Task 'b': `loss_weights\['b'\]` {match}"):
        model.compile(optimizer="sgd", loss_weights={"a": 1.0, "b": value})


def test_valid_weights_are_kept():
    assert Task("t", loss_weight=np.float32(0.5)).loss_weight == 0.5
    assert Task("t", loss_weight=0).loss_weight == 0.0
    model = _model()
    model.compile(optimizer="sgd", loss_weights={"a": 0, "b": np.float64(2.0)})
    np.testing.assert_allclose(to_numpy(model.weighting.loss_weights), [0, 2])


# === Names ===


@pytest.mark.parametrize("name", ["val_a", "val_loss", "loss"])
def test_task_names_reserved_by_keras_logs_are_rejected(name):
    with pytest.raises(
        ValueError,
        match=rf"task name '{name}' collides with Keras's log names.*Reserved: the name "
        r"\['loss'\] and names starting with 'val_'.*Received: name=",
    ):
        Task(name, head=1, loss="mse")


@pytest.mark.parametrize("name", ["loss_a", "a_loss", "a_weight", "validation", "Val_a", "lossy"])
def test_names_that_collide_with_nothing_are_accepted(name):
    assert Task(name, head=1, loss="mse").name == name


def test_log_key_collision_between_tasks_is_rejected_at_compile():
    # Task 'a' logs 'a_b_loss' for its metric 'b_loss', as task 'a_b' logs its loss.
    model = _model(
        [
            Task("a", head=1, loss="mse", metrics=[keras.metrics.MeanAbsoluteError(name="b_loss")]),
            Task("a_b", head=1, loss="mse"),
        ]
    )
    with pytest.raises(
        ValueError,
        match=r"Task 'a_b' would log 'a_b_loss', which task 'a' already logs.*"
        r"Tasks: \['a', 'a_b'\]",
    ):
        model.compile(optimizer="sgd")


def test_metric_named_like_a_task_entry_is_rejected_at_compile():
    model = _model([Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")])
    with pytest.raises(
        ValueError, match=r"Task 'a' would log 'a_weight', which task 'a' already logs"
    ):
        model.compile(optimizer="sgd", metrics={"a": [keras.metrics.MeanSquaredError("weight")]})


# === evaluate() and metrics_names ===


def _assert_list_lines_up(model, x, y, **kwargs):
    as_dict = model.evaluate(x, y, verbose=0, return_dict=True, **kwargs)
    as_list = model.evaluate(x, y, verbose=0, **kwargs)
    names = model.metrics_names
    assert len(names) == len(as_list) == len(as_dict)
    assert not any(name.endswith("_non_finite_steps") for name in names)
    for name, value in zip(names, as_list):
        np.testing.assert_allclose(value, as_dict[name], rtol=1e-6, err_msg=name)


def test_evaluate_list_lines_up_with_metrics_names():
    model = _model()
    model.compile(optimizer="sgd", loss_weights={"a": 1.0, "b": 0.5})
    x, y = _data()
    before = model.metrics_names
    _assert_list_lines_up(model, x, y, batch_size=16)
    # Known before the first step, in the same order.
    assert before == model.metrics_names
    assert set(before) == {
        "loss",
        "a_loss",
        "b_loss",
        "a_weight",
        "b_weight",
        "a_accuracy",
        "b_mae",
    }
    logs = model.test_on_batch(x, y)
    assert len(logs) == len(model.metrics_names)


def test_evaluate_list_of_a_one_task_model_and_a_soft_sharing_model():
    model = _model([Task("t", head=1, loss="mse", metrics=["mae"])])
    model.compile(optimizer="sgd")
    x, y = _data()
    _assert_list_lines_up(model, x, {"t": y["b"][:, :1]})
    assert set(model.metrics_names) == {"loss", "t_loss", "t_weight", "t_mae"}

    def tower(task_name):
        return keras.layers.Dense(3)

    soft = kerasmtl.soft_sharing(
        {"features": (4,)}, tower, [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")]
    )
    soft.compile(optimizer="sgd")
    _assert_list_lines_up(soft, x, {"a": y["b"][:, :1], "b": y["b"][:, 1:]})
    assert "sharing_penalty" in soft.metrics_names


# === String losses as in plain Keras ===


@pytest.mark.parametrize("loss", ["binary_crossentropy", "crossentropy", "mse", "hinge"])
def test_string_loss_with_rank_1_labels_matches_plain_keras(loss):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    output = keras.layers.Dense(1, activation="sigmoid", name="click")(hidden)
    plain = keras.Model(inputs, output)
    plain.compile(optimizer="sgd", loss=loss)
    model = kerasmtl.MultiTaskModel(inputs, {"click": output}, [Task("click", loss=loss)])
    model.compile(optimizer="sgd")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    labels = rng.integers(0, 2, size=(32,)).astype("float32")
    expected = plain.evaluate(x, labels, batch_size=32, verbose=0)
    logs = model.evaluate(x, {"click": labels}, batch_size=32, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["click_loss"], expected, rtol=1e-5)
    model.fit(x, {"click": labels}, epochs=1, batch_size=16, verbose=0)


def test_string_loss_with_rank_1_labels_keeps_the_missing_label_mask():
    keras.utils.set_random_seed(0)
    model = _model([Task("click", head=1, loss="binary_crossentropy", mask_value=-1)])
    model.compile(optimizer="sgd")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 4)).astype("float32")
    labels = rng.integers(0, 2, size=(20,)).astype("float32")
    labels[::4] = -1
    logs = model.evaluate(x, {"click": labels}, batch_size=20, verbose=0, return_dict=True)
    keep = labels != -1
    t = labels[keep]
    # The head is linear: binary crossentropy of its raw output, clipped as Keras does: in
    # float32, where 1 - 1e-7 is 1 - 1.19e-7 (the seeded head reaches that bound on torch).
    lower, upper = np.float32(1e-7), np.float32(1.0) - np.float32(1e-7)
    raw = np.clip(model.predict(x, verbose=0)["click"][:, 0], lower, upper).astype("float64")
    reference = -np.mean(t * np.log(raw[keep]) + (1 - t) * np.log(1 - raw[keep]))
    np.testing.assert_allclose(logs["click_loss"], reference, rtol=1e-4)


# === Class ids ===


@pytest.mark.parametrize(
    "bad, shown",
    [(3, r"\[3\]"), (-2, r"\[-2\]"), (7, r"\[7\]")],
)
def test_class_id_out_of_range_is_caught_before_training(bad, shown):
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data()
    y["a"][[1, 5]] = bad
    weights_before = [to_numpy(w).copy() for w in model.trainable_weights]
    with pytest.raises(
        ValueError,
        match=rf"Labels for task 'a' hold 2 class id\(s\) outside the valid range \[0, 3\).*"
        rf"mask_value \(-1\).*Received: bad values in y\['a'\]={shown}",
    ):
        model.fit(x, y, epochs=1, verbose=0)
    for before, after in zip(weights_before, model.trainable_weights):
        np.testing.assert_array_equal(before, to_numpy(after))
    with pytest.raises(ValueError, match=r"task 'a' hold 2 class id"):
        model.evaluate(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"task 'a' hold 2 class id"):
        model.train_on_batch(x, y)
    with pytest.raises(ValueError, match=r"task 'a' hold 2 class id"):
        model.fit(x[:8], {"a": y["a"][:8] * 0, "b": y["b"][:8]}, validation_data=(x, y), verbose=0)


def test_unmasked_minus_one_says_how_to_mark_missing_labels():
    model = _model(
        [
            Task("digit", head=4, loss="sparse_categorical_crossentropy"),
            Task("b", head=1, loss="mse"),
        ]
    )
    model.compile(optimizer="sgd")
    x, _ = _data(n=8)
    labels = np.array([0, 1, -1, 2, 3, -1, 0, 1])
    with pytest.raises(
        ValueError,
        match=r"task 'digit' hold 2 class id\(s\) outside the valid range \[0, 4\).*"
        r"mask_value \(None\).*mask_value=-1.*Received: bad values in y\['digit'\]=\[-1\]",
    ):
        model.fit(x, {"digit": labels, "b": np.zeros((8, 1))}, verbose=0)


def test_valid_class_ids_masks_and_tensors_pass():
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data()
    y["a"][::5] = -1  # the mask value
    model.fit(x, y, epochs=1, verbose=0)
    model.fit(x, {"a": keras.ops.convert_to_tensor(y["a"]), "b": y["b"]}, epochs=1, verbose=0)
    y["a"][3] = 5
    with pytest.raises(ValueError, match=r"task 'a'.*\[0, 3\).*\[5\]"):
        model.fit(x, {"a": keras.ops.convert_to_tensor(y["a"]), "b": y["b"]}, verbose=0)


def test_float_class_ids_must_be_whole_and_ignore_class_is_valid():
    model = _model(
        [
            Task(
                "a",
                head=3,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=9),
            ),
            Task("b", head=1, loss="mse"),
        ]
    )
    model.compile(optimizer="sgd")
    x, _ = _data(n=4)
    b = np.zeros((4, 1), "float32")
    model.fit(x, {"a": np.array([0.0, 2.0, 9.0, np.nan]), "b": b}, verbose=0)
    with pytest.raises(ValueError, match=r"task 'a' hold 1 class id.*whole number.*\[1.5\]"):
        model.fit(x, {"a": np.array([0.0, 1.5, 2.0, 1.0]), "b": b}, verbose=0)


def test_class_id_out_of_range_in_the_first_batch_of_a_dataset():
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data(n=16)
    y["a"][2] = 3
    with pytest.raises(
        ValueError, match=r"task 'a' hold 1 class id\(s\).*\[0, 3\).*y\['a'\]=\[3\]"
    ):
        model.fit(_dataset(x, y), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"task 'a' hold 1 class id"):
        model.evaluate(_dataset(x, y), verbose=0)


def test_one_hot_labels_for_a_sparse_loss_are_rejected():
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data(n=16)
    one_hot = np.eye(3, dtype="float32")[y["a"]]
    match = (
        r"Labels for task 'a' have the shape of its head's output \(None, 3\), as one-hot "
        r"labels do, but the task's loss is sparse categorical crossentropy.*argmax.*"
        r"CategoricalCrossentropy"
    )
    with pytest.raises(ValueError, match=match):
        model.fit(x, {"a": one_hot, "b": y["b"]}, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(_dataset(x, {"a": one_hot, "b": y["b"]}), verbose=0)


# === sample_weight dicts ===


@pytest.mark.parametrize(
    "keys, match",
    [
        (("a", "typo"), r"Unknown sample_weight key\(s\) \['typo'\].*Tasks: \['a', 'b'\]"),
        (("a",), r"No sample weights for task\(s\) \['b'\].*Tasks: \['a', 'b'\]"),
    ],
)
def test_sample_weight_dict_keys_name_the_key_and_the_tasks(keys, match):
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data(n=16)
    weights = {key: np.ones((16,), "float32") for key in keys}
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, sample_weight=weights, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, 8, 1, 0, None, 0.0, None, True, None, weights)  # by position
    with pytest.raises(ValueError, match=match):
        model.evaluate(x, y, sample_weight=weights, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.fit(_dataset(x, y, weights), verbose=0)


def test_sample_weight_dict_with_every_task_and_a_single_array_train():
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data(n=16)
    weights = {"a": np.ones((16,), "float32"), "b": np.full((16,), 2.0, "float32")}
    before = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    weighted = model.test_on_batch(x, y, sample_weight=weights, return_dict=True)
    # Task b's samples weigh 2: its logged loss doubles, task a's does not move.
    np.testing.assert_allclose(weighted["b_loss"], 2.0 * before["b_loss"], rtol=1e-5)
    np.testing.assert_allclose(weighted["a_loss"], before["a_loss"], rtol=1e-5)
    history = model.fit(x, y, sample_weight=weights, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    history = model.fit(x, y, sample_weight=np.ones((16,), "float32"), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()


# === A task without labels ===


def test_task_without_labels_logs_nan_not_a_score_in_fit():
    model = _model()
    model.compile(optimizer="adam")
    x, y = _data(n=32)
    y["a"][:] = -1  # task a is absent from the whole data set
    history = model.fit(x, y, epochs=2, batch_size=8, validation_data=(x, y), verbose=0).history
    for key in ("a_loss", "a_accuracy", "val_a_loss", "val_a_accuracy"):
        assert all(math.isnan(value) for value in history[key]), (key, history[key])
    for key in ("loss", "b_loss", "b_mae", "a_weight", "b_weight", "val_b_loss", "val_loss"):
        assert all(math.isfinite(value) for value in history[key]), (key, history[key])


def test_task_without_labels_logs_nan_not_a_score_in_evaluate():
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data(n=32)
    y["a"][:] = -1
    for batch_size in (8, 32):
        logs = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        assert math.isnan(logs["a_loss"]) and math.isnan(logs["a_accuracy"])
        assert all(math.isfinite(logs[key]) for key in ("loss", "b_loss", "b_mae", "a_weight"))
    # One labelled sample is enough for real values again.
    y["a"][0] = 1
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert math.isfinite(logs["a_loss"]) and logs["a_accuracy"] in (0.0, 1.0)


def test_task_unlabelled_in_one_epoch_only_logs_nan_for_that_epoch():
    model = _model()
    model.compile(optimizer="sgd")
    x, y = _data(n=16)
    labelled = dict(y)
    unlabelled = {"a": np.full_like(y["a"], -1), "b": y["b"]}
    first = model.fit(x, labelled, epochs=1, verbose=0).history
    second = model.fit(x, unlabelled, epochs=1, verbose=0).history
    third = model.fit(x, labelled, epochs=1, verbose=0).history
    assert math.isfinite(first["a_accuracy"][0]) and math.isfinite(third["a_loss"][0])
    assert math.isnan(second["a_accuracy"][0]) and math.isnan(second["a_loss"][0])
