"""Ready-to-use loaders of the `multi_digits` dataset."""

import os

from kerasmtl.data import pipelines

DATA_DIR_ENV = "KERASMTL_DATA_DIR"
_TASK_NAMES = ("left", "right")


def default_data_dir():
    """The directory where kerasmtl prepares its TFDS datasets.

    Returns:
        The `KERASMTL_DATA_DIR` environment variable if it is set, else
        `~/.cache/kerasmtl/tensorflow_datasets`, with `~` expanded.
    """
    directory = os.environ.get(DATA_DIR_ENV) or os.path.join(
        "~", ".cache", "kerasmtl", "tensorflow_datasets"
    )
    return os.path.expanduser(directory)


def prepare_multi_digits(data_dir=None, config="default"):
    """Prepares the `multi_digits` dataset on disk, if needed, and returns its builder.

    Preparation reads scikit-learn's bundled digits and never downloads anything
    (GCS look-ups are switched off); it takes well under a second for the
    `default` config. A prepared config is reused.

    Args:
        data_dir: TFDS data directory; defaults to `default_data_dir()`.
        config: a config name (`"default"`, `"small"`) or a
            `kerasmtl.data.multi_digits.MultiDigitsConfig`.

    Returns:
        The prepared `kerasmtl.data.multi_digits.MultiDigits` builder.
    """
    tfds = _import_tfds()
    from kerasmtl.data.multi_digits import MultiDigits

    builder = MultiDigits(config=config, data_dir=data_dir or default_data_dir())
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return builder


def load_multi_digits(
    split="train",
    data_dir=None,
    as_supervised_dict=True,
    batch_size=None,
    *,
    config="default",
    shuffle=None,
    seed=None,
    drop_remainder=False,
    prefetch=True,
):
    """Loads `multi_digits` (MultiMNIST on 8x8 digits) as a `tf.data.Dataset`.

    Prepares the `kerasmtl.data.multi_digits.MultiDigits` builder into
    `data_dir` first if needed (offline, in well under a second), then reads
    the split in its stored order. The dataset is the MultiMNIST construction of
    Sabour et al. (NeurIPS 2017), used for multi-task learning by Sener & Koltun
    (NeurIPS 2018), on scikit-learn's bundled digits.

    Args:
        split: a TFDS split: `"train"`, `"test"` or a slice like `"train[:10%]"`.
        data_dir: TFDS data directory; defaults to `default_data_dir()`
            (`KERASMTL_DATA_DIR` or `~/.cache/kerasmtl/tensorflow_datasets`).
        as_supervised_dict: if true, elements are
            `(image, {"left": label, "right": label})`; if false, the feature
            dicts with `image`, `left`, `right`, `left_index`, `right_index`.
        batch_size: batch size, or `None` for unbatched elements.
        config: a config name (`"default"`, `"small"`) or a `MultiDigitsConfig`.
        shuffle: optional shuffle buffer size, applied before batching.
        seed: optional seed of the shuffle.
        drop_remainder: whether to drop the last, smaller batch.
        prefetch: whether to end with `prefetch(tf.data.AUTOTUNE)`.

    Returns:
        A `tf.data.Dataset`. Images are float32 `(12, 12, 1)` in `[0, 1]` for
        the built-in configs, labels int64 classes 0..9.

    Example:

    ```python
    train = kerasmtl.data.load_multi_digits("train", batch_size=64, shuffle=1000)
    model.fit(train, epochs=5)  # a model with tasks "left" and "right"
    ```
    """
    builder = prepare_multi_digits(data_dir=data_dir, config=config)
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    if as_supervised_dict:
        return pipelines.task_dataset(
            dataset,
            list(_TASK_NAMES),
            inputs="image",
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=drop_remainder,
            prefetch=prefetch,
        )
    return pipelines._finish(dataset, batch_size, shuffle, seed, drop_remainder, prefetch)


def load_multi_digits_numpy(split="train", data_dir=None, *, config="default"):
    """Loads a `multi_digits` split as NumPy arrays.

    Args:
        split: a TFDS split: `"train"`, `"test"` or a slice like `"train[:10%]"`.
        data_dir: TFDS data directory; defaults to `default_data_dir()`.
        config: a config name (`"default"`, `"small"`) or a `MultiDigitsConfig`.

    Returns:
        A tuple `(x, {"left": y_left, "right": y_right})`: `x` a float32 array of
        shape `(num_examples, 12, 12, 1)` (built-in configs), the labels int64
        arrays of shape `(num_examples,)`, in the stored order.

    Example:

    ```python
    x, y = kerasmtl.data.load_multi_digits_numpy("test")
    model.evaluate(x, y)
    ```
    """
    tfds = _import_tfds()
    builder = prepare_multi_digits(data_dir=data_dir, config=config)
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    return arrays["image"], {task: arrays[task] for task in _TASK_NAMES}


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Loading kerasmtl datasets needs TensorFlow Datasets and scikit-learn. "
            'Install them with `pip install "kerasmtl[datasets]"`.'
        ) from error
    return tfds
