"""kerasmtl: multi-task and multi-output models for Keras 3.

Import everything from here: `kerasmtl.Task`, `kerasmtl.MultiTaskModel`, the
architectures `kerasmtl.HardSharing` and `kerasmtl.SoftSharing` (and their
builders `kerasmtl.hard_sharing`, `kerasmtl.soft_sharing`), and the
subpackages `kerasmtl.layers`, `kerasmtl.weighting`, `kerasmtl.models`,
`kerasmtl.callbacks`.
"""

from kerasmtl import affinity, evaluation, export, layers, plots, weighting
from kerasmtl.hard_sharing import HardSharing, hard_sharing
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.soft_sharing import SoftSharing, soft_sharing
from kerasmtl.soft_sharing_model import SoftSharingModel
from kerasmtl.task import Task

__version__ = "0.1.0"

# Imported last: they build on the names above, and importing them registers their
# serializable classes, so any saved kerasmtl model loads after `import kerasmtl`.
from kerasmtl import callbacks, models  # noqa: E402

__all__ = [
    "HardSharing",
    "MultiTaskModel",
    "SoftSharing",
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
    "weighting",
]


# `kerasmtl.tuning` needs keras-tuner, an optional extra: it is imported on first
# access, and left out of `__all__` so that a star import does not need keras-tuner.
def __getattr__(name):
    if name == "tuning":
        import importlib

        return importlib.import_module("kerasmtl.tuning")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "tuning"])
