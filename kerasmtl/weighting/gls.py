"""Geometric Loss Strategy: the geometric mean of the task losses."""

import keras
from keras import ops

from kerasmtl.weighting.base_weighting import Weighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class GLS(Weighting):
    """Geometric Loss Strategy: total loss `(prod_k L_k) ** (1 / K)`.

    From Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and
    Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019. The
    geometric mean is invariant to the scale of each loss (a task whose loss is
    100x larger does not get 100x the gradient), and its gradient gives each task
    the effective weight

        w_k = dTotal / dL_k = Total / (K * L_k),

    so tasks with small losses get large weights. We compute it in the log
    domain, `Total = exp(mean_k log(max(L_k, 0) + epsilon))`, so a zero loss gives
    a finite total and finite weights (`w_k = Total / (K * (L_k + epsilon))`,
    large but finite, where the exact gradient would be infinite); the paper and
    LibMTL take the product directly. Negative losses count as 0.

    The returned weights are the exact gradient of the returned total. With a NaN
    or Inf task loss the total is not finite; the reported weights are then those
    of the geometric mean of the finite losses alone, and 0 for the others.

    Args:
        epsilon: added to every loss inside the logarithm.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = GLS()
    >>> strategy.build((2,))
    >>> total, weights = strategy.combine(keras.ops.convert_to_tensor([1.0, 4.0]))
    >>> round(float(total), 4), [round(float(w), 4) for w in weights]
    (2.0, [1.0, 0.25])
    """

    def __init__(self, epsilon=1e-7, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def combine(self, losses, training=True, present=None):
        del training  # the same total in train and test steps
        losses = ops.cast(losses, "float32")
        finite = ops.isfinite(losses)
        shifted = ops.maximum(ops.where(finite, losses, 0.0), 0.0) + self.epsilon
        # The geometric mean of the finite task losses; a non-finite one is left out.
        count = ops.maximum(ops.sum(ops.cast(finite, "float32")), 1.0)
        total = ops.exp(ops.sum(ops.where(finite, ops.log(shifted), 0.0)) / count)
        return total, self.compute_weights(losses)

    def compute_weights(self, losses, present=None):
        losses = ops.stop_gradient(ops.cast(losses, "float32"))
        finite = ops.isfinite(losses)
        count = ops.maximum(ops.sum(ops.cast(finite, "float32")), 1.0)
        log_shifted = ops.log(ops.where(finite, ops.maximum(losses, 0.0), 0.0) + self.epsilon)
        log_total = ops.sum(ops.where(finite, log_shifted, 0.0)) / count
        return ops.where(finite, ops.exp(log_total - log_shifted) / count, 0.0)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
