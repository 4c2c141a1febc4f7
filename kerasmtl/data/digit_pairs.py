"""The MultiMNIST construction on scikit-learn's bundled 8x8 digits, in NumPy.

This module holds the generation logic behind the `multi_digits` TFDS builder
(`kerasmtl.data.multi_digits.MultiDigits`), so that it can be used and tested
without TensorFlow Datasets. It needs scikit-learn only for its bundled copy of
the UCI optical digits (`sklearn.datasets.load_digits`), which never touches the
network.
"""

import numpy as np

DIGIT_SIZE = 8
NUM_SOURCE_IMAGES = 1797
NUM_CLASSES = 10
SPLITS = ("train", "test")

# The source split is fixed once and for all: changing it would change every
# record of every config, which needs a new builder VERSION.
_SOURCE_SPLIT_SEED = 20170926
#: The papers behind every digit-pair builder (MultiMNIST and its use for MTL); each
#: builder adds the citation of its source digits.
MULTI_MNIST_CITATION = """\
@inproceedings{sabour2017dynamic,
  title={Dynamic Routing Between Capsules},
  author={Sabour, Sara and Frosst, Nicholas and Hinton, Geoffrey E.},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2017}
}
@inproceedings{sener2018multi,
  title={Multi-Task Learning as Multi-Objective Optimization},
  author={Sener, Ozan and Koltun, Vladlen},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2018}
}
"""
_TRAIN_SOURCE_FRACTION = 0.8
# Offsets that make the per-split pair streams independent of each other.
_SPLIT_STREAM = {"train": 0, "test": 1}

_INSTALL_HINT = (
    "kerasmtl.data needs scikit-learn for the bundled 8x8 digits. "
    'Install it with `pip install "kerasmtl[datasets]"`.'
)


def load_source_digits():
    """Returns scikit-learn's bundled 8x8 digits as `(images, labels)`.

    Returns:
        A tuple `(images, labels)`: `images` is a float32 array of shape
        `(1797, 8, 8)` with values in `[0, 1]` (the raw 0..16 counts divided by
        16), `labels` an int64 array of shape `(1797,)` with classes 0..9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    if images.shape != (NUM_SOURCE_IMAGES, DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(
            "scikit-learn's `load_digits` returned an unexpected shape; the "
            f"multi_digits builder expects ({NUM_SOURCE_IMAGES}, {DIGIT_SIZE}, "
            f"{DIGIT_SIZE}). Received: images.shape={images.shape}"
        )
    return images, labels


def check_split(split):
    """Raises a clear error unless `split` is "train" or "test"."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}. Received: split={split!r}")


def source_indices(split, labels=None):
    """Indices of the source digits that a split draws its pairs from.

    The split is fixed, stratified by class and disjoint: for each class, 80% of
    its images (after a fixed permutation) are train sources and the rest test
    sources, so no source image appears in both splits.

    Args:
        split: `"train"` or `"test"`.
        labels: optional int array of the 1797 source labels, to avoid loading
            the digits again.

    Returns:
        A sorted int64 array of indices into `load_source_digits()`.
    """
    check_split(split)
    if labels is None:
        _, labels = load_source_digits()
    rng = np.random.default_rng(_SOURCE_SPLIT_SEED)
    train, test = [], []
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_train = int(round(_TRAIN_SOURCE_FRACTION * len(members)))
        train.append(members[:num_train])
        test.append(members[num_train:])
    chosen = train if split == "train" else test
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def make_digit_pairs(
    split,
    num_examples,
    canvas_size=12,
    max_shift=1,
    seed=0,
    source=None,
):
    """Builds MultiMNIST-style examples: two overlapping digits per image.

    MultiMNIST (Sabour et al., "Dynamic Routing Between Capsules", NeurIPS 2017),
    as used for multi-task learning by Sener & Koltun ("Multi-Task Learning as
    Multi-Objective Optimization", NeurIPS 2018), scaled down to 8x8 digits: the
    left digit is placed at the top-left corner of the canvas and the right digit
    at the bottom-right corner, each moved towards the centre by a random offset
    in `[0, max_shift]` along each axis; overlapping pixels take the maximum. The
    two digits are distinct source images of the same split (their classes may
    coincide, as in Sener & Koltun's loader). The output depends only on the
    arguments: the same call always gives the same arrays.

    Args:
        split: `"train"` or `"test"`; pairs are drawn from that split's source
            images only (see `source_indices`).
        num_examples: number of pairs to make.
        canvas_size: side of the square canvas, at least 8.
        max_shift: largest offset of a digit from its corner, in pixels. With
            the defaults (12, 1) the two 8x8 digits share 4 to 6 rows and 4 to 6
            columns of the canvas.
        seed: seed of the pair and offset draws.
        source: optional `(images, labels)` as returned by `load_source_digits`.

    Returns:
        A dict of NumPy arrays of length `num_examples`: `image` (float32,
        `(num_examples, canvas_size, canvas_size, 1)`, values in `[0, 1]`),
        `left` and `right` (int64 classes), `left_index` and `right_index`
        (int64 indices of the source images).

    Example:

    >>> pairs = make_digit_pairs("train", num_examples=4)
    >>> pairs["image"].shape
    (4, 12, 12, 1)
    """
    check_split(split)
    images, labels = source if source is not None else load_source_digits()
    candidates = source_indices(split, labels)
    return overlay_pairs(
        images, labels, candidates, split, num_examples, canvas_size, max_shift, seed
    )


def overlay_pairs(images, labels, candidates, split, num_examples, canvas_size, max_shift, seed):
    """The MultiMNIST overlay shared by `multi_digits` and `multi_mnist`.

    Draws `num_examples` pairs of different source images from `candidates`
    (indices into `images`), puts the left one at the top-left corner and the
    right one at the bottom-right corner of a square canvas, each moved inward
    by a random offset of 0 to `max_shift` pixels per axis, and overlays them
    with a pixelwise max. Images keep their dtype. The draws come from
    `np.random.default_rng([seed, stream of split])`, so the same arguments
    always give the same arrays.

    Returns:
        A dict of NumPy arrays: `image` `(num_examples, canvas_size, canvas_size, 1)`,
        `left`, `right` (classes) and `left_index`, `right_index` (source indices).
    """
    digit_size = images.shape[1]
    if canvas_size < digit_size:
        raise ValueError(
            f"`canvas_size` must be at least {digit_size}, the side of a digit. "
            f"Received: canvas_size={canvas_size}"
        )
    if not 0 <= max_shift <= canvas_size - digit_size:
        raise ValueError(
            f"`max_shift` must be between 0 and `canvas_size - {digit_size}` so that both "
            f"digits stay on the canvas. Received: max_shift={max_shift}, "
            f"canvas_size={canvas_size}"
        )
    if num_examples < 0:
        raise ValueError(
            f"`num_examples` must be non-negative. Received: num_examples={num_examples}"
        )
    if len(candidates) < 2:
        raise ValueError(
            f"The {split} split needs at least two source images to make pairs. "
            f"Received: {len(candidates)} {split} source images"
        )
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    first = rng.integers(0, len(candidates), size=num_examples)
    # A non-zero step modulo the pool size makes the right digit a different image.
    step = rng.integers(1, len(candidates), size=num_examples)
    left_index = candidates[first]
    right_index = candidates[(first + step) % len(candidates)]
    shifts = rng.integers(0, max_shift + 1, size=(num_examples, 4))

    far = canvas_size - digit_size
    canvas = np.zeros((num_examples, canvas_size, canvas_size), dtype=images.dtype)
    for i in range(num_examples):
        top, left, bottom, right = shifts[i]
        canvas[i, top : top + digit_size, left : left + digit_size] = images[left_index[i]]
        rows = slice(far - bottom, far - bottom + digit_size)
        cols = slice(far - right, far - right + digit_size)
        canvas[i, rows, cols] = np.maximum(canvas[i, rows, cols], images[right_index[i]])
    return {
        "image": canvas[..., np.newaxis],
        "left": labels[left_index],
        "right": labels[right_index],
        "left_index": left_index,
        "right_index": right_index,
    }
