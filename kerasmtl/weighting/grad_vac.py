"""GradVac: gradient vaccine, adaptive gradient-similarity targets."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils
from kerasmtl.weighting.base_weighting import Weighting, check_seed, gram_inputs
from kerasmtl.weighting.solvers import normalize_gram

# Largest |target| used in the update: the correction divides by sqrt(1 - target^2).
_MAX_TARGET = 1.0 - 1e-4


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradVac(Weighting):
    """GradVac: raises each pairwise gradient similarity to an adaptive target.

    From Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021 (Algorithm 1).
    For each task `i`, starting from `g'_i = g_i`, the other tasks `j` are
    visited in a random order; with `phi = cos(g'_i, g_j)` and the target
    `phi_hat[i, j]`, if `phi < phi_hat`,

        g'_i <- g'_i + ||g'_i|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                       / (||g_j|| sqrt(1 - phi_hat^2)) * g_j,

    which makes `cos(g'_i, g_j) = phi_hat` exactly; then
    `phi_hat[i, j] <- (1 - beta) phi_hat[i, j] + beta phi`. The targets start at
    0 (so the first step is PCGrad-like). The direction is `sum_i g'_i`. As in
    `PCGrad`, the `g'_i` are tracked as coefficients over the original
    gradients (`g'_i = sum_m C[i, m] g_m`, `||g'_i||^2 = (C G C^T)[i, i]`), and
    the returned weights are `a_m = sum_i C[i, m]`.

    Details and deviations:

    - Granularity: the paper applies the rule per layer (or per parameter
      group), with one target per group; only the Gram matrix of the whole
      shared gradient is available here, so we use one group, the whole vector
      (LibMTL's `GradVac_group_type=0`, "whole_model").
    - `beta` defaults to the paper's `1e-2`; LibMTL (`GradVac_beta`) and the
      Aligned-MTL authors' code default to `0.5`.
    - The target is updated at every visit of the pair, as in the paper's
      Algorithm 1; LibMTL updates it only when the correction was applied.
    - The target used in the correction is clipped to `[-(1 - 1e-4), 1 - 1e-4]`
      (the formula divides by `sqrt(1 - phi_hat^2)`); the stored EMA is not.
      LibMTL instead adds `1e-8` to the denominators.
    - Zero gradients (`g'_i` or `g_j` below `1e-7` times the largest norm) skip
      the pair: no correction and no target update. A step with a non-finite
      Gram matrix leaves the targets unchanged.
    - The random order is drawn per task and step from a seeded
      `keras.random.SeedGenerator`, whose state is saved with the strategy (see
      `Weighting`); `shuffle=False` uses index order.
    - Absent tasks (no labelled sample in the batch, or a non-finite loss): no
      pair with an absent task is corrected or updates its target (the
      targets of those pairs stay as they were), the absent tasks get 0, and
      the present tasks are visited in the order the draw gives them: GradVac
      on the present tasks alone, with their targets.

    Args:
        beta: EMA rate of the similarity targets (paper: `1e-2`).
        shuffle: visit the other tasks in a random order per step (the paper), or
            in index order.
        seed: seed of the shuffling generator, for reproducible runs.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = GradVac(shuffle=False)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, -0.5], [-0.5, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, keras.ops.ones((2,)))
    >>> [round(float(w), 3) for w in weights]  # first step: targets 0, as PCGrad
    [1.5, 1.5]
    """

    requires_gradients = True

    def __init__(self, beta=1e-2, shuffle=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        beta = check_number(beta, "beta", owner)
        if not beta <= 1.0:
            raise ValueError(f"{owner}: `beta` must be in [0, 1]. Received: beta={beta}")
        self.beta = beta
        self.shuffle = bool(shuffle)
        self.seed = check_seed(seed, owner)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.similarity_targets = self.add_weight(
            shape=(self.num_tasks, self.num_tasks),
            initializer="zeros",
            trainable=False,
            name="similarity_targets",
        )

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        finite = gram_utils.all_finite(gram)
        num_tasks = self.num_tasks
        gram = normalize_gram(gram)
        sq_norms = gram_utils.squared_norms(gram)
        norms = ops.sqrt(sq_norms)
        nonzero = ops.logical_and(gram_utils.nonzero_mask(sq_norms), present)
        zero_floor = gram_utils.ZERO_NORM_RTOL * ops.max(norms)
        old_targets = ops.convert_to_tensor(self.similarity_targets)
        orders = gram_utils.other_task_orders(num_tasks, self.shuffle, self.seed_generator)
        coefficients = ops.eye(num_tasks, dtype="float32")
        changes = ops.zeros_like(old_targets)
        other_rows, selectors, (other_norms, other_nonzero) = gram_utils.by_position(
            orders, gram, norms, nonzero
        )
        if num_tasks > 1:
            # Each pair (i, j) is visited once per step, so the target task i reads for j
            # is the one at the start of the step; the updates are added at the end.
            start_targets = ops.transpose(ops.take_along_axis(old_targets, orders, axis=1))
            clipped_targets = ops.clip(start_targets, -_MAX_TARGET, _MAX_TARGET)
            target_sines = ops.sqrt(1.0 - clipped_targets * clipped_targets)
            start_targets = ops.unstack(start_targets)
            clipped_targets = ops.unstack(clipped_targets)
            target_sines = ops.unstack(target_sines)
        for position in range(num_tasks - 1):
            selector = selectors[position]
            inner = ops.sum(coefficients * other_rows[position], axis=1)
            current_norms = ops.sqrt(
                ops.maximum(ops.sum(ops.matmul(coefficients, gram) * coefficients, axis=1), 0.0)
            )
            other_norm = other_norms[position]
            active = other_nonzero[position] & nonzero & (current_norms > zero_floor)
            cosine = gram_utils.safe_divide(inner, current_norms * other_norm, active)
            cosine = ops.clip(cosine, -1.0, 1.0)
            target = start_targets[position]
            clipped = clipped_targets[position]
            correct = active & (cosine < clipped)
            target_sine = target_sines[position]
            numerator = current_norms * (
                clipped * ops.sqrt(ops.maximum(1.0 - cosine * cosine, 0.0)) - cosine * target_sine
            )
            step = gram_utils.safe_divide(numerator, other_norm * target_sine, correct)
            coefficients = coefficients + step[:, None] * selector
            updated = (1.0 - self.beta) * target + self.beta * cosine
            changes = changes + ops.where(active, updated - target, 0.0)[:, None] * selector
        targets = old_targets + changes
        # A non-finite Gram matrix (a diverged step) must not poison the targets.
        self.similarity_targets.assign(ops.where(finite, targets, old_targets))
        return ops.where(present, ops.sum(coefficients, axis=0), 0.0)

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "shuffle": self.shuffle,
            "seed": self.seed,
        }
