"""Random Loss Weighting: new random weights every step."""

import keras

from kerasmtl.weighting.base_weighting import (
    Weighting,
    check_seed,
    masked_softmax,
    num_present,
    present_tasks,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class RLW(Weighting):
    """Random Loss Weighting: `w = K * softmax(lambda)`, `lambda ~ N(0, I)` each step.

    From Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning", TMLR 2022 (first as "A Closer Look at Loss Weighting
    in Multi-Task Learning", arXiv:2111.10603). We follow the paper's
    normal-distribution variant: a fresh standard normal sample is drawn at every
    step and normalised with a softmax.

    Deviation: the paper and LibMTL use `softmax(lambda)` (weights summing to 1);
    we multiply by `K` so the weights sum to `K` and average 1, the scale of
    `Equal`, so a learning rate tuned with equal weighting carries over.

    Absent tasks: a sample `lambda ~ N(0, I)` is drawn for all `K` tasks, and
    the weights are `K_p * softmax(lambda)` over the `K_p` present tasks (0 for
    the absent ones): the weights RLW on the present tasks alone gives for the
    present tasks' entries of the same sample, so they still sum to `K_p`.

    The sample comes from `keras.random.normal` with a `keras.random.SeedGenerator`,
    whose state is a variable: the traced step draws new weights every call.
    Keras layers do not save their seed generators' state; strategies do (in
    `.keras` and `.weights.h5` files, see `Weighting`), so a model restored by
    `BackupAndRestore` continues the same sequence of weights.

    Args:
        seed: seed of the generator, for reproducible runs.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = RLW(seed=1)
    >>> strategy.build((3,))
    >>> weights = strategy.compute_weights(keras.ops.ones((3,)))
    >>> round(float(keras.ops.sum(weights)), 4)
    3.0
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = check_seed(seed, "RLW")
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def compute_weights(self, losses, present=None):
        present = present_tasks(losses, present)
        sample = keras.random.normal((self.num_tasks,), seed=self.seed_generator)
        return num_present(present) * masked_softmax(sample, present)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
