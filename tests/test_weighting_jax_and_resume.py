"""Every strategy inside `jax.jit` (issue 10), and bit-exact resume of random state (issue 11)."""

import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from kerasmtl import weighting
from kerasmtl.callbacks import LossWeightScheduler
from kerasmtl.weighting import RLW, GradVac, PCGrad

NAMES = sorted({weighting.registry_name(cls.__name__) for cls in weighting.ALL_OBJECTS})
PRESENT = np.array([True, False, True])

# Runs on every backend (.ci/run repeats it on JAX and torch): the jax.jit test runs there only.
pytestmark = pytest.mark.backend_neutral


def _inputs(seed):
    rng = np.random.default_rng(seed)
    jacobian = rng.normal(size=(3, 5))
    jacobian[0] *= 10.0
    gram = np.where(PRESENT[:, None] & PRESENT[None, :], jacobian @ jacobian.T, 0.0)
    losses = np.where(PRESENT, rng.uniform(0.5, 2.0, size=3), 0.0)
    return gram.astype("float32"), losses.astype("float32")


def _step(strategy, gram, losses, present):
    """One training step of the strategy, as the trainers call it."""
    if strategy.requires_gradients:
        return strategy.compute_weights_from_gram(gram, losses, present)
    return strategy.combine(losses, training=True, present=present)[1]


@pytest.mark.backend_only("jax", reason="checks every strategy inside jax.jit")
@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_runs_inside_jax_jit(name):
    import jax

    eager, traced = weighting.get(name), weighting.get(name)
    for strategy in (eager, traced):
        if hasattr(strategy, "shuffle"):
            strategy.shuffle = False  # the same orders in both copies
        strategy.build((3,))
    # The same starting state (seed states included: `seed=None` draws one per instance).
    for target, source in zip(traced.variables, eager.variables):
        target.assign(source.value)
    variables = traced.variables

    @jax.jit
    def step(values, gram, losses, present):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            weights = _step(traced, gram, losses, present)
            if hasattr(traced, "update_state"):
                traced.update(ops.where(present, losses, float("nan")))
        return weights, [scope.get_current_value(v) for v in variables]

    values = [v.value for v in variables]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(3):
            gram, losses = _inputs(seed)
            present = ops.convert_to_tensor(PRESENT)
            weights, values = step(values, gram, losses, present)
            expected = _step(eager, gram, losses, present)
            if hasattr(eager, "update_state"):
                eager.update(np.where(PRESENT, losses, np.nan))
            np.testing.assert_allclose(
                np.asarray(weights), ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6
            )
            assert float(weights[1]) == 0.0
    for variable, value in zip(eager.variables, values):
        np.testing.assert_allclose(
            np.asarray(value, dtype="float64"),
            np.asarray(ops.convert_to_numpy(variable.value), dtype="float64"),
            rtol=1e-5,
            atol=1e-6,
        )


def test_no_int64_state():
    # JAX (x64 disabled) warns on int64 variables.
    for name in NAMES:
        strategy = weighting.get(name)
        strategy.build((3,))
        for variable in strategy.weights:
            assert variable.dtype != "int64", (name, variable.path)


# --- Random state resumes bit-exactly after a `.keras` round trip ---


@keras.saving.register_keras_serializable(package="kerasmtl_tests")
class _StrategyHolder(keras.Model):
    """The smallest model that carries a strategy into a `.keras` file."""

    def __init__(self, strategy, **kwargs):
        super().__init__(**kwargs)
        self.strategy = weighting.get(strategy)
        self.dense = keras.layers.Dense(1)

    def build(self, input_shape):
        self.dense.build(input_shape)
        if not self.strategy.built:
            self.strategy.build((3,))

    def call(self, inputs):
        return self.dense(inputs)

    def get_config(self):
        return {**super().get_config(), "strategy": weighting.serialize(self.strategy)}

    @classmethod
    def from_config(cls, config):
        config["strategy"] = weighting.deserialize(config["strategy"])
        return cls(**config)


def _draws(strategy, num_steps, seed):
    # Three conflicting gradients in a plane: PCGrad's and GradVac's result
    # depends on the order in which the other tasks are visited.
    jacobian = np.array([[1.0, 0.0], [-0.9, 0.5], [-0.2, -1.0]]) * (1.0 + seed)
    gram = (jacobian @ jacobian.T).astype("float32")
    losses = np.array([1.0, 2.0, 0.5], dtype="float32")
    outputs = []
    for _ in range(num_steps):
        if strategy.requires_gradients:
            out = strategy.compute_weights_from_gram(gram, losses)
        else:
            out = strategy.combine(ops.convert_to_tensor(losses))[1]
        outputs.append(ops.convert_to_numpy(out))
    return np.stack(outputs)


# Keras's own `Dense.save_own_variables` under JAX with NumPy 2 (keras/src/backend/jax/core.py).
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
@pytest.mark.parametrize(
    "make",
    [lambda: PCGrad(seed=4), lambda: GradVac(beta=0.5, seed=4), lambda: RLW(seed=4)],
    ids=["pcgrad", "grad_vac", "rlw"],
)
def test_random_state_resumes_bit_exactly_after_a_keras_round_trip(make, tmp_path):
    uninterrupted = _StrategyHolder(make())
    uninterrupted.build((None, 2))
    expected = _draws(uninterrupted.strategy, 10, seed=1)

    interrupted = _StrategyHolder(make())
    interrupted.build((None, 2))
    first = _draws(interrupted.strategy, 4, seed=1)
    path = os.path.join(tmp_path, "holder.keras")
    interrupted.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.strategy) is type(interrupted.strategy)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored.strategy.seed_generator.state.value),
        ops.convert_to_numpy(interrupted.strategy.seed_generator.state.value),
    )
    rest = _draws(restored.strategy, 6, seed=1)
    np.testing.assert_array_equal(np.concatenate([first, rest]), expected)
    # The draws really are random (a constant sequence would pass trivially).
    assert len({tuple(row) for row in expected}) > 1

    # The same through `.weights.h5` (what `BackupAndRestore` writes).
    weights_path = os.path.join(tmp_path, "holder.weights.h5")
    interrupted.save_weights(weights_path)
    fresh = _StrategyHolder(make())
    fresh.build((None, 2))
    fresh.load_weights(weights_path)
    np.testing.assert_array_equal(_draws(fresh.strategy, 6, seed=1), rest)


# --- LossWeightScheduler: a task absent for a whole epoch ---


class _FakeModel:
    task_names = ["a", "b", "c"]

    def __init__(self, strategy):
        self.weighting = strategy


def test_scheduler_names_each_absent_task_once_and_says_only_what_is_true():
    strategy = weighting.get("dwa")
    strategy.build((3,))
    scheduler = LossWeightScheduler()
    scheduler.set_model(_FakeModel(strategy))
    scheduler.on_epoch_end(0, {"a_loss": 1.0, "b_loss": 2.0, "c_loss": 3.0})
    scheduler.on_epoch_end(1, {"a_loss": 0.5, "b_loss": 1.0, "c_loss": 2.9})
    before = ops.convert_to_numpy(strategy.loss_weights.value).copy()
    with pytest.warns(UserWarning) as record:
        scheduler.on_epoch_end(2, {"a_loss": 0.4, "b_loss": float("nan"), "c_loss": 2.0})
        scheduler.on_epoch_end(3, {"a_loss": 0.3, "b_loss": float("nan"), "c_loss": 1.0})
    assert len(record) == 1
    message = str(record[0].message)
    assert "['b']" in message and "epoch 2" in message
    assert "no labelled sample or a non-finite loss" in message
    assert "keep their weights" in message
    after = ops.convert_to_numpy(strategy.loss_weights.value)
    assert after[1] == before[1]  # what the warning says is true
    np.testing.assert_allclose(after.sum(), 3.0, rtol=1e-6)
    # Another task absent later: named in a warning of its own.
    with pytest.warns(UserWarning, match=r"\['c'\].*epoch 4"):
        scheduler.on_epoch_end(4, {"a_loss": 0.2, "b_loss": 0.5, "c_loss": float("inf")})
