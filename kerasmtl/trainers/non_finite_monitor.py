"""The callback that reports, once per `fit`, the steps with a non-finite task loss."""

import warnings

import keras


class NonFiniteMonitor(keras.callbacks.Callback):
    """Counts, over one `fit`, the steps in which each task's loss was not finite.

    `MultiTaskModel.fit` adds one by itself; `warn()` at the end of `fit` says
    what happened and checks what it claims: it names any model variable that
    is no longer finite instead of asserting that all are.
    """

    def __init__(self, model):
        super().__init__()
        self._watched = [model]  # a list: not tracked as a sublayer, not saved
        self.counts = {name: 0 for name in model.task_names}

    def on_epoch_end(self, epoch, logs=None):
        for name, count in self._watched[0].non_finite_step_counts().items():
            self.counts[name] += count

    def warn(self):
        bad = {name: count for name, count in self.counts.items() if count}
        if not bad:
            return
        model = self._watched[0]
        broken = [
            variable.path
            for variable in model.variables
            if "float" in str(variable.dtype)
            and not bool(keras.ops.all(keras.ops.isfinite(variable.value)))
        ]
        state = (
            "Every model and strategy variable is still finite."
            if not broken
            else f"These variables are no longer finite: {broken[:10]}."
        )
        warnings.warn(
            f"Non-finite task loss in some training steps: {bad} (steps per task). Each "
            "such step left that task out of the total loss, the logs and the weighting "
            f"strategy's state. {state} Check the task's predictions, labels and loss.",
            stacklevel=3,
        )
