"""Many tasks (K = 2 to 40): exact solvers against float64 SciPy references and KKT checks.

Hard cases at every K: conflicting gradients, a 100x norm gap (on top of the
conflicts), a zero gradient, a rank-deficient Gram matrix and absent tasks
(`mask`). Up to `solvers.ENUMERATION_UP_TO` tasks `method="auto"` enumerates
supports; both methods are checked there, the active-set method alone beyond.
Every result is checked three ways: feasibility; the KKT conditions in float64
(a certificate: for these convex problems a multiplier slack of `tol` bounds
the suboptimality by `2 tol`, whatever the reference did); and the objective
against SciPy's SLSQP / L-BFGS-B in float64 (tight tolerances, several starts),
which must not beat it. Then every gradient strategy trains 20 tasks in `fit`.

Tolerances are in the units of the normalised problem (largest squared
gradient norm 1). KKT_TOL = 1e-5 is ~100 float32 ulps of the O(1) entries
(the solvers work in float32 with a 1e-6 relative ridge); the objective may
exceed the reference by RTOL = 1e-5 relative plus ATOL = 1e-7.
"""

import keras
import numpy as np
import pytest
from scipy import optimize

import kerasmtl
from kerasmtl import Task
from kerasmtl.weighting import solvers
from kerasmtl.weighting.cagrad import CAGrad
from kerasmtl.weighting.dual_proj import DualProj
from kerasmtl.weighting.mgda import MGDA
from kerasmtl.weighting.nash_mtl import NashMTL
from kerasmtl.weighting.upgrad import UPGrad

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

KKT_TOL = 1e-5
RTOL = 1e-5
ATOL = 1e-7
DIM = 64
NUM_TASKS = [2, 5, 10, 20, 40]
KINDS = ["conflict", "norm_gap", "zero", "rank_deficient", "absent"]


def _compiled(fn):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _jacobian(num_tasks, kind, seed=0):
    """`(K, DIM)` task gradients, float64; pairs of tasks conflict in every kind."""
    rng = np.random.default_rng(1000 * num_tasks + KINDS.index(kind) + seed)
    rank = min(num_tasks, 3) if kind == "rank_deficient" else num_tasks
    jacobian = rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, DIM))
    for k in range(1, num_tasks, 2):  # g_k nearly opposite g_{k-1}
        jacobian[k] = -0.9 * jacobian[k - 1] + 0.3 * jacobian[k]
    if kind == "norm_gap":
        jacobian[0] *= 100.0
    if kind == "zero":
        jacobian[num_tasks // 2] = 0.0
    return jacobian


def _present(num_tasks, kind):
    """The present tasks: a third absent (never all) for "absent", else all."""
    present = np.ones(num_tasks, bool)
    if kind == "absent":
        present[1::3] = False
    return present


def _problem(num_tasks, kind):
    """`(gram, unit, present)`: the Gram matrix as a trainer masks it, and `gram / max diag`."""
    jacobian = _jacobian(num_tasks, kind)
    present = _present(num_tasks, kind)
    gram = jacobian @ jacobian.T * np.outer(present, present)
    return gram, gram / np.diag(gram).max(), present


def _methods(num_tasks):
    if num_tasks <= solvers.MAX_ENUMERATION_TASKS:
        return ["enumeration", "active_set"]
    return ["active_set"]


def _float64(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def _simplex_minimum(objective, unit, present, gradient=None):
    """SLSQP in float64 on the simplex of the present tasks, from several starts."""
    index = np.flatnonzero(present)
    sub = unit[np.ix_(index, index)]
    num = len(index)
    starts = [np.full(num, 1.0 / num), np.eye(num)[np.argmin(np.diag(sub))]]
    best = np.inf
    for start in starts:
        result = optimize.minimize(
            lambda w: objective(w, sub), start,
            jac=None if gradient is None else (lambda w: gradient(w, sub)),
            method="SLSQP", bounds=[(0.0, 1.0)] * num,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
            options={"ftol": 1e-16, "maxiter": 3000},
        )
        w = np.maximum(result.x, 0.0)
        best = min(best, objective(w / w.sum(), sub))
    return best


def _check_on_simplex(weights, present):
    assert np.all(np.isfinite(weights))
    assert weights.min() >= 0.0
    assert np.all(weights[~present] == 0.0)
    assert abs(weights.sum() - 1.0) <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tasks", NUM_TASKS)
def test_min_norm_point_is_exact(num_tasks, kind):
    gram, unit, present = _problem(num_tasks, kind)
    for method in _methods(num_tasks):
        solve = _compiled(lambda g, m: solvers.min_norm_point(g, mask=m, method=method))
        weights = _float64(solve(gram.astype("float32"), present))
        _check_min_norm(weights, unit, present, kind, method)


def _check_min_norm(weights, unit, present, kind, method):
    """Feasibility, the float64 KKT certificate and SciPy's optimum for MGDA's point."""
    _check_on_simplex(weights, present)
    value = weights @ unit @ weights
    # KKT (Sener & Koltun's optimality condition): <g_j, d> >= ||d||^2 for
    # every present task j, d = sum_k a_k g_k, i.e. no vertex is a better direction.
    slack = (unit @ weights - value)[present]
    assert slack.min() >= -KKT_TOL, (method, slack.min())
    reference = _simplex_minimum(
        lambda w, g: w @ g @ w, unit, present, gradient=lambda w, g: 2.0 * g @ w
    )
    assert value <= reference * (1.0 + RTOL) + ATOL, (method, value, reference)
    if kind == "zero":  # the zero gradient is the min-norm point: MGDA stops
        assert value <= ATOL


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tasks", NUM_TASKS)
def test_conflict_averse_dual_is_exact(num_tasks, kind):
    gram, unit, present = _problem(num_tasks, kind)
    for method in _methods(num_tasks):
        solve = _compiled(
            lambda g, m: solvers.conflict_averse_dual(g, CAGRAD_C, mask=m, method=method)
        )
        weights, normalized = solve(gram.astype("float32"), present)
        np.testing.assert_allclose(_float64(normalized), unit, rtol=1e-6, atol=1e-7)
        _check_conflict_averse(_float64(weights), unit, present, method)


CAGRAD_C = 0.4


def _check_conflict_averse(weights, unit, present, method):
    """Feasibility, SciPy's optimum and strong duality for CAGrad's dual weights."""
    mean = present / present.sum()
    radius = CAGRAD_C * np.sqrt(mean @ unit @ mean)
    index = np.flatnonzero(present)
    sub_mean = mean[index]

    def dual(w, g):
        return w @ g @ sub_mean + radius * np.sqrt(max(w @ g @ w, 0.0))

    def dual_gradient(w, g):
        return g @ sub_mean + radius * g @ w / max(np.sqrt(max(w @ g @ w, 0.0)), 1e-12)

    reference = _simplex_minimum(dual, unit, present, gradient=dual_gradient)
    _check_on_simplex(weights, present)
    value = dual(weights[index], unit[np.ix_(index, index)])
    assert value <= reference + RTOL * abs(reference) + ATOL, (method, value, reference)
    # Strong duality (Liu et al. 2021): with d = g0 + radius g_w / ||g_w||, the
    # worst task's rate min_i <g_i, d> equals the dual optimum F(w*) (the KKT
    # multipliers); d's direction g_w / ||g_w|| amplifies float32 errors by
    # radius / ||g_w||.
    norm = np.sqrt(weights @ unit @ weights)
    if norm > 1e-3:
        direction = mean + radius * weights / norm
        worst = (unit @ direction)[present].min()
        tolerance = KKT_TOL * (1.0 + radius / norm)
        assert abs(worst - value) <= tolerance, (method, worst, value, radius / norm)


@pytest.mark.parametrize("kind", ["conflict", "rank_deficient", "absent"])
@pytest.mark.parametrize("problem", ["min_norm", "conflict_averse"])
def test_simplex_primal_fallback_is_exact(problem, kind, monkeypatch):
    """MGDA's and CAGrad's problems end exact when the primal-dual method hands over at once.

    The primal-dual method certifies most problems itself (the tests above);
    with no patience a problem not certified at its first step goes on with
    Wolfe's primal method from the best feasible point seen, which is the path
    of a problem that cycles. The result equals the primal method's alone (its
    value, where the optimum is not unique).
    """
    monkeypatch.setattr(solvers, "_PRIMAL_DUAL_PATIENCE", -1)
    num_tasks = 20
    gram, unit, present = _problem(num_tasks, kind)
    if problem == "min_norm":
        solve = _compiled(lambda g, m: solvers.min_norm_point(g, mask=m, method="active_set"))
        weights = _float64(solve(gram.astype("float32"), present))
        _check_min_norm(weights, unit, present, kind, "active_set")
        primal = _compiled(
            lambda g, m: solvers._min_norm_active_set(
                solvers.normalize_gram(g), 1000, m, primal_dual=False
            )
        )
    else:
        solve = _compiled(
            lambda g, m: solvers.conflict_averse_dual(g, CAGRAD_C, mask=m, method="active_set")[0]
        )
        weights = _float64(solve(gram.astype("float32"), present))
        _check_conflict_averse(weights, unit, present, "active_set")

        def primal(g, m):
            g = solvers.normalize_gram(g)
            mean = keras.ops.cast(m, "float32") / keras.ops.sum(keras.ops.cast(m, "float32"))
            mean_term = keras.ops.matmul(g, mean)
            radius = CAGRAD_C * keras.ops.sqrt(keras.ops.sum(mean_term * mean))
            return solvers._conflict_averse_active_set(
                g, mean_term, radius, 1000, m, primal_dual=False
            )

        primal = _compiled(primal)
    reference = _float64(primal(gram.astype("float32"), present))
    if kind == "rank_deficient":  # a face of optima (0 is in the hull): the same value
        assert abs(weights @ unit @ weights - reference @ unit @ reference) <= ATOL
    else:  # full rank: one optimum
        np.testing.assert_allclose(weights, reference, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tasks", NUM_TASKS)
def test_lower_bounded_qp_is_exact(num_tasks, kind):
    gram, unit, present = _problem(num_tasks, kind)
    # UPGrad's problems: v >= e_i / K_p for the present tasks i (all rows at once).
    rows = np.flatnonzero(present)
    lower = np.eye(num_tasks)[rows] / len(rows)
    reg = 1e-4  # as UPGrad's default ridge; the exact rank-deficient problem has a face of optima
    problem = unit + reg * np.eye(num_tasks)
    for method in _methods(num_tasks):
        solve = _compiled(lambda g, b: solvers.lower_bounded_qp(g, b, method=method))
        projections = _float64(solve(problem.astype("float32"), lower.astype("float32")))
        _check_lower_bounded(projections, problem, lower, present, method)


def _check_lower_bounded(projections, problem, lower, present, method):
    """Feasibility, float64 KKT certificate, SciPy on 3 rows, UPGrad's invariant."""
    assert np.all(np.isfinite(projections))
    assert np.all(projections >= lower - 1e-7)
    gradients = projections @ problem
    # KKT: (G v)_j >= 0 everywhere, = 0 where v_j > lower_j.
    assert gradients.min() >= -KKT_TOL, (method, gradients.min())
    free = projections > lower + 1e-4
    assert np.abs(gradients[free]).max(initial=0.0) <= KKT_TOL
    # SciPy on a few rows (the KKT checks above cover every row).
    for row, bound in zip(projections[:3], lower[:3]):
        result = optimize.minimize(
            lambda v: v @ problem @ v, bound + 1e-3, jac=lambda v: 2.0 * problem @ v,
            method="L-BFGS-B", bounds=[(b, None) for b in bound],
            options={"ftol": 1e-16, "gtol": 1e-14, "maxiter": 10000},
        )
        assert row @ problem @ row <= result.fun * (1.0 + RTOL) + ATOL * (bound @ bound)
    # UPGrad's invariant: the sum of the projections conflicts with no present task.
    combined = (problem @ projections.sum(axis=0))[present]
    assert combined.min() >= -len(lower) * KKT_TOL


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tasks", NUM_TASKS)
def test_lower_bounded_qp_with_one_problem_is_exact(num_tasks, kind):
    """DualProj's single problem `v >= p` (p = 1/K_p on the present tasks), every method."""
    gram, unit, present = _problem(num_tasks, kind)
    lower = (present / present.sum())[None, :]
    problem = unit + 1e-4 * np.eye(num_tasks)
    for method in _methods(num_tasks):
        solve = _compiled(lambda g, b: solvers.lower_bounded_qp(g, b, method=method))
        projections = _float64(solve(problem.astype("float32"), lower.astype("float32")))
        # The KKT check fails for a solver that returns `p` where a task conflicts at p.
        _check_lower_bounded(projections, problem, lower, present, method)


@pytest.mark.parametrize("kind", ["conflict", "rank_deficient"])
def test_lower_bounded_qp_primal_fallback_is_exact(kind, monkeypatch):
    """Rows that leave the primal-dual method at their first step end exact by the primal method.

    The primal-dual method certifies most rows itself (the other tests); with no
    patience every row not certified at once goes on with the primal method from
    the best feasible point seen, which is the path of the rows that cycle.
    """
    monkeypatch.setattr(solvers, "_PRIMAL_DUAL_PATIENCE", -1)
    num_tasks = 20
    gram, unit, present = _problem(num_tasks, kind)
    lower = np.eye(num_tasks) / num_tasks
    problem = unit + 1e-4 * np.eye(num_tasks)
    solve = _compiled(lambda g, b: solvers.lower_bounded_qp(g, b, method="active_set"))
    projections = _float64(solve(problem.astype("float32"), lower.astype("float32")))
    _check_lower_bounded(projections, problem, lower, present, "active_set")


@pytest.mark.parametrize("num_tasks", [20, 40])
def test_strategies_at_many_tasks_with_a_norm_gap(num_tasks):
    """MGDA, UPGrad, DualProj, CAGrad and Nash-MTL's coefficients at K = 20, 40, 100x norm gap."""
    jacobian = _jacobian(num_tasks, "norm_gap")
    gram = jacobian @ jacobian.T
    unit = gram / np.diag(gram).max()
    present = np.ones(num_tasks, bool)

    def call(strategy, g):
        strategy.build((num_tasks,))
        fn = _compiled(lambda g, loss: strategy.compute_weights_from_gram(g, loss))
        return _float64(fn(g.astype("float32"), np.ones(num_tasks, "float32")))

    weights = call(MGDA(), gram)
    _check_on_simplex(weights, present)
    reference = _simplex_minimum(
        lambda w, g: w @ g @ w, unit, present, gradient=lambda w, g: 2.0 * g @ w
    )
    assert weights @ unit @ weights <= reference * (1.0 + RTOL) + ATOL

    weights = call(UPGrad(reg_eps=0.0), gram)
    direction = jacobian.T @ weights
    # No task is hurt (Quinton & Rey 2024): <g_j, d> >= 0 up to float32 resolution.
    scale = np.sqrt(np.diag(gram)) * np.linalg.norm(direction)
    assert np.all(jacobian @ direction >= -KKT_TOL * scale)

    # DualProj: the mean gradient projected onto the dual cone, one problem (v >= 1/K).
    weights = call(DualProj(reg_eps=0.0), gram)
    assert np.all(weights >= 1.0 / num_tasks - 1e-6)
    direction = jacobian.T @ weights
    scale = np.sqrt(np.diag(gram)) * np.linalg.norm(direction)
    assert np.all(jacobian @ direction >= -KKT_TOL * scale)
    trace_unit = gram / np.trace(gram)
    free = weights > 1.0 / num_tasks + 1e-4  # KKT: (G v)_j = 0 where the bound is inactive
    assert np.all(np.abs((trace_unit @ weights)[free]) <= KKT_TOL * np.abs(trace_unit).max())
    assert free.any()  # this case has conflicts: the projection moves off the bound

    weights = call(CAGrad(c=0.4, rescale=0), gram)
    mean = np.full(num_tasks, 1.0 / num_tasks)
    g0 = jacobian.T @ mean
    direction = jacobian.T @ weights
    # The update stays in the ball ||d - g0|| <= c ||g0|| and improves the worst task
    # at least as fast as the mean gradient does.
    assert np.linalg.norm(direction - g0) <= 0.4 * np.linalg.norm(g0) * (1.0 + 1e-4)
    assert (jacobian @ direction).min() >= (jacobian @ g0).min() - 1e-5 * np.diag(gram).max()

    # Nash-MTL is well posed when 0 is outside the hull: all tasks share a direction.
    shared = jacobian + 3.0 * np.linalg.norm(jacobian, axis=1, keepdims=True) * (
        np.ones(DIM) / np.sqrt(DIM)
    )
    shared_gram = shared @ shared.T
    reg_eps = 1e-6
    ridged = shared_gram + reg_eps * np.diag(np.diag(shared_gram))
    weights = call(NashMTL(max_norm=0.0, reg_eps=reg_eps), shared_gram)
    reference = _reference_nash(ridged)
    np.testing.assert_allclose(weights, reference, rtol=1e-3)
    # The bargaining equation itself: a_k (G a)_k = 1 for every task.
    np.testing.assert_allclose(weights * (ridged @ weights), 1.0, rtol=1e-3)


def _reference_nash(gram):
    """Newton with backtracking on 0.5 a^T G a - sum log a (float64)."""
    a = 1.0 / np.sqrt(np.diag(gram))

    def f(x):
        return 0.5 * x @ gram @ x - np.log(x).sum()

    for _ in range(200):
        gradient = gram @ a - 1.0 / a
        step = -np.linalg.solve(gram + np.diag(1.0 / a**2), gradient)
        t = 1.0
        while np.any(a + t * step <= 0) or f(a + t * step) > f(a) + 0.25 * t * gradient @ step:
            t *= 0.5
        a = a + t * step
    return a


def test_method_argument():
    gram = np.eye(12, dtype="float32")
    with pytest.raises(ValueError, match="method"):
        solvers.min_norm_point(gram, method="fista")
    with pytest.raises(ValueError, match="limited to 10 tasks"):
        solvers.lower_bounded_qp(gram, gram, method="enumeration")
    with pytest.raises(ValueError, match="Received: method='simplex'"):
        solvers.conflict_averse_dual(gram, 0.4, method="simplex")


GRADIENT_STRATEGIES = sorted(
    kerasmtl.weighting.registry_name(cls.__name__)
    for cls in kerasmtl.weighting.ALL_OBJECTS
    if cls.requires_gradients
)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", GRADIENT_STRATEGIES)
def test_every_gradient_strategy_trains_twenty_tasks(strategy):
    num_tasks = 20
    keras.utils.set_random_seed(0)
    model = kerasmtl.hard_sharing(
        {"features": (8,)},
        keras.layers.Dense(16, activation="tanh", name="trunk"),
        [Task(f"t{k}", head=1, loss="mse") for k in range(num_tasks)],
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=strategy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    targets = np.tanh(x @ rng.normal(size=(8, num_tasks))).astype("float32")
    y = {f"t{k}": targets[:, [k]] for k in range(num_tasks)}
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    first = np.mean([history[f"t{k}_loss"][0] for k in range(num_tasks)])
    last = np.mean([history[f"t{k}_loss"][-1] for k in range(num_tasks)])
    assert last < first, (strategy, first, last)
    coefficients = keras.ops.convert_to_numpy(model.weighting.last_coefficients)
    assert coefficients.shape == (num_tasks,) and np.isfinite(coefficients).all()
    if strategy in ("mgda", "mgdaub"):
        assert coefficients.min() >= 0.0 and abs(coefficients.sum() - 1.0) <= 1e-4
