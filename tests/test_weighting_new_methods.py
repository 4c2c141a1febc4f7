"""DualProj, FairGrad, ConFIG, IMTL, STCH and ExcessMTL against float64 NumPy references.

The references work on the explicit gradient vectors (rows of a `(K, D)` matrix
`J`) or the loss sequences, written from the papers (and, where the paper
leaves a detail to its code, from the reference code), never from the
Gram-matrix code they check. Each method is also checked on its paper's
invariant, with a task absent from the batch, through a `.keras` round trip
where it has state, and in a short `fit` of a tiny model.
"""

import os

import keras
import numpy as np
import pytest
from keras import ops
from scipy.optimize import least_squares, nnls
from test_weighting_projection import HARD_CASES, imtlg_reference

import kerasmtl
from kerasmtl import Task, weighting
from kerasmtl.weighting import (
    DBMTL,
    IMTL,
    IMTLG,
    RLW,
    STCH,
    AlignedMTL,
    ConFIG,
    DualProj,
    Equal,
    ExcessMTL,
    FairGrad,
    Fixed,
    NashMTL,
    Uncertainty,
)

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

CASE_NAMES = sorted(HARD_CASES)
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _numpy(x):
    if isinstance(x, keras.Variable):
        x = x.value
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _coefficients(strategy, jacobian, losses=None, present=None):
    """One `compute_weights_from_gram` call on `J J^T` (float32), as float64 coefficients."""
    num_tasks = jacobian.shape[0]
    if not strategy.built:
        strategy.build((num_tasks,))
    gram = jacobian @ jacobian.T
    losses = np.ones(num_tasks) if losses is None else np.asarray(losses, dtype="float64")
    mask = None
    if present is not None:
        gram = np.where(present[:, None] & present[None, :], gram, 0.0)
        losses = np.where(present, losses, 0.0)
        mask = ops.convert_to_tensor(present)
    result = _numpy(
        strategy.compute_weights_from_gram(
            ops.convert_to_tensor(gram.astype("float32")),
            ops.convert_to_tensor(losses.astype("float32")),
            mask,
        )
    )
    assert result.shape == (num_tasks,)
    assert np.all(np.isfinite(result)), result
    return result


def _scale(jacobian, reference):
    return max(np.linalg.norm(reference), np.linalg.norm(jacobian, axis=1).max())


def _direction_error(jacobian, coefficients, reference):
    return np.linalg.norm(jacobian.T @ coefficients - reference) / _scale(jacobian, reference)


# --------------------------------------------------------------------------- #
# DualProj (Quinton & Rey 2024).
# --------------------------------------------------------------------------- #


def dualproj_reference(jacobian, preferences):
    """Projection of `J^T p` onto `{x : J x >= 0}` in the gradient space.

    KKT: `x = J^T p + J^T lambda`, `lambda >= 0`, `J x >= 0`, `lambda_i (J x)_i = 0`,
    which are the optimality conditions of the non-negative least squares problem
    `min_{lambda >= 0} ||J^T lambda + J^T p||`.
    """
    start = jacobian.T @ preferences
    multipliers, _ = nnls(jacobian.T, -start, maxiter=10_000)
    return start + jacobian.T @ multipliers


# Float32 Gram solve vs float64 projection: the nearly opposite gradients of the
# conflicting cases make the Gram matrix nearly singular (measured up to 5e-4).
DUALPROJ_RTOL = 2e-3


@pytest.mark.parametrize("case", CASE_NAMES)
def test_dualproj_matches_projection_onto_the_dual_cone(case):
    jacobian = HARD_CASES[case]
    num_tasks = jacobian.shape[0]
    coefficients = _coefficients(DualProj(reg_eps=0.0), jacobian)
    reference = dualproj_reference(jacobian, np.full(num_tasks, 1.0 / num_tasks))
    assert _direction_error(jacobian, coefficients, reference) <= DUALPROJ_RTOL
    # The paper's invariant: no task gradient has a negative inner product with the update.
    update = jacobian.T @ coefficients
    scale = _scale(jacobian, reference)
    assert np.min(jacobian @ update) >= -1e-5 * scale**2
    # The coefficients are at least the preferences (v >= p).
    assert np.all(coefficients >= 1.0 / num_tasks - 1e-5)


@pytest.mark.parametrize("case", ["conflicting_k3", "scale_100x_k3", "zero_k3"])
def test_dualproj_with_preferences_and_the_default_ridge(case):
    jacobian = HARD_CASES[case]
    preferences = np.array([0.2, 0.5, 0.3])
    coefficients = _coefficients(DualProj(pref_vector=list(preferences), reg_eps=0.0), jacobian)
    reference = dualproj_reference(jacobian, preferences)
    assert _direction_error(jacobian, coefficients, reference) <= DUALPROJ_RTOL
    # With the default ridge, the invariant holds up to reg_eps trace(G) v_j.
    coefficients = _coefficients(DualProj(pref_vector=list(preferences)), jacobian)
    inner = jacobian @ (jacobian.T @ coefficients)
    trace = np.trace(jacobian @ jacobian.T)
    assert np.all(inner >= -1e-4 * trace * coefficients - 1e-5 * trace)


def test_dualproj_keeps_the_mean_when_nothing_conflicts():
    jacobian = HARD_CASES["nearly_aligned_k5"]
    coefficients = _coefficients(DualProj(reg_eps=0.0), jacobian)
    np.testing.assert_allclose(coefficients, np.full(5, 0.2), rtol=1e-5)


# --------------------------------------------------------------------------- #
# FairGrad (Ban & Ji, ICML 2024).
# --------------------------------------------------------------------------- #


def fairgrad_reference(jacobian, alpha):
    """The paper's solve: `least_squares(G w - w^(-1/alpha), 1/K, bounds=(0, inf))`, float64.

    Zero gradients are left out (their equation has no solution) and get 0.
    """
    norms = np.linalg.norm(jacobian, axis=1)
    active = norms > 1e-7 * norms.max()
    gram = jacobian[active] @ jacobian[active].T
    result = least_squares(
        lambda w: gram @ w - w ** (-1.0 / alpha),
        np.ones(active.sum()) / active.sum(),
        bounds=(0.0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=10_000,
    )
    weights = np.zeros(len(norms))
    weights[active] = result.x
    return weights


def _fairgrad_rtol(case):
    # Float32: the residual G w - w^(-1/alpha) cannot be resolved below
    # eps * |G| |w|; the nearly opposite gradients of the conflicting cases give
    # large w and a nearly singular G (measured: 1e-3 relative difference in w).
    return 5e-3 if case.startswith("conflicting") else 1e-4


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_fairgrad_matches_least_squares_and_solves_its_conditions(case, alpha):
    jacobian = HARD_CASES[case]
    weights = _coefficients(FairGrad(alpha=alpha), jacobian)
    reference = fairgrad_reference(jacobian, alpha)
    rtol = _fairgrad_rtol(case)
    np.testing.assert_allclose(weights, reference, rtol=rtol, atol=rtol * reference.max())
    # The paper's invariant: (G w)_k = w_k^(-1/alpha) for every task with a gradient.
    active = weights > 0.0
    gram = jacobian @ jacobian.T
    target = np.where(active, weights, 1.0) ** (-1.0 / alpha)
    residual = np.abs(gram @ weights - target)[active]
    bound = (np.abs(gram) @ weights + target)[active]
    assert np.all(residual <= 1e-4 * bound), (residual / bound).max()
    assert np.all(weights[active] > 0.0)


def test_fairgrad_zero_gradient_gets_zero_and_the_rest_is_fairgrad_on_the_others():
    jacobian = HARD_CASES["zero_k3"]
    weights = _coefficients(FairGrad(alpha=1.5), jacobian)
    assert weights[1] == 0.0
    others = _coefficients(FairGrad(alpha=1.5), jacobian[[0, 2]])
    np.testing.assert_allclose(weights[[0, 2]], others, rtol=1e-5)


def test_fairgrad_scales_with_the_gradients_as_the_conditions_demand():
    # G -> c G gives w -> c^(-alpha / (1 + alpha)) w.
    jacobian = HARD_CASES["random_k5"]
    alpha = 2.0
    small = _coefficients(FairGrad(alpha=alpha), jacobian)
    large = _coefficients(FairGrad(alpha=alpha), 1e3 * jacobian)
    np.testing.assert_allclose(large, small * (1e6) ** (-alpha / (1.0 + alpha)), rtol=1e-4)


def test_fairgrad_alpha_one_is_the_nash_bargaining_condition():
    # alpha = 1: (G w)_k = 1 / w_k, Nash-MTL's condition (without its diagonal ridge).
    jacobian = HARD_CASES["random_k5"]
    weights = _coefficients(FairGrad(alpha=1.0), jacobian)
    np.testing.assert_allclose(weights * (jacobian @ jacobian.T @ weights), 1.0, rtol=1e-4)


def test_fairgrad_no_solution_stays_finite():
    # Exactly opposite gradients: G w = w^(-1/alpha) has no solution.
    g = np.linspace(-1.0, 1.0, 6)
    weights = _coefficients(FairGrad(), np.stack([g, -g]))
    assert np.all(weights > 0.0)
    assert np.all(np.isfinite(weights))


# --------------------------------------------------------------------------- #
# ConFIG (Liu, Chen & Thuerey, ICLR 2025).
# --------------------------------------------------------------------------- #


def config_reference(jacobian):
    """`conflictfree.grad_operator.ConFIG_update` in float64 on the gradient vectors."""
    units = jacobian / (np.linalg.norm(jacobian, axis=1, keepdims=True) + 1e-8)
    # Singular values of U below sqrt(1e-5) of the largest are dropped: the
    # cutoff of the kit's 1e-5 on U U^T.
    direction = np.linalg.lstsq(units, np.ones(len(units)), rcond=np.sqrt(1e-5))[0]
    length = np.linalg.norm(direction)
    if length == 0.0:
        return np.zeros(jacobian.shape[1])
    unit_direction = direction / length
    return np.sum(jacobian @ unit_direction) * unit_direction


def _cosine_condition(jacobian):
    """The condition number of the cosine matrix `U U^T` of the non-zero gradients."""
    norms = np.linalg.norm(jacobian, axis=1)
    units = jacobian[norms > 0.0] / norms[norms > 0.0, None]
    singular = np.linalg.svd(units @ units.T, compute_uv=False)
    return singular[0] / max(singular[-1], 1e-300)


# Where the cosine matrix keeps every singular value (ConFIG's rcond=1e-5), `U g_v = 1` has
# an exact solution: the projections are equal.
EXACT_CONFIG_CASES = [c for c in CASE_NAMES if _cosine_condition(HARD_CASES[c]) < 1e5]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_config_matches_the_pseudo_inverse_update(case):
    jacobian = HARD_CASES[case]
    coefficients = _coefficients(ConFIG(), jacobian)
    reference = config_reference(jacobian)
    # Float32 pseudo-inverse of the cosine matrix: its condition number (up to
    # 1e3 on these cases) times float32's resolution.
    cosines = jacobian / np.linalg.norm(jacobian, axis=1, keepdims=True).clip(1e-300)
    singular = np.linalg.svd(cosines @ cosines.T, compute_uv=False)
    kept = singular[singular > 1e-5 * singular[0]]
    rtol = max(1e-5, 100.0 * FLOAT32_EPS * kept[0] / kept[-1])
    assert _direction_error(jacobian, coefficients, reference) <= rtol


@pytest.mark.parametrize("case", EXACT_CONFIG_CASES)
def test_config_projections_on_every_unit_gradient_are_equal(case):
    jacobian = HARD_CASES[case]
    update = jacobian.T @ _coefficients(ConFIG(), jacobian)
    norms = np.linalg.norm(jacobian, axis=1)
    units = jacobian[norms > 0.0] / norms[norms > 0.0, None]
    projections = units @ update
    # Float32 resolution of the cosine matrix, amplified by its condition number.
    rtol = max(1e-4, 10.0 * FLOAT32_EPS * _cosine_condition(jacobian))
    assert np.all(projections > 0.0)
    np.testing.assert_allclose(projections, projections.mean(), rtol=rtol)
    # The magnitude rule: ||update|| = sum_k <g_k, update / ||update||>.
    length = np.linalg.norm(update)
    np.testing.assert_allclose(length, np.sum(jacobian @ update) / length, rtol=rtol)


def test_config_zero_gradient_is_left_out():
    jacobian = HARD_CASES["zero_k3"]
    coefficients = _coefficients(ConFIG(), jacobian)
    assert coefficients[1] == 0.0
    others = _coefficients(ConFIG(), jacobian[[0, 2]])
    np.testing.assert_allclose(coefficients[[0, 2]], others, rtol=1e-5)


def test_config_exactly_opposite_gradients_give_no_update():
    g = np.linspace(-1.0, 1.0, 6)
    np.testing.assert_array_equal(_coefficients(ConFIG(), np.stack([g, -2.0 * g])), 0.0)


# --------------------------------------------------------------------------- #
# IMTL (Liu et al., ICLR 2021): IMTL-L + IMTL-G.
# --------------------------------------------------------------------------- #


def imtl_reference(jacobians, losses, learning_rate, optimizer):
    """Algorithm 1: IMTL-G on the scaled gradients e^s g, s descending e^s L - s (float64)."""
    num_tasks = jacobians[0].shape[0]
    log_scales = np.zeros(num_tasks)
    momentum, velocity = np.zeros(num_tasks), np.zeros(num_tasks)
    directions, history = [], []
    for step, (jacobian, loss) in enumerate(zip(jacobians, losses), start=1):
        scales = np.exp(log_scales)
        _, alpha = imtlg_reference(scales[:, None] * jacobian)
        directions.append(jacobian.T @ (alpha * scales))
        gradient = scales * loss - 1.0
        if optimizer == "sgd":
            log_scales = log_scales - learning_rate * gradient
        else:
            momentum = 0.9 * momentum + 0.1 * gradient
            velocity = 0.999 * velocity + 0.001 * gradient**2
            corrected = (momentum / (1 - 0.9**step)) / (
                np.sqrt(velocity / (1 - 0.999**step)) + 1e-8
            )
            log_scales = log_scales - learning_rate * corrected
        history.append(log_scales.copy())
    return directions, history


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize(
    "case", ["conflicting_k3", "scale_100x_k3", "scale_100x_k5", "random_k5", "zero_k3"]
)
def test_imtl_matches_algorithm_1_over_steps(case, optimizer):
    base = HARD_CASES[case]
    rng = np.random.default_rng(7)
    jacobians = [
        base + 0.1 * np.abs(base).max() * rng.normal(size=base.shape) * (base != 0)
        for _ in range(6)
    ]
    losses = [rng.uniform(0.2, 5.0, size=len(base)) for _ in range(6)]
    strategy = IMTL(learning_rate=0.2, optimizer=optimizer)
    directions, history = imtl_reference(jacobians, losses, 0.2, optimizer)
    for jacobian, loss, direction, log_scales in zip(jacobians, losses, directions, history):
        coefficients = _coefficients(strategy, jacobian, loss)
        assert _direction_error(jacobian, coefficients, direction) <= 1e-4
        np.testing.assert_allclose(_numpy(strategy.log_scales), log_scales, rtol=1e-5, atol=1e-6)


def test_imtl_update_has_equal_projections_and_scaled_losses_go_to_one():
    jacobian = HARD_CASES["scale_100x_k3"]
    losses = np.array([0.1, 2.0, 30.0])
    strategy = IMTL(learning_rate=0.5, optimizer="sgd")
    for _ in range(80):
        coefficients = _coefficients(strategy, jacobian, losses)
    units = jacobian / np.linalg.norm(jacobian, axis=1, keepdims=True)
    projections = units @ (jacobian.T @ coefficients)
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-4)
    # IMTL-L's fixed point: e^s L = 1 (every scaled loss at the same value).
    np.testing.assert_allclose(np.exp(_numpy(strategy.log_scales)) * losses, 1.0, rtol=1e-2)
    # With s = 0, IMTL is IMTL-G.
    fresh = _coefficients(IMTL(), jacobian, losses)
    np.testing.assert_allclose(fresh, _coefficients(IMTLG(), jacobian, losses), rtol=1e-6)


# --------------------------------------------------------------------------- #
# STCH (Lin et al., ICML 2024).
# --------------------------------------------------------------------------- #


def stch_value(losses, ideal, mu, preferences):
    return mu * np.log(np.sum(np.exp(preferences * (losses - ideal) / mu)))


def stch_reference(loss_sequence, mu, preferences, margin):
    """Weights K * d g_mu / d L, with z* the running minimum of the previous steps."""
    minimum = None
    result = []
    for losses in loss_sequence:
        ideal = (losses if minimum is None else minimum) - margin
        shifted = preferences * (losses - ideal) / mu
        softmax = np.exp(shifted - shifted.max())
        softmax /= softmax.sum()
        result.append(len(losses) * preferences * softmax)
        minimum = losses.copy() if minimum is None else np.minimum(minimum, losses)
    return result


@pytest.mark.parametrize("mu", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("preference", [None, [0.5, 1.0, 2.0]])
def test_stch_matches_reference_over_steps(mu, preference):
    rng = np.random.default_rng(3)
    # Three tasks on 100x different loss scales, one that stalls.
    sequence = [np.array([100.0, 1.0, 0.5]) * rng.uniform(0.5, 1.5, size=3) for _ in range(8)]
    strategy = STCH(mu=mu, preference=preference, ideal_margin=0.01)
    strategy.build((3,))
    preferences = np.ones(3) if preference is None else np.array(preference)
    expected = stch_reference(sequence, mu, preferences, 0.01)
    for losses, reference in zip(sequence, expected):
        total, weights = strategy.combine(ops.convert_to_tensor(losses.astype("float32")))
        np.testing.assert_allclose(_numpy(weights), reference, rtol=1e-4, atol=1e-30)
        np.testing.assert_allclose(float(_numpy(total)), np.sum(reference * losses), rtol=1e-4)
    np.testing.assert_allclose(
        _numpy(strategy.running_minimum), np.min(sequence, axis=0), rtol=1e-6
    )


def test_stch_weights_are_the_gradient_of_the_smooth_tchebycheff_function():
    losses, ideal, mu = np.array([0.3, 1.2, 0.9]), np.array([0.2, 0.5, 0.85]), 0.3
    preferences = np.array([1.0, 0.5, 2.0])
    strategy = STCH(mu=mu, preference=list(preferences))
    strategy.build((3,))
    strategy.running_minimum.assign(ideal.astype("float32"))
    strategy.has_minimum.assign(np.ones(3, "float32"))
    weights = _numpy(strategy.compute_weights(ops.convert_to_tensor(losses.astype("float32"))))
    step = 1e-6
    gradient = np.array(
        [
            (
                stch_value(losses + step * e, ideal, mu, preferences)
                - stch_value(losses - step * e, ideal, mu, preferences)
            )
            / (2 * step)
            for e in np.eye(3)
        ]
    )
    np.testing.assert_allclose(weights, 3.0 * gradient, rtol=1e-5)


def test_stch_small_mu_is_tchebycheff_and_large_mu_is_equal():
    def weights(mu):
        strategy = STCH(mu=mu)
        strategy.build((3,))
        strategy.running_minimum.assign(np.array([1.0, 1.0, 1.0], "float32"))
        strategy.has_minimum.assign(np.ones(3, "float32"))
        return _numpy(strategy.compute_weights(ops.convert_to_tensor([1.5, 1.2, 1.0])))

    np.testing.assert_allclose(weights(1e-3), [3.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(weights(1e4), [1.0, 1.0, 1.0], rtol=1e-4)


def test_stch_test_steps_leave_the_ideal_point():
    strategy = STCH()
    strategy.build((2,))
    strategy.combine(ops.convert_to_tensor([1.0, 2.0]))
    strategy.combine(ops.convert_to_tensor([0.1, 0.2]), training=False)
    np.testing.assert_allclose(_numpy(strategy.running_minimum), [1.0, 2.0])


# --------------------------------------------------------------------------- #
# ExcessMTL (He et al., ICML 2024).
# --------------------------------------------------------------------------- #


def excess_reference(jacobians, step_size, diagonal, epsilon=1e-7):
    """The reference code's rule; `diagonal=True` is its per-coordinate accumulator."""
    num_tasks = jacobians[0].shape[0]
    weights = np.ones(num_tasks)
    sums = np.zeros_like(jacobians[0])
    initial = None
    result = []
    for jacobian in jacobians:
        sums = sums + jacobian**2
        if diagonal:
            risks = np.sum(jacobian**2 / np.sqrt(sums + epsilon), axis=1)
        else:
            dim = jacobian.shape[1]
            totals = sums.sum(axis=1)
            risks = np.sum(jacobian**2, axis=1) * np.sqrt(dim / (totals + epsilon * dim))
        if initial is None:
            initial = risks
        else:
            # A task with no gradient yet has no r^0: its ratio counts as 0.
            ratios = np.divide(risks, initial, out=np.zeros_like(risks), where=initial > 0.0)
            weights = weights * np.exp(step_size * ratios)
            weights = weights / weights.sum() * num_tasks
        result.append(weights.copy())
    return result


def _even_jacobians(num_steps, seed):
    """Task gradients whose squared coordinates are equal within each row (random signs)."""
    rng = np.random.default_rng(seed)
    scales = np.array([100.0, 1.0, 0.3])
    return [
        (scales * rng.uniform(0.2, 2.0, size=3))[:, None] * rng.choice([-1.0, 1.0], size=(3, 16))
        for _ in range(num_steps)
    ]


def test_excess_mtl_equals_the_diagonal_rule_when_coordinates_are_even():
    # The isotropic accumulator is the paper's diagonal one when every coordinate
    # of a task gradient has the same magnitude.
    jacobians = _even_jacobians(8, seed=0)
    strategy = ExcessMTL(robust_step_size=0.5, epsilon=1e-12)
    expected = excess_reference(jacobians, 0.5, diagonal=True, epsilon=1e-12 / 16)
    for jacobian, reference in zip(jacobians, expected):
        np.testing.assert_allclose(_coefficients(strategy, jacobian), reference, rtol=1e-5)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_excess_mtl_matches_the_isotropic_reference(case):
    base = HARD_CASES[case]
    rng = np.random.default_rng(5)
    jacobians = [base * rng.uniform(0.3, 1.5, size=(len(base), 1)) for _ in range(6)]
    strategy = ExcessMTL(robust_step_size=0.3, epsilon=1e-12)
    dim = base.shape[1]
    expected = excess_reference(jacobians, 0.3, diagonal=False, epsilon=1e-12 / dim)
    for jacobian, reference in zip(jacobians, expected):
        weights = _coefficients(strategy, jacobian)
        np.testing.assert_allclose(weights, reference, rtol=1e-5)
        np.testing.assert_allclose(weights.sum(), len(base), rtol=1e-6)


def test_excess_mtl_zero_gradient_task_waits_for_its_first_gradient():
    jacobian = HARD_CASES["zero_k3"]
    strategy = ExcessMTL(robust_step_size=0.5)
    _coefficients(strategy, jacobian)
    weights = _coefficients(strategy, jacobian)
    assert _numpy(strategy.has_initial_risk)[1] == 0.0
    # exp(0) for the zero task; the others' risk ratio is (|g|^2 / sqrt(2 |g|^2)) / |g|.
    expected = np.array([np.exp(0.5 / np.sqrt(2.0)), 1.0, np.exp(0.5 / np.sqrt(2.0))])
    np.testing.assert_allclose(weights, 3.0 * expected / expected.sum(), rtol=1e-5)


def test_excess_mtl_task_far_from_its_optimum_gains_weight():
    # Task 0's gradient stays large (far from its optimum); task 1's shrinks.
    strategy = ExcessMTL(robust_step_size=0.1)
    rng = np.random.default_rng(0)
    for step in range(20):
        jacobian = np.stack([rng.normal(size=8), 0.8**step * rng.normal(size=8)])
        weights = _coefficients(strategy, jacobian)
    assert weights[0] > 1.05 > 0.95 > weights[1]


# --------------------------------------------------------------------------- #
# Absent tasks: 3 tasks with task 1 absent == the strategy on tasks 0 and 2.
# --------------------------------------------------------------------------- #

PRESENT = np.array([True, False, True])
KEPT = [0, 2]
FACTORIES = {
    "dual_proj": lambda k: DualProj(),
    "dual_proj_pref": lambda k: DualProj(pref_vector=[0.2, 0.5, 0.3] if k == 3 else [0.2, 0.3]),
    "fair_grad": lambda k: FairGrad(alpha=1.5),
    "config": lambda k: ConFIG(),
    "imtl": lambda k: IMTL(learning_rate=0.1),
    "imtl_sgd": lambda k: IMTL(learning_rate=0.1, optimizer="sgd"),
    "excess_mtl": lambda k: ExcessMTL(robust_step_size=0.5),
    "stch": lambda k: STCH(mu=0.5),
    "stch_pref": lambda k: STCH(mu=0.5, preference=[1.0, 3.0, 2.0] if k == 3 else [1.0, 2.0]),
}


def _state(strategy):
    return {v.path.split("/")[-1]: _numpy(v).copy() for v in strategy.weights}


def _step(strategy, jacobian, losses, present=None):
    if strategy.requires_gradients:
        return _coefficients(strategy, jacobian, losses, present)
    mask = None if present is None else ops.convert_to_tensor(present)
    if present is not None:
        losses = np.where(present, losses, 0.0)
    return _numpy(
        strategy.combine(ops.convert_to_tensor(losses.astype("float32")), present=mask)[1]
    )


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_absent_task_is_the_strategy_on_the_present_ones(name):
    three, two = FACTORIES[name](3), FACTORIES[name](2)
    three.build((3,))
    two.build((2,))
    rng = np.random.default_rng(11)
    for _ in range(4):
        jacobian = rng.normal(size=(3, 6))
        jacobian[0] *= 30.0
        jacobian[2] -= 0.05 * jacobian[0]
        losses = rng.uniform(0.2, 3.0, size=3)
        before = _state(three)
        weights = _step(three, jacobian, losses, PRESENT)
        expected = _step(two, jacobian[KEPT], losses[KEPT])
        assert weights[1] == 0.0
        np.testing.assert_allclose(weights[KEPT], expected, rtol=2e-5, atol=1e-7)
        after = _state(three)
        for key, value in before.items():
            if value.ndim == 1 and value.shape[0] == 3:
                assert after[key][1] == value[1], key
                np.testing.assert_allclose(
                    after[key][KEPT], _state(two)[key], rtol=2e-5, atol=1e-7, err_msg=key
                )


# (The trainers pass `present` to gradient strategies, non-finite losses included.)
@pytest.mark.parametrize("name", ["stch", "stch_pref"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_is_an_absent_task(name, bad):
    strategy = FACTORIES[name](3)
    strategy.build((3,))
    before = _state(strategy)
    losses = np.array([1.0, bad, 2.0], "float32")
    weights = _numpy(strategy.combine(ops.convert_to_tensor(losses))[1])
    assert weights[1] == 0.0 and np.all(np.isfinite(weights))
    for key, value in before.items():
        if value.ndim == 1 and value.shape[0] == 3:
            assert _state(strategy)[key][1] == value[1], key


# --------------------------------------------------------------------------- #
# Models: a short fit on every backend, the one-step update, state in `.keras`.
# --------------------------------------------------------------------------- #

NEW_STRATEGIES = ["dual_proj", "fair_grad", "config", "imtl", "stch", "excess_mtl"]


def _model():
    tasks = [
        Task("a", head=keras.layers.Dense(1, name="a"), loss="mse"),
        Task("b", head=keras.layers.Dense(1, name="b"), loss="mse"),
    ]
    return kerasmtl.hard_sharing(
        {"features": (4,)}, keras.layers.Dense(8, activation="tanh", name="trunk"), tasks
    )


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = {
        "a": (x @ rng.normal(size=(4, 1))).astype("float32"),
        "b": (10.0 * np.sin(x[:, :1])).astype("float32"),
    }
    return x, y


@pytest.mark.parametrize("name", NEW_STRATEGIES)
def test_short_fit_trains_and_logs_the_weights(name):
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), weighting=name)
    x, y = _data()
    first = model.evaluate(x, y, verbose=0, return_dict=True)
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0)
    last = model.evaluate(x, y, verbose=0, return_dict=True)
    assert np.all(np.isfinite(history.history["loss"]))
    assert last["a_loss"] + last["b_loss"] < first["a_loss"] + first["b_loss"]
    assert "a_weight" in history.history and "b_weight" in history.history
    assert np.isfinite(history.history["a_weight"][-1])


@pytest.mark.parametrize("name", ["imtl", "stch", "excess_mtl"])
def test_state_is_saved_and_resumed_in_keras_files(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting=name)
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    state = _state(model.weighting)
    assert any(np.any(value != 0.0) for key, value in state.items() if key != "last_coefficients")
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.weighting) is type(model.weighting)
    for key, value in _state(loaded.weighting).items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    # Both continue the same way.
    batch_x, batch_y = x[:8], {k: v[:8] for k, v in y.items()}
    logs = model.train_on_batch(batch_x, batch_y, return_dict=True)
    loaded_logs = loaded.train_on_batch(batch_x, batch_y, return_dict=True)
    for key in ("a_weight", "b_weight", "loss"):
        np.testing.assert_allclose(loaded_logs[key], logs[key], rtol=1e-5)
    for key, value in _state(loaded.weighting).items():
        np.testing.assert_allclose(value, _state(model.weighting)[key], rtol=1e-5, err_msg=key)


# --------------------------------------------------------------------------- #
# Registry: aliases, canonical names, configs, errors, the default strategy.
# --------------------------------------------------------------------------- #

ALIASES = {
    # LibMTL (LibMTL/weighting/__init__.py names).
    "EW": Equal,
    "UW": Uncertainty,
    "IMTL": IMTL,
    "DB_MTL": DBMTL,
    "Nash_MTL": NashMTL,
    "Aligned_MTL": AlignedMTL,
    "FairGrad": FairGrad,
    "ExcessMTL": ExcessMTL,
    "STCH": STCH,
    "RLW": RLW,
    # TorchJD (torchjd.aggregation class names).
    "UPGrad": weighting.UPGrad,
    "DualProj": DualProj,
    "ConFIG": ConFIG,
    "IMTLG": IMTLG,
    "AlignedMTL": AlignedMTL,
    "NashMTL": NashMTL,
    "CAGrad": weighting.CAGrad,
    "MGDA": weighting.MGDA,
    "PCGrad": weighting.PCGrad,
    "GradVac": weighting.GradVac,
    "GradNorm": weighting.GradNorm,
    "DWA": weighting.DWA,
    "GLS": weighting.GLS,
    "FAMO": weighting.FAMO,
    "Sum": Equal,
    "Mean": Equal,
    "Random": RLW,
    "Constant": Fixed,
}


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_libmtl_and_torchjd_names_resolve(name):
    assert type(weighting.get(name)) is ALIASES[name]
    assert type(weighting.get(name.lower())) is ALIASES[name]


def test_unknown_name_lists_the_canonical_names_only():
    # TorchJD's Krum is not built: an unknown name.
    with pytest.raises(ValueError, match="Unknown weighting strategy 'Krum'") as info:
        weighting.get("Krum")
    message = str(info.value)
    listed = message.split("Valid names: ")[1].split("]")[0]
    for name in NEW_STRATEGIES:
        assert f"'{name}'" in listed
    for alias in ("'EW'", "'ew'", "'UW'", "'db_mtl'", "'Sum'", "'mean'", "'con_fig'"):
        assert alias not in listed
    assert "'grad_drop'" in listed
    assert "Received: identifier='Krum'" in message


def test_get_none_is_the_compile_default():
    strategy = weighting.get(None)
    assert type(strategy) is Fixed
    model = _model()
    model.compile(optimizer="sgd")
    assert type(model.weighting) is Fixed
    strategy.build((2,))
    np.testing.assert_array_equal(
        _numpy(strategy.loss_weights), _numpy(model.weighting.loss_weights)
    )


@pytest.mark.parametrize(
    "strategy",
    [
        DualProj(pref_vector=[0.3, 0.7], reg_eps=0.0),
        FairGrad(alpha=0.5, num_iterations=30),
        ConFIG(rcond=1e-4),
        IMTL(learning_rate=0.02, optimizer="sgd", initial_log_scale=0.5),
        STCH(mu=0.2, preference=[1.0, 2.0], ideal_margin=0.1),
        ExcessMTL(robust_step_size=0.1, epsilon=1e-6),
    ],
    ids=lambda s: type(s).__name__,
)
def test_config_round_trip(strategy):
    config = weighting.serialize(strategy)
    restored = weighting.deserialize(config)
    assert type(restored) is type(strategy)
    assert restored.get_config() == strategy.get_config()


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: FairGrad(alpha=0.0), "`alpha` must be > 0.0. Received: alpha=0.0"),
        (lambda: FairGrad(num_iterations=0), "`num_iterations` must be >= 1"),
        (lambda: DualProj(reg_eps=-1.0), "`reg_eps` must be >= 0.0"),
        (lambda: ConFIG(rcond=1.0), r"`rcond` must be in \[0, 1\). Received: rcond=1.0"),
        (lambda: IMTL(optimizer="rmsprop"), "'adam' or 'sgd'. Received: optimizer='rmsprop'"),
        (lambda: IMTL(learning_rate=0.0), "`learning_rate` must be > 0.0"),
        (lambda: STCH(mu=0.0), "`mu` must be > 0.0. Received: mu=0.0"),
        (lambda: STCH(preference=[1.0, 0.0]), "every `preference` must be > 0"),
        (lambda: ExcessMTL(robust_step_size="big"), "`robust_step_size` must be a number"),
    ],
)
def test_invalid_arguments(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    "strategy, name",
    [
        (DualProj(pref_vector=[1.0, 2.0]), "pref_vector"),
        (STCH(preference=[1.0, 2.0]), "preference"),
    ],
)
def test_preference_length_checked(strategy, name):
    with pytest.raises(ValueError, match=f"`{name}` has 2 values but the model has 3 tasks"):
        strategy.build((3,))


@pytest.mark.backend_only(
    "tensorflow",
    reason="tf.function (and XLA) tracing; on JAX test_every_strategy_runs_inside_jax_jit "
    "(test_weighting_jax_and_resume.py) checks every registered strategy under jax.jit; "
    "torch runs eagerly",
)
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_traced_matches_eager(name, jit_compile):
    import tensorflow as tf

    eager, traced = FACTORIES[name](3), FACTORIES[name](3)
    eager.build((3,))
    traced.build((3,))
    rng = np.random.default_rng(4)
    present = np.array([True, True, True])
    if traced.requires_gradients:
        step = tf.function(traced.compute_weights_from_gram, jit_compile=jit_compile)
    else:
        step = tf.function(lambda losses: traced.combine(losses)[1], jit_compile=jit_compile)
    for index in range(3):
        jacobian = rng.normal(size=(3, 6))
        jacobian[0] *= 30.0
        losses = rng.uniform(0.2, 3.0, size=3)
        if index == 2:
            present = np.array([True, False, True])
        expected = _step(eager, jacobian, losses, present)
        if traced.requires_gradients:
            gram = np.where(present[:, None] & present[None, :], jacobian @ jacobian.T, 0.0)
            actual = step(
                tf.constant(gram, "float32"),
                tf.constant(np.where(present, losses, 0.0), "float32"),
                tf.constant(present),
            )
        else:
            actual = step(tf.constant(np.where(present, losses, np.nan), "float32"))
        np.testing.assert_allclose(_numpy(actual), expected, rtol=1e-4, atol=1e-6)
    for eager_variable, traced_variable in zip(eager.weights, traced.weights):
        np.testing.assert_allclose(
            _numpy(traced_variable), _numpy(eager_variable), rtol=1e-4, atol=1e-6
        )
