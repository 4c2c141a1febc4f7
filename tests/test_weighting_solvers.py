"""Gradient-based strategies MGDA, MGDA-UB, CAGrad, Nash-MTL, UPGrad and their solvers.

Every numerical claim is checked against a float64 NumPy reference that does not
share code with the library (brute-force KKT enumeration with `lstsq` for the
quadratic programs, projected gradient with backtracking / a fine grid for the
CAGrad dual, Newton with backtracking for Nash-MTL), on Gram matrices built from
explicit, hard gradient matrices `J` (K x D): strongly conflicting gradients,
100x norm ratios, a zero gradient, rank deficiency (3 gradients in a plane,
duplicates, gradients that cancel) and nearly aligned gradients.
"""

import itertools

import keras
import numpy as np
import pytest

try:  # tf.function where the backend is TensorFlow
    import tensorflow as tf
except ImportError:
    tf = None

import kerasmtl
from kerasmtl.weighting import solvers
from kerasmtl.weighting.cagrad import CAGrad
from kerasmtl.weighting.mgda import MGDA
from kerasmtl.weighting.mgdaub import MGDAUB
from kerasmtl.weighting.nash_mtl import NashMTL
from kerasmtl.weighting.upgrad import UPGrad

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

RTOL = 2e-3  # iterative / float32 solvers against float64 references
DIM = 16


# --------------------------------------------------------------------------- #
# Hard gradient matrices.
# --------------------------------------------------------------------------- #


def _cases():
    rng = np.random.default_rng(20240611)
    cases = {}
    j = rng.normal(size=(2, DIM))
    j[1] = -0.99 * j[0] + 0.1 * rng.normal(size=DIM)
    cases["conflict_k2"] = j
    j = rng.normal(size=(2, DIM))
    j[0] *= 100.0
    cases["large_norm_k2"] = j
    j = rng.normal(size=(3, DIM))
    j[0] *= 100.0
    cases["large_norm_k3"] = j
    j = rng.normal(size=(3, DIM))
    j[1] = 0.0
    cases["zero_k3"] = j
    cases["plane_k3"] = rng.normal(size=(3, 2)) @ rng.normal(size=(2, DIM))
    j = rng.normal(size=(3, DIM))
    j[2] = 0.5 * j[0] + 0.8 * j[1]  # in the plane of the others, inside their cone
    cases["plane_cone_k3"] = j
    j = rng.normal(size=(3, DIM))
    j[2] = -(0.7 * j[0] + 0.3 * j[1])  # 0 inside the convex hull: Pareto-stationary
    cases["cancel_k3"] = j
    j = rng.normal(size=(3, DIM))
    j[2] = j[1]
    cases["duplicate_k3"] = j
    cases["aligned_k3"] = rng.normal(size=DIM) + 0.01 * rng.normal(size=(3, DIM))
    j = rng.normal(size=(5, DIM))
    j[0] *= 100.0
    j[3] = -0.999 * j[2] + 0.05 * rng.normal(size=DIM)
    cases["mixed_k5"] = j
    cases["random_k5"] = rng.normal(size=(5, DIM))
    cases["aligned_k5"] = rng.normal(size=DIM) + 0.05 * rng.normal(size=(5, DIM))
    return cases


CASES = _cases()
CASE_NAMES = sorted(CASES)
# Cases with a positive solution of G a = 1/a (0 not in the hull, no zero gradient).
NASH_WELL_POSED = [
    "aligned_k3",
    "aligned_k5",
    "conflict_k2",
    "duplicate_k3",
    "large_norm_k2",
    "large_norm_k3",
    "plane_cone_k3",
    "random_k5",
]


def _gram(name):
    j = CASES[name]
    return j, j @ j.T


def _call(strategy, gram, losses=None):
    num = gram.shape[0]
    if not strategy.built:
        strategy.build((num,))
    if losses is None:
        losses = np.ones(num)
    out = strategy.compute_weights_from_gram(
        keras.ops.convert_to_tensor(gram.astype("float32")),
        keras.ops.convert_to_tensor(np.asarray(losses, dtype="float32")),
    )
    out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
    assert out.shape == (num,)
    assert np.all(np.isfinite(out)), out
    return out


# --------------------------------------------------------------------------- #
# float64 references.
# --------------------------------------------------------------------------- #


def _reference_simplex_projection(x):
    # Bisection on the threshold: sum(max(x - theta, 0)) = 1.
    lo, hi = x.min() - 1.0, x.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.maximum(x - mid, 0).sum() > 1.0 else (lo, mid)
    return np.maximum(x - 0.5 * (lo + hi), 0.0)


def _sorted_simplex_projection(x):
    # Held, Wolfe & Crowder (1974): the threshold from the sorted entries.
    u = np.sort(x)[::-1]
    cumulative = np.cumsum(u) - 1.0
    count = np.nonzero(u - cumulative / np.arange(1, len(x) + 1) > 0)[0][-1] + 1
    return np.maximum(x - cumulative[count - 1] / count, 0.0)


def _reference_min_norm(gram):
    """Brute force over supports: KKT of min a^T G a, 1^T a = 1 by lstsq, keep feasible."""
    num = len(gram)
    best_value, best = np.inf, None
    for size in range(1, num + 1):
        for support in itertools.combinations(range(num), size):
            s = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gram[np.ix_(s, s)]
            kkt[:size, size] = -1.0
            kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if solution.min() < -1e-10:
                continue
            a = np.zeros(num)
            a[s] = np.maximum(solution, 0.0)
            a /= a.sum()
            if a @ gram @ a < best_value:
                best_value, best = a @ gram @ a, a
    return best_value, best


def _reference_lower_bounded(gram, lower):
    """Brute force over free sets: min v^T G v s.t. v >= lower."""
    num = len(gram)
    best_value, best = np.inf, None
    for size in range(num + 1):
        for free in itertools.combinations(range(num), size):
            f = list(free)
            fixed = [i for i in range(num) if i not in free]
            v = lower.astype(np.float64).copy()
            if f:
                rhs = -gram[np.ix_(f, fixed)] @ lower[fixed]
                v[f] = np.linalg.lstsq(gram[np.ix_(f, f)], rhs, rcond=None)[0]
            if np.any(v < lower - 1e-10):
                continue
            if v @ gram @ v < best_value:
                best_value, best = v @ gram @ v, v
    return best


def _reference_cagrad_dual(gram, c):
    """`min_{w in simplex} w^T G b + c ||g0|| ||g_w||`: grid for K = 2, else projected gradient."""
    num = len(gram)
    b = np.full(num, 1.0 / num)
    radius = c * np.sqrt(b @ gram @ b)

    def objective(w):
        return w @ gram @ b + radius * np.sqrt(max(w @ gram @ w, 0.0))

    if num == 2:
        p = np.linspace(0.0, 1.0, 400001)
        w = np.stack([p, 1.0 - p], axis=1)
        values = w @ gram @ b + radius * np.sqrt(
            np.maximum(np.einsum("ni,ij,nj->n", w, gram, w), 0.0)
        )
        best = w[np.argmin(values)]
        return objective(best), best, radius
    best_value, best = np.inf, None
    vertex = np.eye(num)[np.argmin([objective(e) for e in np.eye(num)])]
    for start in (b, vertex):
        w, step = start.copy(), 1.0
        for _ in range(2000):
            norm = max(np.sqrt(max(w @ gram @ w, 0.0)), 1e-12)
            gradient = gram @ b + radius * gram @ w / norm
            while True:
                candidate = _sorted_simplex_projection(w - step * gradient)
                delta = candidate - w
                bound = objective(w) + gradient @ delta + delta @ delta / (2 * step)
                if objective(candidate) <= bound + 1e-15 or step < 1e-12:
                    break
                step *= 0.5
            w, step = candidate, min(2.0 * step, 1e3)
        if objective(w) < best_value:
            best_value, best = objective(w), w
    return best_value, best, radius


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


# --------------------------------------------------------------------------- #
# Solvers.
# --------------------------------------------------------------------------- #


def test_project_to_simplex_matches_reference():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(size=(20, 6)) * 3.0, np.ones((1, 6)), np.full((1, 6), -5.0)], axis=0
    )
    x[0] = [10.0, 10.0, -1.0, 0.0, 0.3, 0.3]  # ties
    result = np.asarray(solvers.project_to_simplex(x.astype("float32")))
    expected = np.stack([_reference_simplex_projection(row) for row in x])
    np.testing.assert_allclose(result, expected, atol=1e-5)
    np.testing.assert_allclose(result.sum(axis=-1), 1.0, atol=1e-5)
    assert result.min() >= 0.0


def _compiled(fn):
    """`fn` in a tf.function on TensorFlow, jitted on JAX; torch runs it eagerly."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _float64(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_active_set_solvers_match_brute_force(name):
    """The active-set method (used beyond `ENUMERATION_UP_TO` tasks) on every hard case.

    Up to 5 tasks `method="auto"` enumerates supports, so the strategy tests
    below check the enumeration; here the same cases go through the active-set
    method and must reach the brute-force float64 optimum as well.
    """
    j, gram = _gram(name)
    num = len(gram)
    scale = np.diag(gram).max()
    normalized = gram / scale
    min_norm_point = _compiled(lambda g: solvers.min_norm_point(g, method="active_set"))
    weights = _float64(min_norm_point(gram.astype("float32")))
    assert weights.min() >= 0.0 and abs(weights.sum() - 1.0) <= 1e-6
    value, reference = _reference_min_norm(gram)
    assert abs(weights @ gram @ weights - value) <= RTOL * value + 1e-6 * scale
    assert np.linalg.norm(j.T @ (weights - reference)) <= RTOL * np.sqrt(scale)

    lower = np.eye(num) / num
    problem = normalized + 1e-4 * np.eye(num)  # UPGrad's default ridge: a unique optimum
    lower_bounded_qp = _compiled(lambda g, b: solvers.lower_bounded_qp(g, b, method="active_set"))
    projections = _float64(lower_bounded_qp(problem.astype("float32"), lower.astype("float32")))
    assert np.all(projections >= lower - 1e-7)
    for row, bound in zip(projections, lower):
        reference = _reference_lower_bounded(problem, bound)
        np.testing.assert_allclose(row, reference, rtol=RTOL, atol=RTOL * np.abs(reference).max())

    conflict_averse_dual = _compiled(
        lambda g: solvers.conflict_averse_dual(g, 0.4, method="active_set")[0]
    )
    weights = _float64(conflict_averse_dual(gram.astype("float32")))
    assert weights.min() >= 0.0 and abs(weights.sum() - 1.0) <= 1e-6
    f_ref, _, radius = _reference_cagrad_dual(normalized, 0.4)
    b = np.full(num, 1.0 / num)
    f = weights @ normalized @ b + radius * np.sqrt(max(weights @ normalized @ weights, 0.0))
    assert f <= f_ref + RTOL * abs(f_ref) + 1e-6


@pytest.mark.parametrize("num_tasks", [12])
def test_active_set_solvers_for_many_tasks(num_tasks):
    """Beyond `ENUMERATION_UP_TO` tasks (here 12) `method="auto"` runs the active-set method."""
    rng = np.random.default_rng(5)
    j = rng.normal(size=(num_tasks, DIM))
    j[0] *= 10.0
    gram = j @ j.T
    # Compiled where the backend compiles (torch runs the while loops eagerly).
    min_norm_point = _compiled(solvers.min_norm_point)
    lower_bounded_qp = _compiled(solvers.lower_bounded_qp)
    conflict_averse_dual = _compiled(lambda gram: solvers.conflict_averse_dual(gram, 0.4))
    weights = _float64(min_norm_point(gram.astype("float32")))
    value, _ = _reference_min_norm(gram)
    assert abs(weights @ gram @ weights - value) <= RTOL * value
    lower = np.eye(num_tasks)[:3] / num_tasks
    projections = _float64(lower_bounded_qp(gram.astype("float32"), lower.astype("float32")))
    assert np.all(projections >= lower - 1e-7)
    for row, bound in zip(projections, lower):
        reference = _reference_lower_bounded(gram / np.trace(gram), bound)
        d, d_ref = j.T @ row, j.T @ reference
        assert np.linalg.norm(d - d_ref) <= RTOL * np.linalg.norm(d_ref)
    weights, _ = conflict_averse_dual(gram.astype("float32"))
    weights = _float64(weights)
    normalized = gram / np.diag(gram).max()
    f_ref, _, radius = _reference_cagrad_dual(normalized, 0.4)
    b = np.full(num_tasks, 1.0 / num_tasks)
    f = weights @ normalized @ b + radius * np.sqrt(weights @ normalized @ weights)
    assert abs(f - f_ref) <= RTOL * abs(f_ref) + 1e-6


# --------------------------------------------------------------------------- #
# MGDA.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", CASE_NAMES)
def test_mgda_is_the_exact_min_norm_point(name):
    j, gram = _gram(name)
    weights = _call(MGDA(), gram)
    assert weights.min() >= 0.0
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-6)
    value, reference = _reference_min_norm(gram)
    scale = np.diag(gram).max()
    assert abs(weights @ gram @ weights - value) <= RTOL * value + 1e-6 * scale
    # The min-norm point itself is unique even when the weights are not.
    d, d_ref = j.T @ weights, j.T @ reference
    assert np.linalg.norm(d - d_ref) <= RTOL * np.sqrt(scale)


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
@pytest.mark.parametrize("name", ["large_norm_k3", "zero_k3", "mixed_k5", "conflict_k2"])
def test_mgda_normalizations_match_reference(normalization, name):
    j, gram = _gram(name)
    losses = np.linspace(0.5, 2.0, len(gram))
    weights = _call(MGDA(normalization=normalization), gram, losses)
    norms = np.linalg.norm(j, axis=1)
    normalizers = {
        "none": np.ones(len(gram)),
        "l2": norms,
        "loss": losses,
        "loss+": losses * norms,
    }[normalization]
    normalizers = np.where(normalizers > 0, normalizers, 1.0)  # zero gradient: left as is
    scaled = j / normalizers[:, None]
    _, solution = _reference_min_norm(scaled @ scaled.T)
    d, d_ref = j.T @ weights, scaled.T @ solution
    assert np.linalg.norm(d - d_ref) <= RTOL * np.linalg.norm(scaled, axis=1).max()


def test_mgdaub_prefers_representation_gradients():
    assert MGDAUB.preferred_gradients == "representation"
    assert MGDA.preferred_gradients == "parameters"
    for cls in (CAGrad, NashMTL, UPGrad):
        assert cls.preferred_gradients == "parameters"
        assert cls.requires_gradients
    _, gram = _gram("mixed_k5")
    np.testing.assert_allclose(_call(MGDAUB(), gram), _call(MGDA(), gram), rtol=1e-6)


# --------------------------------------------------------------------------- #
# CAGrad.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cagrad_solves_the_conflict_averse_problem(name):
    j, gram = _gram(name)
    c = 0.4
    coefficients = _call(CAGrad(c=c, rescale=0), gram)
    normalized = gram / np.diag(gram).max()
    j = j / np.sqrt(np.diag(gram).max())  # CAGrad is scale-invariant
    f_ref, w_ref, radius = _reference_cagrad_dual(normalized, c)
    g0 = j.mean(axis=0)
    d = j.T @ coefficients
    # Feasible: inside the ball ||d - g0|| <= c ||g0||.
    assert np.linalg.norm(d - g0) <= radius * (1.0 + RTOL) + 1e-7
    # Optimal: by strong duality max_d min_i <g_i, d> = min_w F(w) = f_ref.
    worst = (j @ d).min()
    assert worst >= f_ref - RTOL * abs(f_ref) - 1e-6
    # The paper's guarantees: no worse than gradient descent on the worst task,
    # and a descent direction of the mean loss.
    assert worst >= (j @ g0).min() - 1e-6
    assert d @ g0 >= (1.0 - c) * (g0 @ g0) - 1e-6
    g_w = j.T @ w_ref
    if g_w @ g_w > 1e-6:  # the optimal d is unique unless 0 is in the hull
        d_ref = g0 + radius * g_w / np.linalg.norm(g_w)
        assert np.linalg.norm(d - d_ref) <= RTOL * np.linalg.norm(d_ref)


def test_cagrad_rescale_options():
    _, gram = _gram("random_k5")
    base = _call(CAGrad(c=0.5, rescale=0), gram)
    np.testing.assert_allclose(_call(CAGrad(c=0.5, rescale=1), gram), base / 1.25, rtol=1e-6)
    np.testing.assert_allclose(_call(CAGrad(c=0.5, rescale=2), gram), base / 1.5, rtol=1e-6)
    # c = 0 is gradient descent on the mean loss.
    np.testing.assert_allclose(_call(CAGrad(c=0.0, rescale=0), gram), 0.2, rtol=1e-6)


# --------------------------------------------------------------------------- #
# Nash-MTL.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", NASH_WELL_POSED)
def test_nash_mtl_solves_the_bargaining_equation(name):
    _, gram = _gram(name)
    weights = _call(NashMTL(max_norm=0.0), gram)
    assert weights.min() > 0.0
    # The equation holds for the true Gram matrix (not a normalised one).
    np.testing.assert_allclose(gram @ weights, 1.0 / weights, rtol=RTOL)
    np.testing.assert_allclose(weights, _reference_nash(gram), rtol=RTOL)


@pytest.mark.parametrize(
    "name", ["zero_k3", "cancel_k3", "plane_k3", "mixed_k5", "exact_conflict_k2"]
)
def test_nash_mtl_fallback_is_finite(name):
    if name == "exact_conflict_k2":
        j = np.stack([np.arange(1.0, DIM + 1), -np.arange(1.0, DIM + 1)])
        gram = j @ j.T
    else:
        j, gram = _gram(name)
    strategy = NashMTL(max_norm=0.0)
    weights = _call(strategy, gram)
    num = len(gram)
    assert weights.min() > 0.0
    normalized = gram / np.linalg.norm(gram)
    unit_weights = np.sqrt(np.diag(normalized)) * weights  # z_k = ||g_k|| a_k
    # The ridge bounds ||z|| by sqrt(K / reg_eps); float32 finds ill-posed
    # solutions only to a few percent, hence the margin.
    assert np.linalg.norm(unit_weights) <= 1.1 * np.sqrt(num / strategy.reg_eps)
    if name == "zero_k3":
        # The zero-gradient task is left out with weight 1; the others bargain.
        assert weights[1] == pytest.approx(1.0, rel=1e-5)
        active = [0, 2]
        reduced = gram[np.ix_(active, active)]
        np.testing.assert_allclose(weights[active], _reference_nash(reduced), rtol=RTOL)
    # All-zero gradients keep the previous weights (initially ones).
    np.testing.assert_array_equal(_call(NashMTL(max_norm=0.0), np.zeros((num, num))), 1.0)


def test_nash_mtl_max_norm_and_update_every():
    _, gram = _gram("random_k5")
    _, other = _gram("aligned_k5")
    clipped = _call(NashMTL(max_norm=0.5), gram)
    assert np.sqrt(clipped @ gram @ clipped) == pytest.approx(0.5, rel=1e-4)
    free = _call(NashMTL(max_norm=0.0), gram)
    np.testing.assert_allclose(clipped, free * 0.5 / np.sqrt(free @ gram @ free), rtol=1e-4)

    strategy = NashMTL(max_norm=0.0, update_weights_every=2)
    first = _call(strategy, gram)
    second = _call(strategy, other)  # reused, not recomputed
    third = _call(strategy, other)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(third, _call(NashMTL(max_norm=0.0), other), rtol=1e-4)
    assert int(keras.ops.convert_to_numpy(strategy.step)) == 3


# --------------------------------------------------------------------------- #
# UPGrad.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("reg_eps", [0.0, 1e-4])
def test_upgrad_matches_reference_and_never_conflicts(name, reg_eps):
    j, gram = _gram(name)
    weights = _call(UPGrad(reg_eps=reg_eps), gram)
    num = len(gram)
    problem = gram / np.trace(gram) + reg_eps * np.eye(num)
    reference = sum(_reference_lower_bounded(problem, np.eye(num)[i] / num) for i in range(num))
    d, d_ref = j.T @ weights, j.T @ reference
    scale = np.sqrt(np.diag(gram).max())
    assert np.linalg.norm(d - d_ref) <= RTOL * np.linalg.norm(d_ref) + 1e-5 * scale
    if reg_eps > 0.0:  # unique weights
        np.testing.assert_allclose(
            weights, reference, rtol=RTOL, atol=RTOL * np.abs(reference).max()
        )
    # No task is hurt: <g_i, d> >= 0, up to the ridge.
    slack = reg_eps * np.trace(gram) * np.abs(weights)
    assert np.all(j @ d >= -slack - 1e-6 * np.diag(gram).max() * np.abs(weights).sum())


def test_upgrad_pref_vector_and_zero_gram():
    j, gram = _gram("conflict_k2")
    pref = [0.8, 0.2]
    weights = _call(UPGrad(pref_vector=pref, reg_eps=0.0), gram)
    problem = gram / np.trace(gram)
    reference = sum(_reference_lower_bounded(problem, np.eye(2)[i] * pref[i]) for i in range(2))
    np.testing.assert_allclose(j.T @ weights, j.T @ reference, rtol=RTOL, atol=1e-6)
    # Below norm_eps the Gram matrix counts as zero and the weights are the preferences.
    np.testing.assert_allclose(_call(UPGrad(pref_vector=pref), gram * 1e-9), pref, rtol=1e-5)
    with pytest.raises(ValueError, match="pref_vector"):
        UPGrad(pref_vector=[1.0]).build((2,))


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize(
    "make", [MGDA, lambda: MGDA(normalization="loss+"), CAGrad, NashMTL, UPGrad]
)
def test_degenerate_shapes_and_all_zero_gradients(make, num_tasks):
    rng = np.random.default_rng(1)
    j = rng.normal(size=(num_tasks, DIM))
    for gram in (j @ j.T, np.zeros((num_tasks, num_tasks))):
        weights = _call(make(), gram)
        assert np.all(weights >= 0.0)


# --------------------------------------------------------------------------- #
# Graph mode, XLA, config, state, registry.
# --------------------------------------------------------------------------- #

STRATEGIES = [
    lambda: MGDA(normalization="loss+"),
    lambda: MGDAUB(),
    lambda: CAGrad(),
    lambda: NashMTL(update_weights_every=2),
    lambda: UPGrad(pref_vector=[0.1, 0.2, 0.3, 0.2, 0.2]),
]


@pytest.mark.backend_only(
    "tensorflow",
    reason="tf.function (and XLA) tracing; on JAX test_weighting_jax_and_resume.py::"
    "test_every_strategy_runs_inside_jax_jit checks every strategy under jax.jit; "
    "torch runs eagerly",
)
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("make", STRATEGIES)
def test_strategies_trace_in_tf_function(make, jit_compile):
    _, gram = _gram("mixed_k5")
    losses = np.linspace(0.5, 2.0, 5).astype("float32")
    eager = make()
    expected = [_call(eager, gram, losses) for _ in range(3)]
    strategy = make()
    strategy.build((5,))
    step = tf.function(strategy.compute_weights_from_gram, jit_compile=jit_compile)
    gram_t = tf.constant(gram.astype("float32"))
    for want in expected:
        got = np.asarray(step(gram_t, tf.constant(losses)), np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert step.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("make", STRATEGIES)
def test_config_and_state_round_trip(make):
    strategy = make()
    _, gram = _gram("random_k5")
    _call(strategy, gram)
    config = kerasmtl.weighting.serialize(strategy)
    restored = kerasmtl.weighting.deserialize(config)
    assert type(restored) is type(strategy)
    assert restored.get_config() == strategy.get_config()
    restored = type(strategy).from_config(strategy.get_config())
    restored.build((5,))
    restored.set_weights(strategy.get_weights())
    for got, want in zip(restored.get_weights(), strategy.get_weights()):
        np.testing.assert_array_equal(got, want)
    _, other = _gram("aligned_k5")
    np.testing.assert_allclose(_call(restored, other), _call(strategy, other), rtol=1e-6)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("mgda", MGDA),
        ("MGDA", MGDA),
        ("mgdaub", MGDAUB),
        ("cagrad", CAGrad),
        ("CAGrad", CAGrad),
        ("nash_mtl", NashMTL),
        ("NashMTL", NashMTL),
        ("upgrad", UPGrad),
    ],
)
def test_registry(name, cls):
    assert type(kerasmtl.weighting.get(name)) is cls


@pytest.mark.parametrize("name", ["mgda", "mgdaub", "cagrad", "nash_mtl", "upgrad"])
def test_fit_and_keras_round_trip(name, tmp_path):
    """One short `fit` through the model's gradient trainer, then a `.keras` round trip."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = {"a": rng.normal(size=(32, 1)), "b": 100.0 * rng.normal(size=(32, 1))}
    keras.utils.set_random_seed(0)
    tasks = [kerasmtl.Task(k, head=keras.layers.Dense(1), loss="mse") for k in "ab"]
    model = kerasmtl.hard_sharing(
        {"features": (4,)}, keras.layers.Dense(8, activation="relu", name="trunk"), tasks
    )
    model.compile(optimizer="adam", weighting=name)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    expected = type(kerasmtl.weighting.get(name))
    assert model.gradient_source == expected.preferred_gradients
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.weighting) is expected
    for got, want in zip(restored.weighting.get_weights(), model.weighting.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="normalization"):
        MGDA(normalization="l1")
    with pytest.raises(ValueError, match="rescale"):
        CAGrad(rescale=3)
    with pytest.raises(ValueError, match="update_weights_every"):
        NashMTL(update_weights_every=0)
    with pytest.raises(ValueError, match="reg_eps"):
        UPGrad(reg_eps=-1.0)
