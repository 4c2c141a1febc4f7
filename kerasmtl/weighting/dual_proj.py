"""DualProj: the mean gradient projected onto the dual cone of the task gradients."""

import keras

from kerasmtl.weighting.upgrad import UPGrad


@keras.saving.register_keras_serializable(package="kerasmtl")
class DualProj(UPGrad):
    """DualProj: the (weighted) mean of the task gradients projected onto their dual cone.

    From Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization"
    (arXiv:2406.16232, 2024), as implemented by TorchJD
    (`torchjd.aggregation.DualProj`). The update is the Euclidean projection of
    `J^T p` (with `p` the preference vector, by default `1/K` each: the mean
    gradient) onto the dual cone `{x : <g_j, x> >= 0 for all j}` of the task
    gradients. By Proposition 1 of the paper this projection is `J^T v` with

        v = argmin_{v >= p} v^T G v,

    so the coefficients are `v` (one lower-bounded quadratic program, against
    UPGrad's `K`). Invariant: the update has a non-negative inner product with
    every task gradient (`G v >= 0`), so no task loss increases to first order.

    As TorchJD, the Gram matrix is first divided by its trace (treated as zero
    below `norm_eps`, an absolute threshold in the units of the gradients, in
    which case the coefficients are `p`), and `reg_eps * I` is added, which
    makes the problem strictly convex; the non-conflict guarantee then holds up
    to `reg_eps` (`<g_j, d> >= -reg_eps trace(G) v_j`). Use `reg_eps=0.0` for
    the exact projection.

    Deviation: TorchJD solves the quadratic program with `quadprog` on the
    host; here it is solved exactly in the graph by
    `kerasmtl.weighting.solvers.lower_bounded_qp` (support enumeration for up to
    5 tasks, 3 on PyTorch, active-set methods beyond). It is UPGrad's computation
    with the one lower bound `p` instead of UPGrad's `K` bounds `p_i e_i`, so
    the class extends `UPGrad`.

    Absent tasks (no labelled sample in the batch, or a non-finite loss): the
    projection uses the present tasks' gradients only and the absent tasks get
    0: DualProj built on the present tasks alone, with their entries of
    `pref_vector` (not renormalised) or, by default, `1 / K_p` each over the
    `K_p` present tasks.

    Args:
        pref_vector: optional list of `K` floats, the preference weights `p`.
        norm_eps: trace threshold below which the Gram matrix is treated as zero.
        reg_eps: ridge added to the trace-normalised Gram matrix.
        num_iterations: the most active-set iterations (more than 5 tasks; 3 on PyTorch);
            the solver stops at the optimum.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = DualProj(reg_eps=0.0)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, -1.0], [-1.0, 1.0]])
    >>> [round(float(a), 3) for a in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [0.5, 0.5]
    >>> gram = keras.ops.convert_to_tensor([[4.0, -6.0], [-6.0, 10.0]])  # the mean hurts task 1
    >>> [round(float(a), 3) for a in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [0.75, 0.5]
    """

    def _lower_bounds(self, preferences):
        """The one quadratic program's lower bound: `p` itself."""
        return preferences[None, :]
