"""CAGrad: conflict-averse gradient descent."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import solvers
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs

# ||g_w||^2 / max_k ||g_k||^2 below this is numerically zero (float32 Gram matrix).
_DEGENERATE_NORM_SQUARED = 1e-8


@keras.saving.register_keras_serializable(package="kerasmtl")
class CAGrad(Weighting):
    """Conflict-averse gradient descent: the best worst-case direction near the mean gradient.

    Follows Liu et al., "Conflict-Averse Gradient Descent for Multi-task
    Learning" (NeurIPS 2021), as implemented in LibMTL and the authors' code:
    the update solves `max_d min_i <g_i, d>` subject to
    `||d - g0|| <= c ||g0||`, with `g0` the mean task gradient. Through the
    dual, `w = argmin_{w in simplex} F(w)` with
    `F(w) = <g_w, g0> + c ||g0|| ||g_w||` and `g_w = sum_k w_k g_k`, the update is
    `d = g0 + (c ||g0|| / ||g_w||) g_w`, i.e. the coefficients
    `a_k = 1/K + c ||g0|| w_k / ||g_w||`, divided by `1 + c^2` (`rescale=1`,
    default as in LibMTL), by `1 + c` (`rescale=2`) or not rescaled
    (`rescale=0`). Everything is computed from the Gram matrix.

    By strong duality `min_i <g_i, d> = F(w*) >= min_i <g_i, g0>`: CAGrad's
    worst task improves at least as fast as under plain gradient descent on the
    mean loss, while `<d, g0> >= (1 - c) ||g0||^2` keeps it a descent direction of
    the average loss for `c < 1` (before rescaling).

    Deviations: LibMTL solves the dual with SciPy's SLSQP on the host; here it
    is solved in the graph, exactly, with the closed form of the minimiser on
    each support of `w` (see `kerasmtl.weighting.solvers.conflict_averse_dual`):
    every support is enumerated for up to 5 tasks (3 on PyTorch), and a primal-dual
    active-set method (with a primal fallback) visits a few of them beyond. When
    the optimal `g_w` is numerically zero (`||g_w||^2 < 1e-8 max_k ||g_k||^2`,
    e.g. a task with a zero gradient at the optimum), every `d` in the ball that
    does not hurt any task is optimal and the direction `g_w / ||g_w||` is
    undefined: the update falls back to `d = g0` (LibMTL divides by
    `||g_w|| + 1e-8` instead, which gives arbitrary huge coefficients).

    Absent tasks (no labelled sample in the batch, or a non-finite loss):
    CAGrad runs on the `K_p` present tasks only, as CAGrad built on them: `g0`
    is their mean gradient (`1 / K_p` each), the dual is solved on their
    simplex, and the absent tasks get 0.

    Args:
        c: the radius ratio `c >= 0` (LibMTL's `calpha`, whose command-line
            default is 0.5); 0.4 by default.
        rescale: 0, 1 (default) or 2, as LibMTL.
        num_iterations: the most active-set iterations (more than 5 tasks; 3 on PyTorch).
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = CAGrad(c=0.5, rescale=0)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> [round(float(a), 3) for a in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [0.75, 0.75]
    """

    requires_gradients = True
    #: Gradients the strategy is designed for: "parameters" (shared parameters).
    preferred_gradients = "parameters"

    def __init__(self, c=0.4, rescale=1, num_iterations=2000, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.c = check_number(c, "c", owner)
        rescale = check_number(rescale, "rescale", owner, integer=True)
        if rescale not in (0, 1, 2):
            raise ValueError(f"{owner}: `rescale` must be 0, 1 or 2. Received: rescale={rescale!r}")
        self.rescale = rescale
        self.num_iterations = check_number(
            num_iterations, "num_iterations", owner, minimum=1, integer=True
        )

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        mean_weights = ops.cast(present, "float32")
        mean_weights = mean_weights / ops.maximum(ops.sum(mean_weights), 1.0)
        weights, gram = solvers.conflict_averse_dual(
            gram, self.c, num_iterations=self.num_iterations, mask=present
        )
        mean_norm_squared = ops.sum(ops.matmul(gram, mean_weights) * mean_weights)
        radius = self.c * ops.sqrt(ops.maximum(mean_norm_squared, 0.0))
        norm_squared = ops.maximum(ops.sum(ops.matmul(gram, weights) * weights), 0.0)
        degenerate = norm_squared < _DEGENERATE_NORM_SQUARED
        step = ops.where(
            degenerate, 0.0, radius / ops.sqrt(ops.where(degenerate, 1.0, norm_squared))
        )
        coefficients = mean_weights + step * weights
        if self.rescale == 1:
            coefficients = coefficients / (1.0 + self.c**2)
        elif self.rescale == 2:
            coefficients = coefficients / (1.0 + self.c)
        return coefficients

    def get_config(self):
        return {
            **super().get_config(),
            "c": self.c,
            "rescale": self.rescale,
            "num_iterations": self.num_iterations,
        }
