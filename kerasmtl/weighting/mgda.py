"""MGDA: the min-norm point of the convex hull of the task gradients."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils, solvers
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs

_NORMALIZATIONS = ("none", "l2", "loss", "loss+")
# Gradient normalisers at or below this value are left out (treated as 1).
_MIN_NORMALIZER = 1e-12


@keras.saving.register_keras_serializable(package="kerasmtl")
class MGDA(Weighting):
    """Multiple-gradient descent: the common descent direction of minimum norm.

    Follows Sener & Koltun, "Multi-Task Learning as Multi-Objective
    Optimization" (NeurIPS 2018): the update is the point of minimum norm of the
    convex hull of the (optionally normalised) task gradients,
    `d = sum_k a_k g_k` with `a = argmin_{a in simplex} a^T G a`. When `d != 0`
    it is a descent direction for every task; `d = 0` means the shared
    parameters are Pareto-stationary.

    Gradient normalisation is LibMTL's `mgda_gn`: each `g_k` is divided by
    `n_k` = 1 (`"none"`), `||g_k||` (`"l2"`), `L_k` (`"loss"`) or
    `L_k ||g_k||` (`"loss+"`). It is applied through the Gram matrix
    (`G[i, j] / (n_i n_j)`), and, as in LibMTL, the update is the min-norm point
    of the *normalised* gradients, returned as coefficients of the raw ones:
    `a_k = sol_k / n_k`. (The paper's reference code instead applies `sol_k` to
    the raw losses.) A normaliser that is not positive (a zero gradient, a zero
    or negative loss) is replaced by 1 instead of producing inf/NaN.

    Deviations: LibMTL (and the paper) run Frank-Wolfe iterations, which
    converge slowly on ill-conditioned `G`; here the min-norm problem is solved
    exactly in the graph, by enumerating the active sets (supports) for up to 5
    tasks (3 on PyTorch) and by a primal-dual active-set method beyond, which falls back on
    Wolfe's min-norm-point algorithm (see
    `kerasmtl.weighting.solvers.min_norm_point`).

    Absent tasks (no labelled sample in the batch, or a non-finite loss): the
    min-norm point is taken over the simplex of the present tasks only, as
    MGDA built on them alone; the absent tasks get 0. (Their zero gradient
    would otherwise be the min-norm point and stop every task.) With every
    task absent the coefficients are 0.

    Args:
        normalization: `"none"` (default, as LibMTL), `"l2"`, `"loss"` or `"loss+"`.
        num_iterations: the most active-set iterations (more than 5 tasks; 3 on PyTorch);
            the solver stops at the optimum, after about twice the size of the
            optimal support.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = MGDA()
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 4.0]])
    >>> [round(float(a), 3) for a in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [0.8, 0.2]
    """

    requires_gradients = True
    #: Gradients the strategy is designed for: "parameters" (shared parameters).
    preferred_gradients = "parameters"

    def __init__(self, normalization="none", num_iterations=1000, **kwargs):
        super().__init__(**kwargs)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {list(_NORMALIZATIONS)}. "
                f"Received: normalization={normalization!r}"
            )
        self.normalization = normalization
        self.num_iterations = check_number(
            num_iterations, "num_iterations", self.__class__.__name__, minimum=1, integer=True
        )

    def gradient_normalizers(self, gram, losses):
        """Returns the `(K,)` normalisers `n_k` (the scaled gradients are `g_k / n_k`)."""
        diagonal = ops.maximum(ops.diagonal(gram), 0.0)
        norms = ops.sqrt(diagonal)
        # A gradient norm this small relative to the largest counts as zero.
        zero = ops.logical_not(gram_utils.nonzero_mask(diagonal))
        norms = ops.where(zero, 0.0, norms)
        if self.normalization == "none":
            return ops.ones_like(losses)
        if self.normalization == "l2":
            normalizers = norms
        elif self.normalization == "loss":
            normalizers = losses
        else:
            normalizers = losses * norms
        valid = (normalizers > _MIN_NORMALIZER) & ops.isfinite(normalizers)
        return ops.where(valid, normalizers, 1.0)

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, losses, present = gram_inputs(gram, losses, present)
        scales = 1.0 / self.gradient_normalizers(gram, losses)
        # The min-norm coefficients only depend on the scales up to a common factor.
        largest = ops.max(ops.where(present, scales, 0.0))
        relative = scales / ops.where(largest > 0.0, largest, 1.0)
        scaled_gram = gram * relative[:, None] * relative[None, :]
        solution = solvers.min_norm_point(
            scaled_gram, num_iterations=self.num_iterations, mask=present
        )
        return solution * scales

    def get_config(self):
        return {
            **super().get_config(),
            "normalization": self.normalization,
            "num_iterations": self.num_iterations,
        }
