"""ConFIG: a conflict-free update with equal projections on every task gradient."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs

#: The least-squares direction counts as zero when it explains less than this
#: fraction of `U g_v = 1` (float32 noise explains ~1e-9 with `rcond=1e-5`).
_EXPLAINED_FLOOR = 1e-6


@keras.saving.register_keras_serializable(package="kerasmtl")
class ConFIG(Weighting):
    """ConFIG: the direction with equal cosine to every task gradient, scaled by their projections.

    From Liu, Chen & Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025 (reference implementation: the
    `conflictfree` package, `ConFIG_update`). With the unit task gradients
    `u_k = g_k / ||g_k||` as the rows of `U`, the paper's direction is

        g_v = U^+ 1  (the least-squares solution of `U g_v = 1`),

    which has the same inner product (1) with every `u_k` when the gradients are
    linearly independent, so the update has the same positive cosine with
    every task gradient (no conflict). The update is `g_c = (sum_k <g_k,
    e>) e` with `e = g_v / ||g_v||`: the direction scaled by the sum of the
    task gradients' projections on it (the paper's magnitude rule,
    `ProjectionLength` in the reference code).

    Through the Gram matrix. The strategy never sees the gradient vectors, so
    we write the same update as coefficients on the task gradients: with the
    cosine matrix `C = U U^T` (from `G`), `g_v = U^T c` with `c = C^+ 1`
    (because `U^+ = U^T (U U^T)^+`), so `g_v = sum_k (c_k / ||g_k||) g_k`,
    `||g_v||^2 = c^T C c` and `<g_i, g_v> = ||g_i|| (C c)_i`. The coefficients are

        a_k = (sum_i ||g_i|| (C c)_i) c_k / (||g_k|| ||g_v||^2).

    The pseudo-inverse uses an SVD whose singular values below `rcond` times
    the largest count as zero (the reference code calls `torch.linalg.lstsq` or
    `pinv` on `U`, with float32's default cutoff).

    Details and deviations:

    - Rank deficiency: `U g_v = 1` may have no solution (more tasks than the
      rank of the gradients); then, as in the paper's least-squares solve,
      `g_v` is the least-squares direction and the projections are only as
      equal as it allows. Exactly opposite gradients give `g_v = 0` and a zero
      update; so does a direction that explains less than `1e-6` of
      `||1||^2` (`||U g_v||^2 < 1e-6 K`: float32 rounding, not a direction).
    - A zero gradient (norm below `1e-7` times the largest) has no direction:
      its row is left out (the reference code's `g / (||g|| + eps)` makes it a
      zero row, which the least-squares solve ignores the same way); it gets
      0. If every gradient is zero, the update is zero.
    - The paper's momentum variant (M-ConFIG, one task gradient per step) is
      not implemented: the kit computes every task gradient each step.

    Absent tasks (no labelled sample in the batch, or a non-finite loss) are
    left out like zero gradients: ConFIG built on the present tasks alone.

    Args:
        rcond: relative cutoff of the pseudo-inverse's singular values.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = ConFIG()
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, [1.0, 1.0])
    >>> [round(float(w), 3) for w in weights]  # g_c = 1.5 (u_1 + u_2)
    [0.75, 1.5]
    """

    requires_gradients = True

    def __init__(self, rcond=1e-5, **kwargs):
        super().__init__(**kwargs)
        rcond = check_number(rcond, "rcond", self.__class__.__name__)
        if not rcond < 1.0:
            raise ValueError(
                f"{self.__class__.__name__}: `rcond` must be in [0, 1). Received: rcond={rcond}"
            )
        self.rcond = rcond

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        gram = gram_utils.symmetric_gram(gram)
        sq_norms = gram_utils.squared_norms(gram)
        active = ops.logical_and(gram_utils.nonzero_mask(sq_norms), present)
        norms = ops.sqrt(sq_norms)
        inverse_norms = gram_utils.safe_divide(1.0, norms, active)
        # Zero rows and columns for the inactive tasks: the pseudo-inverse ignores them.
        cosines = gram * inverse_norms[:, None] * inverse_norms[None, :]
        ones = ops.cast(active, "float32")
        coefficients = ops.matmul(gram_utils.pseudo_inverse(cosines, self.rcond), ones)
        coefficients = ops.where(active, coefficients, 0.0)
        projections = ops.matmul(cosines, coefficients)  # <u_i, g_v>
        sq_length = ops.maximum(ops.sum(coefficients * projections), 0.0)
        magnitude = ops.sum(norms * projections)  # sum_i <g_i, g_v>
        # `||U g_v||^2 = c^T C c` is the part of `||1||^2 = K` that the least-squares
        # direction explains; float32 rounding alone leaves ~1e-9 K when it is 0.
        positive = sq_length > _EXPLAINED_FLOOR * ops.sum(ones)
        factor = ops.where(positive, magnitude / ops.where(positive, sq_length, 1.0), 0.0)
        weights = factor * coefficients * inverse_norms
        return ops.where(ops.all(ops.isfinite(weights)), weights, 0.0)

    def get_config(self):
        return {**super().get_config(), "rcond": self.rcond}
