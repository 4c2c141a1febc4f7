"""Every registered strategy through `fit` with absent tasks, infinite losses and NaN labels.

For each case: the present tasks' losses fall, every variable stays finite, and the
warnings say what happened and nothing else.
"""

import warnings

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl import Task
from kerasmtl.testing.models import small_model

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = [pytest.mark.backend_neutral, pytest.mark.slow]

STRATEGIES = sorted(
    {kerasmtl.weighting.registry_name(cls.__name__) for cls in kerasmtl.weighting.ALL_OBJECTS}
)
BATCH = 16
NUM_BATCHES = 8
EPOCHS = 3


def _model():
    return small_model(("a", "b", "c"), num_features=6, units=16, activation="tanh")


def _data():
    rng = np.random.default_rng(0)
    n = BATCH * NUM_BATCHES
    x = rng.normal(size=(n, 6)).astype("float32")
    w = rng.normal(size=(6, 3)).astype("float32")
    targets = np.tanh(x @ w)
    y = {name: targets[:, [k]].copy() for k, name in enumerate("abc")}
    return x, y


def _batches(indices):
    return np.concatenate([np.arange(i * BATCH, (i + 1) * BATCH) for i in indices])


def _case(name):
    x, y = _data()
    if name == "absent_everywhere":
        y["c"][:] = np.nan
    elif name == "present_in_one_of_four_batches":
        y["c"][_batches([i for i in range(NUM_BATCHES) if i % 4 != 0])] = np.nan
    elif name == "infinite_loss_in_two_of_eight_batches":
        # (prediction - 1e30)^2 overflows float32: task c's loss is +inf in those steps.
        y["c"][[2 * BATCH, 5 * BATCH]] = 1e30
    elif name == "nan_label":
        y["b"][3] = np.nan
    return x, y


CASES = (
    "absent_everywhere",
    "present_in_one_of_four_batches",
    "infinite_loss_in_two_of_eight_batches",
    "nan_label",
)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_survives_faults(strategy, case):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=strategy)
    x, y = _case(case)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    # What the kit says (Keras and NumPy add DeprecationWarnings of their own on some backends).
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    logs = history.history

    for task in ("a", "b"):
        losses = logs[f"{task}_loss"]
        assert np.all(np.isfinite(losses)), (task, losses)
        assert losses[-1] < losses[0], f"{strategy}/{case}: {task}_loss did not fall: {losses}"
    for variable in model.variables:
        if "float" in str(variable.dtype):
            value = keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(variable))
            assert np.all(np.isfinite(value)), f"{strategy}/{case}: {variable.path} not finite"

    non_finite = [m for m in messages if m.startswith("Non-finite task loss")]
    if case == "infinite_loss_in_two_of_eight_batches":
        assert len(non_finite) == 1, messages
        assert f"{{'c': {2 * EPOCHS}}}" in non_finite[0]
        assert "Every model and strategy variable is still finite" in non_finite[0]
        assert np.all(np.isfinite(logs["c_loss"]))
    else:
        assert not non_finite, messages
    if case == "absent_everywhere":
        # No labelled sample: the task logs NaN (not 0, which would read as a perfect score).
        assert np.all(np.isnan(logs["c_loss"]))
        for message in messages:  # anything said names the absent task
            assert "'c'" in message or "c_loss" in message, message
    else:
        assert not [m for m in messages if not m.startswith("Non-finite task loss")], messages
    if case == "present_in_one_of_four_batches":
        assert np.all(np.isfinite(logs["c_loss"]))


LOSS_BASED = [name for name in STRATEGIES if not kerasmtl.weighting.get(name).requires_gradients]


@pytest.mark.parametrize("strategy", LOSS_BASED)
def test_one_task_model_trains_without_warnings(strategy):
    keras.utils.set_random_seed(0)
    model = kerasmtl.hard_sharing(
        {"features": (6,)}, keras.layers.Dense(8, name="trunk"), [Task("a", head=1, loss="mse")]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=strategy)
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, {"a": y["a"]}, batch_size=BATCH, epochs=3, verbose=0)
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [
        str(w.message) for w in caught
    ]
    assert history.history["a_loss"][-1] < history.history["a_loss"][0]
    # Uncertainty learns a weight exp(-s) and AutoLambda a weight (from 0.1) even for one task.
    if strategy not in ("uncertainty", "auto_lambda"):
        np.testing.assert_allclose(history.history["a_weight"], 1.0, rtol=1e-5)
