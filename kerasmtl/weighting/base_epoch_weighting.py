"""Private base of the strategies whose weights change once per epoch."""

from keras import ops

from kerasmtl.weighting.base_weighting import Weighting


class EpochWeighting(Weighting):
    """Weights held in a variable, recomputed from the epoch's mean task losses.

    `kerasmtl.callbacks.LossWeightScheduler` calls `update(epoch_losses)` at the
    end of each epoch; the step function only reads the `loss_weights` variable,
    so it is traced once and the new weights apply from the next epoch on.

    A non-finite epoch loss (NaN or Inf) leaves that task's state as it was: the
    subclass gets a boolean `finite` mask and keeps the old values of masked
    tasks with `ops.where`. New weights that would not be finite are not assigned.
    The strategies compare losses by their ratios, which need losses >= 0: a
    negative loss counts as 0. Subclasses implement `update_state(losses, finite)`,
    which assigns their own variables and returns the new `(num_tasks,)` weights.
    """

    def build(self, losses_shape):
        super().build(losses_shape)
        self.loss_weights = self.add_weight(
            shape=(self.num_tasks,),
            initializer="ones",
            trainable=False,
            name="loss_weights",
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
        finite = ops.isfinite(losses)
        weights = self.update_state(ops.where(finite, ops.maximum(losses, 0.0), 0.0), finite)
        # The subclasses guard each task, so this only catches overflow (a huge loss
        # ratio); the old weights are kept rather than storing a NaN.
        weights = ops.where(ops.all(ops.isfinite(weights)), weights, self.loss_weights)
        self.loss_weights.assign(weights)

    def update_state(self, losses, finite):
        raise NotImplementedError(
            f"{self.__class__.__name__} must implement `update_state(losses, finite)`."
        )
