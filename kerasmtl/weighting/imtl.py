"""IMTL: impartial multi-task learning, loss scales (IMTL-L) and gradient combination (IMTL-G)."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import optimizer_steps
from kerasmtl.weighting.imtlg import IMTLG


@keras.saving.register_keras_serializable(package="kerasmtl")
class IMTL(IMTLG):
    """IMTL: learned loss scales (IMTL-L) with the equal-projection gradient combination (IMTL-G).

    The hybrid method of Liu et al., "Towards Impartial Multi-task Learning",
    ICLR 2021 (Section 3.3, Algorithm 1; LibMTL's `IMTL`):

    - IMTL-L (Section 3.2): each task has a learned log-scale `s_k`, and its
      loss is replaced by the scaled loss `e^{s_k} L_k - s_k`, whose minimum
      over `s_k` is at `e^{s_k} L_k = 1`: every scaled loss is pushed to the
      same value, 1. `s_k` descends the gradient of the scaled loss,
      `e^{s_k} L_k - 1`.
    - IMTL-G (Section 3.1, see `IMTLG`): the shared parameters move along
      `sum_k alpha_k g~_k`, with `g~_k = e^{s_k} g_k` the gradients of the
      scaled losses and `alpha` the IMTL-G coefficients of the `g~_k`
      (`sum_k alpha_k = 1`, equal projections on every unit gradient).

    So the coefficients on the raw task gradients are `a_k = alpha_k e^{s_k}`,
    where `alpha` is IMTL-G on the Gram matrix `diag(e^s) G diag(e^s)`. They
    are computed with the scales before this step's update, as in the paper's
    Algorithm 1.

    Deviations:

    - The paper trains `s` with the model's optimizer. Here the strategy sees
      the Gram matrix and the losses, not the optimizer, so `s` is a
      non-trainable variable updated by `assign` with its own optimizer
      (`"adam"`, the default, or `"sgd"`) at `learning_rate`, on the exact
      gradient `e^{s_k} L_k - 1` of the scaled loss. It is saved and restored
      with the model like any strategy state.
    - Task-specific parameters: the paper updates them with the scaled loss's
      gradient `e^{s_k} g_k`; the kit's trainers give every variable
      `sum_k a_k g_k`, so a task's own head gets `alpha_k e^{s_k} g_k`
      (`alpha_k` times the paper's).
    - Losses must be >= 0 (a negative loss counts as 0).
    - IMTL-G's own deviations (zero gradients, rank deficiency, a cosine-form
      solve from the Gram matrix) are those of `IMTLG`. The paper uses the
      gradients of the shared representation; compile with
      `gradients="representation"` to do the same.

    Absent tasks (no labelled sample in the batch, or a non-finite loss): IMTL-G
    runs on the present tasks (IMTL built on them alone); an absent task gets
    0 and its scale, Adam moments and step count do not change.

    Args:
        learning_rate: learning rate of the log-scales `s`.
        optimizer: `"adam"` or `"sgd"`, the update rule of the log-scales.
        initial_log_scale: the starting value of every `s_k` (the paper: 0).
        rcond: relative cutoff of IMTL-G's pseudo-inverse.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = IMTL(optimizer="sgd", learning_rate=0.1)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, keras.ops.convert_to_tensor([3.0, 0.5]))
    >>> [round(float(w), 3) for w in weights]  # s = 0: IMTL-G's coefficients
    [0.333, 0.667]
    >>> [round(float(s), 3) for s in keras.ops.convert_to_numpy(strategy.log_scales.value)]
    [-0.2, 0.05]
    """

    requires_gradients = True

    def __init__(
        self, learning_rate=1e-3, optimizer="adam", initial_log_scale=0.0, rcond=1e-5, **kwargs
    ):
        super().__init__(rcond=rcond, **kwargs)
        owner = self.__class__.__name__
        if optimizer not in ("adam", "sgd"):
            raise ValueError(
                f"{owner}: `optimizer` must be 'adam' or 'sgd'. Received: optimizer={optimizer!r}"
            )
        self.learning_rate = check_number(
            learning_rate, "learning_rate", owner, allow_minimum=False
        )
        self.optimizer = optimizer
        self.initial_log_scale = check_number(
            initial_log_scale, "initial_log_scale", owner, minimum=None
        )

    def build(self, losses_shape):
        super().build(losses_shape)
        self.log_scales = self.add_weight(
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_log_scale),
            trainable=False,
            name="log_scales",
        )
        if self.optimizer == "adam":
            self.scales_momentum = self.add_weight(
                shape=(self.num_tasks,),
                initializer="zeros",
                trainable=False,
                name="scales_momentum",
            )
            self.scales_velocity = self.add_weight(
                shape=(self.num_tasks,),
                initializer="zeros",
                trainable=False,
                name="scales_velocity",
            )
            self.iterations = optimizer_steps.add_step_counts(self, self.num_tasks)

    def compute_weights_from_gram(self, gram, losses, present=None):
        num_tasks = self.num_tasks
        gram = ops.cast(gram, "float32")
        losses = ops.reshape(ops.cast(losses, "float32"), (num_tasks,))
        if present is None:
            present = ops.ones((num_tasks,), dtype="bool")
        present = ops.logical_and(ops.cast(present, "bool"), ops.isfinite(losses))
        log_scales = ops.convert_to_tensor(self.log_scales)
        scales = ops.where(present, ops.exp(log_scales), 0.0)
        scaled_gram = gram * scales[:, None] * scales[None, :]
        alpha = super().compute_weights_from_gram(scaled_gram, losses, present)
        self._update_scales(log_scales, ops.where(present, ops.maximum(losses, 0.0), 0.0), present)
        return ops.where(present, alpha * scales, 0.0)

    def _update_scales(self, log_scales, losses, present):
        gradient = ops.where(present, ops.exp(log_scales) * losses - 1.0, 0.0)
        if self.optimizer == "sgd":
            step = self.learning_rate * gradient
        else:
            iterations = ops.convert_to_tensor(self.iterations) + ops.cast(present, "int32")
            direction, momentum, velocity = optimizer_steps.masked_adam_direction(
                gradient, self.scales_momentum, self.scales_velocity, iterations, present
            )
            step = self.learning_rate * direction
            self.iterations.assign(iterations)
            self.scales_momentum.assign(momentum)
            self.scales_velocity.assign(velocity)
        self.log_scales.assign(ops.where(present, log_scales - step, log_scales))

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer,
            "initial_log_scale": self.initial_log_scale,
        }
