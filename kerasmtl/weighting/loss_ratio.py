"""Loss-ratio weighting: weights from each loss relative to its starting value."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.base_epoch_weighting import EpochWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class LossRatio(EpochWeighting):
    """Loss-ratio weighting: a task far from trained (relative to its start) weighs more.

    A task whose loss has fallen little relative to where it started gets a larger
    weight. After epoch `t` the weights become

        w_k = K * (L_k(t) / L_k(0)) ** (1 / T) / sum_i (L_i(t) / L_i(0)) ** (1 / T),

    where `L_k(t)` is task `k`'s mean loss over epoch `t`, `L_k(0)` its mean loss
    over the first epoch the strategy saw, and `T` a temperature (`T -> inf`:
    equal weights; small `T`: nearly all weight on the slowest task). The weights
    sum to `K`, so they start equal to `Equal`'s.

    The ratio `L_k(t) / L_k(0)` is GradNorm's loss ratio, the inverse training
    rate (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization
    for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018). GradNorm
    does not use it as a loss weight: it divides it by its mean over tasks (the
    relative inverse training rate), sets target gradient norms proportional to
    that to the power `alpha`, and learns the weights to meet them, which needs
    per-task gradients (`kerasmtl.weighting.GradNorm`).
    Using the ratio's power directly as the weight is the idea of loss-balanced task
    weighting (Liu, Liang & Gitter, "Loss-Balanced Task Weighting to Reduce Negative
    Transfer in Multi-Task Learning", AAAI 2019), which does it per batch without
    normalising, and close to DWA (Liu, Johns & Davison, CVPR 2019), which uses the
    ratio of the last two epochs instead of the ratio to the start. This class
    follows neither exactly: it updates once per epoch from the epoch's mean
    losses, with the first epoch's mean as `L_k(0)`, and normalises to sum `K`.

    The ratio is computed as `exp(log(L_k(t) + epsilon) - log(L_k(0) + epsilon))`
    and the weights as `K * softmax(log_ratio / T)`, so a zero loss at the start or
    now gives finite weights and no power overflows; a negative loss counts as 0.
    An epoch whose loss for task `k` is NaN or Inf leaves that task's ratio as it
    was (and does not set its `L_k(0)`).

    Absent tasks: a task with no labelled sample (or a non-finite loss) in a
    whole epoch keeps its weight, its ratio and its `L_k(0)` (which is then set
    by the first epoch where it is present); the present tasks share the rest of
    `K` in these proportions (see the base class, `EpochWeighting`): the weights
    of the strategy on the present tasks alone when the absent ones kept
    weight 1.

    The weights change once per epoch, through `update`: `MultiTaskModel.fit`
    adds a `kerasmtl.callbacks.LossWeightScheduler` for it (or pass your own).

    Args:
        temperature: the temperature `T`; the weights are proportional to the loss
            ratios to the power `1 / T`.
        epsilon: added to the losses before their logarithm.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = LossRatio()
    >>> strategy.build((2,))
    >>> strategy.update([2.0, 1.0])  # the first epoch sets L(0)
    >>> strategy.update([0.5, 0.5])  # task 1 fell to 1/4, task 2 to 1/2
    >>> [round(float(w), 3) for w in keras.ops.convert_to_numpy(strategy.loss_weights.value)]
    [0.667, 1.333]
    """

    def __init__(self, temperature=1.0, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.temperature = check_number(temperature, "temperature", owner, allow_minimum=False)
        self.epsilon = check_number(epsilon, "epsilon", owner, allow_minimum=False)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.initial_losses = self.add_task_variable("initial_losses")
        self.has_initial_loss = self.add_task_variable("has_initial_loss")
        self.log_ratios = self.add_task_variable("log_ratios")

    def update_state(self, losses, present):
        has_initial = ops.convert_to_tensor(self.has_initial_loss) > 0.5
        initial = ops.where(
            ops.logical_and(present, ops.logical_not(has_initial)),
            losses,
            ops.convert_to_tensor(self.initial_losses),
        )
        log_ratios = ops.where(
            present,
            ops.log(losses + self.epsilon) - ops.log(initial + self.epsilon),
            ops.convert_to_tensor(self.log_ratios),
        )
        self.initial_losses.assign(initial)
        self.has_initial_loss.assign(ops.cast(ops.logical_or(has_initial, present), "float32"))
        self.log_ratios.assign(log_ratios)
        return log_ratios / self.temperature

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "epsilon": self.epsilon,
        }
