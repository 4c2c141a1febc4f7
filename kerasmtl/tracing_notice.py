"""The line `fit` prints before the first step of a gradient-based strategy."""

import logging

import keras

from kerasmtl.trainers.gradient_math import REPRESENTATION


class TracingNotice(keras.callbacks.Callback):
    """Says, before the first training step, that per-task gradients are being traced.

    The first step of a gradient-based strategy traces (or compiles) K backward
    passes, which on an image trunk can take minutes with nothing on screen.
    `MultiTaskModel.fit` adds this callback when the strategy declares
    `requires_gradients`, the step is about to be traced (the first `fit`
    after `compile`; on torch only with `jit_compile=True`, since torch runs
    the step eagerly) and `verbose` is not 0; it prints one line at
    `on_train_begin`, where the progress bar prints.

    Args:
        model: the `MultiTaskModel` about to train.
    """

    def __init__(self, model):
        super().__init__()
        self._watched = [model]  # a list: not tracked as a sublayer, not saved

    def on_train_begin(self, logs=None):
        # Where Keras prints its progress bar (keras.config.disable_interactive_logging
        # sends both to the logger instead).
        if keras.config.is_interactive_logging_enabled():
            print(self.message(), flush=True)
        else:
            logging.getLogger("kerasmtl").info(self.message())

    def message(self):
        model = self._watched[0]
        num_tasks = len(model.task_names)
        strategy = type(model.weighting).__name__
        if model.gradient_source == REPRESENTATION:
            target = f"the shared representation (layer '{model.representation}')"
        else:
            target = f"{len(model.shared_variable_indices)} shared variables"
        return (
            f"{strategy}: tracing the per-task gradients of {num_tasks} tasks "
            f"with respect to {target} ({keras.backend.backend()} backend); the first step "
            "takes longer than the next ones."
        )
