"""kerasmtl: multi-task and multi-output models for Keras 3.

Import everything from here: `kerasmtl.Task`, `kerasmtl.MultiTaskModel`, the
builders `kerasmtl.hard_sharing` and `kerasmtl.soft_sharing`, and the
subpackages `kerasmtl.layers`, `kerasmtl.weighting`, `kerasmtl.models`,
`kerasmtl.callbacks`.
"""

from kerasmtl import affinity, evaluation, export, layers, plots, tuning, weighting
from kerasmtl.hard_sharing import hard_sharing
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.soft_sharing import soft_sharing
from kerasmtl.soft_sharing_model import SoftSharingModel
from kerasmtl.task import Task

__version__ = "0.1.0"

# Imported last: they build on the names above, and importing them registers their
# serializable classes, so any saved kerasmtl model loads after `import kerasmtl`.
from kerasmtl import callbacks, models  # noqa: E402

__all__ = [
    "MultiTaskModel",
    "SoftSharingModel",
    "Task",
    "affinity",
    "evaluation",
    "export",
    "hard_sharing",
    "callbacks",
    "layers",
    "models",
    "plots",
    "soft_sharing",
    "tuning",
    "weighting",
]
