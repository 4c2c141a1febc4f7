"""The TensorFlow train step of gradient-based strategies, against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasmtl
from kerasmtl import Task
from kerasmtl.weighting.base_weighting import Weighting

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral


class DiagonalShare(Weighting):
    """A test strategy whose coefficients depend on the whole Gram matrix."""

    requires_gradients = True

    def compute_weights_from_gram(self, gram, losses, present=None):
        diagonal = ops.diagonal(gram)
        return diagonal / ops.sum(diagonal) + 0.1 * gram[0, 1] / ops.sqrt(gram[0, 0] * gram[1, 1])


def _linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    trunk = keras.layers.Dense(3, use_bias=False, name="trunk")
    tasks = [
        Task("a", head=keras.layers.Dense(1, use_bias=False), loss="mse"),
        Task("b", head=keras.layers.Dense(1, use_bias=False), loss="mse"),
    ]
    return kerasmtl.hard_sharing({"features": (4,)}, trunk, tasks)


def _numpy_coefficients(gram):
    diagonal = np.diag(gram)
    return diagonal / diagonal.sum() + 0.1 * gram[0, 1] / np.sqrt(gram[0, 0] * gram[1, 1])


@pytest.mark.parametrize("source", ["parameters", "representation"])
def test_one_sgd_step_equals_numpy_update(source):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4))
    y = {"a": rng.normal(size=(8, 1)), "b": 100.0 * rng.normal(size=(8, 1))}  # 100x scale gap
    model = _linear_model()
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        weighting=DiagonalShare(),
        gradients=source,
    )
    w = model.get_layer("trunk").kernel.numpy().astype("float64")
    v = {k: model.get_layer(k).kernel.numpy().astype("float64") for k in "ab"}

    z = x @ w
    residual = {k: z @ v[k] - y[k] for k in "ab"}
    grad_w = {k: x.T @ (2.0 / 8 * residual[k] @ v[k].T) for k in "ab"}
    grad_v = {k: z.T @ (2.0 / 8 * residual[k]) for k in "ab"}
    if source == "parameters":
        flat = np.stack([grad_w[k].ravel() for k in "ab"])
    else:
        flat = np.stack([(2.0 / 8 * residual[k] @ v[k].T).ravel() for k in "ab"])
    coefficients = _numpy_coefficients(flat @ flat.T)
    expected_w = w - sum(c * grad_w[k] for c, k in zip(coefficients, "ab"))
    expected_v = {k: v[k] - c * grad_v[k] for c, k in zip(coefficients, "ab")}

    logs = model.train_on_batch(
        x.astype("float32"), {k: y[k].astype("float32") for k in "ab"}, return_dict=True
    )
    np.testing.assert_allclose(
        model.get_layer("trunk").kernel.numpy(), expected_w, rtol=1e-4, atol=1e-5
    )
    for k in "ab":
        np.testing.assert_allclose(
            model.get_layer(k).kernel.numpy(), expected_v[k], rtol=1e-4, atol=1e-5
        )
    np.testing.assert_allclose([logs["a_weight"], logs["b_weight"]], coefficients, rtol=1e-4)


def test_gradient_strategy_trains_with_fit_and_round_trips(tmp_path):
    model = _linear_model()
    model.compile(optimizer="adam", weighting=DiagonalShare())
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = {k: rng.normal(size=(32, 1)).astype("float32") for k in "ab"}
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.gradient_source == "parameters"


def test_gradient_options_are_checked():
    model = _linear_model()
    with pytest.raises(ValueError, match="applies to gradient-based strategies only"):
        model.compile(gradients="representation")
    with pytest.raises(ValueError, match="must be 'parameters' or 'representation'"):
        model.compile(weighting=DiagonalShare(), gradients="layers")
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(3)(inputs)
    plain = kerasmtl.MultiTaskModel(
        inputs,
        {
            "a": keras.layers.Dense(1, name="a")(hidden),
            "b": keras.layers.Dense(1, name="b")(hidden),
        },
        [Task("a", loss="mse"), Task("b", loss="mse")],
    )
    with pytest.raises(
        ValueError,
        match=r"names none \(model.representation is None\)\. Use gradients='parameters'",
    ):
        plain.compile(weighting=DiagonalShare(), gradients="representation")


def test_no_shared_parameters_is_a_clear_error():
    a = keras.Input((2,), name="a_in")
    b = keras.Input((2,), name="b_in")
    model = kerasmtl.MultiTaskModel(
        [a, b],
        {"a": keras.layers.Dense(1, name="a")(a), "b": keras.layers.Dense(1, name="b")(b)},
        [Task("a", loss="mse"), Task("b", loss="mse")],
    )
    # Decided from the graph at compile time, before any data is seen.
    with pytest.raises(ValueError, match="needs parameters shared by two or more tasks"):
        model.compile(optimizer="sgd", weighting=DiagonalShare())


def test_one_sgd_step_with_uncertainty_weighting_equals_numpy_update():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 4))
    y = {"a": rng.normal(size=(8, 1)), "b": 3.0 * rng.normal(size=(8, 1))}
    model = _linear_model(seed=3)
    strategy = kerasmtl.weighting.get("uncertainty")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), weighting=strategy)
    w = model.get_layer("trunk").kernel.numpy().astype("float64")
    v = {k: model.get_layer(k).kernel.numpy().astype("float64") for k in "ab"}
    s = np.array(strategy.log_variances.numpy(), dtype="float64")

    z = x @ w
    residual = {k: z @ v[k] - y[k] for k in "ab"}
    loss = {k: np.mean(residual[k] ** 2) for k in "ab"}
    weight = np.exp(-s)  # total = sum_k exp(-s_k) L_k + s_k (see Uncertainty's docstring)
    grad_w = sum(wk * x.T @ (2.0 / 8 * residual[k] @ v[k].T) for wk, k in zip(weight, "ab"))
    expected_w = w - grad_w
    expected_v = {k: v[k] - wk * z.T @ (2.0 / 8 * residual[k]) for wk, k in zip(weight, "ab")}
    expected_s = s - (1.0 - weight * np.array([loss["a"], loss["b"]]))

    model.train_on_batch(x.astype("float32"), {k: y[k].astype("float32") for k in "ab"})
    np.testing.assert_allclose(
        model.get_layer("trunk").kernel.numpy(), expected_w, rtol=1e-4, atol=1e-6
    )
    for k in "ab":
        np.testing.assert_allclose(
            model.get_layer(k).kernel.numpy(), expected_v[k], rtol=1e-4, atol=1e-6
        )
    np.testing.assert_allclose(strategy.log_variances.numpy(), expected_s, rtol=1e-4, atol=1e-6)


def _nan_for_marked_batches(y_true, y_pred):
    """MSE per sample, NaN (forward only) for a batch that holds the marker label 42."""
    values = keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)
    marked = keras.ops.any(keras.ops.equal(y_true, 42.0))
    return keras.ops.where(marked, keras.ops.full_like(values, np.nan), values)


@pytest.mark.parametrize(
    "weighting", ["dwa", "famo", "uncertainty", "gls", "learned_softmax", "pcgrad", "imtlg"]
)
def test_nan_task_loss_is_left_out_with_one_warning(weighting):
    keras.utils.set_random_seed(0)
    trunk = keras.layers.Dense(3, name="trunk")
    tasks = [Task("a", head=1, loss="mse"), Task("b", head=1, loss=_nan_for_marked_batches)]
    model = kerasmtl.hard_sharing({"features": (4,)}, trunk, tasks)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=weighting)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = {k: rng.normal(size=(32, 1)).astype("float32") for k in "ab"}
    y["b"][8] = 42.0  # the second batch of 8: task b's loss is NaN there
    head_a = model.get_layer("a").kernel.numpy().copy()
    callbacks = [kerasmtl.callbacks.LossWeightScheduler()]
    with pytest.warns(UserWarning, match=r"Non-finite task loss.*\{'b': 2\}") as record:
        history = model.fit(
            x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks
        )
    assert len([w for w in record if "Non-finite task loss" in str(w.message)]) == 1
    assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weighting.variables)
    for key in ("loss", "a_loss", "b_loss", "a_weight", "b_weight"):
        assert np.all(np.isfinite(history.history[key])), key
    assert not np.allclose(model.get_layer("a").kernel.numpy(), head_a)  # task a trained on


def test_evaluate_uses_the_last_training_coefficients():
    model = _linear_model()
    model.compile(optimizer="sgd", weighting=DiagonalShare())
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = {k: rng.normal(size=(16, 1)).astype("float32") for k in "ab"}
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    assert before["a_weight"] == 1.0 and before["b_weight"] == 1.0  # no training step yet
    logs = model.train_on_batch(x, y, return_dict=True)
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        [after["a_weight"], after["b_weight"]], [logs["a_weight"], logs["b_weight"]], rtol=1e-6
    )
    np.testing.assert_allclose(
        after["loss"],
        after["a_weight"] * after["a_loss"] + after["b_weight"] * after["b_loss"],
        rtol=1e-5,
    )


def _fit_grad_norm():
    """Fits GradNorm for 4 epochs; counts compute_task_loss_list traces."""
    model = _linear_model()
    model.compile(optimizer="adam", weighting="grad_norm")
    traces, after_first_epoch = [], []
    original = model.compute_task_loss_list

    def counting(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    model.compute_task_loss_list = counting

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                after_first_epoch.append(len(traces))

    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = {"a": rng.normal(size=(32, 1)).astype("float32"), "b": 10 * rng.normal(size=(32, 1))}
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[Record()])
    return history, traces, after_first_epoch


def test_gradient_strategy_state_changes():
    history, _, _ = _fit_grad_norm()
    assert len(set(np.round(history.history["a_weight"], 6))) > 1  # the weights move


@pytest.mark.backend_only("tensorflow", "jax", reason="counts traces; torch runs eagerly")
def test_gradient_strategy_state_changes_without_retracing():
    _, traces, after_first_epoch = _fit_grad_norm()
    assert len(traces) == after_first_epoch[0]
