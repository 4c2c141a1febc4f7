"""The interface every task-weighting strategy implements."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class Weighting(keras.layers.Layer):
    """Base class of task-weighting strategies: per-task losses -> one total loss.

    A strategy is a small Keras layer so that its state (loss weights, running
    statistics, learnable parameters) lives in Keras variables: it is trained with
    the model when trainable, saved in `.keras` files, restored by
    `BackupAndRestore`, and changed during `fit` only by `assign`, so the traced
    train function never has to be rebuilt.

    `MultiTaskModel.compile(weighting=...)` builds the strategy with the shape
    `(num_tasks,)` of the per-task loss vector, in the task order of the model.

    Loss-based strategies implement `compute_weights(losses)`; the total loss is
    `sum_k w_k L_k`. Gradient-based strategies set `requires_gradients = True` and
    implement `compute_weights_from_gram(gram, losses)`: the model's trainer gives
    them the Gram matrix `G[i, j] = <g_i, g_j>` of the per-task gradients and takes
    one step along `sum_k a_k g_k`. Strategies that change once per epoch
    implement `update(epoch_losses)`, called by
    `kerasmtl.callbacks.LossWeightScheduler` with the epoch's mean task losses.

    All strategy math runs in float32, whatever the model's dtype policy.

    Args:
        **kwargs: base layer keyword arguments, such as `name`.
    """

    #: Whether the strategy needs the per-task gradients (Gram matrix) each step.
    requires_gradients = False
    #: Whether the strategy may work on gradients with respect to the shared
    #: representation instead of the shared parameters ("rep-grad").
    supports_representation_gradients = True

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_tasks = None

    def build(self, losses_shape):
        num_tasks = losses_shape[-1]
        if num_tasks is None or num_tasks < 1:
            raise ValueError(
                "A weighting strategy needs at least one task. "
                f"Received: losses_shape={losses_shape}"
            )
        self.num_tasks = int(num_tasks)
        if self.requires_gradients:
            # The coefficients of the last training step: evaluation steps have no
            # gradients, so they weight the task losses with these.
            self.last_coefficients = self.add_weight(
                shape=(self.num_tasks,),
                initializer="ones",
                trainable=False,
                name="last_coefficients",
            )

    def compute_weights(self, losses, present=None):
        """Returns the `(num_tasks,)` weight vector for the losses of this step.

        Gradient-based strategies return the coefficients of the last training
        step here (used by evaluation steps, which compute no gradients).
        """
        if self.requires_gradients:
            return ops.convert_to_tensor(self.last_coefficients)
        raise NotImplementedError(
            f"{self.__class__.__name__} must implement `compute_weights(losses)`."
        )

    def compute_weights_from_gram(self, gram, losses, present=None):
        """Returns the `(num_tasks,)` coefficients from the task-gradient Gram matrix."""
        raise NotImplementedError(f"{self.__class__.__name__} is not a gradient-based strategy.")

    def update(self, epoch_losses):
        """Epoch-level update from the epoch's mean per-task losses (default: none)."""
        del epoch_losses

    def combine(self, losses, training=True, present=None):
        """Returns `(total_loss, weights)` for a `(num_tasks,)` loss vector.

        Args:
            losses: the `(num_tasks,)` task losses of this step.
            training: `False` in evaluation and validation steps, where a
                strategy must not change its state.
            present: an optional boolean `(num_tasks,)` vector: which tasks are
                present in this step (they have a labelled sample in the
                batch). `None` means every task. A task whose loss is NaN or
                infinite is absent too, whatever `present` says.

        Absent tasks get weight 0 and add nothing to the total; strategies keep
        them out of their state.
        """
        losses = ops.cast(losses, "float32")
        present = present_tasks(losses, present)
        weights = ops.cast(self.compute_weights(losses, present), "float32")
        weights = ops.where(present, weights, ops.zeros_like(weights))
        terms = ops.where(present, weights * losses, ops.zeros_like(losses))
        return ops.sum(terms), weights

    def compute_output_shape(self, losses_shape):
        return ()


def present_tasks(losses, present=None):
    """The boolean `(K,)` vector of present tasks: `present` (default all) and a finite loss."""
    finite = ops.isfinite(ops.cast(losses, "float32"))
    if present is None:
        return finite
    return ops.logical_and(ops.cast(present, "bool"), finite)
