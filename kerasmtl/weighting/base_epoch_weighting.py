"""Private base of the strategies whose weights change once per epoch."""

from keras import ops

from kerasmtl.weighting.base_weighting import Weighting, masked_softmax


class EpochWeighting(Weighting):
    """Weights held in a variable, recomputed from the epoch's mean task losses.

    `kerasmtl.callbacks.LossWeightScheduler` calls `update(epoch_losses)` at the
    end of each epoch; the step function only reads the `loss_weights` variable,
    so it is traced once and the new weights apply from the next epoch on.

    The weights are `K * softmax(logits)` over the tasks, with per-task logits
    that each subclass derives from its loss history. Subclasses implement
    `update_state(losses, present)`, which assigns their own variables (for the
    present tasks only) and returns the new `(num_tasks,)` logits.

    Absent tasks. A task is absent from an epoch when its epoch loss is NaN or
    Inf: the model logs NaN for a task with no labelled sample in the whole
    epoch (its `{task}_loss` is a label-count-weighted mean, so steps without
    labels add nothing to it), and a non-finite loss means the same here. An
    absent task keeps its weight and its state (no loss stored). The present
    tasks share the rest of the total `K`, in the proportions of the softmax
    over the present tasks' logits:

        w_k = (K - sum_{j absent} w_j) * softmax_{present}(logits)_k.

    When the absent tasks' kept weights are 1 (e.g. absent since the first
    epoch), this is exactly the strategy built on the present tasks alone. If
    every task is absent nothing changes. New weights that would not be finite
    are not assigned. The strategies compare losses by their ratios, which need
    losses >= 0: a negative loss counts as 0.
    """

    requires_epoch_update = True

    def build(self, losses_shape):
        super().build(losses_shape)
        self.loss_weights = self.add_weight(
            shape=(self.num_tasks,),
            initializer="ones",
            trainable=False,
            name="loss_weights",
        )

    def add_task_variable(self, name):
        """Adds a non-trainable `(num_tasks,)` float32 variable of zeros: per-task state."""
        return self.add_weight(
            shape=(self.num_tasks,), initializer="zeros", trainable=False, name=name
        )

    def compute_weights(self, losses, present=None):
        return ops.convert_to_tensor(self.loss_weights)

    def update(self, epoch_losses):
        """Recomputes the weights from the epoch's mean per-task losses.

        Args:
            epoch_losses: a `(num_tasks,)` tensor or NumPy array of the epoch's
                mean (unweighted) task losses, in the model's task order.
        """
        losses = ops.cast(ops.convert_to_tensor(epoch_losses), "float32")
        if tuple(losses.shape) != (self.num_tasks,):
            raise ValueError(
                f"`epoch_losses` must have shape ({self.num_tasks},): one mean loss per "
                f"task, in the model's task order. Received: epoch_losses.shape="
                f"{tuple(losses.shape)}"
            )
        present = ops.isfinite(losses)
        logits = self.update_state(ops.where(present, ops.maximum(losses, 0.0), 0.0), present)
        old = ops.convert_to_tensor(self.loss_weights)
        kept = ops.sum(ops.where(present, 0.0, old))
        share = ops.maximum(self.num_tasks - kept, 0.0)
        weights = ops.where(present, share * masked_softmax(logits, present), old)
        # The subclasses guard each task, so this only catches overflow (a huge loss
        # ratio); the old weights are kept rather than storing a NaN.
        weights = ops.where(ops.all(ops.isfinite(weights)), weights, old)
        self.loss_weights.assign(weights)

    def update_state(self, losses, present):
        raise NotImplementedError(
            f"{self.__class__.__name__} must implement `update_state(losses, present)`."
        )
