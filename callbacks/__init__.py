"""Callbacks for multi-task training (installed as `kerasmtl.callbacks`)."""

from kerasmtl.callbacks.loss_weight_scheduler import LossWeightScheduler

__all__ = ["LossWeightScheduler"]
