"""GradNorm: learned loss weights that balance gradient norms and training rates."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import gram_utils, optimizer_steps
from kerasmtl.weighting.base_weighting import Weighting, gram_inputs, num_present


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradNorm(Weighting):
    """GradNorm: adapts the loss weights so that gradient norms follow the training rates.

    From Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss
    Balancing in Deep Multitask Networks", ICML 2018 (Algorithm 1). With the
    loss weights `w` (start at 1), the weighted gradient norms
    `G_i = ||w_i g_i|| = w_i sqrt(G[i, i])`, their mean `G_bar`, the loss ratios
    `L~_i = L_i / L_i(0)` and the relative inverse training rates
    `r_i = L~_i / mean_j L~_j`, the GradNorm loss is

        L_grad = sum_i | G_i - G_bar * r_i^alpha |,

    with the target `G_bar * r_i^alpha` held constant. Each step returns the
    current `w` (the model is updated with `sum_i w_i L_i`), then takes one
    gradient step on `w` with the analytic gradient
    `dL_grad / dw_i = sign(G_i - target_i) * ||g_i||`, and renormalises
    `sum_i w_i = K`.

    Details and deviations:

    - Pre- or post-update weights: the returned weights are the pre-update
      `w(t)`, as in Algorithm 1 (the model's gradient `grad_W L(t)` uses
      `w(t)`; `w(t + 1)` is only used at the next step) and as LibMTL.
    - Gradient norms: the paper takes them w.r.t. the last shared layer's
      weights (for speed); we use whatever Gram matrix the trainer gives (all
      shared parameters, or the shared representation).
    - `L_i(0)` is the task loss of the first call (the first training step);
      LibMTL uses the first epoch's mean loss and equal weights during that
      epoch.
    - `w` is updated with its own `learning_rate` (default `0.025`, a common
      choice in re-implementations; LibMTL has no such setting: it trains
      softmax logits, `w = K softmax(s)`, with the model's optimizer).
      `optimizer="adam"` (the default) takes Adam steps on `w` (beta_1 0.9,
      beta_2 0.999, epsilon 1e-8), as the paper's experiments train `w` with
      the network's optimizer; its steps do not depend on the scale of the
      gradient norms. `optimizer="sgd"` takes plain gradient steps, which are
      `learning_rate * ||g_i||`: scale `learning_rate` with the gradient norms.
      Weights that a step would take below `min_weight` are clipped to
      `min_weight` before the renormalisation (the paper does not say how to
      keep `w > 0`).
    - Losses must be positive: a ratio `L~_i` is taken as 1 when `L_i(0) = 0`
      and clipped at 0 when negative; `r = 1` when every ratio is 0.
    - A step with a non-finite loss or Gram matrix leaves the state unchanged
      (so `L(0)` is taken from the first finite step).
    - `w` is a non-trainable variable changed by `assign` (the model's optimizer
      never sees it); it is saved with the strategy.
    - Absent tasks (no labelled sample in the batch, or a non-finite loss): the
      mean norm `G_bar`, the ratios' mean and the update run over the present
      tasks only; an absent task keeps its weight, its `L_i(0)` (taken at its
      first present step), its Adam moments and its step count (kept per task,
      for Adam's bias correction), and gets weight 0 in this step. The
      renormalisation gives the present tasks the total `K` minus the absent
      tasks' weights, so the sum stays `K`; with absent weights of 1 (e.g.
      absent since the start) this is GradNorm built on the present tasks
      alone.

    Args:
        alpha: asymmetry, the strength of the restoring force toward a common
            training rate (default 1.5, LibMTL's default).
        learning_rate: step size of the weight update.
        optimizer: `"adam"` or `"sgd"`, the update rule of the weights.
        min_weight: smallest weight after a step, before renormalisation.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = GradNorm()
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[4.0, 0.0], [0.0, 1.0]])
    >>> weights = strategy.compute_weights_from_gram(gram, keras.ops.ones((2,)))
    >>> [round(float(w), 3) for w in weights]  # the first step uses w = 1
    [1.0, 1.0]
    >>> [round(float(w), 3) for w in keras.ops.convert_to_numpy(strategy.loss_weights)]
    [0.975, 1.025]
    """

    requires_gradients = True

    def __init__(self, alpha=1.5, learning_rate=0.025, min_weight=1e-4, optimizer="adam", **kwargs):
        super().__init__(**kwargs)
        if optimizer not in ("adam", "sgd"):
            raise ValueError(
                f"`optimizer` must be 'adam' or 'sgd'. Received: optimizer={optimizer!r}"
            )
        self.optimizer = optimizer
        owner = self.__class__.__name__
        self.alpha = check_number(alpha, "alpha", owner)
        self.learning_rate = check_number(
            learning_rate, "learning_rate", owner, allow_minimum=False
        )
        self.min_weight = check_number(min_weight, "min_weight", owner, allow_minimum=False)

    def build(self, losses_shape):
        super().build(losses_shape)
        self.loss_weights = self.add_weight(
            shape=(self.num_tasks,), initializer="ones", trainable=False, name="loss_weights"
        )
        self.initial_losses = self.add_weight(
            shape=(self.num_tasks,), initializer="zeros", trainable=False, name="initial_losses"
        )
        self.iterations = optimizer_steps.add_step_counts(self, self.num_tasks)
        if self.optimizer == "adam":
            self.first_moment = self.add_weight(
                shape=(self.num_tasks,), initializer="zeros", trainable=False, name="first_moment"
            )
            self.second_moment = self.add_weight(
                shape=(self.num_tasks,), initializer="zeros", trainable=False, name="second_moment"
            )

    def compute_weights_from_gram(self, gram, losses, present=None):
        num_tasks = self.num_tasks
        gram, losses, present = gram_inputs(gram, losses, present)
        gram = gram_utils.symmetric_gram(gram)
        count = ops.maximum(num_present(present), 1.0)
        iterations = ops.convert_to_tensor(self.iterations)
        old_initial = ops.convert_to_tensor(self.initial_losses)
        first_step = ops.logical_and(present, iterations == 0)
        initial = ops.where(first_step, losses, old_initial)
        # A copy: returning the variable itself would show the post-update values in eager mode.
        weights = ops.copy(ops.convert_to_tensor(self.loss_weights))
        norms = ops.sqrt(gram_utils.squared_norms(gram))
        weighted_norms = weights * norms
        mean_norm = ops.sum(ops.where(present, weighted_norms, 0.0)) / count
        ratios = gram_utils.safe_divide(losses, initial, initial != 0.0)
        ratios = ops.maximum(ops.where(initial != 0.0, ratios, 1.0), 0.0)
        ratios = ops.where(present, ratios, 0.0)
        mean_ratio = ops.sum(ratios) / count
        rates = ops.where(
            mean_ratio > 0.0, gram_utils.safe_divide(ratios, mean_ratio, mean_ratio > 0.0), 1.0
        )
        targets = mean_norm * ops.power(rates, self.alpha)
        gradient = ops.sign(weighted_norms - targets) * norms
        # A non-finite step (NaN loss or gradient) leaves the state unchanged; an
        # absent task's state never changes.
        finite = gram_utils.all_finite(gram, losses)
        update = ops.logical_and(present, finite)
        gradient = ops.where(update, gradient, 0.0)
        counts = iterations + ops.cast(update, "int32")
        if self.optimizer == "adam":
            delta, first, second = optimizer_steps.masked_adam_direction(
                gradient, self.first_moment, self.second_moment, counts, update
            )
            self.first_moment.assign(first)
            self.second_moment.assign(second)
        else:
            delta = gradient
        updated = ops.maximum(weights - self.learning_rate * delta, self.min_weight)
        # The present tasks share what the absent ones do not keep: the sum stays K.
        share = num_tasks - ops.sum(ops.where(present, 0.0, weights))
        total = ops.sum(ops.where(present, updated, 0.0))
        updated = ops.where(present, share * updated / ops.maximum(total, 1e-30), weights)
        self.loss_weights.assign(ops.where(finite, updated, weights))
        self.initial_losses.assign(ops.where(finite, initial, old_initial))
        self.iterations.assign(counts)
        return ops.where(present, weights, 0.0)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
            "min_weight": self.min_weight,
            "optimizer": self.optimizer,
        }
