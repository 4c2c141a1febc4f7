"""What every backend's trainer has unless it distributes: single-process hooks."""


class BaseMultiTaskTrainer:
    """The hooks `MultiTaskModel` calls on its trainer, for a single process.

    The TensorFlow trainer overrides them for `tf.distribute`; JAX's
    `DataParallel` needs nothing (the arrays in the jitted step are global).
    Used alone on Keras's other backends (`numpy`, `openvino`), which cannot
    train: building, predicting and saving work there.
    """

    def _global_task_losses(self, losses, counts):
        return losses, counts

    def _num_replicas(self):
        return 1

    def _fit_override(self, x, y, args, kwargs):
        return None
