"""The `multi_digits` TFDS builder: MultiMNIST on scikit-learn's 8x8 digits.

Importing this module registers the builder under the name `multi_digits`, after
which `tfds.builder("multi_digits", data_dir=...)` and
`tfds.load("multi_digits", data_dir=..., download=False)` find it.
"""

import dataclasses

try:
    import tensorflow_datasets as tfds
except ImportError as error:
    raise ImportError(
        "kerasmtl.data.multi_digits needs TensorFlow Datasets. Install it with "
        '`pip install "kerasmtl[datasets]"`.'
    ) from error

import numpy as np

from kerasmtl.data import digit_pairs

_CITATION = digit_pairs.MULTI_MNIST_CITATION + """\
@misc{alpaydin1998optdigits,
  title={Optical Recognition of Handwritten Digits},
  author={Alpaydin, E. and Kaynak, C.},
  howpublished={UCI Machine Learning Repository},
  year={1998}
}
"""

_DESCRIPTION = """\
MultiMNIST (Sabour et al., NeurIPS 2017), the two-task benchmark of Sener & Koltun
(NeurIPS 2018), scaled down to the 1797 8x8 digits that ship with scikit-learn
(`sklearn.datasets.load_digits`). Each float32 image in [0, 1] overlays two digits:
the left one near the top-left corner and the right one near the bottom-right
corner, each shifted by a small random offset, overlapping pixels taking the
maximum. The tasks are the classes of the left and the right digit. The source
images are split once, by class, 80% for train and 20% for test, so no source
image appears in both splits; `left_index` and `right_index` record them.
Preparation reads scikit-learn's bundled copy and never downloads anything.
"""


@dataclasses.dataclass
class MultiDigitsConfig(tfds.core.BuilderConfig):
    """Builder config of `MultiDigits`.

    Args:
        name: name of the config, as in `tfds.load("multi_digits/<name>")`.
        num_train_examples: number of train pairs.
        num_test_examples: number of test pairs.
        canvas_size: side of the square image, at least 8.
        max_shift: largest random offset of a digit from its corner, in pixels.
        seed: seed of the pair and offset draws; the source split is fixed.
    """

    num_train_examples: int = 6000
    num_test_examples: int = 1000
    canvas_size: int = 12
    max_shift: int = 1
    seed: int = 0


class MultiDigits(tfds.core.GeneratorBasedBuilder):
    """MultiMNIST-style pairs of overlapping 8x8 digits, made offline.

    The construction of MultiMNIST (Sabour et al., "Dynamic Routing Between
    Capsules", NeurIPS 2017) as used for multi-task learning by Sener & Koltun
    ("Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018), on
    scikit-learn's bundled 8x8 digits so that it prepares in seconds with no
    network. See `kerasmtl.data.digit_pairs.make_digit_pairs` for the
    construction; the records of a config are identical on every preparation
    and are stored in generation order.

    Configs: `default` (6000 train and 1000 test pairs, 12x12) and `small`
    (600 train and 200 test pairs, 12x12, for tests and quick experiments). Any
    other `MultiDigitsConfig` can be passed as `config=`.

    Features: `image` (float32, `(canvas_size, canvas_size, 1)`, values in
    `[0, 1]`), `left` and `right` (int64 class labels 0..9), `left_index` and
    `right_index` (int64 indices of the source images in
    `sklearn.datasets.load_digits()`).

    Example:

    ```python
    import tensorflow_datasets as tfds
    from kerasmtl.data.multi_digits import MultiDigits

    builder = MultiDigits(config="small", data_dir="/tmp/kerasmtl_data")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    dataset = builder.as_dataset(split="train", as_supervised=True)
    image, labels = next(iter(dataset))  # labels: {"left": ..., "right": ...}
    ```
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        MultiDigitsConfig(
            name="default",
            description="6000 train and 1000 test pairs on a 12x12 canvas.",
        ),
        MultiDigitsConfig(
            name="small",
            description="600 train and 200 test pairs on a 12x12 canvas.",
            num_train_examples=600,
            num_test_examples=200,
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self):
        size = self.builder_config.canvas_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.float32),
                    "left": tfds.features.ClassLabel(num_classes=digit_pairs.NUM_CLASSES),
                    "right": tfds.features.ClassLabel(num_classes=digit_pairs.NUM_CLASSES),
                    "left_index": tfds.features.Scalar(dtype=np.int64),
                    "right_index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", {"left": "left", "right": "right"}),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=_CITATION,
            # Records keep generation order, so two preparations are identical
            # and record i of a split is pair i of `make_digit_pairs`.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded: the digits ship with scikit-learn.
        source = digit_pairs.load_source_digits()
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train_examples, source),
            "test": self._generate_examples("test", config.num_test_examples, source),
        }

    def _generate_examples(self, split, num_examples, source):
        config = self.builder_config
        pairs = digit_pairs.make_digit_pairs(
            split,
            num_examples,
            canvas_size=config.canvas_size,
            max_shift=config.max_shift,
            seed=config.seed,
            source=source,
        )
        for i in range(num_examples):
            # Integer keys: with `disable_shuffling` TFDS writes records sorted by key.
            yield i, {name: values[i] for name, values in pairs.items()}
