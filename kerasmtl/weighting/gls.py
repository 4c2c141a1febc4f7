"""Geometric Loss Strategy: the geometric mean of the task losses."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.base_weighting import Weighting, num_present, present_tasks


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

    The returned weights are the exact gradient of the returned total.

    Absent tasks (no labelled sample, or a NaN or Inf loss) are left out: the
    total is the geometric mean of the `K_p` present tasks' losses (`K_p` in
    place of `K` above), exactly GLS on the present tasks alone, and the absent
    tasks get weight 0 (their loss 0 is never read: it would pull the geometric
    mean to 0). With no task present the total and the weights are 0.

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
        self.epsilon = check_number(
            epsilon, "epsilon", self.__class__.__name__, allow_minimum=False
        )

    def combine(self, losses, training=True, present=None):
        del training  # the same total in train and test steps
        losses = ops.cast(losses, "float32")
        present = present_tasks(losses, present)
        # Negative losses count as 0; `where`, not `maximum`: at a loss of exactly 0 torch and JAX
        # split `maximum`'s gradient between its two arguments, and dTotal/dL_k must be w_k.
        counted = ops.logical_and(present, ops.greater_equal(losses, 0.0))
        shifted = ops.where(counted, losses, 0.0) + self.epsilon
        # The geometric mean of the present tasks' losses; the others are left out.
        count = ops.maximum(num_present(present), 1.0)
        total = ops.exp(ops.sum(ops.where(present, ops.log(shifted), 0.0)) / count)
        total = ops.where(ops.any(present), total, 0.0)
        return total, self.compute_weights(losses, present)

    def compute_weights(self, losses, present=None):
        losses = ops.stop_gradient(ops.cast(losses, "float32"))
        present = present_tasks(losses, present)
        count = ops.maximum(num_present(present), 1.0)
        log_shifted = ops.log(ops.where(present, ops.maximum(losses, 0.0), 0.0) + self.epsilon)
        log_total = ops.sum(ops.where(present, log_shifted, 0.0)) / count
        return ops.where(present, ops.exp(log_total - log_shifted) / count, 0.0)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
