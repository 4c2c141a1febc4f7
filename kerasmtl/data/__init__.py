"""Datasets and tf.data pipelines for multi-task learning.

- `task_dataset` turns a dataset of feature dicts (e.g. from `tfds.load`) into
  `(inputs, {task: label})` for `model.fit`, with masks for missing labels;
  `fill_missing_labels` aligns datasets with different tasks so they can be mixed.
- `load_multi_digits` / `load_multi_digits_numpy` load `multi_digits`, a
  MultiMNIST-style two-task dataset (left and right digit) built offline from
  scikit-learn's bundled 8x8 digits by the TFDS builder
  `kerasmtl.data.multi_digits.MultiDigits`.

TensorFlow Datasets and scikit-learn are optional (`pip install "kerasmtl[datasets]"`);
they are imported only when a dataset is loaded.
"""

from kerasmtl.data.loaders import (
    default_data_dir,
    load_multi_digits,
    load_multi_digits_numpy,
    prepare_multi_digits,
)
from kerasmtl.data.pipelines import check_task_names, fill_missing_labels, task_dataset

_BUILDER_NAMES = ("MultiDigits", "MultiDigitsConfig")


def __getattr__(name):
    # The builder module imports tensorflow_datasets, an optional dependency.
    if name in _BUILDER_NAMES:
        from kerasmtl.data import multi_digits

        return getattr(multi_digits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The builder classes stay out of `__all__` so that `import *` never needs TFDS.
__all__ = [
    "check_task_names",
    "default_data_dir",
    "fill_missing_labels",
    "load_multi_digits",
    "load_multi_digits_numpy",
    "prepare_multi_digits",
    "task_dataset",
]
