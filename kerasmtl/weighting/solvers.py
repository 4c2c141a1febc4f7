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

Solver choices. All three quadratic-type problems are solved *exactly* (up to
float32 rounding and a `~1e-6` relative ridge), at every `K`:

- For `K <= ENUMERATION_UP_TO` (measured faster there; `EAGER_ENUMERATION_UP_TO`
  on PyTorch, which runs the solvers eagerly) by enumerating every
  support (active set): on a fixed support the KKT conditions are linear (a
  closed form for CAGrad), so all `2^K - 1` candidates are solved in one
  batched linear solve (`solve_positive_definite`, an unrolled Gauss-Jordan
  elimination); each candidate is made feasible, the true objective evaluated,
  and the best kept.
- Beyond, by a primal active-set method (Wolfe's min-norm-point algorithm and
  its analogue with bounds; Nocedal & Wright, Algorithm 16.3): a feasible
  iterate, one masked `K x K` solve per step, one task entering or leaving
  the free set per step, in an `ops.while_loop` that stops at the KKT point
  (a static `num_iterations` only bounds it). It takes about twice the size of
  the optimal support in steps (measured: ~20 steps at K = 20, ~35 at K = 40).
  Every problem first runs a primal-dual active-set method, which moves many
  constraints per step and certifies most problems in a handful of steps, and
  hands a problem that cycles to the primal method, from the best feasible
  point it has seen (`_primal_dual_simplex` for MGDA's and CAGrad's simplex,
  `_lower_bounded_active_set` for UPGrad's K problems). The result is the
  primal method's: both stop only at its optimality test.

The linear systems are solved after a Jacobi scaling (unit diagonal) with a
tiny ridge `SUPPORT_RIDGE * I`, which keeps every system positive definite
whatever the conditioning of `G` (rank-deficient, duplicated or zero gradients
included) and biases the optimum only by `~1e-6` relative. `method=` selects
either solver explicitly (`"enumeration"`, `"active_set"`; default `"auto"`).
"""

import itertools

import keras
from keras import ops

from kerasmtl.weighting import gram_utils

#: Largest number of tasks that support enumeration accepts (2^K - 1 systems).
MAX_ENUMERATION_TASKS = 10
#: `method="auto"` enumerates supports up to this many tasks (measured faster
#: there), and runs the active-set method beyond.
ENUMERATION_UP_TO = 5
#: The same bound on PyTorch, whose solvers run eagerly, one kernel launch per
#: op: there the active-set method was faster from 4 tasks (MGDA and CAGrad at
#: K = 5: 1.1 ms against 2.1-2.5 ms; UPGrad even).
EAGER_ENUMERATION_UP_TO = 3
#: Ridge added to the unit-diagonal (Jacobi-scaled) Gram matrix of each support.
SUPPORT_RIDGE = 1e-6
#: Squared gradient norms below this fraction of the largest are treated as zero
#: (one threshold for the whole kit, defined in `gram_utils`).
ZERO_NORM_FLOOR = gram_utils.ZERO_SQUARED_NORM_RTOL
_TINY = 1e-30
# Newton's decrement below which `nash_bargaining` stops.
_NEWTON_TOLERANCE = 1e-6
# KKT multipliers below -_KKT_RTOL times their terms' scale release a bound task.
_KKT_RTOL = 1e-6
# CAGrad's affine subproblem is bounded when radius^2 - c > this times radius^2.
_CURVATURE_FLOOR = 1e-6
_METHODS = ("auto", "enumeration", "active_set")
# Steps without fewer violations after which a row of `lower_bounded_qp`'s
# primal-dual method goes on with the primal method (Kim & Park's backup count).
_PRIMAL_DUAL_PATIENCE = 3
# `lower_bounded_qp`'s steps solve only rows // this many problems once no more are left.
_NARROW_FRACTION = 4
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
# Primal active-set method (any K).
# --------------------------------------------------------------------------- #


def _check_method(method, num):
    """`True` for support enumeration, `False` for the active-set method."""
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {list(_METHODS)}. Received: method={method!r}")
    if method == "enumeration" and num > MAX_ENUMERATION_TASKS:
        raise ValueError(
            f"Support enumeration solves 2^K - 1 systems and is limited to "
            f"{MAX_ENUMERATION_TASKS} tasks; use method='active_set' or 'auto'. "
            f"Received: method={method!r} with K={num}"
        )
    if method == "auto":
        eager = keras.backend.backend() == "torch"
        return num <= (EAGER_ENUMERATION_UP_TO if eager else ENUMERATION_UP_TO)
    return method == "enumeration"


def _working_matrices(gram):
    """`(inv_scale, ridged_unit, ridged)` for a symmetric, normalised Gram matrix.

    `ridged_unit = D^-1 G D^-1 + SUPPORT_RIDGE I` (Jacobi scaling, `D = sqrt(diag G)`
    floored as in `_jacobi_scaling`) is what the linear solves see; `ridged =
    D ridged_unit D` is the same matrix in the original variables, used for every
    gradient and objective of the active-set method, so that its optimality
    tests and its solves describe one problem.
    """
    inv_scale, unit_gram = _jacobi_scaling(gram)
    num = gram.shape[-1]
    ridged_unit = unit_gram + SUPPORT_RIDGE * ops.eye(num, dtype="float32")
    scale = 1.0 / inv_scale
    return inv_scale, ridged_unit, ridged_unit * scale[:, None] * scale[None, :]


def _free_solve(ridged_unit, free, rhs):
    """Solves `ridged_unit` on each free set (identity elsewhere) for `(..., K, R)` `rhs`.

    Every such matrix is symmetric positive definite (the ridge), so the LU
    factorisation of `ops.solve` never meets a zero pivot.
    """
    num = ridged_unit.shape[-1]
    eye = ops.eye(num, dtype="float32")
    inside = free[..., :, None] * free[..., None, :]
    matrices = inside * ridged_unit + (1.0 - free)[..., :, None] * eye
    return ops.solve(matrices, rhs)


def _first_blocking(gaps, delta, free):
    """Largest step along `delta` keeping every free entry's `gap` non-negative.

    Returns `(t, blocker)` on the last axis; `t = inf` when no free entry decreases.
    """
    decreasing = ops.logical_and(free > 0.0, delta < 0.0)
    ratios = gaps / ops.where(decreasing, -delta, 1.0)
    ratios = ops.where(decreasing, ops.maximum(ratios, 0.0), float("inf"))
    return ops.min(ratios, axis=-1), ops.argmin(ratios, axis=-1)


def _active_set_simplex(allowed, start, target, gradient, max_iterations):
    """Minimises a convex `F` on the simplex of the `allowed` tasks (primal active set).

    The iterate `x` is always feasible and its free set `S` holds its positive
    entries (plus, for one step, the task just released). Each iteration asks
    `target(S)` for the minimiser `y` of `F` on the affine hull of `S` (or, when
    `F` is unbounded below there, a descent direction summing to 0). When `y` is
    in the simplex, `x` moves to it and the bound task with the most negative
    KKT multiplier `d_j F - x^T grad F` (beyond a float32 tolerance) is
    released; if there is none, `x` is optimal. Otherwise `x` moves towards `y`
    until the first free entry reaches 0, and that task is bound. `F` never
    increases on these segments (convexity) and strictly decreases between two
    visits of a free set, so the method ends after finitely many steps,
    typically about twice the size of the optimal support (Wolfe, "Finding the
    nearest point in a polytope", Mathematical Programming 1976; Nocedal &
    Wright, "Numerical Optimization", 2nd ed. 2006, Algorithm 16.3).
    `max_iterations` only bounds the loop against float32 cycling; the result is
    feasible whenever it stops.

    Args:
        allowed: `(K,)` boolean: the tasks that may enter.
        start: `(K,)` a feasible vertex.
        target: `free -> (y, unbounded)` with `y` `(K,)`, 0 off `free`.
        gradient: `x -> (grad F(x), noise)`, `noise` `(K,)` the float32
            resolution of each gradient entry.
        max_iterations: bound on the iterations.
    """
    num = start.shape[-1]

    def body(iteration, x, free, _):
        y, unbounded = target(free)
        delta = ops.where(unbounded, y, y - x)
        t_block, blocker = _first_blocking(x, delta, free)
        blocked = ops.logical_or(unbounded, t_block < 1.0)
        t = ops.where(unbounded, t_block, ops.minimum(t_block, 1.0))
        # An unbounded direction along which nothing decreases (round-off): stay.
        t = ops.where(t < float("inf"), t, 0.0)
        keep = 1.0 - ops.where(blocked, ops.one_hot(blocker, num, dtype="float32"), 0.0)
        moved = ops.maximum(x + t * delta, 0.0) * free * keep
        moved = moved / ops.maximum(ops.sum(moved), _TINY)
        grad, noise = gradient(moved)
        multipliers = grad - ops.sum(moved * grad)
        bound = ops.logical_and(allowed, free * keep == 0.0)
        slack = ops.where(bound, multipliers + noise, float("inf"))
        release = ops.logical_and(ops.logical_not(blocked), ops.min(slack) < 0.0)
        entering = ops.where(release, ops.one_hot(ops.argmin(slack), num, dtype="float32"), 0.0)
        # The task just released is bound again at once: its multiplier was
        # float32 noise, and x is optimal.
        stuck = ops.logical_and(blocked, t <= 0.0)
        optimal = ops.logical_and(ops.logical_not(blocked), ops.logical_not(release))
        x_next = ops.where(stuck, x, moved)
        free_next = ops.maximum(free * keep, entering)
        return iteration + 1, x_next, free_next, ops.logical_or(optimal, stuck)

    def running(iteration, _x, _free, done):
        return ops.logical_and(iteration < max_iterations, ops.logical_not(done))

    free = ops.cast(start > 0.0, "float32")
    state = (ops.zeros((), "int32"), start, free, ops.zeros((), "bool"))
    _, x, _, _ = ops.while_loop(running, body, state)
    return x


def _primal_dual_simplex(allowed, start, target, gradient, objective, max_iterations):
    """Minimises a convex `F` on the simplex of the `allowed` tasks: primal-dual first.

    The same problem, subproblem (`target`) and optimality test as
    `_active_set_simplex`, solved first by the primal-dual active-set strategy
    (Hintermueller, Ito & Kunisch, SIAM J. Optim. 2002; block principal
    pivoting, Kim & Park, SIAM J. Sci. Comput. 2011), as `lower_bounded_qp`
    does for its bounds: with `S` the free set, `y = target(S)` (0 off `S`,
    summing to 1); the next free set drops the entries of `S` where `y < 0` and
    takes in the bound entries whose KKT multiplier `d_j F(y) - y^T grad F(y)`
    is negative beyond the float32 tolerance. Any number of tasks enter or
    leave per step, where the primal method moves one at a time (about twice
    the optimal support's size in steps). It ends when no entry violates these
    tests: `y` is then feasible and satisfies the primal method's optimality
    test, so both methods return the same point.

    The primal-dual strategy can cycle (its convergence is proved for
    M-matrices only), and on CAGrad's subproblem the affine minimiser may not
    exist: when the number of violations has not decreased for
    `_PRIMAL_DUAL_PATIENCE` steps, or `target` reports an unbounded direction,
    the primal method (`_active_set_simplex`, finite) goes on from the feasible
    point of lowest `objective` seen (a clipped and renormalised `y`, or
    `start`). `max_iterations` bounds each method's steps.

    Args:
        allowed, start, target, gradient, max_iterations: as in `_active_set_simplex`.
        objective: `x -> F(x)` for a `(K,)` feasible point.
    """
    num = start.shape[-1]

    def body(iteration, free, best, best_value, fewest, patience, _certified, _switch):
        y, unbounded = target(free)
        grad, noise = gradient(y)
        multipliers = grad - ops.sum(y * grad)
        is_free = free > 0.0
        violated = ops.where(
            is_free,
            y < 0.0,
            ops.logical_and(allowed, multipliers + noise < 0.0),
        )
        count = ops.sum(ops.cast(violated, "int32"))
        certified = ops.logical_and(ops.logical_not(unbounded), count == 0)
        clipped = ops.maximum(y, 0.0) * free
        total = ops.sum(clipped)
        feasible = ops.logical_and(ops.logical_not(unbounded), total > _TINY)
        clipped = clipped / ops.maximum(total, _TINY)
        value = objective(clipped)
        better = ops.logical_and(feasible, value < best_value)
        best = ops.where(certified, y, ops.where(better, clipped, best))
        best_value = ops.where(better, value, best_value)
        patience = ops.where(count < fewest, _PRIMAL_DUAL_PATIENCE, patience - 1)
        fewest = ops.minimum(count, fewest)
        switch = ops.logical_and(
            ops.logical_not(certified), ops.logical_or(unbounded, patience < 0)
        )
        free_next = ops.where(violated, 1.0 - free, free)
        return iteration + 1, free_next, best, best_value, fewest, patience, certified, switch

    def running(iteration, *state):
        certified, switch = state[-2], state[-1]
        return ops.logical_and(
            iteration < max_iterations,
            ops.logical_not(ops.logical_or(certified, switch)),
        )

    # Start at the vertex with every bound task of negative multiplier released.
    grad, noise = gradient(start)
    multipliers = grad - ops.sum(start * grad)
    free = ops.cast(
        ops.logical_or(start > 0.0, ops.logical_and(allowed, multipliers + noise < 0.0)),
        "float32",
    )
    state = (
        ops.zeros((), "int32"),
        free,
        start,
        objective(start),
        ops.convert_to_tensor(num + 1, "int32"),
        ops.convert_to_tensor(_PRIMAL_DUAL_PATIENCE, "int32"),
        ops.zeros((), "bool"),
        ops.zeros((), "bool"),
    )
    _, _, best, _, _, _, certified, _ = ops.while_loop(running, body, state)
    return ops.cond(
        certified,
        lambda: best,
        lambda: _active_set_simplex(allowed, best, target, gradient, max_iterations),
    )


def _cheapest_vertex(diagonal, mask):
    """The vertex `e_k` of the (present tasks') simplex with the smallest `G[k, k]`."""
    num = diagonal.shape[-1]
    if mask is not None:
        diagonal = ops.where(mask, diagonal, float("inf"))
    return ops.one_hot(ops.argmin(diagonal), num, dtype="float32")


def _allowed_tasks(num, mask):
    return ops.ones((num,), dtype="bool") if mask is None else ops.cast(mask, "bool")


def _kkt_noise(ridged, weights, extra=0.0):
    """Per-entry float32 resolution of `ridged @ weights` (`_KKT_RTOL` times its terms' scale)."""
    scale = ops.sqrt(ops.maximum(ops.diagonal(ridged), 0.0))
    return _KKT_RTOL * scale * (ops.sum(ops.abs(weights) * scale, axis=-1, keepdims=True) + extra)


def _min_norm_active_set(gram, max_iterations, mask, primal_dual=True):
    inv_scale, ridged_unit, ridged = _working_matrices(gram)

    def target(free):
        # min a^T G a on sum(a) = 1 over the free set: a ~ G_S^-1 1, in Jacobi variables.
        solution = _free_solve(ridged_unit, free, (free * inv_scale)[:, None])[:, 0]
        p = solution * inv_scale
        return p / ops.maximum(ops.sum(p), _TINY), ops.zeros((), "bool")

    def gradient(x):
        return ops.matmul(ridged, x), _kkt_noise(ridged, x)

    start = _cheapest_vertex(ops.diagonal(gram), mask)
    allowed = _allowed_tasks(gram.shape[-1], mask)
    if not primal_dual:
        return _active_set_simplex(allowed, start, target, gradient, max_iterations)
    return _primal_dual_simplex(
        allowed, start, target, gradient, lambda x: _quadratic_forms(x, ridged), max_iterations
    )


def _lower_bounded_active_set(gram, lower, max_iterations):
    """Active-set method for `min v^T G v` s.t. `v >= lower`, one problem per row.

    All rows iterate together, one batched solve per step: with `B` a row's
    bound set, `y` is the minimiser with `y_B = lower_B` and the other entries
    free. Each row runs one of two methods on it:

    - Primal-dual active set first (Hintermueller, Ito & Kunisch, "The
      primal-dual active set strategy as a semismooth Newton method", SIAM J.
      Optim. 2002; as block principal pivoting, Kim & Park, SIAM J. Sci.
      Comput. 2011): the next bound set holds the free entries of `y` below
      their bound and the bound entries whose multiplier `(G y)_j` stays
      non-negative. Any number of constraints enter or leave per step, so it
      typically ends in a handful of steps. It ends when no entry violates
      these tests (the primal method's optimality test, up to the same float32
      tolerance).
    - It can cycle on matrices that are not M-matrices: a row whose number of
      violations has not decreased for `_PRIMAL_DUAL_PATIENCE` steps goes on
      with the primal method (the analogue of `_active_set_simplex` with bounds
      instead of the simplex), from the feasible point of lowest objective seen
      (a clipped `y`, or `lower`): move towards `y`, bind the first entry that
      reaches its bound, or, at `y`, release the bound entry with the most
      negative gradient `(G v)_j`. The primal method ends finitely.

    A row that is optimal stays put; `max_iterations` bounds the steps of both
    methods together. The primal step is computed only in a step where an
    unfinished row is on it (`ops.cond`: most steps have none; 12-17% less
    solver time at K = 10-20). Once at most a quarter of the rows are
    unfinished, each step solves only those. Measured on UPGrad's 40 problems (rank-16 Gram
    matrices, 3 seeds): 14-21 steps in all, 7-14 of them on every row, where
    the primal method alone took 32-40 steps on every row (K = 20: 5-9 against
    13-17).
    """
    inv_scale, ridged_unit, ridged = _working_matrices(gram)
    num = gram.shape[-1]
    rows = lower.shape[0]

    def step(lower, v, free, done, primal, best, best_value, fewest, patience):
        """One step of each row of `lower` (any subset of the rows, with its state)."""
        scaled_lower = lower / inv_scale  # Jacobi variables b = D v
        fixed = scaled_lower * (1.0 - free)
        rhs = fixed - free * ops.matmul(fixed, ridged_unit)
        y = _free_solve(ridged_unit, free, rhs[..., None])[..., 0] * inv_scale
        # Primal-dual step.
        y_pd = ops.where(free > 0.0, y, lower)
        grad_pd = ops.matmul(y_pd, ridged)
        violated = ops.where(free > 0.0, y_pd < lower, grad_pd + _kkt_noise(ridged, y_pd) < 0.0)
        count = ops.sum(ops.cast(violated, "int32"), axis=-1)
        certified = count == 0
        clipped = ops.maximum(y_pd, lower)
        value = _quadratic_forms(clipped, ridged)
        better = value < best_value
        best = ops.where(better[:, None], clipped, best)
        best_value = ops.where(better, value, best_value)
        patience = ops.where(count < fewest, _PRIMAL_DUAL_PATIENCE, patience - 1)
        fewest = ops.minimum(count, fewest)
        switch = ops.logical_and(ops.logical_not(certified), patience < 0)
        flipped = ops.where(violated, 1.0 - free, free)
        pd_free = ops.where(switch[:, None], ops.cast(best > lower, "float32"), flipped)
        pd_v = ops.where(certified[:, None], y_pd, ops.where(switch[:, None], best, v))

        # Primal step, computed only in a step where some unfinished row is on it.
        def primal_step():
            delta = y - v
            t_block, blocker = _first_blocking(v - lower, delta, free)
            blocked = t_block < 1.0
            t = ops.minimum(t_block, 1.0)[:, None]
            one_hot = ops.one_hot(blocker, num, dtype="float32")
            free_kept = free * (1.0 - ops.where(blocked[:, None], one_hot, 0.0))
            moved = ops.maximum(v + t * delta, lower)
            moved = ops.where(free_kept > 0.0, moved, lower)
            grad = ops.matmul(moved, ridged)
            slack = ops.where(free_kept == 0.0, grad + _kkt_noise(ridged, moved), float("inf"))
            release = ops.logical_and(ops.logical_not(blocked), ops.min(slack, axis=-1) < 0.0)
            entering = ops.where(
                release[:, None], ops.one_hot(ops.argmin(slack, axis=-1), num, dtype="float32"), 0.0
            )
            stuck = ops.logical_and(blocked, t[:, 0] <= 0.0)
            optimal = ops.logical_and(ops.logical_not(blocked), ops.logical_not(release))
            return (
                ops.where(stuck[:, None], v, moved),
                ops.where(stuck[:, None], free, ops.maximum(free_kept, entering)),
                ops.logical_or(optimal, stuck),
            )

        def no_primal_step():
            return v, free, done

        p_v, p_free, p_done = ops.cond(
            ops.any(ops.logical_and(primal, ops.logical_not(done))), primal_step, no_primal_step
        )
        # Each row takes its method's step; a finished row stays put.
        on_primal = primal[:, None]
        v_next = ops.where(on_primal, p_v, pd_v)
        free_next = ops.where(on_primal, p_free, pd_free)
        finished = ops.where(primal, p_done, certified)
        return (
            ops.where(done[:, None], v, v_next),
            ops.where(done[:, None], free, free_next),
            ops.logical_or(done, finished),
            ops.logical_or(primal, switch),
            best,
            best_value,
            fewest,
            patience,
        )

    # Once few rows are left, each step solves only `narrow` of them (the
    # unfinished ones first): a step's cost is that of its batched solve. With
    # too few rows for that (one, for DualProj), every step solves all of them.
    narrow = max(rows // _NARROW_FRACTION, 1)
    wide_until = narrow if narrow < rows else 0

    def unfinished(done):
        return ops.sum(ops.cast(ops.logical_not(done), "int32"))

    def wide_running(iteration, state):
        return ops.logical_and(iteration < max_iterations, unfinished(state[2]) > wide_until)

    def wide_body(iteration, state):
        return iteration + 1, step(lower, *state)

    def narrow_running(iteration, state):
        return ops.logical_and(iteration < max_iterations, unfinished(state[2]) > 0)

    def narrow_body(iteration, state):
        order = ops.argsort(ops.cast(state[2], "int32"))[:narrow]
        taken = step(ops.take(lower, order, axis=0), *[ops.take(x, order, axis=0) for x in state])
        indices = order[:, None]
        return iteration + 1, tuple(ops.scatter_update(x, indices, y) for x, y in zip(state, taken))

    # Start from v = lower, every bound with a negative multiplier released.
    free = ops.cast(ops.matmul(lower, ridged) + _kkt_noise(ridged, lower) < 0.0, "float32")
    state = (
        lower,
        free,
        ops.zeros((rows,), dtype="bool"),
        ops.zeros((rows,), dtype="bool"),
        lower,
        _quadratic_forms(lower, ridged),
        ops.full((rows,), num + 1, dtype="int32"),
        ops.full((rows,), _PRIMAL_DUAL_PATIENCE, dtype="int32"),
    )
    iteration = ops.zeros((), "int32")
    iteration, state = ops.while_loop(wide_running, wide_body, (iteration, state))
    if narrow < rows:
        iteration, state = ops.while_loop(narrow_running, narrow_body, (iteration, state))
    return state[0]


def _conflict_averse_active_set(gram, mean_term, radius, max_iterations, mask, primal_dual=True):
    inv_scale, ridged_unit, ridged = _working_matrices(gram)
    radius_squared = radius * radius

    def target(free):
        # On the affine hull of S: w = base + t dir, base = G_S^-1 1 / (1^T G_S^-1 1),
        # dir = (1^T G_S^-1 h) base - G_S^-1 h (H-orthogonal to base, sums to 0),
        # t = ||g_w|| / radius = sqrt(a / (radius^2 - c)), a = ||base||_G^2, c = ||dir||_G^2.
        rhs = ops.stack([free * inv_scale, free * mean_term * inv_scale], axis=-1)
        solution = _free_solve(ridged_unit, free, rhs) * inv_scale[:, None]
        p, q = solution[:, 0], solution[:, 1]
        base = p / ops.maximum(ops.sum(p), _TINY)
        direction = base * ops.sum(q) - q
        a = ops.sum(ops.matmul(ridged, base) * base)
        c = ops.maximum(ops.sum(ops.matmul(ridged, direction) * direction), 0.0)
        curvature = radius_squared - c
        bounded = curvature > _CURVATURE_FLOOR * ops.maximum(radius_squared, _TINY)
        # F decreases without bound along `direction` when radius^2 < c.
        unbounded = ops.logical_and(ops.logical_not(bounded), c > _TINY)
        t = ops.sqrt(ops.maximum(a, 0.0) / ops.where(bounded, curvature, 1.0))
        y = base + ops.where(bounded, t, 0.0) * direction
        return ops.where(unbounded, direction, y), unbounded

    def gradient(w):
        g_w = ops.matmul(ridged, w)
        norm = ops.sqrt(ops.maximum(ops.sum(g_w * w), _TINY))
        grad = mean_term + radius * g_w / norm
        mean_scale = ops.sum(ops.abs(mean_term))
        noise = _kkt_noise(ridged, w) * (radius / norm)
        return grad, noise + _KKT_RTOL * mean_scale

    def objective(w):
        return _conflict_averse_objective(w, ridged, mean_term, radius)

    start = _cheapest_vertex(mean_term, mask)
    allowed = _allowed_tasks(gram.shape[-1], mask)
    if not primal_dual:
        return _active_set_simplex(allowed, start, target, gradient, max_iterations)
    return _primal_dual_simplex(allowed, start, target, gradient, objective, max_iterations)


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


def min_norm_point(gram, num_iterations=1000, mask=None, method="auto"):
    """Returns `argmin_{a in simplex} a^T G a`, the MGDA min-norm coefficients.

    The point `sum_k a_k g_k` is the point of minimum norm of the convex hull of
    the task gradients (Sener & Koltun, NeurIPS 2018). Solved exactly: by
    support enumeration for `K <= ENUMERATION_UP_TO` (`method="auto"`), by a
    primal-dual active-set method beyond, with Wolfe's primal method as its
    fallback (see `_primal_dual_simplex` and `_active_set_simplex`).

    Args:
        gram: `(K, K)` Gram matrix of the task gradients (any positive scale).
        num_iterations: the most active-set iterations (the method stops at the
            optimum, after about twice the optimal support's size).
        mask: optional boolean `(K,)` of the present tasks: the minimum over
            their simplex (0 for the others; all 0 when no task is present).
        method: `"auto"`, `"enumeration"` (`K <= MAX_ENUMERATION_TASKS`) or
            `"active_set"`.

    Returns:
        A `(K,)` float32 vector on the probability simplex (of the present tasks).
    """
    gram = normalize_gram(gram)
    num = gram.shape[-1]
    enumerate_supports = _check_method(method, num)
    if num == 1:
        ones = ops.ones((1,), dtype="float32")
        return ones if mask is None else ops.where(mask, ones, 0.0)
    if enumerate_supports:
        candidates = _min_norm_on_supports(gram, support_masks(num), mask)
        values = _forbid(_quadratic_forms(candidates, gram), _allowed(candidates, mask))
        result = _select(candidates, values)
    else:
        result = _min_norm_active_set(gram, num_iterations, mask)
    if mask is None:
        return result
    return ops.where(ops.logical_and(mask, ops.any(mask)), result, 0.0)


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


def lower_bounded_qp(gram, lower, num_iterations=2000, method="auto"):
    """Returns `argmin_{v >= lower} v^T G v` for each row of `lower`.

    For `lower = u_i e_i` this is the dual of projecting `u_i g_i` onto the dual
    cone of the task gradients (Quinton & Rey 2024, Proposition 1). Solved
    exactly: by enumerating the free sets for `K <= ENUMERATION_UP_TO`
    (`method="auto"`), beyond by a primal-dual active-set method (many
    constraints per step) with a primal active-set fallback, all rows at once
    (see `_lower_bounded_active_set`).

    Args:
        gram: `(K, K)` Gram matrix (positive semi-definite).
        lower: `(P, K)` lower bounds, one problem per row.
        num_iterations: the most active-set steps, both methods together (the
            method stops once every row is optimal).
        method: `"auto"`, `"enumeration"` (`K <= MAX_ENUMERATION_TASKS`) or
            `"active_set"`.

    Returns:
        A `(P, K)` float32 tensor.
    """
    lower = ops.cast(lower, "float32")
    num = gram.shape[-1]
    enumerate_supports = _check_method(method, num)
    # Scale-free: solve on G / max diag (the minimiser does not change).
    gram = normalize_gram(gram)
    if enumerate_supports:
        candidates = _lower_bounded_on_supports(gram, lower, support_masks(num, True))
        return _select(candidates, _quadratic_forms(candidates, gram))
    return _lower_bounded_active_set(gram, lower, num_iterations)


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


def conflict_averse_dual(gram, c, num_iterations=2000, mask=None, method="auto"):
    """Solves the CAGrad dual `min_{w in simplex} w^T G g0 + c ||g0|| ||g_w||`.

    With `g0` the mean gradient (coefficients `1/K`) and `g_w = sum_k w_k g_k`
    (the dual of Liu et al., NeurIPS 2021). On a fixed support `S` the
    stationarity conditions give `w = w0 + t w1` with `w0` the min-norm point of
    `S`'s affine hull, `w1` a direction summing to zero, and `t` the positive
    root of a quadratic (`t = ||g_w|| / (c ||g0||)`). For
    `K <= ENUMERATION_UP_TO` (`method="auto"`) every support is solved so and the
    best feasible point kept (the min-norm points `w0` are candidates too, for
    the degenerate optimum `g_w = 0`); beyond, the same closed form is the
    subproblem of a primal-dual active-set method with a primal fallback
    (`_primal_dual_simplex`, `_active_set_simplex`). Both are exact.

    Args:
        gram: `(K, K)` Gram matrix.
        c: the conflict-aversion radius ratio (paper's `c`), a Python float.
        num_iterations: the most active-set iterations.
        mask: optional boolean `(K,)` of the present tasks: `g0` is their mean
            gradient and `w` lies on their simplex (0 for the others).
        method: `"auto"`, `"enumeration"` (`K <= MAX_ENUMERATION_TASKS`) or
            `"active_set"`.

    Returns:
        `(weights, gram)`: the `(K,)` dual weights `w` on the simplex, and the
        normalised Gram matrix they refer to (`G / max diag`).
    """
    gram = normalize_gram(gram)
    num = gram.shape[-1]
    enumerate_supports = _check_method(method, num)
    mean_weights = _uniform(num, mask)
    mean_term = ops.matmul(gram, mean_weights)
    radius = c * ops.sqrt(ops.maximum(ops.sum(mean_term * mean_weights), 0.0))
    if num == 1:
        ones = ops.ones((1,), dtype="float32")
        return (ones if mask is None else ops.where(mask, ones, 0.0)), gram
    if enumerate_supports:
        candidates = _conflict_averse_on_supports(gram, mean_term, radius, support_masks(num), mask)
        values = _conflict_averse_objective(candidates, gram, mean_term, radius)
        values = _forbid(values, _allowed(candidates, mask))
        result = _select(candidates, values)
    else:
        result = _conflict_averse_active_set(gram, mean_term, radius, num_iterations, mask)
    if mask is None:
        return result, gram
    return ops.where(ops.logical_and(mask, ops.any(mask)), result, 0.0), gram


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
