"""Auto-Lambda: the lookahead meta step against a float64 NumPy reference, and in `fit`."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasmtl import MultiTaskModel, Task, weighting
from kerasmtl.testing.models import small_model
from kerasmtl.testing.references import to_numpy
from kerasmtl.weighting import AutoLambda

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

NAMES = ("a", "b", "c")
MASK = -1000.0
NUM_FEATURES = 3
# PyTorch's Adam defaults (optimizer_steps).
BETA_1, BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


# === A linear model: every loss is quadratic in the parameters ===


def _linear_model(names=NAMES, seed=0, scale=1.0):
    """`pred_k = x W_s + b_s + x W_k + b_k`: shared and own parameters enter linearly."""
    inputs = keras.Input((NUM_FEATURES,), name="features")
    shared = keras.layers.Dense(1, name="shared")(inputs)
    outputs = {
        name: keras.layers.Add(name=name)(
            [shared, keras.layers.Dense(1, name=f"{name}_own")(inputs)]
        )
        for name in names
    }
    tasks = [Task(name, loss="mse", mask_value=MASK) for name in names]
    model = MultiTaskModel(inputs, outputs, tasks)
    rng = np.random.default_rng(seed)
    for layer_name in ["shared", *[f"{name}_own" for name in names]]:
        layer = model.get_layer(layer_name)
        layer.set_weights(
            [
                scale * rng.normal(size=(NUM_FEATURES, 1)).astype("float32"),
                scale * rng.normal(size=(1,)).astype("float32"),
            ]
        )
    return model


def _parameters(model, names):
    """float64 `theta`: `{"shared": (4,), name: (4,)}` with the bias last."""
    theta = {}
    for key, layer_name in [("shared", "shared"), *[(n, f"{n}_own") for n in names]]:
        kernel, bias = model.get_layer(layer_name).get_weights()
        theta[key] = np.concatenate([kernel[:, 0], bias]).astype("float64")
    return theta


def _losses_and_gradients(theta, x, y, names):
    """Per task: (masked MSE loss, gradient dict, present) in float64."""
    features = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype("float64")
    result = {}
    for name in names:
        label = y[name][:, 0].astype("float64")
        labelled = label != MASK
        count = labelled.sum()
        if count == 0:
            result[name] = (0.0, {key: np.zeros(4) for key in theta}, False)
            continue
        prediction = features @ (theta["shared"] + theta[name])
        residual = np.where(labelled, prediction - label, 0.0)
        loss = np.sum(residual**2) / count
        gradient = 2.0 * features.T @ residual / count
        grads = {key: np.zeros(4) for key in theta}
        grads["shared"] = gradient
        grads[name] = gradient
        result[name] = (loss, grads, True)
    return result


def _reference_meta_step(theta, x, y, names, weights, alpha, primary):
    """Auto-Lambda's h (exact directional derivatives) and what a skipped step returns."""
    half = len(x) // 2
    train = _losses_and_gradients(theta, x[:half], {k: v[:half] for k, v in y.items()}, names)
    step = {key: np.zeros(4) for key in theta}
    for k, name in enumerate(names):
        _, grads, present = train[name]
        if present:
            for key in theta:
                step[key] += weights[k] * grads[key]
    virtual = {key: theta[key] - alpha * step[key] for key in theta}
    held_out = _losses_and_gradients(virtual, x[half:], {k: v[half:] for k, v in y.items()}, names)
    direction = {key: np.zeros(4) for key in theta}
    any_primary = False
    for name in names:
        _, grads, present = held_out[name]
        if present and name in primary:
            any_primary = True
            for key in theta:
                direction[key] += grads[key]
    norm = np.sqrt(sum(np.sum(d**2) for d in direction.values()))
    train_present = np.array([train[name][2] for name in names])
    valid = norm > 0 and any_primary and train_present.any()
    # Quadratic losses: the central difference is the directional derivative exactly.
    h = np.array(
        [sum(np.dot(direction[key], train[name][1][key]) for key in theta) for name in names]
    )
    mask = train_present & valid
    norms = np.array(
        [np.sqrt(sum(np.sum(g**2) for g in train[name][1].values())) for name in names]
    )
    return np.where(mask, h, 0.0), mask, norms


def _reference_adam(weights, h, mask, alpha, meta_learning_rate):
    """One masked Adam step (torch defaults) from zero state: (weights, m, v, counts)."""
    gradient = np.where(mask, -alpha * h, 0.0)
    first = (1 - BETA_1) * gradient
    second = (1 - BETA_2) * gradient**2
    direction = (first / (1 - BETA_1)) / (np.sqrt(second / (1 - BETA_2)) + ADAM_EPSILON)
    new_weights = weights - meta_learning_rate * np.where(mask, direction, 0.0)
    return new_weights, first, second, mask.astype("int32")


def _state(strategy):
    return {
        "weights": to_numpy(strategy.task_weights).astype("float64"),
        "first": to_numpy(strategy.first_moment).astype("float64"),
        "second": to_numpy(strategy.second_moment).astype("float64"),
        "counts": to_numpy(strategy.iterations),
    }


def _hard_data(seed=0, n=16):
    """Task `a` primary; `b` with targets 100x larger; `c` unlabelled in the first half."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": (100.0 * rng.normal(size=(n, 1))).astype("float32"),
        "c": rng.normal(size=(n, 1)).astype("float32"),
    }
    y["c"][: n // 2] = MASK
    return x, y


def _one_step(model, strategy, x, y, learning_rate=0.01):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), weighting=strategy)
    model.train_on_batch(x, y)
    return _state(strategy)


@pytest.mark.parametrize("primary", [["a"], None])
def test_meta_step_matches_numpy_reference(primary):
    x, y = _hard_data()
    model = _linear_model()
    theta = _parameters(model, NAMES)
    initial = np.array([0.1, 0.3, 0.2])
    alpha, meta_learning_rate = 0.01, 0.05
    strategy = AutoLambda(primary_tasks=primary, meta_learning_rate=meta_learning_rate)
    strategy.bind_tasks(NAMES)
    strategy.build((3,))
    strategy.task_weights.assign(initial.astype("float32"))
    state = _one_step(model, strategy, x, y, learning_rate=alpha)

    h, mask, norms = _reference_meta_step(theta, x, y, NAMES, initial, alpha, primary or NAMES)
    weights, first, second, counts = _reference_adam(initial, h, mask, alpha, meta_learning_rate)
    assert mask.tolist() == [True, True, False]  # c has no label in the first half
    # The 100x gap in the tasks' gradient norms; a's small h is recovered all the same.
    assert norms[1] > 50 * norms[0] and abs(h[0]) > 0
    # m = (1 - beta_1) * (-alpha h): the central difference in float32 vs the exact value.
    # float32 rounding of the losses (b's is ~1e4) divided by 2 eps (eps ||d|| = 0.01)
    # bounds the central difference's error near 0.5%.
    np.testing.assert_allclose(state["first"], first, rtol=1e-2, atol=1e-6 * np.abs(first).max())
    np.testing.assert_allclose(state["second"], second, rtol=2e-2, atol=1e-12)
    np.testing.assert_array_equal(state["counts"], counts)
    np.testing.assert_allclose(state["weights"], weights, rtol=1e-5, atol=1e-6)
    # The absent task kept its weight and its (zero) Adam state.
    assert state["weights"][2] == pytest.approx(0.2) and state["first"][2] == 0.0


def test_no_labelled_primary_task_in_the_held_out_half_skips_the_meta_step():
    x, y = _hard_data()
    y["a"][len(x) // 2 :] = MASK  # a (primary) has no label in the held-out half
    strategy = AutoLambda(primary_tasks=["a"], meta_learning_rate=0.05)
    state = _one_step(_linear_model(), strategy, x, y)
    np.testing.assert_allclose(state["weights"], [0.1, 0.1, 0.1], rtol=1e-7)
    assert not state["first"].any() and not state["second"].any() and not state["counts"].any()


def test_zero_direction_skips_the_meta_step():
    # With lambda = 0 the virtual step is theta itself; held-out labels equal the model's
    # predictions make the primary task's held-out gradient d exactly 0.
    model = _linear_model()
    x, y = _hard_data()
    prediction = model.predict(x, verbose=0)
    y["a"] = np.asarray(prediction["a"], dtype="float32")
    strategy = AutoLambda(primary_tasks=["a"], initial_weight=0.0, meta_learning_rate=0.05)
    state = _one_step(model, strategy, x, y)
    assert np.isfinite(state["weights"]).all()
    np.testing.assert_array_equal(state["weights"], [0.0, 0.0, 0.0])
    assert not state["first"].any() and not state["counts"].any()


def test_batch_of_one_sample_skips_the_meta_step():
    x, y = _hard_data()
    strategy = AutoLambda(meta_learning_rate=0.05)
    model = _linear_model()
    state = _one_step(model, strategy, x[:1], {k: v[:1] for k, v in y.items()})
    np.testing.assert_allclose(state["weights"], [0.1, 0.1, 0.1], rtol=1e-7)
    assert not state["counts"].any()
    assert all(np.isfinite(to_numpy(v)).all() for v in model.trainable_variables)


# === In fit ===


def _helpful_and_harmful_data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype("float32")
    target = (x @ rng.normal(size=(NUM_FEATURES, 1)) + 0.5).astype("float32")
    return x, {"primary": target, "helpful": target.copy(), "harmful": -target}


def test_helpful_task_gains_weight_and_harmful_task_loses_it():
    # The shared layer's gradient of `helpful` (same target) points along the
    # primary task's, that of `harmful` (negated target) against it.
    x, y = _helpful_and_harmful_data()
    model = _linear_model(("primary", "helpful", "harmful"), scale=0.1)
    strategy = AutoLambda(primary_tasks=["primary"], meta_learning_rate=3e-3)
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=strategy)
    history = model.fit(x, y, epochs=4, batch_size=32, shuffle=False, verbose=0).history
    weights = to_numpy(strategy.task_weights)
    assert weights[1] > 0.12, weights
    assert weights[2] < 0.08, weights
    # Logged like any strategy's weights, and moving the same way.
    assert history["helpful_weight"][-1] > history["helpful_weight"][0]
    assert history["harmful_weight"][-1] < history["harmful_weight"][0]


def test_multi_task_mode_logs_the_weights_of_each_step():
    x, y = _hard_data(n=32)
    strategy = AutoLambda(meta_learning_rate=0.01)
    model = _linear_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting="auto_lambda")
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=strategy)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(to_numpy(strategy.task_weights))
    )
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[record]).history
    # One step per epoch: the logged weight is lambda after that step's meta update.
    for index, name in enumerate(NAMES):
        np.testing.assert_allclose(history[f"{name}_weight"], [s[index] for s in seen], rtol=1e-6)
    assert not np.allclose(seen[-1], 0.1)  # every task is primary: the weights move
    assert strategy.primary_mask == [True, True, True]


class _CountingAutoLambda(AutoLambda):
    """Counts the meta updates that run in Python: once per trace when compiled."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def meta_update(self, *args):
        self.traces += 1
        return super().meta_update(*args)


@pytest.mark.backend_only("tensorflow", "jax", reason="counts traces; torch runs eagerly")
def test_weights_change_across_epochs_without_retracing():
    x, y = _hard_data(n=32)
    strategy = _CountingAutoLambda(meta_learning_rate=0.01)
    model = _linear_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting=strategy)
    traces, weights = [], []

    def on_epoch_end(epoch, logs):
        traces.append(strategy.traces)
        weights.append(to_numpy(strategy.task_weights))

    callback = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[callback])
    assert traces[0] >= 1 and traces == [traces[0]] * 4
    assert not np.allclose(weights[1], weights[3])


# === Saving and resuming ===

FIT = dict(batch_size=16, shuffle=False, verbose=0)


def _resumable_model(seed=0):
    tasks = [Task(name, head=1, loss="mse", mask_value=MASK) for name in NAMES]
    model = small_model(tasks, num_features=NUM_FEATURES, activation="tanh", seed=seed)
    strategy = AutoLambda(primary_tasks=["a"], meta_learning_rate=0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=strategy)
    return model


def _assert_same_weights(reference, other):
    assert len(reference.weights) == len(other.weights)
    for expected, actual in zip(reference.weights, other.weights):
        np.testing.assert_allclose(
            to_numpy(actual), to_numpy(expected), rtol=1e-6, atol=1e-7, err_msg=expected.path
        )


def test_keras_round_trip_keeps_the_state_and_continues_identically(tmp_path):
    x, y = _hard_data(n=64)
    reference = _resumable_model()
    reference.fit(x, y, epochs=2, **FIT)

    first = _resumable_model()
    first.fit(x, y, epochs=1, **FIT)
    first.save(tmp_path / "half.keras")
    second = keras.saving.load_model(tmp_path / "half.keras")
    assert isinstance(second.weighting, AutoLambda)
    assert second.weighting.primary_tasks == ["a"]
    for key, value in _state(first.weighting).items():
        np.testing.assert_array_equal(_state(second.weighting)[key], value)
    # c has no label in the first half-batch of the first two of four batches.
    assert _state(second.weighting)["counts"].tolist() == [4, 4, 2]
    second.fit(x, y, epochs=1, **FIT)
    _assert_same_weights(reference, second)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_identically(tmp_path):
    x, y = _hard_data(n=64)
    reference = _resumable_model()
    reference.fit(x, y, epochs=2, **FIT)
    backup = str(tmp_path / "backup")
    interrupted = _resumable_model()
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(
            x,
            y,
            epochs=2,
            callbacks=[keras.callbacks.BackupAndRestore(backup), _Interrupt()],
            **FIT,
        )
    resumed = _resumable_model(seed=1)
    history = resumed.fit(
        x, y, epochs=2, callbacks=[keras.callbacks.BackupAndRestore(backup)], **FIT
    )
    assert len(history.history["loss"]) == 1
    _assert_same_weights(reference, resumed)


# === Errors ===


@pytest.mark.e2e
@pytest.mark.backend_only("tensorflow", reason="tf.distribute.MirroredStrategy")
def test_mirrored_strategy_equals_one_device_on_the_union_of_the_replicas_halves(run_python):
    """2 replicas (logical CPUs) vs one device, task `b` labelled unevenly over the replicas.

    The single-device run sees each global batch reordered so that its halves
    are the unions of the replicas' halves (the script checks that replica r
    receives the r-th contiguous slice). Weights, lambda and the Adam state of
    lambda must agree; a single-device run on the batches in their own order
    (other halves) must not: the comparison sees the split. Tolerance: the
    float32 floor of the finite difference, measured on one device by permuting
    rows within each half (same math), is 5e-6 to 7e-6 on lambda, 1.6e-6 on the
    weights; the 2-replica run measured 4.9e-6 and 1.3e-6.
    """
    script = Path(__file__).parent / "distribute_scripts" / "auto_lambda_mirrored_global_batch.py"
    output = run_python("-W", "error", "-W", "ignore::DeprecationWarning", script, timeout=300)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["weights"] <= 1e-5, result
    assert result["lambda"] <= 1e-5, result
    assert result["adam_relative"] <= 1e-4, result
    assert result["replica_gap"] == 0.0, result
    assert result["lambda_moved"] >= 0.05, result
    assert result["lambda_vs_other_halves"] >= 1e-2, result


@pytest.mark.backend_only("tensorflow", reason="tf.distribute")
def test_other_strategies_with_several_replicas_are_refused_with_a_clear_error():
    """Only MirroredStrategy (tested above) trains with several replicas; the others
    (MultiWorkerMirroredStrategy: its all-reduced meta step is untested) raise."""
    from kerasmtl.trainers import tensorflow_trainer

    class TwoWorkers:  # stands for a MultiWorkerMirroredStrategy over two workers
        num_replicas_in_sync = 2

    model = _linear_model()
    model.compile(optimizer="sgd", weighting="auto_lambda")
    pattern = r"MirroredStrategy or on one device.*strategy=TwoWorkers with num_replicas_in_sync=2"
    with pytest.raises(ValueError, match=pattern):
        tensorflow_trainer._check_lookahead_strategy(model, TwoWorkers())


def test_registry_names():
    for name in ("auto_lambda", "AutoLambda", "autol"):
        assert isinstance(weighting.get(name), AutoLambda)
    config = weighting.serialize(AutoLambda(primary_tasks="a", lookahead_learning_rate=0.1))
    restored = weighting.deserialize(config)
    assert restored.primary_tasks == ["a"] and restored.lookahead_learning_rate == 0.1


def test_unknown_primary_task_fails_at_compile_listing_the_tasks():
    model = _linear_model()
    with pytest.raises(ValueError, match=r"unknown primary task\(s\) \['d'\].*\['a', 'b', 'c'\]"):
        model.compile(optimizer="sgd", weighting=AutoLambda(primary_tasks=["a", "d"]))


def test_gradients_argument_is_rejected():
    model = _linear_model()
    with pytest.raises(ValueError, match="Received: gradients='parameters'"):
        model.compile(optimizer="sgd", weighting="auto_lambda", gradients="parameters")


@pytest.mark.parametrize(
    "arguments, match",
    [
        (dict(initial_weight=-0.1), "initial_weight"),
        (dict(initial_weight="0.1"), "initial_weight"),
        (dict(meta_learning_rate=0.0), "meta_learning_rate"),
        (dict(meta_learning_rate=float("nan")), "meta_learning_rate"),
        (dict(lookahead_learning_rate=-1.0), "lookahead_learning_rate"),
        (dict(primary_tasks=[]), "primary_tasks"),
        (dict(primary_tasks=["a", "a"]), "names a task twice"),
        (dict(primary_tasks=[1]), "task names"),
        (dict(primary_tasks=3), "primary_tasks"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, match):
    with pytest.raises(ValueError, match=match) as info:
        AutoLambda(**arguments)
    assert "Received:" in str(info.value)
