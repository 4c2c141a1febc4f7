"""Mixed precision (`mixed_float16`) and XLA (`jit_compile=True`) with the weighting strategies."""

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl import Task
from kerasmtl.weighting import ALL_OBJECTS


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _data(num_samples=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_samples, 4)).astype("float32")
    y_a = rng.normal(size=(num_samples, 1)).astype("float32")
    y_a[::3] = np.nan  # missing labels
    y_b = rng.integers(0, 3, size=(num_samples,)).astype("int32")
    y_b[1::4] = -1
    return x, {"a": y_a, "b": y_b}


def _weighting(name):
    # A fixed seed: the runs compared below draw the same random orders.
    return kerasmtl.weighting.PCGrad(seed=1) if name == "pcgrad" else kerasmtl.weighting.get(name)


def _model(weighting, optimizer=None, jit_compile=False):
    keras.utils.set_random_seed(0)
    trunk = keras.layers.Dense(5, activation="tanh", name="trunk")
    tasks = [
        Task("a", head=keras.layers.Dense(1), loss="mse"),
        Task(
            "b",
            head=keras.layers.Dense(3, activation="softmax"),
            loss="sparse_categorical_crossentropy",
            mask_value=-1,
        ),
    ]
    model = kerasmtl.hard_sharing({"features": (4,)}, trunk, tasks)
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(learning_rate=0.1),
        weighting=weighting,
        jit_compile=jit_compile,
    )
    return model


def _fit(model, epochs=1, x=None, y=None):
    if x is None:
        x, y = _data()
    return model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[kerasmtl.callbacks.LossWeightScheduler()],
    ).history


def _state(model):
    return [np.asarray(w) for w in model.get_weights()] + [
        np.asarray(v) for v in model.weighting.weights
    ]


def _assert_float32_and_finite(model):
    for variable in [*model.weights, *model.weighting.weights]:
        if "float" in str(variable.dtype):
            assert variable.dtype == "float32", variable.path
            assert np.all(np.isfinite(np.asarray(variable))), variable.path


STRATEGY_NAMES = sorted(cls.__name__ for cls in ALL_OBJECTS)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_mixed_precision_trains_with_every_strategy(mixed_precision, name):
    model = _model(_weighting(name))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("trunk").compute_dtype == "float16"
    history = _fit(model)
    for key, values in history.items():
        assert np.all(np.isfinite(values)), (key, values)
    # Variables, strategy state and solver math stay in float32.
    _assert_float32_and_finite(model)
    assert model.weighting.compute_dtype == "float32"


@pytest.mark.parametrize("name", ["uncertainty", "mgda", "pcgrad"])
def test_mixed_precision_matches_float32(name):
    # A loss scale that never overflows here: the mixed run then takes the same
    # steps as the float32 one, up to float16 rounding, which holds only if the
    # train step scales the loss and the optimizer unscales the gradients.
    reference = _model(_weighting(name))
    _fit(reference)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(learning_rate=0.1), initial_scale=2.0**6
        )
        model = _model(_weighting(name), optimizer=optimizer)
        _fit(model)
    finally:
        keras.config.set_dtype_policy(previous)
    assert float(optimizer.scale_loss(1.0)) == 2.0**6  # no step was skipped
    for want, got in zip(_state(reference), _state(model)):
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=2e-3)


def test_overflowing_steps_leave_gradient_strategy_state_clean(mixed_precision):
    # A loss scale far too large: the first steps overflow in float16, the
    # optimizer skips them and halves the scale. The strategy (Nash-MTL counts
    # its calls) must not see those steps' gradients.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(learning_rate=0.1), initial_scale=2.0**24
    )
    model = _model("nash_mtl", optimizer=optimizer)
    x, y = _data(96)
    history = _fit(model, x=x, y=y)
    skipped = int(round(np.log2(2.0**24 / float(optimizer.scale_loss(1.0)))))
    assert 0 < skipped < 12
    assert int(model.weighting.step.numpy()) == 12 - skipped
    for key, values in history.items():
        assert np.all(np.isfinite(values)), (key, values)
    _assert_float32_and_finite(model)


@pytest.mark.parametrize("name", ["dwa", "uncertainty", "mgda", "pcgrad"])
def test_xla_matches_no_xla(name):
    results = []
    for jit_compile in (False, True):
        model = _model(_weighting(name), jit_compile=jit_compile)
        history = _fit(model, epochs=3)
        assert model.jit_compile == jit_compile
        results.append((_state(model), history))
    (state, history), (xla_state, xla_history) = results
    for want, got in zip(state, xla_state):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for key, values in history.items():
        np.testing.assert_allclose(xla_history[key], values, rtol=1e-4, atol=1e-5)
    if name == "dwa":
        # The weights changed by `assign` in the compiled function's third epoch.
        assert abs(history["a_weight"][-1] - 1.0) > 1e-3


@pytest.mark.parametrize("name", ["dwa", "mgda"])
def test_mixed_precision_with_xla(mixed_precision, name):
    model = _model(_weighting(name), jit_compile=True)
    history = _fit(model, epochs=2)
    for key, values in history.items():
        assert np.all(np.isfinite(values)), (key, values)
    _assert_float32_and_finite(model)
