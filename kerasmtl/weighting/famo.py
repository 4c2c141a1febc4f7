"""FAMO: Fast Adaptive Multitask Optimization, as a loss-based strategy."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import optimizer_steps
from kerasmtl.weighting.base_weighting import (
    Weighting,
    masked_softmax,
    num_present,
    present_tasks,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class FAMO(Weighting):
    """FAMO: balances the rates at which the task losses fall, in O(1) per step.

    From Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
    (Algorithm 1), following the official implementation
    (github.com/Cranial-XIX/FAMO, `famo.py`). FAMO keeps task logits `xi` and
    `z = softmax(xi)`. Each step moves the model along

        d = sum_k c z_k g_k / L_k,    c = (sum_k z_k / L_k) ** -1,

    the gradient of `sum_k c z_k log(L_k)` with `c` and `z` held constant, i.e.
    the effective weights are `w_k = c z_k / L_k`. After the step the log-loss
    decrease `delta_k = log L_k(before) - log L_k(after)` updates the logits,
    `xi <- xi - lr * (grad_xi(z . delta) + weight_decay * xi)`, which raises the
    weight of the tasks whose losses fell the least.

    What we follow: the official code's `L_k + epsilon` (epsilon 1e-8) inside the
    log and the inverse, its logits starting at 0, and its logits optimiser, Adam
    (PyTorch defaults `beta_1=0.9, beta_2=0.999, epsilon=1e-8`) with coupled weight
    decay (`grad + weight_decay * xi`, as `torch.optim.Adam(weight_decay=...)`);
    `logits_optimizer="sgd"` gives the plain step of the paper's Algorithm 1
    instead. The defaults `learning_rate=0.025`, `weight_decay=1e-3` are LibMTL's
    (`FAMO_w_lr`, `FAMO_w_gamma`; the official `famo.py` uses `gamma=0.01`); the
    paper calls them `beta` and `gamma`.

    Deviations:

    - One forward per step. The paper (and the official code) measures the new
      losses on the same batch right after the model step, an extra forward pass.
      Inside `compute_loss` we only see the next batch: at step `t + 1` we update
      the logits with `delta_k = log L_k(theta_t; batch_t) - log L_k(theta_{t+1};
      batch_{t+1})`, from the losses stored at step `t`, and only then compute
      this step's weights from the updated logits. The order of updates is the
      official one; `delta` is the loss change over one step plus the difference
      between two batches, a noisier estimate that is unbiased only when the
      batches are drawn alike. A task takes part in the logits update from its
      second finite loss on, so the very first step makes none. State is kept
      across epochs: an epoch's first step compares with the last step before it.
    - Scale: the official weights `c z_k / L_k` sum to 1 (the gradient of an
      average); ours are multiplied by `K` so they sum to `K`, the scale of `Equal`.
      The reported total loss is `sum_k w_k L_k` (with `w` constant), which has the
      same gradient as `K * sum_k c z_k log(L_k)` but is a positive,
      comparable number (`K` times the `z`-weighted harmonic mean of the losses).
    - The official code also clips the shared gradient norm to 1; that is the
      optimizer's job here (`clipnorm=1.0`), not the strategy's.
    - Losses must be >= 0 (FAMO assumes positive losses; a negative loss counts as
      0).
    - Absent tasks (no labelled sample in the batch, or a NaN or Inf loss): FAMO
      runs on the `K_p` present tasks only: `z` is the softmax of the present
      tasks' logits, the weights `K_p c z_k / L_k` sum to `K_p`, and the logits
      update uses the present tasks' softmax. An absent task gets weight 0 (its
      loss 0 is never read: `z_k / L_k` would give it nearly all the weight) and
      its logit, Adam moments, Adam step count and stored loss do not change;
      its next `delta` compares with its last present step. So a step with a
      task absent is the step of FAMO built on the present tasks alone. The
      Adam step count is kept per task (the official code has one for the
      logit vector; they agree while every task is present).
    - One task: the weight is 1 and no softmax is taken.

    The logits and the stored losses are variables updated with `assign`: they are
    not trained by the model's optimizer, are saved with the model and restored by
    `BackupAndRestore`. The state changes only when `combine` is called with
    `training=True` (the default); test steps should pass `training=False`.

    Args:
        learning_rate: learning rate of the logits (`beta` in the paper).
        weight_decay: weight decay of the logits (`gamma` in the paper).
        epsilon: added to the losses inside the log and the inverse.
        logits_optimizer: `"adam"` (the official code) or `"sgd"` (Algorithm 1).
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = FAMO()
    >>> strategy.build((2,))
    >>> total, weights = strategy.combine(keras.ops.convert_to_tensor([1.0, 3.0]))
    >>> [round(float(w), 3) for w in weights]  # first step: z uniform, w ~ 1 / L
    [1.5, 0.5]
    """

    def __init__(
        self,
        learning_rate=0.025,
        weight_decay=1e-3,
        epsilon=1e-8,
        logits_optimizer="adam",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if logits_optimizer not in ("adam", "sgd"):
            raise ValueError(
                "`logits_optimizer` must be 'adam' (the official FAMO code) or 'sgd' "
                f"(the paper's Algorithm 1). Received: logits_optimizer={logits_optimizer!r}"
            )
        owner = self.__class__.__name__
        self.learning_rate = check_number(
            learning_rate, "learning_rate", owner, allow_minimum=False
        )
        self.weight_decay = check_number(weight_decay, "weight_decay", owner)
        self.epsilon = check_number(epsilon, "epsilon", owner, allow_minimum=False)
        self.logits_optimizer = logits_optimizer

    def build(self, losses_shape):
        super().build(losses_shape)

        def state(name):
            return self.add_weight(
                shape=(self.num_tasks,), initializer="zeros", trainable=False, name=name
            )

        self.logits = state("logits")
        self.previous_losses = state("previous_losses")
        self.has_previous_loss = state("has_previous_loss")
        if self.logits_optimizer == "adam":
            self.logits_momentum = state("logits_momentum")
            self.logits_velocity = state("logits_velocity")
            self.iterations = optimizer_steps.add_step_counts(self, self.num_tasks)

    def compute_weights(self, losses, present=None):
        present = present_tasks(losses, present)
        safe = _clean(losses, present)
        return self._weights(ops.convert_to_tensor(self.logits), safe, present)

    def combine(self, losses, training=True, present=None):
        losses = ops.cast(losses, "float32")
        present = present_tasks(losses, present)
        safe = _clean(losses, present)
        logits = ops.convert_to_tensor(self.logits)
        if training:
            logits = self._update_logits(logits, safe, present)
            self.previous_losses.assign(
                ops.where(present, safe, ops.convert_to_tensor(self.previous_losses))
            )
            self.has_previous_loss.assign(
                ops.where(present, 1.0, ops.convert_to_tensor(self.has_previous_loss))
            )
        weights = self._weights(logits, safe, present)
        return ops.sum(ops.where(present, weights * losses, 0.0)), weights

    def _weights(self, logits, safe, present):
        count = num_present(present)
        probabilities = masked_softmax(logits, present)
        inverse = ops.where(present, probabilities / (safe + self.epsilon), 0.0)
        norm = ops.sum(inverse)
        weights = ops.where(
            norm > 0.0,
            count * inverse / ops.maximum(norm, 1e-30),
            count * probabilities,
        )
        return ops.stop_gradient(weights)

    def _update_logits(self, logits, safe, present):
        has_previous = ops.convert_to_tensor(self.has_previous_loss) > 0.5
        valid = ops.logical_and(present, has_previous)
        previous = ops.convert_to_tensor(self.previous_losses)
        delta = ops.where(
            valid, ops.log(previous + self.epsilon) - ops.log(safe + self.epsilon), 0.0
        )
        # The softmax of the game of the present tasks, as FAMO on them alone.
        probabilities = masked_softmax(logits, present)
        # The vector-Jacobian product of softmax: grad_xi (z . delta).
        gradient = probabilities * (delta - ops.sum(probabilities * delta))
        gradient = ops.where(valid, gradient + self.weight_decay * logits, 0.0)
        adam_state = None
        if self.logits_optimizer == "adam":
            adam_state = (self.iterations, self.logits_momentum, self.logits_velocity)
        step = optimizer_steps.masked_step(gradient, valid, self.learning_rate, adam_state)
        logits = ops.where(valid, logits - step, logits)
        self.logits.assign(logits)
        return logits

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "epsilon": self.epsilon,
            "logits_optimizer": self.logits_optimizer,
        }


def _clean(losses, present):
    """The losses clipped to >= 0, with 0 (never read) for the absent tasks."""
    losses = ops.stop_gradient(ops.cast(losses, "float32"))
    return ops.where(present, ops.maximum(losses, 0.0), 0.0)
