"""Learned softmax weights: random logits, normalised, trained with the model."""


import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.base_weighting import (
    Weighting,
    check_seed,
    masked_softmax,
    num_present,
    present_tasks,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class LearnedSoftmax(Weighting):
    """Learned weights `w = K * softmax(logits)` with randomly initialised logits.

    The common recipe "start the loss weights at random, normalise them, and let
    the model learn them": the logits are trainable variables of the strategy,
    trained by the model's optimizer on the same total loss `sum_k w_k L_k` as the
    model. The weights are scaled by `K` so they sum to `K` and average 1, the
    scale of `Equal` (whose learning rates then carry over) and of DWA and RLW.
    The logits start from a seeded normal sample with `initial_stddev` 1 by
    default, so the starting weights are distributed like one draw of `RLW`.

    No paper proposes this rule, and it has a known failure: minimising
    `sum_k w_k L_k` over the weights moves them all onto the task with the
    smallest loss (the gradient on logit `k` is `K z_k (L_k - sum_i z_i L_i)`),
    so the other tasks are slowly switched off. Use `Uncertainty`, whose
    `s_k` regulariser is what prevents exactly this, unless you want this
    baseline. `entropy_weight = lambda > 0` adds `lambda * KL(z || uniform)` to the
    total; for fixed losses the minimising `z` is then `softmax(-K L / lambda)`, a
    Boltzmann distribution with temperature `lambda / K` in loss units, which still
    favours small losses but no longer collapses. (This is the standard entropy
    regularisation of a softmax, not a method from the literature; the default
    0 keeps the plain recipe.) A softmax temperature would not help: it only
    rescales the logits, i.e. their learning rate, so there is none.

    The effective weights are `K * softmax(logits)`.

    Absent tasks (no labelled sample, or a NaN or Inf loss): the softmax, the
    scale `K` and the entropy term run over the `K_p` present tasks only, so
    the weights are `K_p * softmax(logits_present)` and the absent tasks' logits
    get no gradient: the step of `LearnedSoftmax` on the present tasks alone.

    Args:
        initial_stddev: standard deviation of the normal initialisation of the
            logits (0 starts at equal weights).
        entropy_weight: `lambda`, the weight of the `KL(z || uniform)` term.
        seed: seed of the logits' initialiser, for reproducible starts.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = LearnedSoftmax(seed=1)
    >>> strategy.build((3,))
    >>> total, weights = strategy.combine(keras.ops.convert_to_tensor([1.0, 2.0, 3.0]))
    >>> round(float(keras.ops.convert_to_numpy(keras.ops.sum(weights))), 4)
    3.0
    """

    def __init__(self, initial_stddev=1.0, entropy_weight=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.initial_stddev = check_number(initial_stddev, "initial_stddev", owner)
        self.entropy_weight = check_number(entropy_weight, "entropy_weight", owner)
        self.seed = check_seed(seed, owner)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.logits = self.add_weight(
            shape=(self.num_tasks,),
            initializer=keras.initializers.RandomNormal(stddev=self.initial_stddev, seed=self.seed),
            # One task: its weight is 1 whatever the logit, so there is nothing to learn
            # (a trainable variable without a gradient makes Keras warn each step).
            trainable=self.num_tasks > 1,
            name="logits",
        )

    def compute_weights(self, losses, present=None):
        present = present_tasks(losses, present)
        logits = ops.convert_to_tensor(self.logits)
        return ops.stop_gradient(num_present(present) * masked_softmax(logits, present))

    def combine(self, losses, training=True, present=None):
        del training  # the same total in train and test steps
        losses = ops.cast(losses, "float32")
        present = present_tasks(losses, present)
        clean = ops.where(present, losses, 0.0)
        count = num_present(present)
        probabilities = masked_softmax(ops.convert_to_tensor(self.logits), present)
        weights = count * probabilities
        total = ops.sum(ops.where(present, weights * clean, 0.0))
        if self.entropy_weight > 0:
            # KL(z || uniform over the present tasks); log(1) = 0 where absent.
            log_probabilities = ops.log(ops.where(present, probabilities, 1.0))
            kl_to_uniform = ops.sum(probabilities * log_probabilities) + ops.log(
                ops.maximum(count, 1.0)
            )
            total = total + self.entropy_weight * kl_to_uniform
        return total, ops.stop_gradient(weights)

    def get_config(self):
        return {
            **super().get_config(),
            "initial_stddev": self.initial_stddev,
            "entropy_weight": self.entropy_weight,
            "seed": self.seed,
        }
