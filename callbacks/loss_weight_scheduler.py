"""A callback that drives the epoch-level updates of a weighting strategy."""

import warnings

import keras
import numpy as np


class LossWeightScheduler(keras.callbacks.Callback):
    """Updates the model's weighting strategy from each epoch's task losses.

    At the end of every epoch it reads each task's mean loss from the logs
    (`{task}_loss` with `monitor="loss"`, `val_{task}_loss` with
    `monitor="val_loss"`), in the model's task order, and calls
    `model.weighting.update(losses)`. Epoch-level strategies such as
    `kerasmtl.weighting.DWA` and `kerasmtl.weighting.LossRatio` then `assign` new
    weights to their variables: the next epoch uses them without retracing the
    train function, as `ReduceLROnPlateau` changes the learning rate.

    `MultiTaskModel.fit` adds one by itself (monitoring `"loss"`) when the
    strategy declares `requires_epoch_update`; pass your own to monitor
    `"val_loss"` or to place it in the list; it is then the only one. Strategies
    without an epoch-level update (`Equal`, `Fixed`, the per-step ones) are left
    alone. If a needed log entry is missing (say `monitor="val_loss"`
    with no validation data), the callback warns once, listing the available
    keys, and skips the update.

    A task whose epoch loss is NaN or Inf is absent from that epoch: the model
    logs NaN for a task with no labelled sample in the whole epoch (its
    `{task}_loss` is a label-count-weighted mean over the steps where it had
    labels). The strategy keeps that task's weight and state; the callback warns
    once per task, naming it.

    The new weights are not added to the logs: the model already logs each
    task's mean effective weight as `{task}_weight`, and for an epoch-level
    strategy that is constant over an epoch, so the next epoch's `{task}_weight`
    is exactly the weight computed here.

    The callback holds no model before `set_model`, so it can be deep-copied
    (keras-tuner copies callbacks for every trial). Put it before
    `BackupAndRestore` and `ModelCheckpoint` in the callback list, so that what
    they save at the end of an epoch includes that epoch's update.

    Args:
        monitor: `"loss"` to use the training losses (as DWA's paper does) or
            `"val_loss"` to use the validation losses.

    Example:

    >>> scheduler = LossWeightScheduler(monitor="loss")
    >>> scheduler.monitor
    'loss'
    """

    def __init__(self, monitor="loss"):
        super().__init__()
        if monitor not in ("loss", "val_loss"):
            raise ValueError(
                "`monitor` must be 'loss' (training task losses, `{task}_loss`) or "
                "'val_loss' (validation task losses, `val_{task}_loss`). "
                f"Received: monitor={monitor!r}"
            )
        self.monitor = monitor
        self._warned_missing = False
        # Tasks already named in a warning: each is named once.
        self._warned_absent = set()

    def on_epoch_end(self, epoch, logs=None):
        strategy = getattr(self.model, "weighting", None)
        if strategy is None or not strategy.requires_epoch_update:
            return
        logs = logs or {}
        prefix = "" if self.monitor == "loss" else "val_"
        keys = [f"{prefix}{name}_loss" for name in self.model.task_names]
        missing = [key for key in keys if key not in logs]
        if missing:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(
                    f"LossWeightScheduler(monitor={self.monitor!r}) needs the log "
                    f"entries {keys}, but {missing} are missing (is there validation "
                    "data?); the weights are not updated. Available keys: "
                    f"{sorted(logs)}",
                    stacklevel=2,
                )
            return
        losses = np.array([float(logs[key]) for key in keys], dtype="float32")
        absent = [
            name
            for name, value in zip(self.model.task_names, losses)
            if not np.isfinite(value) and name not in self._warned_absent
        ]
        if absent:
            self._warned_absent.update(absent)
            warnings.warn(
                f"LossWeightScheduler: task(s) {absent} had no labelled sample or a "
                f"non-finite loss in epoch {epoch}; those tasks keep their weights in "
                f"{strategy.__class__.__name__}.",
                stacklevel=2,
            )
        strategy.update(losses)
