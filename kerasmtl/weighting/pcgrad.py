"""PCGrad: projecting conflicting gradients."""

import keras
from keras import ops

from kerasmtl.weighting import gram_utils
from kerasmtl.weighting.base_weighting import Weighting, check_seed, gram_inputs, num_present
from kerasmtl.weighting.solvers import normalize_gram

_REDUCTIONS = ("sum", "mean")


@keras.saving.register_keras_serializable(package="kerasmtl")
class PCGrad(Weighting):
    """PCGrad: removes from each task gradient its conflicts with the others.

    From Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020
    (Algorithm 1). For each task `i`, starting from `g'_i = g_i`, the other
    tasks `j` are visited in a random order, and whenever `<g'_i, g_j> < 0`,
    `g'_i` is projected onto the normal plane of the *original* `g_j`:

        g'_i <- g'_i - <g'_i, g_j> / ||g_j||^2 * g_j.

    The update direction is `sum_i g'_i` (`reduction="sum"`, the paper and
    LibMTL) or its mean (`reduction="mean"`).

    Every `g'_i` is a linear combination of the original gradients,
    `g'_i = sum_m C[i, m] g_m`, so the projections run on the `(K, K)`
    coefficient matrix `C` (starting at the identity) with
    `<g'_i, g_j> = (C G)[i, j]`, and the returned coefficients are the column
    sums `a_m = sum_i C[i, m]`: `sum_m a_m g_m` is exactly PCGrad's direction.

    What holds after the projections: the last projection of `g'_i` leaves
    `<g'_i, g_j> = 0` for that `j`, and a `j` that was not projected had
    `<g'_i, g_j> >= 0` at its visit; with two tasks this gives
    `<g'_1, g_2> >= 0` and `<g'_2, g_1> >= 0`. With three tasks or more a later
    projection can bring back a conflict with an earlier `g_j` (the method
    does not guarantee non-negative inner products with every `g_j`).

    Details and deviations:

    - The random order is drawn per task and per step with `keras.random` from a
      seeded `keras.random.SeedGenerator` (its state is a variable, listed in
      `strategy.variables` and saved with the strategy, see `Weighting`, so a
      restored strategy continues the same sequence of orders).
      `shuffle=False` visits the other tasks in increasing index order
      (deterministic, for testing).
    - Absent tasks (no labelled sample in the batch, or a non-finite loss):
      nobody is projected against them, they are not projected, and they get
      0; the present tasks are visited in the order the draw gives them, which
      is a uniformly random order of the present tasks, so the update is
      PCGrad's on the present tasks alone (`"mean"` divides by their number
      `K_p`). The orders are drawn for all `K` tasks, so the random sequence
      does not depend on which tasks are present.
    - As in the paper, task `i` is never projected against itself (LibMTL's loop
      also visits `j = i`, which changes nothing while `<g'_i, g_i> >= 0`).
    - A zero gradient `g_j` (norm below `1e-7` times the largest task-gradient
      norm) is skipped instead of dividing by `||g_j||^2 = 0`.
    - LibMTL refuses representation gradients for PCGrad; here the projections
      act on whatever Gram matrix the trainer gives (shared parameters or the
      shared representation), which is well defined in both cases.

    Args:
        shuffle: visit the other tasks in a random order per step (the paper), or
            in index order.
        reduction: `"sum"` (the paper, LibMTL) or `"mean"` of the projected
            gradients.
        seed: seed of the shuffling generator, for reproducible runs.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = PCGrad(shuffle=False)
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, -0.5], [-0.5, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, keras.ops.ones((2,)))
    >>> [round(float(w), 3) for w in weights]
    [1.5, 1.5]
    """

    requires_gradients = True

    def __init__(self, shuffle=True, reduction="sum", seed=None, **kwargs):
        super().__init__(**kwargs)
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"`reduction` must be one of {list(_REDUCTIONS)}. Received: reduction={reduction!r}"
            )
        self.shuffle = bool(shuffle)
        self.reduction = reduction
        self.seed = check_seed(seed, self.__class__.__name__)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def compute_weights_from_gram(self, gram, losses, present=None):
        gram, _, present = gram_inputs(gram, losses, present)
        num_tasks = self.num_tasks
        # Scale-free: working on G / max diag keeps every product O(1).
        gram = normalize_gram(gram)
        sq_norms = gram_utils.squared_norms(gram)
        nonzero = ops.logical_and(gram_utils.nonzero_mask(sq_norms), present)
        orders = gram_utils.other_task_orders(num_tasks, self.shuffle, self.seed_generator)
        coefficients = ops.eye(num_tasks, dtype="float32")
        # other_rows[p][i] = G[orders[i, p], :], so sum_m C[i, m] G[j_i, m] = <g'_i, g_{j_i}>.
        other_rows, unit_rows, (other_nonzero, other_norms) = gram_utils.by_position(
            orders, gram, nonzero, sq_norms
        )
        # All tasks advance together: at position p, task i visits orders[i, p].
        for position in range(num_tasks - 1):
            inner = ops.sum(coefficients * other_rows[position], axis=1)
            project = (inner < 0.0) & other_nonzero[position]
            step = gram_utils.safe_divide(inner, other_norms[position], project)
            coefficients = coefficients - step[:, None] * unit_rows[position]
        weights = ops.where(present, ops.sum(coefficients, axis=0), 0.0)
        if self.reduction == "mean":
            weights = weights / ops.maximum(num_present(present), 1.0)
        return weights

    def get_config(self):
        return {
            **super().get_config(),
            "shuffle": self.shuffle,
            "reduction": self.reduction,
            "seed": self.seed,
        }
