"""STCH: smooth Tchebycheff scalarization of the task losses."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.base_weighting import (
    Weighting,
    check_number_list,
    masked_softmax,
    num_present,
    present_tasks,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class STCH(Weighting):
    """STCH: smooth Tchebycheff scalarization, a smooth maximum of the weighted task losses.

    From Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective
    Optimization", ICML 2024. The Tchebycheff scalarization minimises the
    largest weighted distance `max_k lambda_k (L_k - z*_k)` of the losses to
    an ideal point `z*`; its smooth version (Eq. 7 of the paper) is

        g_mu(L) = mu log sum_k exp(lambda_k (L_k - z*_k) / mu),

    with smoothing `mu > 0` (`mu -> 0` recovers the max, a large `mu` tends to
    the average). Its gradient with respect to the model is
    `sum_k w_k grad L_k` with

        w_k = lambda_k softmax_k(lambda (L - z*) / mu),

    so the strategy returns these weights (no gradient through them) and the
    total `sum_k w_k L_k`, whose gradient is that of `g_mu`. The worst task
    (relative to its ideal value) gets the most weight.

    Ideal point: the paper assumes `z*` known (or the minimum of each objective
    minus a small margin); in multi-task training the minima are unknown, so
    `z*_k` is the running minimum of task `k`'s training loss over the previous
    training steps, kept in a variable, minus `ideal_margin` (a task that
    reaches a new minimum has `L_k - z*_k < 0`, a task that stalls or gets worse
    a gap `>= 0`, and gets more weight). At a task's first step its `z*_k` is
    its current loss (minus the margin).

    Deviations and choices:

    - Scale: the weights are multiplied by the number of tasks `K`, so with
      the default preferences `lambda_k = 1` they sum to `K` (as `Equal`'s
      do) and a learning rate tuned for the sum of losses carries over; the
      paper's `lambda` on the simplex gives `K` times the paper's weights.
      LibMTL's `STCH` works on `log(L_k / nadir_k)` after a warm-up epoch that
      estimates the nadir point; that variant is not implemented here.
    - The running minimum is taken over batch losses, which are noisy: it is a
      lower estimate of each task's best value so far.

    Absent tasks (no labelled sample in the batch, or a non-finite loss): the
    softmax runs over the present tasks, the absent ones get 0 and keep their
    running minimum: STCH on the present tasks alone (the factor is the number
    `K_p` of present tasks).

    The ideal point changes only when `combine` is called with `training=True`.

    Args:
        mu: the smoothing parameter `mu > 0` (the paper's experiments use
            small values, e.g. 0.1 to 1, on losses of order 1).
        preference: optional list of `K` positive preferences `lambda` (default
            all 1).
        ideal_margin: subtracted from the running minimum to give `z*` (`>= 0`).
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = STCH(mu=1.0)
    >>> strategy.build((2,))
    >>> _, weights = strategy.combine(keras.ops.convert_to_tensor([1.0, 1.0]))
    >>> _, weights = strategy.combine(keras.ops.convert_to_tensor([0.5, 1.0]))
    >>> [round(float(w), 3) for w in keras.ops.convert_to_numpy(weights)]  # task 2 lags
    [0.755, 1.245]
    """

    def __init__(self, mu=1.0, preference=None, ideal_margin=0.0, **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.mu = check_number(mu, "mu", owner, allow_minimum=False)
        self.preference = check_number_list(preference, "preference", owner)
        if self.preference is not None and not all(value > 0.0 for value in self.preference):
            raise ValueError(
                f"{owner}: every `preference` must be > 0. Received: preference={self.preference}"
            )
        self.ideal_margin = check_number(ideal_margin, "ideal_margin", owner)

    def build(self, losses_shape):
        super().build(losses_shape)
        if self.preference is not None and len(self.preference) != self.num_tasks:
            raise ValueError(
                f"`preference` has {len(self.preference)} values but the model has "
                f"{self.num_tasks} tasks. Received: preference={self.preference}"
            )
        self.running_minimum = self.add_weight(
            shape=(self.num_tasks,), initializer="zeros", trainable=False, name="running_minimum"
        )
        self.has_minimum = self.add_weight(
            shape=(self.num_tasks,), initializer="zeros", trainable=False, name="has_minimum"
        )

    def _preferences(self):
        if self.preference is None:
            return ops.ones((self.num_tasks,), dtype="float32")
        return ops.convert_to_tensor(self.preference, dtype="float32")

    def _weights(self, losses, present):
        seen = ops.convert_to_tensor(self.has_minimum) > 0.5
        ideal = ops.where(seen, ops.convert_to_tensor(self.running_minimum), losses)
        preferences = self._preferences()
        gaps = preferences * (losses - (ideal - self.ideal_margin)) / self.mu
        probabilities = masked_softmax(ops.where(present, gaps, 0.0), present)
        weights = num_present(present) * preferences * probabilities
        return ops.stop_gradient(ops.where(present, weights, 0.0))

    def compute_weights(self, losses, present=None):
        losses = ops.stop_gradient(ops.cast(losses, "float32"))
        return self._weights(losses, present_tasks(losses, present))

    def combine(self, losses, training=True, present=None):
        losses = ops.cast(losses, "float32")
        present = present_tasks(losses, present)
        clean = ops.where(present, losses, 0.0)
        detached = ops.stop_gradient(clean)
        weights = self._weights(detached, present)
        if training:
            seen = ops.convert_to_tensor(self.has_minimum) > 0.5
            stored = ops.convert_to_tensor(self.running_minimum)
            minimum = ops.where(seen, ops.minimum(stored, detached), detached)
            self.running_minimum.assign(ops.where(present, minimum, stored))
            self.has_minimum.assign(ops.where(present, 1.0, ops.cast(seen, "float32")))
        return ops.sum(ops.where(present, weights * clean, 0.0)), weights

    def get_config(self):
        return {
            **super().get_config(),
            "mu": self.mu,
            "preference": self.preference,
            "ideal_margin": self.ideal_margin,
        }
