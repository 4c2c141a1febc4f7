"""Dynamic Weight Average: weights from the rate at which each loss falls."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.base_epoch_weighting import EpochWeighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class DWA(EpochWeighting):
    """Dynamic Weight Average: a task whose loss falls slowly gets a larger weight.

    From Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019. The weights of epoch `t` (counting from 0) are

        w_k(t) = K * exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),
        r_k(t-1) = L_k(t-1) / L_k(t-2),

    where `L_k(t)` is task `k`'s mean loss over epoch `t` and `T` the temperature;
    `w_k = 1` for the first two epochs. The weights sum to `K`, as in the paper and
    in LibMTL, so before the first change they equal `Equal`'s.

    The weights change once per epoch, through `update` with the epoch's task
    losses (training losses, as in the paper): `MultiTaskModel.fit` adds a
    `kerasmtl.callbacks.LossWeightScheduler` for it; pass your own
    (`monitor="val_loss"`) to use the validation losses.

    Deviations from the paper: the ratio is `(L_k(t-1) + epsilon) / (L_k(t-2) +
    epsilon)`, so a zero loss gives a finite weight (the paper assumes positive
    losses; a negative loss counts as 0). History is kept per task: an epoch
    whose loss for task `k` is NaN or Inf is skipped for that task (its ratio is
    the last one it had, or 1), so one bad epoch cannot make a weight non-finite.

    Absent tasks: a task with no labelled sample (or a non-finite loss) in a
    whole epoch keeps its weight and its loss history; the present tasks share
    the rest of `K` in DWA's proportions (see the base class,
    `EpochWeighting`): the weights of the strategy on the present tasks alone
    when the absent ones kept weight 1. Within an epoch, a step without a task
    gives it weight 0 and leaves the others' weights as they are.

    Args:
        temperature: the softmax temperature `T` (the paper uses 2). Larger values
            make the weights more equal.
        epsilon: added to both losses of the ratio.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = DWA()
    >>> strategy.build((2,))
    >>> strategy.update([1.0, 1.0])
    >>> strategy.update([0.5, 0.9])  # task 2 falls more slowly: larger weight
    >>> [round(float(w), 3) for w in keras.ops.convert_to_numpy(strategy.loss_weights.value)]
    [0.9, 1.1]
    """

    def __init__(self, temperature=2.0, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.temperature = check_number(temperature, "temperature", owner, allow_minimum=False)
        self.epsilon = check_number(epsilon, "epsilon", owner, allow_minimum=False)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.previous_losses = self.add_task_variable("previous_losses")
        self.older_losses = self.add_task_variable("older_losses")
        self.epochs_seen = self.add_task_variable("epochs_seen")

    def update_state(self, losses, present):
        previous = ops.convert_to_tensor(self.previous_losses)
        older = ops.where(present, previous, ops.convert_to_tensor(self.older_losses))
        previous = ops.where(present, losses, previous)
        seen = ops.convert_to_tensor(self.epochs_seen) + ops.cast(present, "float32")
        self.older_losses.assign(older)
        self.previous_losses.assign(previous)
        self.epochs_seen.assign(seen)
        ratios = ops.where(seen >= 2.0, (previous + self.epsilon) / (older + self.epsilon), 1.0)
        return ratios / self.temperature

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "epsilon": self.epsilon,
        }
