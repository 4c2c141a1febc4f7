"""Gram-matrix helpers shared by the gradient-based strategies, their solvers and trainers.

This module is the one home of the zero-gradient threshold (`ZERO_NORM_RTOL`,
used by `kerasmtl.weighting.solvers` and every strategy) and of `mask_gram`
(absent tasks). Everything here works on the `(K, K)` Gram matrix of the task gradients with
`keras.ops` only, in float32, with a static `K` and no branching on tensor
values, so it traces inside a `tf.function` (also with `jit_compile=True`).
"""

import keras
from keras import ops

#: A task gradient whose norm is below this fraction of the largest task-gradient
#: norm is treated as zero (about float32's resolution: nothing below it changes
#: the sum of the gradients).
ZERO_NORM_RTOL = 1e-7
#: The same threshold on squared norms (the Gram matrix's diagonal).
ZERO_SQUARED_NORM_RTOL = ZERO_NORM_RTOL * ZERO_NORM_RTOL


def symmetric_gram(gram):
    """Casts to float32 and symmetrises (`0.5 (G + G^T)`), removing round-off asymmetry."""
    gram = ops.cast(gram, "float32")
    return 0.5 * (gram + ops.transpose(gram))


def squared_norms(gram):
    """The diagonal of the Gram matrix, clipped at 0."""
    return ops.maximum(ops.diagonal(gram), 0.0)


def nonzero_mask(sq_norms):
    """Boolean `(K,)`: which gradients are not zero (relative to the largest one)."""
    return sq_norms > ZERO_SQUARED_NORM_RTOL * ops.max(sq_norms)


def mask_gram(gram, present):
    """Zeroes the rows and columns of absent tasks (whatever their gradients held)."""
    both = ops.logical_and(present[:, None], present[None, :])
    return ops.where(both, gram, ops.zeros_like(gram))


def all_finite(*tensors):
    """A scalar boolean: every entry of every tensor is finite."""
    return ops.all(ops.stack([ops.all(ops.isfinite(t)) for t in tensors]))


def safe_divide(numerator, denominator, mask):
    """`numerator / denominator` where `mask`, else 0, without ever dividing by 0."""
    return ops.where(mask, numerator / ops.where(mask, denominator, 1.0), 0.0)


def other_task_orders(num_tasks, shuffle, seed_generator):
    """Returns a `(K, K - 1)` int32 tensor: row `i` lists the tasks other than `i`.

    With `shuffle=True` each row is an independent uniformly random permutation
    (drawn with `keras.random` from `seed_generator`, whose state advances);
    otherwise the rows are in increasing task order.
    """
    if not shuffle:
        rows = [[j for j in range(num_tasks) if j != i] for i in range(num_tasks)]
        return ops.reshape(ops.convert_to_tensor(rows, dtype="int32"), (num_tasks, num_tasks - 1))
    scores = keras.random.uniform((num_tasks, num_tasks), seed=seed_generator)
    # Scores are in [0, 1): adding 2 on the diagonal sorts each task after the others.
    scores = scores + 2.0 * ops.eye(num_tasks, dtype="float32")
    order = ops.argsort(scores, axis=-1)[:, : num_tasks - 1]
    return ops.cast(order, "int32")


def by_position(orders, gram, *vectors):
    """What the visits of `other_task_orders` read, gathered once and split by position.

    Returns lists over the `K - 1` positions `p`: `rows[p][i] = gram[orders[i, p]]`,
    `selectors[p][i] = one_hot(orders[i, p])`, and for each `(K,)` vector `v`,
    `v[orders[:, p]]`. A loop unrolled over the positions then reads slices
    instead of gathering (fewer ops per position; torch runs them eagerly).
    """
    num_tasks = gram.shape[-1]
    if num_tasks < 2:
        return [], [], [[] for _ in vectors]
    swap = (1, 0, 2)
    rows = ops.unstack(ops.transpose(ops.take(gram, orders, axis=0), swap))
    one_hots = ops.one_hot(orders, num_tasks, dtype="float32")
    selectors = ops.unstack(ops.transpose(one_hots, swap))
    gathered = [ops.unstack(ops.transpose(ops.take(vector, orders))) for vector in vectors]
    return rows, selectors, gathered


def pseudo_inverse(matrix, rcond):
    """Moore-Penrose pseudo-inverse by SVD; singular values `<= rcond * max` count as 0."""
    left, singular_values, right_transposed = ops.svd(matrix)
    keep = singular_values > rcond * ops.max(singular_values)
    inverse_values = safe_divide(1.0, singular_values, keep)
    return ops.matmul(
        ops.transpose(right_transposed) * inverse_values[None, :], ops.transpose(left)
    )
