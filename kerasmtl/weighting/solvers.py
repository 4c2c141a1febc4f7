"""Small in-graph solvers shared by the gradient-based weighting strategies.

Every function here works on the `(K, K)` Gram matrix `G[i, j] = <g_i, g_j>` of
the task gradients (never on the gradient vectors), uses `keras.ops` only, runs
in float32, and is traceable inside a `tf.function` (also with
`jit_compile=True`): there is no Python branching on tensor values and every
loop has a fixed trip count. The number of tasks `K` must be static.

Public helpers (stable API, imported by the strategies):

- `project_to_simplex(x)`: Euclidean projection onto the probability simplex.
- `solve_positive_definite(matrices, rhs)`: batched SPD solve that never fails.
- `normalize_gram(gram)`: divides by the largest diagonal entry (scale-free
  problems solved on `O(1)` numbers).
- `min_norm_point(gram, mask=None)`: `argmin_{a in simplex} a^T G a` (MGDA).
- `lower_bounded_qp(gram, lower)`: `argmin_{v >= lower} v^T G v` (UPGrad).
- `conflict_averse_dual(gram, c, mask=None)`: the CAGrad dual on the simplex.
- `nash_bargaining(gram, ...)`: the positive solution of `(G + eps diag(G)) a = 1 / a`
  (Nash-MTL).

Absent tasks. The simplex problems take an optional boolean `mask` of the
present tasks: they are then solved on the simplex of the present tasks (the
absent tasks' coefficients are exactly 0), with the same candidates, hence the
same result, as the problem built on the present tasks alone. Without it an
absent task's zero gradient would be the min-norm point, and MGDA would stop
every task.

Solver choices. For `K <= MAX_ENUMERATION_TASKS` the three quadratic problems
are solved *exactly* by enumerating every support (active set): on a fixed
support the KKT conditions are linear (a closed form for CAGrad), so all
`2^K - 1` candidates are solved in one batched linear solve. Each candidate is
then made feasible (clipped and, on the simplex, renormalised), the true
objective is evaluated, and the best one is kept. Every candidate is a feasible
point, and the candidate of the optimal support is the optimum, so the result is
the global minimum up to float32 rounding, whatever the conditioning of `G`
(rank-deficient, duplicated or zero gradients included). The linear systems are
solved after a Jacobi scaling (unit diagonal) with a tiny ridge
`SUPPORT_RIDGE * I`, which keeps every system positive definite and biases the
optimum only by `~1e-6` relative, by an unrolled batched Gauss-Jordan
elimination (`solve_positive_definite`) that never fails.
For larger `K` an accelerated projected gradient (FISTA with adaptive restart)
runs for a fixed number of iterations, followed by one exact solve on the
support it found ("polish"), kept only when it is better.
"""

import itertools

from keras import ops

#: Largest number of tasks solved by exact support enumeration (2^K - 1 systems).
MAX_ENUMERATION_TASKS = 10
#: Ridge added to the unit-diagonal (Jacobi-scaled) Gram matrix of each support.
SUPPORT_RIDGE = 1e-6
#: Squared gradient norms below this fraction of the largest are treated as zero.
ZERO_NORM_FLOOR = 1e-10
_TINY = 1e-30
# Newton's decrement below which `nash_bargaining` stops.
_NEWTON_TOLERANCE = 1e-6
# Stand-in value of an absent entry in `project_to_simplex` (finite, so no inf - inf).
_FAR_BELOW = -1e30


def _allowed(candidates, mask):
    """Boolean `(..., M)`: the candidates that are 0 on every absent task."""
    if mask is None:
        return None
    return ops.all(ops.logical_or(mask, candidates == 0.0), axis=-1)


def _forbid(values, allowed):
    """`values` with `+inf` where a candidate is not allowed."""
    if allowed is None:
        return values
    return ops.where(allowed, values, float("inf"))


def _uniform(num, mask):
    """`1 / K` on every task, or on the present ones (`mask`)."""
    if mask is None:
        return ops.full((num,), 1.0 / num, dtype="float32")
    present = ops.cast(mask, "float32")
    return present / ops.maximum(ops.sum(present), 1.0)


def project_to_simplex(x, mask=None):
    """Euclidean projection of each vector on the last axis onto the probability simplex.

    Sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al., ICML 2008):
    `max(x - theta, 0)` with the threshold `theta` that makes the entries sum to one.

    Args:
        x: float tensor of shape `(..., K)`, `K` static.
        mask: optional boolean `(K,)`: project onto the simplex of these
            entries (the others are 0).

    Returns:
        A float32 tensor of the same shape, non-negative, summing to 1 on the last axis.
    """
    x = ops.cast(x, "float32")
    if mask is not None:
        # Far below every present entry: sorted last, never above the threshold.
        x = ops.where(mask, x, _FAR_BELOW)
    num = x.shape[-1]
    sorted_desc = ops.flip(ops.sort(x, axis=-1), axis=-1)
    cumulative = ops.cumsum(sorted_desc, axis=-1) - 1.0
    ranks = ops.cast(ops.arange(1, num + 1), "float32")
    # The condition holds on a prefix of the sorted entries (always on the first).
    active = ops.cast(sorted_desc - cumulative / ranks > 0.0, "int32")
    count = ops.maximum(ops.sum(active, axis=-1, keepdims=True), 1)
    theta = ops.take_along_axis(cumulative, count - 1, axis=-1) / ops.cast(count, "float32")
    return ops.maximum(x - theta, 0.0)


def normalize_gram(gram):
    """Returns `G / max_k G[k, k]` (or `G` unchanged when it is all zero)."""
    gram = ops.cast(gram, "float32")
    gram = 0.5 * (gram + ops.transpose(gram))
    scale = ops.max(ops.diagonal(gram))
    return gram / ops.where(scale > 0.0, scale, 1.0)


def support_masks(num_tasks, include_empty=False):
    """All supports of `range(num_tasks)` as a `(2^K - 1, K)` (or `(2^K, K)`) 0/1 float32 tensor."""
    rows = [list(bits) for bits in itertools.product((0.0, 1.0), repeat=num_tasks)]
    if not include_empty:
        rows = rows[1:]
    return ops.convert_to_tensor(rows, dtype="float32")


def _jacobi_scaling(gram):
    """Returns `(inv_scale, D^-1 G D^-1)` with `D = sqrt(diag(G))`, floored away from zero."""
    diagonal = ops.diagonal(gram)
    largest = ops.max(diagonal)
    floor = ZERO_NORM_FLOOR * ops.where(largest > 0.0, largest, 1.0)
    inv_scale = 1.0 / ops.sqrt(ops.maximum(diagonal, floor))
    unit_gram = gram * inv_scale[:, None] * inv_scale[None, :]
    return inv_scale, unit_gram


def _masked_systems(unit_gram, masks):
    """`(M, K, K)` matrices: the ridged `unit_gram` on each support, identity off it."""
    num = unit_gram.shape[-1]
    eye = ops.eye(num, dtype="float32")
    ridged = unit_gram + SUPPORT_RIDGE * eye
    inside = masks[:, :, None] * masks[:, None, :]
    return inside * ridged[None] + (1.0 - masks)[:, :, None] * eye[None]


def solve_positive_definite(matrices, rhs):
    """Solves `A x = rhs` for a batch of symmetric positive definite matrices.

    Gauss-Jordan elimination without pivoting (backward stable on symmetric
    positive definite matrices), unrolled over the static size `n`: a few
    batched elementwise ops per step, fast for the many tiny systems of the
    support enumeration and friendly to XLA. Unlike `ops.solve` (which raises on
    an exactly singular matrix outside XLA), a vanishing pivot is replaced by a
    tiny positive one, so the result is always finite.

    Args:
        matrices: `(..., n, n)` float32 tensor.
        rhs: `(..., n, r)` float32 tensor.

    Returns:
        The `(..., n, r)` solution.
    """
    num = matrices.shape[-1]
    augmented = ops.concatenate([matrices, rhs], axis=-1)
    for k in range(num):
        row = augmented[..., k : k + 1, :]
        pivot = row[..., k : k + 1]
        pivot = ops.where(ops.abs(pivot) > 1e-30, pivot, 1e-30)
        row = row / pivot
        is_pivot_row = ops.convert_to_tensor([[1.0] if i == k else [0.0] for i in range(num)])
        factors = augmented[..., :, k : k + 1] * (1.0 - is_pivot_row)
        augmented = (augmented - factors * row) * (1.0 - is_pivot_row) + row * is_pivot_row
    return augmented[..., :, num:]


def _quadratic_forms(vectors, gram):
    """`v^T G v` for every vector on the last axis of `vectors`."""
    return ops.sum(ops.matmul(vectors, gram) * vectors, axis=-1)


def _renormalize(weights, mask=None):
    weights = ops.maximum(weights, 0.0)
    total = ops.sum(weights, axis=-1, keepdims=True)
    num = weights.shape[-1]
    return ops.where(total > 0.0, weights / ops.maximum(total, _TINY), _uniform(num, mask))


def _select(candidates, values):
    """The candidate (rows of `(..., M, K)`) with the smallest value (`(..., M)`)."""
    values = ops.where(ops.isnan(values), float("inf"), values)
    best = ops.argmin(values, axis=-1)
    return ops.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]


# --------------------------------------------------------------------------- #
# Min-norm point of the convex hull (MGDA).
# --------------------------------------------------------------------------- #


def _min_norm_on_supports(gram, masks, mask=None):
    """Min-norm point of each support's affine hull, clipped back to the simplex."""
    inv_scale, unit_gram = _jacobi_scaling(gram)
    systems = _masked_systems(unit_gram, masks)
    # In scaled variables b = D a: min b^T Gu b s.t. (1/d)^T b = 1 -> b ~ Gu^-1 (1/d).
    rhs = masks * inv_scale[None, :]
    solution = solve_positive_definite(systems, rhs[..., None])[..., 0]
    return _renormalize(solution * inv_scale[None, :], mask)


def _fista_simplex(gram, linear, num_iterations, mask=None):
    """Accelerated projected gradient for `min 0.5 a^T G a + linear^T a` on the simplex."""
    num = gram.shape[-1]
    lipschitz = ops.maximum(ops.sqrt(ops.sum(gram * gram)), _TINY)
    step = 1.0 / lipschitz
    start = _uniform(num, mask)

    def body(_, state):
        x, y, t = state
        gradient = ops.matmul(gram, y) + linear
        x_next = project_to_simplex(y - step * gradient, mask)
        t_next = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
        # Adaptive restart (O'Donoghue & Candes 2015): drop momentum when it points uphill.
        restart = ops.sum(gradient * (x_next - x)) > 0.0
        momentum = ops.where(restart, 0.0, (t - 1.0) / t_next)
        y_next = x_next + momentum * (x_next - x)
        return x_next, y_next, ops.where(restart, 1.0, t_next)

    x, _, _ = ops.fori_loop(0, num_iterations, body, (start, start, ops.ones(())))
    return x


def min_norm_point(gram, num_iterations=1000, mask=None):
    """Returns `argmin_{a in simplex} a^T G a`, the MGDA min-norm coefficients.

    The point `sum_k a_k g_k` is the point of minimum norm of the convex hull of
    the task gradients (Sener & Koltun, NeurIPS 2018). Exact support enumeration
    for `K <= MAX_ENUMERATION_TASKS`; FISTA plus a polish step beyond.

    Args:
        gram: `(K, K)` Gram matrix of the task gradients (any positive scale).
        num_iterations: FISTA iterations, used only when `K > MAX_ENUMERATION_TASKS`.
        mask: optional boolean `(K,)` of the present tasks: the minimum over
            their simplex (0 for the others; all 0 when no task is present).

    Returns:
        A `(K,)` float32 vector on the probability simplex (of the present tasks).
    """
    gram = normalize_gram(gram)
    num = gram.shape[-1]
    if num == 1:
        ones = ops.ones((1,), dtype="float32")
        return ones if mask is None else ops.where(mask, ones, 0.0)
    if num <= MAX_ENUMERATION_TASKS:
        candidates = _min_norm_on_supports(gram, support_masks(num), mask)
    else:
        approximate = _fista_simplex(gram, ops.zeros((num,), "float32"), num_iterations, mask)
        support = ops.cast(approximate > 1e-6, "float32")[None, :]
        candidates = ops.concatenate(
            [approximate[None, :], _min_norm_on_supports(gram, support, mask)], axis=0
        )
    values = _forbid(_quadratic_forms(candidates, gram), _allowed(candidates, mask))
    result = _select(candidates, values)
    return result if mask is None else ops.where(mask, result, 0.0)


# --------------------------------------------------------------------------- #
# Lower-bounded quadratic program (UPGrad's projection onto the dual cone).
# --------------------------------------------------------------------------- #


def _lower_bounded_on_supports(gram, lower, masks):
    """Stationary point of `v^T G v` with `v_j = lower_j` off each support, clipped up to `lower`.

    `lower` is `(P, K)`, `masks` `(M, K)`; returns `(P, M, K)`.
    """
    inv_scale, unit_gram = _jacobi_scaling(gram)
    systems = _masked_systems(unit_gram, masks)  # (M, K, K)
    # Scaled variables b = D v, lower bound D * lower.
    scaled_lower = lower / inv_scale[None, :]  # (P, K)
    fixed = scaled_lower[:, None, :] * (1.0 - masks)[None]  # (P, M, K)
    rhs = -masks[None] * ops.matmul(fixed, unit_gram) + fixed
    # One system per support, shared by all problems: (M, K, P) right-hand sides.
    solution = solve_positive_definite(systems, ops.transpose(rhs, (1, 2, 0)))
    solution = ops.transpose(solution, (2, 0, 1)) * inv_scale
    return ops.maximum(solution, lower[:, None, :])


def _fista_lower_bounded(gram, lower, num_iterations):
    """Accelerated projected gradient for `min 0.5 v^T G v` s.t. `v >= lower`, batched over rows."""
    lipschitz = ops.maximum(ops.sqrt(ops.sum(gram * gram)), _TINY)
    step = 1.0 / lipschitz

    def body(_, state):
        x, y, t = state
        gradient = ops.matmul(y, gram)
        x_next = ops.maximum(y - step * gradient, lower)
        t_next = 0.5 * (1.0 + ops.sqrt(1.0 + 4.0 * t * t))
        restart = ops.sum(gradient * (x_next - x), axis=-1, keepdims=True) > 0.0
        momentum = ops.where(restart, 0.0, (t - 1.0) / t_next)
        y_next = x_next + momentum * (x_next - x)
        return x_next, y_next, ops.where(restart, 1.0, t_next)

    start = lower
    ones = ops.ones((lower.shape[0], 1), dtype="float32")
    x, _, _ = ops.fori_loop(0, num_iterations, body, (start, start, ones))
    return x


def lower_bounded_qp(gram, lower, num_iterations=2000):
    """Returns `argmin_{v >= lower} v^T G v` for each row of `lower`.

    For `lower = u_i e_i` this is the dual of projecting `u_i g_i` onto the dual
    cone of the task gradients (Quinton & Rey 2024, Proposition 1). Exact support
    enumeration (over the free set) for `K <= MAX_ENUMERATION_TASKS`; FISTA plus
    a polish step beyond.

    Args:
        gram: `(K, K)` Gram matrix (positive semi-definite).
        lower: `(P, K)` lower bounds, one problem per row.
        num_iterations: FISTA iterations, used only when `K > MAX_ENUMERATION_TASKS`.

    Returns:
        A `(P, K)` float32 tensor.
    """
    gram = ops.cast(gram, "float32")
    gram = 0.5 * (gram + ops.transpose(gram))
    lower = ops.cast(lower, "float32")
    num = gram.shape[-1]
    # Scale-free: solve on G / max diag (the minimiser does not change).
    gram = normalize_gram(gram)
    if num <= MAX_ENUMERATION_TASKS:
        candidates = _lower_bounded_on_supports(gram, lower, support_masks(num, True))
    else:
        approximate = _fista_lower_bounded(gram, lower, num_iterations)
        support = ops.cast(approximate > lower + 1e-6 * (1.0 + ops.abs(lower)), "float32")
        polished = ops.stack(
            [
                _lower_bounded_on_supports(gram, lower[p : p + 1], support[p : p + 1])[0, 0]
                for p in range(lower.shape[0])
            ]
        )
        candidates = ops.stack([approximate, polished], axis=1)
    return _select(candidates, _quadratic_forms(candidates, gram))


# --------------------------------------------------------------------------- #
# CAGrad dual.
# --------------------------------------------------------------------------- #


def _conflict_averse_objective(weights, gram, mean_term, radius):
    """`F(w) = w^T G b + radius * sqrt(w^T G w)` for each row of `weights`."""
    linear = ops.sum(weights * mean_term, axis=-1)
    norms = ops.sqrt(ops.maximum(_quadratic_forms(weights, gram), 0.0))
    return linear + radius * norms


def _conflict_averse_on_supports(gram, mean_term, radius, masks, mask=None):
    """Closed-form stationary points of the CAGrad dual, one per support."""
    inv_scale, unit_gram = _jacobi_scaling(gram)
    systems = _masked_systems(unit_gram, masks)
    rhs = ops.stack([masks * inv_scale[None, :], masks * (mean_term * inv_scale)[None, :]], -1)
    solution = solve_positive_definite(systems, rhs) * inv_scale[None, :, None]
    p, q = solution[..., 0], solution[..., 1]
    sum_p = ops.sum(p, axis=-1, keepdims=True)
    sum_p = ops.where(ops.abs(sum_p) > _TINY, sum_p, _TINY)
    base = p / sum_p
    direction = base * ops.sum(q, axis=-1, keepdims=True) - q
    # The ridged Gram matrix these supports were solved for (diag floored as in the scaling).
    ridged = gram + SUPPORT_RIDGE * ops.diag(1.0 / (inv_scale * inv_scale))
    a = _quadratic_forms(base, ridged)
    b = ops.sum(ops.matmul(base, ridged) * direction, axis=-1)
    c = _quadratic_forms(direction, ridged)
    curvature = radius * radius - c
    valid = curvature > 1e-12
    safe = ops.where(valid, curvature, 1.0)
    t = (b + ops.sqrt(ops.maximum(b * b + a * safe, 0.0))) / safe
    t = ops.where(valid & (t > 0.0), t, 0.0)
    stationary = base + t[:, None] * direction
    return ops.concatenate([_renormalize(stationary, mask), _renormalize(base, mask)], axis=0)


def _alternating_conflict_averse(gram, mean_term, radius, num_iterations, mask=None):
    """Projected gradient on the perspective form `w^T G b + r/2 (w^T G w / s + s)`, exact `s`."""
    num = gram.shape[-1]
    lipschitz = ops.maximum(ops.sqrt(ops.sum(gram * gram)), _TINY)
    start = _uniform(num, mask)

    def body(_, w):
        norm = ops.sqrt(ops.maximum(ops.sum(ops.matmul(gram, w) * w), 0.0))
        norm = ops.maximum(norm, 1e-6)
        gradient = mean_term + radius * ops.matmul(gram, w) / norm
        step = norm / ops.maximum(radius * lipschitz, _TINY)
        step = ops.minimum(step, 1.0 / lipschitz)
        return project_to_simplex(w - step * gradient, mask)

    return ops.fori_loop(0, num_iterations, body, start)


def conflict_averse_dual(gram, c, num_iterations=2000, mask=None):
    """Solves the CAGrad dual `min_{w in simplex} w^T G g0 + c ||g0|| ||g_w||`.

    With `g0` the mean gradient (coefficients `1/K`) and `g_w = sum_k w_k g_k`
    (the dual of Liu et al., NeurIPS 2021). On a fixed support `S` the
    stationarity conditions give `w = w0 + t w1` with `w0` the min-norm point of
    `S`'s affine hull, `w1` a direction summing to zero, and `t` the positive
    root of a quadratic (`t = ||g_w|| / (c ||g0||)`), so enumerating the
    supports solves the dual exactly. The min-norm points `w0` are candidates too,
    for the degenerate optimum `g_w = 0`. For `K > MAX_ENUMERATION_TASKS`:
    projected gradient on the perspective reformulation, then a polish step.

    Args:
        gram: `(K, K)` Gram matrix.
        c: the conflict-aversion radius ratio (paper's `c`), a Python float.
        num_iterations: iterations of the fallback, used only when `K > MAX_ENUMERATION_TASKS`.
        mask: optional boolean `(K,)` of the present tasks: `g0` is their mean
            gradient and `w` lies on their simplex (0 for the others).

    Returns:
        `(weights, gram)`: the `(K,)` dual weights `w` on the simplex, and the
        normalised Gram matrix they refer to (`G / max diag`).
    """
    gram = normalize_gram(gram)
    num = gram.shape[-1]
    mean_weights = _uniform(num, mask)
    mean_term = ops.matmul(gram, mean_weights)
    radius = c * ops.sqrt(ops.maximum(ops.sum(mean_term * mean_weights), 0.0))
    if num == 1:
        ones = ops.ones((1,), dtype="float32")
        return (ones if mask is None else ops.where(mask, ones, 0.0)), gram
    if num <= MAX_ENUMERATION_TASKS:
        candidates = _conflict_averse_on_supports(
            gram, mean_term, radius, support_masks(num), mask
        )
    else:
        approximate = _alternating_conflict_averse(
            gram, mean_term, radius, num_iterations, mask
        )
        support = ops.cast(approximate > 1e-6, "float32")[None, :]
        candidates = ops.concatenate(
            [
                approximate[None, :],
                _conflict_averse_on_supports(gram, mean_term, radius, support, mask),
            ],
            axis=0,
        )
    values = _conflict_averse_objective(candidates, gram, mean_term, radius)
    values = _forbid(values, _allowed(candidates, mask))
    result = _select(candidates, values)
    return (result if mask is None else ops.where(mask, result, 0.0)), gram


# --------------------------------------------------------------------------- #
# Nash bargaining (Nash-MTL).
# --------------------------------------------------------------------------- #


def _nash_objective(weights, gram):
    """`0.5 a^T G a - sum log a`, whose minimiser solves `G a = 1 / a`."""
    return 0.5 * _quadratic_forms(weights, gram) - ops.sum(ops.log(weights), axis=-1)


def _best_scaled_start(candidates, gram):
    """Rescales each positive row `u` optimally (`u sqrt(K / u^T G u)`) and keeps the best."""
    num = gram.shape[-1]
    curvature = ops.maximum(_quadratic_forms(candidates, gram), _TINY)
    scaled = candidates * ops.sqrt(num / curvature)[:, None]
    return _select(scaled, _nash_objective(scaled, gram))


def nash_bargaining(gram, initial=None, reg_eps=1e-6, num_iterations=30):
    """Returns the positive solution `a` of `(G + reg_eps diag(G)) a = 1 / a` (elementwise).

    This is the Nash bargaining solution of Navon et al. (ICML 2022),
    with a relative ridge. With `s_k = sqrt(G[k, k])` and `z = s * a` the
    equation reads `(Gu + reg_eps I) z = 1 / z` for the unit-diagonal
    `Gu = G / (s s^T)`, so the problem is solved on `O(1)` numbers whatever the
    gradient norms. `z` minimises the strictly convex, self-concordant
    `f(z) = 0.5 z^T (Gu + eps I) z - sum_k log z_k` on `z > 0`; it is found by
    damped Newton steps in the scaled variable `z = z_t * (1 + y)`, whose
    Hessian is `D Gu D + I` (`D = diag(z_t)`). The damped step
    `y / (1 + lambda)` (lambda the Newton decrement) converges globally, then
    quadratically, and keeps `z > 0`; a fraction-to-boundary cap and a guard
    against non-finite steps keep it so under float32 rounding too.

    Without the ridge a positive solution exists exactly when 0 is not in the
    convex hull of the gradients: gradients that cancel have none, and the
    iterates would grow without bound. The ridge always gives a unique finite
    solution, with `||z|| <= sqrt(K / reg_eps)` (since `z^T (Gu + eps I) z = K`),
    and moves a well-posed solution by about `reg_eps * z_k^2` relative. In
    float32 the ill-posed solutions (`z ~ 1 / sqrt(reg_eps)`) are only found to
    a few percent (the Hessian's condition number is `~K / reg_eps`). Zero
    gradients (`G[k, k]` below `ZERO_NORM_FLOOR` times the largest) should be
    removed by the caller: their `a_k` is huge (but finite).

    Args:
        gram: `(K, K)` Gram matrix (any positive scale).
        initial: optional `(K,)` positive warm start (e.g. the previous solution).
        reg_eps: the ridge, relative to each task's squared gradient norm.
        num_iterations: the most damped Newton steps; the loop stops earlier
            once Newton's decrement falls below 1e-6 (a few steps from a warm
            start).

    Returns:
        A `(K,)` float32 positive vector.
    """
    gram = ops.cast(gram, "float32")
    num = gram.shape[-1]
    eye = ops.eye(num, dtype="float32")
    inv_scale, unit_gram = _jacobi_scaling(0.5 * (gram + ops.transpose(gram)))
    ridged = unit_gram + reg_eps * eye
    starts = [ops.ones((num,), dtype="float32")]
    if initial is not None:
        starts.append(ops.maximum(ops.cast(initial, "float32") / inv_scale, 1e-12))
    weights = _best_scaled_start(ops.stack(starts), ridged)

    def body(iteration, z, _):
        residual = z * ops.matmul(ridged, z) - 1.0
        hessian = z[:, None] * ridged * z[None, :] + eye
        step = -ops.solve(hessian, residual[:, None])[:, 0]
        step = ops.where(ops.all(ops.isfinite(step)), step, ops.zeros_like(step))
        decrement = ops.sqrt(ops.maximum(-ops.sum(residual * step), 0.0))
        # Never move more than 90% of the way to the boundary z = 0.
        shrink = ops.max(-step)
        length = ops.minimum(1.0 / (1.0 + decrement), 0.9 / ops.maximum(shrink, 1e-12))
        return iteration + 1, z * (1.0 + length * step), decrement

    def not_converged(iteration, _, decrement):
        # Newton's decrement bounds the distance to the optimum (f(z) - f* ~
        # decrement^2 / 2 near it); below the tolerance the step just taken was
        # already a full, quadratically convergent one, so further steps only
        # move float32 rounding.
        return ops.logical_and(iteration < num_iterations, decrement > _NEWTON_TOLERANCE)

    start = (ops.zeros((), "int32"), weights, ops.ones((), "float32"))
    _, weights, _ = ops.while_loop(not_converged, body, start)
    return weights * inv_scale
