"""Loss-based weighting strategies: formulas against NumPy, hard inputs, state, saving."""

import keras
import numpy as np
import pytest
from keras import ops

try:  # only the TensorFlow-only tests use it
    import tensorflow as tf
except ImportError:
    tf = None

import kerasmtl
from kerasmtl import weighting
from kerasmtl.testing import value_and_gradients
from kerasmtl.testing.references import adam_step, dwa_weights, softmax, to_numpy
from kerasmtl.weighting import (
    DWA,
    FAMO,
    GLS,
    RLW,
    Equal,
    Fixed,
    LearnedSoftmax,
    LossRatio,
    Uncertainty,
)

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

RTOL = 1e-4
# Why the tf.function tests below are TensorFlow's only.
JAX_JIT_COUNTERPART = (
    "on JAX test_weighting_jax_and_resume.py::test_every_strategy_runs_inside_jax_jit "
    "checks every strategy under jax.jit; torch runs eagerly"
)

ALL_STRATEGIES = {
    "equal": lambda: Equal(),
    "fixed": lambda: Fixed([1.0, 0.5, 2.0]),
    "dwa": lambda: DWA(temperature=3.0),
    "loss_ratio": lambda: LossRatio(temperature=0.5),
    "uncertainty": lambda: Uncertainty(initial_log_variance=0.3),
    "learned_softmax": lambda: LearnedSoftmax(entropy_weight=0.1, seed=3),
    "rlw": lambda: RLW(seed=5),
    "gls": lambda: GLS(),
    "famo": lambda: FAMO(learning_rate=0.05, logits_optimizer="sgd"),
}


def _built(strategy, num_tasks=3):
    strategy.build((num_tasks,))
    return strategy


def _tensor(values):
    return ops.convert_to_tensor(np.asarray(values, dtype="float32"))


def _gradients(strategy, losses):
    """Returns (total, weights, dtotal/dlosses, dtotal/dtrainable) for one combine call."""
    return value_and_gradients(
        strategy.combine,
        losses,
        strategy.trainable_variables,
        state_variables=strategy.non_trainable_variables,
    )


def _descend(strategy, losses, learning_rate, steps):
    """Plain gradient descent on the strategy's trainable variables with fixed losses."""
    optimizer = keras.optimizers.SGD(learning_rate)
    for _ in range(steps):
        _, _, _, gradients = _gradients(strategy, losses)
        gradients = [ops.convert_to_tensor(g) for g in gradients]
        optimizer.apply_gradients(zip(gradients, strategy.trainable_variables))


# --- Registry and config ---


@pytest.mark.parametrize(
    "name, cls",
    [
        ("dwa", DWA),
        ("DWA", DWA),
        ("famo", FAMO),
        ("FAMO", FAMO),
        ("gls", GLS),
        ("rlw", RLW),
        ("uncertainty", Uncertainty),
        ("Uncertainty", Uncertainty),
        ("learned_softmax", LearnedSoftmax),
        ("LearnedSoftmax", LearnedSoftmax),
        ("loss_ratio", LossRatio),
        ("LossRatio", LossRatio),
        ("equal", Equal),
        ("fixed", Fixed),
    ],
)
def test_registry_get_by_name(name, cls):
    assert type(weighting.get(name)) is cls


def test_registry_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown weighting strategy 'dwaa'") as info:
        weighting.get("dwaa")
    for name in ("dwa", "famo", "gls", "rlw", "uncertainty", "learned_softmax", "loss_ratio"):
        assert f"'{name}'" in str(info.value)


@pytest.mark.parametrize("name", sorted(ALL_STRATEGIES))
def test_config_round_trip(name):
    strategy = ALL_STRATEGIES[name]()
    config = strategy.get_config()
    clone = type(strategy).from_config(config)
    assert clone.get_config() == config
    restored = weighting.deserialize(weighting.serialize(strategy))
    assert type(restored) is type(strategy)
    assert restored.get_config() == config
    assert weighting.get(weighting.serialize(strategy)).get_config() == config


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (DWA, {"temperature": 0.0}),
        (LossRatio, {"temperature": -1.0}),
        (LearnedSoftmax, {"entropy_weight": -0.1}),
        (FAMO, {"logits_optimizer": "rmsprop"}),
    ],
)
def test_bad_hyper_parameters_raise(cls, kwargs):
    with pytest.raises(ValueError, match="Received"):
        cls(**kwargs)


# --- Invariants shared by every strategy ---


@pytest.mark.parametrize("name", sorted(ALL_STRATEGIES))
def test_returned_weights_are_the_gradient_of_the_total(name):
    # The model logs the weights as "effective": they must be dTotal/dL_k.
    strategy = _built(ALL_STRATEGIES[name]())
    losses = [0.7, 70.0, 0.02]
    total, weights, d_losses, _ = _gradients(strategy, losses)
    assert np.all(np.isfinite(weights)) and np.isfinite(total)
    np.testing.assert_allclose(d_losses, weights, rtol=RTOL)


@pytest.mark.parametrize("name", sorted(ALL_STRATEGIES))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_keeps_weights_and_state_finite(name, bad):
    strategy = _built(ALL_STRATEGIES[name]())
    for step in range(3):
        losses = [1.0 - 0.1 * step, bad if step == 1 else 2.0, 0.5]
        _, weights, _, d_variables = _gradients(strategy, losses)
        assert np.all(np.isfinite(weights)), (step, weights)
        for gradient in d_variables:
            assert np.all(np.isfinite(gradient)), (step, gradient)
        strategy.update(np.asarray(losses, dtype="float32"))
        for variable in strategy.weights:
            assert np.all(np.isfinite(to_numpy(variable))), variable.path


@pytest.mark.parametrize("name", sorted(ALL_STRATEGIES))
def test_float16_losses_give_float32_results(name):
    strategy = ALL_STRATEGIES[name]()
    assert strategy.dtype == "float32"
    _built(strategy)
    total, weights = strategy.combine(ops.cast(_tensor([1.0, 2.0, 3.0]), "float16"))
    assert keras.backend.standardize_dtype(weights.dtype) == "float32"
    assert keras.backend.standardize_dtype(total.dtype) == "float32"


# --- Fixed and Equal (unchanged) ---


def test_equal_and_fixed():
    losses = _tensor([2.0, 4.0, 0.0])
    total, weights = _built(Equal()).combine(losses)
    np.testing.assert_allclose(to_numpy(weights), [1.0, 1.0, 1.0])
    assert float(to_numpy(total)) == 6.0
    total, weights = _built(Fixed([1.0, 0.5, 3.0])).combine(losses)
    np.testing.assert_allclose(to_numpy(weights), [1.0, 0.5, 3.0])
    assert float(to_numpy(total)) == 4.0
    with pytest.raises(ValueError, match="has 2 values but the model has 3 tasks"):
        _built(Fixed([1.0, 2.0]))


# --- Uncertainty ---


def test_uncertainty_matches_numpy():
    strategy = _built(Uncertainty())
    s = np.array([-1.0, 0.5, 2.0])
    strategy.log_variances.assign(s)
    losses = np.array([0.0, 3.0, 300.0])
    total, weights, d_losses, (d_s,) = _gradients(strategy, losses)
    np.testing.assert_allclose(total, np.sum(np.exp(-s) * losses + s), rtol=RTOL)
    np.testing.assert_allclose(weights, np.exp(-s), rtol=RTOL)
    np.testing.assert_allclose(d_s, -np.exp(-s) * losses + 1.0, rtol=RTOL)
    # The default start is Equal: weights 1, total sum L.
    total, weights = _built(Uncertainty()).combine(_tensor(losses))
    np.testing.assert_allclose(to_numpy(weights), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(float(to_numpy(total)), losses.sum(), rtol=RTOL)


def test_uncertainty_nan_loss_sends_no_gradient_to_its_log_variance():
    strategy = _built(Uncertainty())
    strategy.log_variances.assign([0.1, 0.2, 0.3])
    total, weights, _, (d_s,) = _gradients(strategy, [1.0, np.nan, 2.0])
    # The NaN task is left out of the total: exp(-s) L + s over the finite tasks only.
    np.testing.assert_allclose(
        total, np.exp(-0.1) * 1.0 + 0.1 + np.exp(-0.3) * 2.0 + 0.3, rtol=RTOL
    )
    np.testing.assert_allclose(
        d_s, [1.0 - np.exp(-0.1) * 1.0, 0.0, 1.0 - np.exp(-0.3) * 2.0], rtol=RTOL
    )
    # The NaN task is absent: weight 0 (the model zeroes absent tasks' weights).
    np.testing.assert_allclose(weights, [np.exp(-0.1), 0.0, np.exp(-0.3)], rtol=RTOL)


def test_uncertainty_log_variances_are_trainable_and_reach_log_loss():
    # s* = log(L): plain gradient descent on s with fixed losses converges there.
    strategy = _built(Uncertainty())
    _descend(strategy, [0.5, 4.0, 20.0], learning_rate=0.05, steps=800)
    np.testing.assert_allclose(
        to_numpy(strategy.log_variances), np.log([0.5, 4.0, 20.0]), atol=1e-2
    )


# --- LearnedSoftmax ---


def test_learned_softmax_seeded_random_start():
    a = _built(LearnedSoftmax(seed=7), 4)
    b = _built(LearnedSoftmax(seed=7), 4)
    c = _built(LearnedSoftmax(seed=8), 4)
    np.testing.assert_array_equal(to_numpy(a.logits), to_numpy(b.logits))
    assert not np.allclose(to_numpy(a.logits), to_numpy(c.logits))
    assert np.std(to_numpy(a.logits)) > 0
    assert [v.path.split("/")[-1] for v in a.trainable_variables] == ["logits"]
    zero = _built(LearnedSoftmax(initial_stddev=0.0), 4)
    np.testing.assert_allclose(to_numpy(zero.compute_weights(_tensor([1, 2, 3, 4]))), np.ones(4))


@pytest.mark.parametrize("entropy_weight", [0.0, 0.3])
def test_learned_softmax_matches_numpy(entropy_weight):
    strategy = _built(LearnedSoftmax(entropy_weight=entropy_weight, seed=1))
    xi = np.array([0.3, -1.2, 2.0])
    strategy.logits.assign(xi)
    losses = np.array([0.0, 2.0, 200.0])
    total, weights, _, (d_xi,) = _gradients(strategy, losses)
    z = softmax(xi)
    k = 3
    expected_total = np.sum(k * z * losses) + entropy_weight * (np.sum(z * np.log(z)) + np.log(k))
    np.testing.assert_allclose(total, expected_total, rtol=RTOL)
    np.testing.assert_allclose(weights, k * z, rtol=RTOL)
    # d/dxi of K z.L and of lambda * sum z log z, from the softmax Jacobian.
    jacobian = np.diag(z) - np.outer(z, z)
    expected = jacobian.T @ (k * losses) + entropy_weight * jacobian.T @ (np.log(z) + 1.0)
    np.testing.assert_allclose(d_xi, expected, rtol=RTOL, atol=1e-5)


def test_learned_softmax_collapses_without_entropy_and_not_with_it():
    losses = _tensor([1.0, 2.0, 3.0])

    def train(strategy):
        _descend(strategy, [1.0, 2.0, 3.0], learning_rate=0.5, steps=300)
        return to_numpy(strategy.compute_weights(losses))

    collapsed = train(_built(LearnedSoftmax(seed=2)))
    assert collapsed[0] > 2.9  # nearly all of K = 3 on the smallest loss
    # With lambda the minimiser is z = softmax(-K L / lambda), the closed form.
    strategy = _built(LearnedSoftmax(entropy_weight=6.0, seed=2))
    regularised = train(strategy)
    np.testing.assert_allclose(
        regularised, 3 * softmax(-3 * np.array([1.0, 2.0, 3.0]) / 6.0), rtol=1e-3
    )


def test_learned_softmax_nan_loss_gives_no_logit_gradient():
    # The Inf task is absent: its logit gets no gradient, the others get the
    # gradient of LearnedSoftmax on the two present tasks alone.
    strategy = _built(LearnedSoftmax(seed=1))
    _, weights, _, (d_xi,) = _gradients(strategy, [1.0, np.inf, 2.0])
    pair = _built(LearnedSoftmax(seed=1), 2)
    pair.logits.assign(to_numpy(strategy.logits)[[0, 2]])
    _, pair_weights, _, (pair_d_xi,) = _gradients(pair, [1.0, 2.0])
    assert d_xi[1] == 0.0 and weights[1] == 0.0
    np.testing.assert_allclose(d_xi[[0, 2]], pair_d_xi, rtol=RTOL)
    np.testing.assert_allclose(weights[[0, 2]], pair_weights, rtol=RTOL)
    np.testing.assert_allclose(weights.sum(), 2.0, rtol=RTOL)


# --- RLW ---


def test_rlw_is_k_softmax_of_a_standard_normal_sample_each_step():
    strategy = _built(RLW(seed=11), 4)
    reference = keras.random.SeedGenerator(11)
    draws = []
    for _ in range(3):
        weights = to_numpy(strategy.compute_weights(_tensor([1, 2, 3, 4])))
        sample = to_numpy(keras.random.normal((4,), seed=reference))
        np.testing.assert_allclose(weights, 4 * softmax(sample), rtol=RTOL)
        draws.append(weights)
    assert not np.allclose(draws[0], draws[1])
    # Same seed, same sequence; the generator state is a variable of the strategy.
    again = _built(RLW(seed=11), 4)
    np.testing.assert_allclose(to_numpy(again.compute_weights(_tensor([1, 2, 3, 4]))), draws[0])
    assert any("seed_generator" in v.path for v in strategy.non_trainable_variables)


@pytest.mark.backend_only(
    "tensorflow",
    reason="tf.function tracing of combine (seed state read in the graph); " + JAX_JIT_COUNTERPART,
)
def test_rlw_draws_new_weights_in_a_traced_function_without_retracing():
    strategy = _built(RLW(seed=3), 2)
    traces = []

    @tf.function
    def step(losses):
        traces.append(1)
        return strategy.combine(losses)[1]

    losses = _tensor([1.0, 2.0])
    draws = [to_numpy(step(losses)) for _ in range(4)]
    assert len(traces) == 1
    assert len({tuple(np.round(d, 6)) for d in draws}) == 4
    for d in draws:
        np.testing.assert_allclose(d.sum(), 2.0, rtol=RTOL)


# --- GLS ---


def test_gls_matches_numpy_with_a_100x_loss():
    strategy = _built(GLS())
    losses = np.array([0.5, 50.0, 2.0])
    total, weights, d_losses, _ = _gradients(strategy, losses)
    geometric = np.prod(losses) ** (1 / 3)
    np.testing.assert_allclose(total, geometric, rtol=RTOL)
    np.testing.assert_allclose(weights, geometric / (3 * losses), rtol=RTOL)
    np.testing.assert_allclose(d_losses, weights, rtol=RTOL)


def test_gls_zero_and_negative_losses_stay_finite():
    epsilon = 1e-7
    strategy = _built(GLS(epsilon=epsilon))
    losses = np.array([0.0, 1.0, 4.0])
    total, weights, d_losses, _ = _gradients(strategy, losses)
    shifted = losses + epsilon
    geometric = np.exp(np.mean(np.log(shifted)))
    np.testing.assert_allclose(total, geometric, rtol=RTOL)
    np.testing.assert_allclose(weights, geometric / (3 * shifted), rtol=RTOL)
    np.testing.assert_allclose(d_losses, weights, rtol=RTOL)
    total_negative, weights_negative = strategy.combine(_tensor([-0.5, 1.0, 4.0]))
    np.testing.assert_allclose(float(to_numpy(total_negative)), total, rtol=RTOL)
    np.testing.assert_allclose(to_numpy(weights_negative), weights, rtol=RTOL)


def test_gls_nan_loss_reports_the_finite_tasks_weights():
    strategy = _built(GLS())
    total, weights = strategy.combine(_tensor([1.0, np.nan, 4.0]))
    # The geometric mean of the finite losses only: sqrt(1 * 4).
    np.testing.assert_allclose(float(to_numpy(total)), 2.0, rtol=RTOL)
    np.testing.assert_allclose(to_numpy(weights), [2.0 / 2.0, 0.0, 2.0 / 8.0], rtol=RTOL)


# --- Epoch-level strategies: DWA and LossRatio ---


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_dwa_matches_numpy_over_four_epochs(temperature):
    epoch_losses = [[1.0, 100.0, 0.30], [0.6, 90.0, 0.29], [0.5, 40.0, 0.31], [0.45, 35.0, 0.1]]
    expected = dwa_weights(epoch_losses, temperature)
    strategy = _built(DWA(temperature=temperature))
    seen = [to_numpy(strategy.compute_weights(_tensor(epoch_losses[0])))]
    for losses in epoch_losses:
        strategy.update(np.asarray(losses, dtype="float32"))
        seen.append(to_numpy(strategy.compute_weights(_tensor(losses))))
    np.testing.assert_allclose(np.array(seen), expected, rtol=RTOL)
    np.testing.assert_allclose(np.array(seen).sum(axis=1), 3.0, rtol=RTOL)


def test_dwa_zero_loss_gives_finite_weights():
    epsilon = 1e-8
    strategy = _built(DWA(epsilon=epsilon), 2)
    strategy.update([0.0, 1.0])
    strategy.update([0.5, 0.9])  # 0 -> 0.5: a huge but finite ratio
    ratio = (np.array([0.5, 0.9]) + epsilon) / (np.array([0.0, 1.0]) + epsilon)
    np.testing.assert_allclose(to_numpy(strategy.loss_weights), 2 * softmax(ratio / 2.0), rtol=RTOL)
    strategy.update([0.0, 0.8])
    assert np.all(np.isfinite(to_numpy(strategy.loss_weights)))


def test_dwa_skips_a_non_finite_task_only():
    strategy = _built(DWA(), 2)
    strategy.update([1.0, 1.0])
    strategy.update([0.5, 0.8])
    before = to_numpy(strategy.loss_weights)
    assert not np.allclose(before, 1.0)
    strategy.update([0.1, np.nan])
    # Task 1 is absent: it keeps its weight and its history; task 0 moves on (its
    # history advances) and, alone among the present tasks, gets the rest of K = 2.
    np.testing.assert_allclose(to_numpy(strategy.loss_weights), before, rtol=RTOL)
    np.testing.assert_allclose(to_numpy(strategy.previous_losses), [0.1, 0.8])
    np.testing.assert_allclose(to_numpy(strategy.older_losses), [0.5, 1.0])
    # Both present again: ratios 0.05 / 0.1 and 0.4 / 0.8 (task 1's last two epochs).
    strategy.update([0.05, 0.4])
    np.testing.assert_allclose(to_numpy(strategy.loss_weights), [1.0, 1.0], rtol=RTOL)
    with pytest.raises(ValueError, match=r"must have shape \(2,\)"):
        strategy.update([1.0, 2.0, 3.0])


@pytest.mark.backend_only(
    "tensorflow",
    reason="tf.function tracing of combine (weights read in the graph); " + JAX_JIT_COUNTERPART,
)
def test_dwa_update_changes_a_traced_step_without_retracing():
    strategy = _built(DWA(), 2)
    traces = []

    @tf.function
    def step(losses):
        traces.append(1)
        return strategy.combine(losses)

    losses = _tensor([1.0, 1.0])
    first = to_numpy(step(losses)[1])
    strategy.update([1.0, 1.0])
    strategy.update([0.2, 1.0])
    second = to_numpy(step(losses)[1])
    assert len(traces) == 1
    np.testing.assert_allclose(first, [1.0, 1.0])
    np.testing.assert_allclose(second, 2 * softmax(np.array([0.2, 1.0]) / 2), rtol=RTOL)


def test_loss_ratio_matches_numpy():
    epoch_losses = np.array([[2.0, 100.0, 0.5], [1.0, 90.0, 0.5], [0.5, 10.0, 0.4]])
    for temperature in (1.0, 0.5, 4.0):
        strategy = _built(LossRatio(temperature=temperature))
        for losses in epoch_losses:
            strategy.update(losses.astype("float32"))
            ratio = losses / epoch_losses[0]
            expected = 3 * ratio ** (1 / temperature) / np.sum(ratio ** (1 / temperature))
            np.testing.assert_allclose(to_numpy(strategy.loss_weights), expected, rtol=RTOL)


def test_loss_ratio_zero_start_and_non_finite_epochs():
    epsilon = 1e-8
    strategy = _built(LossRatio(epsilon=epsilon), 2)
    strategy.update([0.0, 1.0])
    strategy.update([0.1, 0.5])
    ratio = (np.array([0.1, 0.5]) + epsilon) / (np.array([0.0, 1.0]) + epsilon)
    np.testing.assert_allclose(to_numpy(strategy.loss_weights), 2 * ratio / ratio.sum(), rtol=RTOL)
    # A NaN first epoch does not set L(0): the next finite epoch does.
    strategy = _built(LossRatio(), 2)
    strategy.update([np.nan, 2.0])
    strategy.update([4.0, np.inf])
    strategy.update([2.0, 1.0])
    ratio = np.array([2.0 / 4.0, 1.0 / 2.0])
    np.testing.assert_allclose(to_numpy(strategy.loss_weights), 2 * ratio / ratio.sum(), rtol=RTOL)
    np.testing.assert_allclose(to_numpy(strategy.initial_losses), [4.0, 2.0])


# --- FAMO ---


def _famo_numpy(loss_steps, learning_rate, weight_decay, optimizer, epsilon=1e-8):
    """The official FAMO update (Cranial-XIX/FAMO), with the new losses of the next step."""
    num_tasks = len(loss_steps[0])
    xi = np.zeros(num_tasks)
    m, v, t = np.zeros(num_tasks), np.zeros(num_tasks), 0
    previous = None
    logits, weights = [], []
    for losses in np.asarray(loss_steps, dtype="float64"):
        if previous is not None:
            delta = np.log(previous + epsilon) - np.log(losses + epsilon)
            z = softmax(xi)
            jacobian = np.diag(z) - np.outer(z, z)  # dz_i / dxi_j
            gradient = jacobian.T @ delta + weight_decay * xi
            if optimizer == "sgd":
                xi = xi - learning_rate * gradient
            else:  # torch.optim.Adam with weight_decay (coupled)
                t += 1
                direction, m, v = adam_step(gradient, m, v, t)
                xi = xi - learning_rate * direction
        z = softmax(xi)
        c = 1.0 / np.sum(z / (losses + epsilon))
        logits.append(xi.copy())
        weights.append(num_tasks * c * z / (losses + epsilon))
        previous = losses
    return np.array(logits), np.array(weights)


FAMO_STEPS = [
    [1.0, 100.0, 0.50],
    [0.9, 99.0, 0.30],
    [0.7, 98.0, 0.31],
    [0.72, 60.0, 0.20],
    [0.5, 59.0, 0.25],
    [0.45, 30.0, 0.24],
]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_famo_logits_and_weights_match_numpy(optimizer):
    expected_logits, expected_weights = _famo_numpy(FAMO_STEPS, 0.025, 1e-3, optimizer)
    strategy = _built(FAMO(logits_optimizer=optimizer))
    for step, losses in enumerate(FAMO_STEPS):
        total, weights = strategy.combine(_tensor(losses))
        np.testing.assert_allclose(
            to_numpy(strategy.logits), expected_logits[step], rtol=RTOL, atol=1e-6
        )
        np.testing.assert_allclose(to_numpy(weights), expected_weights[step], rtol=RTOL)
        np.testing.assert_allclose(
            float(to_numpy(total)), np.dot(expected_weights[step], losses), rtol=RTOL
        )
    assert np.ptp(to_numpy(strategy.logits)) > 1e-3  # the test exercised real updates
    assert strategy.trainable_variables == []


@pytest.mark.backend_only(
    "tensorflow", reason="compares a tf.function step with eager; " + JAX_JIT_COUNTERPART
)
def test_famo_in_a_traced_step_matches_eager():
    eager = _built(FAMO())
    traced = _built(FAMO())
    traces = []

    @tf.function
    def step(losses):
        traces.append(1)
        return traced.combine(losses)[1]

    for losses in FAMO_STEPS:
        expected = to_numpy(eager.combine(_tensor(losses))[1])
        np.testing.assert_allclose(to_numpy(step(_tensor(losses))), expected, rtol=1e-5)
    assert len(traces) == 1
    for a, b in zip(eager.weights, traced.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5)


def test_famo_zero_loss_and_test_steps():
    # Issue 11: an unlabelled task's loss is exactly 0 by design; FAMO used to give
    # it nearly all the weight (z_k / (L_k + eps)). Absent, it gets none, and the
    # present task is FAMO on its own (weight 1).
    strategy = _built(FAMO(), 2)
    only_b = ops.convert_to_tensor([False, True])
    only_a = ops.convert_to_tensor([True, False])
    _, weights = strategy.combine(_tensor([0.0, 1.0]), present=only_b)
    np.testing.assert_allclose(to_numpy(weights), [0.0, 1.0], rtol=RTOL)
    _, weights = strategy.combine(_tensor([0.5, 0.0]), present=only_a)
    np.testing.assert_allclose(to_numpy(weights), [1.0, 0.0], rtol=RTOL)
    # Neither task was present twice: no logit moved; each stored its own loss only.
    np.testing.assert_array_equal(to_numpy(strategy.logits), [0.0, 0.0])
    np.testing.assert_allclose(to_numpy(strategy.previous_losses), [0.5, 1.0])
    # A real zero loss of a present task is a loss: large but finite weight.
    _, weights = strategy.combine(_tensor([0.0, 1.0]))
    assert np.all(np.isfinite(to_numpy(weights))) and to_numpy(weights)[0] > 1.9
    assert np.all(np.isfinite(to_numpy(strategy.logits)))
    # `training=False` (test steps) reads the state and changes nothing.
    state = [to_numpy(v) for v in strategy.weights]
    strategy.combine(_tensor([3.0, 0.1]), training=False)
    for before, variable in zip(state, strategy.weights):
        np.testing.assert_array_equal(before, to_numpy(variable))


@pytest.mark.parametrize(
    "traced",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.backend_only(
                "tensorflow", reason="the same step in a tf.function; " + JAX_JIT_COUNTERPART
            ),
        ),
    ],
)
def test_famo_skips_the_state_of_a_nan_task(traced):
    strategy = _built(FAMO())
    step = tf.function(strategy.combine) if traced else strategy.combine
    step(_tensor([1.0, 2.0, 3.0]))
    step(_tensor([0.5, 1.9, 2.0]))
    state = {v.path: to_numpy(v) for v in strategy.weights}
    _, weights = step(_tensor([0.4, np.nan, 1.0]))
    weights = to_numpy(weights)
    assert np.all(np.isfinite(weights)) and weights[1] == 0.0
    # FAMO on the two present tasks: their weights sum to 2.
    np.testing.assert_allclose(weights.sum(), 2.0, rtol=RTOL)
    after = {v.path: to_numpy(v) for v in strategy.weights}
    for name in ("logits", "previous_losses", "logits_momentum", "logits_velocity"):
        path = next(p for p in after if p.endswith(name))
        assert after[path][1] == state[path][1], name  # the NaN task is untouched
        assert after[path][0] != state[path][0], name  # the others moved
        assert np.all(np.isfinite(after[path])), name
    # No task present: no weight, and no state change.
    _, weights = step(_tensor([np.inf, np.inf, np.inf]))
    np.testing.assert_array_equal(to_numpy(weights), np.zeros(3))
    for variable in strategy.weights:
        np.testing.assert_array_equal(to_numpy(variable), after[variable.path])


# --- Models (`.keras` round trip, test steps) ---


def _model(weighting_strategy, seed=0):
    keras.utils.set_random_seed(seed)
    trunk = keras.Sequential([keras.layers.Dense(8, activation="relu")], name="trunk")
    model = kerasmtl.hard_sharing(
        {"features": (4,)},
        trunk,
        [kerasmtl.Task("a", head=1, loss="mse"), kerasmtl.Task("b", head=1, loss="mse")],
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), weighting=weighting_strategy)
    return model


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": 10.0 * rng.normal(size=(n, 1)).astype("float32"),
    }


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["dwa", "famo", "uncertainty", "rlw", "learned_softmax"])
def test_keras_round_trip_restores_strategy_state(name, tmp_path):
    strategy = {
        "dwa": DWA(),
        "famo": FAMO(),
        "uncertainty": Uncertainty(),
        "rlw": RLW(seed=1),
        "learned_softmax": LearnedSoftmax(seed=1),
    }[name]
    model = _model(strategy)
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    if name == "dwa":
        strategy.update([1.0, 2.0])
        strategy.update([0.5, 1.9])
    state = [(v.path.split("/")[-1], to_numpy(v)) for v in strategy.variables]
    assert any(np.any(value != 0) for _, value in state)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.weighting) is type(strategy)
    assert loaded.weighting.get_config() == strategy.get_config()
    restored = [(v.path.split("/")[-1], to_numpy(v)) for v in loaded.weighting.variables]
    assert [key for key, _ in restored] == [key for key, _ in state]
    for (key, value), (_, expected) in zip(restored, state):
        np.testing.assert_array_equal(value, expected, err_msg=key)
    if name in ("uncertainty", "learned_softmax"):
        trainable = {v.path for v in loaded.trainable_variables}
        assert {v.path for v in loaded.weighting.trainable_variables} <= trainable


@pytest.mark.e2e
def test_famo_fit_moves_its_logits_and_logs_its_weights():
    strategy = FAMO(learning_rate=0.1)
    model = _model(strategy)
    x, y = _data()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0).history
    assert np.ptp(to_numpy(strategy.logits)) > 0
    for epoch in range(2):
        weights = [history["a_weight"][epoch], history["b_weight"][epoch]]
        assert np.all(np.isfinite(weights))
        np.testing.assert_allclose(sum(weights), 2.0, rtol=RTOL)
    # Task b's loss is ~100x task a's: FAMO's c z_k / L_k gives it the smaller weight.
    assert history["b_weight"][0] < history["a_weight"][0]
    # Adam's step count, per task: no update on the very first step.
    np.testing.assert_array_equal(to_numpy(strategy.iterations), [2 * 4 - 1] * 2)


@pytest.mark.e2e
def test_famo_state_does_not_change_in_evaluate():
    strategy = FAMO()
    model = _model(strategy)
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    before = [to_numpy(v) for v in strategy.variables]
    model.evaluate(x, y, batch_size=16, verbose=0)
    for a, variable in zip(before, strategy.variables):
        np.testing.assert_array_equal(a, to_numpy(variable))
