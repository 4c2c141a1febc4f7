"""The trainer of a backend that cannot train (Keras's `numpy` and `openvino` backends)."""



class UnsupportedBackendTrainer:
    """Inference only: building, predicting and saving work; `fit` is Keras's own error."""

    def _global_task_losses(self, losses, counts):
        return losses, counts

    def _num_replicas(self):
        return 1

    def _fit_override(self, x, y, args, kwargs):
        return None
