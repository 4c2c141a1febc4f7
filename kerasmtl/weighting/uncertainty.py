"""Uncertainty weighting: learned homoscedastic task variances."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.base_weighting import Weighting, present_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class Uncertainty(Weighting):
    """Uncertainty weighting: each task's weight is a learned inverse variance.

    From Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018. Each task has a learnable
    log-variance `s_k = log(sigma_k ** 2)`, trained with the model by the model's
    optimizer, and the total loss is

        total = sum_k exp(-s_k) * L_k + s_k.

    The effective weights are `w_k = exp(-s_k)`. For a fixed `L_k` the minimising
    `s_k` is `log(L_k)`, so the weights drift toward `1 / L_k`; the `s_k` term
    keeps them from growing without bound. With the default `s_k = 0` start the
    weights begin at 1, like `Equal`.

    Constant factors: the paper derives `L / (2 sigma^2) + log(sigma)` for a
    Gaussian (regression) task and `L / sigma^2 + log(sigma)` for a softmax
    (classification) task, and in practice learns `s = log(sigma^2)`. In `s`, the
    regression form is `(exp(-s) L + s) / 2`: exactly half of ours, same minimiser
    and same weights up to a global factor 2. The classification form is
    `exp(-s) L + s / 2`, whose minimiser is `s = log(2 L)`. We use one form for
    every task, as LibMTL does; LibMTL uses the regression form
    (`L / (2 exp(s)) + s / 2`, starting at `s = -0.5`, reporting weights
    `1 / (2 exp(s))`), so its gradients are half of ours at equal `s`.

    The total can be negative (`s_k < 0` once a loss is below 1); that is expected.

    Absent tasks (no labelled sample, or a NaN or Inf loss): their whole term,
    `exp(-s_k) L_k + s_k`, is left out of the total, so their `s_k` gets no
    gradient (the regulariser alone would push it down) and their weight is 0;
    the total is that of `Uncertainty` on the present tasks alone.

    Args:
        initial_log_variance: the starting value of every `s_k`.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = Uncertainty()
    >>> strategy.build((2,))
    >>> total, weights = strategy.combine(keras.ops.convert_to_tensor([2.0, 4.0]))
    >>> total, weights = keras.ops.convert_to_numpy(total), keras.ops.convert_to_numpy(weights)
    >>> float(total), [float(w) for w in weights]
    (6.0, [1.0, 1.0])
    """

    def __init__(self, initial_log_variance=0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_log_variance = check_number(
            initial_log_variance, "initial_log_variance", self.__class__.__name__, minimum=None
        )

    def build(self, losses_shape):
        super().build(losses_shape)
        self.log_variances = self.add_weight(
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
            name="log_variances",
        )

    def compute_weights(self, losses, present=None):
        return ops.stop_gradient(ops.exp(-ops.convert_to_tensor(self.log_variances)))

    def combine(self, losses, training=True, present=None):
        del training  # the same total in train and test steps
        losses = ops.cast(losses, "float32")
        present = present_tasks(losses, present)
        clean = ops.where(present, losses, 0.0)
        log_variances = ops.convert_to_tensor(self.log_variances)
        # `where` selects gradients, so an absent task sends none to its `s_k`,
        # and its term is left out of the total.
        guarded = ops.where(present, log_variances, ops.stop_gradient(log_variances))
        total = ops.sum(ops.where(present, ops.exp(-guarded) * clean + guarded, 0.0))
        weights = ops.where(present, self.compute_weights(clean, present), 0.0)
        return total, weights

    def get_config(self):
        return {**super().get_config(), "initial_log_variance": self.initial_log_variance}
