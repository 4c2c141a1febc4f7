"""Tests of kerasmtl.data: the multi_digits TFDS builder and the task pipelines."""

import itertools
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from kerasmtl import data
from kerasmtl.data import digit_pairs

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("sklearn")

from kerasmtl.data.multi_digits import MultiDigits, MultiDigitsConfig  # noqa: E402

SMALL_SIZES = {"train": 600, "test": 200}
FEATURES = ("image", "left", "right", "left_index", "right_index")


def _prepare(data_dir, config="small"):
    builder = MultiDigits(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return builder


def _records(builder, split):
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_small")
    _prepare(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def small_records(small_dir):
    builder = MultiDigits(config="small", data_dir=str(small_dir))
    return {split: _records(builder, split) for split in SMALL_SIZES}


# === multi_digits builder ===


def test_builder_splits_and_sizes(small_dir):
    builder = MultiDigits(config="small", data_dir=str(small_dir))
    assert builder.name == "multi_digits"
    assert str(builder.version) == "1.0.0"
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == (
        SMALL_SIZES
    )
    assert builder.info.disable_shuffling


def test_default_config_sizes(tmp_path):
    x_train, y_train = data.load_multi_digits_numpy("train", data_dir=str(tmp_path))
    x_test, y_test = data.load_multi_digits_numpy("test", data_dir=str(tmp_path))
    assert x_train.shape == (6000, 12, 12, 1)
    assert x_test.shape == (1000, 12, 12, 1)
    assert y_train["left"].shape == y_train["right"].shape == (6000,)
    assert y_test["left"].shape == y_test["right"].shape == (1000,)


@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_dtypes_and_ranges(small_records, split):
    records = small_records[split]
    num = SMALL_SIZES[split]
    assert set(records) == set(FEATURES)
    assert records["image"].shape == (num, 12, 12, 1)
    assert records["image"].dtype == np.float32
    assert records["image"].min() >= 0.0 and records["image"].max() <= 1.0
    for key in ("left", "right", "left_index", "right_index"):
        assert records[key].shape == (num,)
        assert records[key].dtype == np.int64
    for key in ("left", "right"):
        assert records[key].min() >= 0 and records[key].max() <= 9
    # Every class appears on both sides.
    assert set(records["left"]) == set(records["right"]) == set(range(10))
    # The labels are the classes of the recorded source images, which differ.
    _, source_labels = digit_pairs.load_source_digits()
    np.testing.assert_array_equal(records["left"], source_labels[records["left_index"]])
    np.testing.assert_array_equal(records["right"], source_labels[records["right_index"]])
    assert np.all(records["left_index"] != records["right_index"])


def test_images_overlay_two_placed_digits(small_records):
    # NumPy reference: each image is the pixelwise max of the left digit at the
    # top-left and the right digit at the bottom-right, each shifted by 0 or 1.
    source_images, _ = digit_pairs.load_source_digits()
    records = small_records["train"]
    for i in range(40):
        image = records["image"][i, :, :, 0]
        left = source_images[records["left_index"][i]]
        right = source_images[records["right_index"][i]]
        matches = 0
        for top, lft, bottom, rgt in itertools.product(range(2), repeat=4):
            expected = np.zeros((12, 12), np.float32)
            expected[top : top + 8, lft : lft + 8] = left
            region = expected[4 - bottom : 12 - bottom, 4 - rgt : 12 - rgt]
            region[...] = np.maximum(region, right)
            matches += np.allclose(image, expected, rtol=0, atol=1e-7)
        assert matches >= 1, f"example {i} is no overlay of its two source digits"


def test_source_images_of_train_and_test_are_disjoint(small_records):
    train_sources = digit_pairs.source_indices("train")
    test_sources = digit_pairs.source_indices("test")
    assert len(train_sources) + len(test_sources) == digit_pairs.NUM_SOURCE_IMAGES
    assert not set(train_sources) & set(test_sources)
    used = {
        split: set(records["left_index"]) | set(records["right_index"])
        for split, records in small_records.items()
    }
    assert not used["train"] & used["test"]
    assert used["train"] <= set(train_sources)
    assert used["test"] <= set(test_sources)


def test_two_preparations_give_identical_records(small_records, tmp_path):
    builder = _prepare(tmp_path / "again")
    for split in SMALL_SIZES:
        again = _records(builder, split)
        for key in FEATURES:
            np.testing.assert_array_equal(again[key], small_records[split][key])
    # Records keep generation order: record i is pair i of the NumPy generator.
    reference = digit_pairs.make_digit_pairs("test", SMALL_SIZES["test"])
    for key in FEATURES:
        np.testing.assert_array_equal(small_records["test"][key], reference[key])


def test_custom_config_and_seed(tmp_path):
    config = MultiDigitsConfig(
        name="tiny_16", num_train_examples=20, num_test_examples=10, canvas_size=16, seed=3
    )
    records = _records(_prepare(tmp_path, config=config), "train")
    assert records["image"].shape == (20, 16, 16, 1)
    other_seed = digit_pairs.make_digit_pairs("train", 20, canvas_size=16, seed=4)
    assert not np.array_equal(records["left_index"], other_seed["left_index"])


def test_tfds_load_after_preparation(small_dir):
    dataset = tfds.load(
        "multi_digits/small",
        data_dir=str(small_dir),
        split="test",
        download=False,
        shuffle_files=False,
    )
    assert set(dataset.element_spec) == set(FEATURES)
    assert int(dataset.cardinality()) == SMALL_SIZES["test"]
    supervised = tfds.load(
        "multi_digits/small",
        data_dir=str(small_dir),
        split="train",
        download=False,
        as_supervised=True,
    )
    image_spec, label_spec = supervised.element_spec
    assert image_spec.shape == (12, 12, 1)
    assert set(label_spec) == {"left", "right"}


def test_load_multi_digits(small_dir, small_records):
    dataset = data.load_multi_digits("test", data_dir=str(small_dir), batch_size=64, config="small")
    image_spec, label_spec = dataset.element_spec
    assert image_spec.shape.as_list() == [None, 12, 12, 1]
    assert sorted(label_spec) == ["left", "right"]
    images, labels = zip(*dataset)
    np.testing.assert_array_equal(np.concatenate(images), small_records["test"]["image"])
    np.testing.assert_array_equal(
        np.concatenate([y["right"] for y in labels]), small_records["test"]["right"]
    )
    raw = data.load_multi_digits(
        "train[:10]", data_dir=str(small_dir), as_supervised_dict=False, config="small"
    )
    assert set(raw.element_spec) == set(FEATURES)
    assert len(list(raw)) == 10


def test_load_multi_digits_numpy(small_dir, small_records):
    x, y = data.load_multi_digits_numpy("train", data_dir=str(small_dir), config="small")
    np.testing.assert_array_equal(x, small_records["train"]["image"])
    assert sorted(y) == ["left", "right"]
    np.testing.assert_array_equal(y["left"], small_records["train"]["left"])


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERASMTL_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("KERASMTL_DATA_DIR")
    assert data.default_data_dir().endswith("/.cache/kerasmtl/tensorflow_datasets")


def test_missing_optional_dependencies_give_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"kerasmtl\[datasets\]"):
        data.load_multi_digits_numpy("test", data_dir="/nonexistent")
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"kerasmtl\[datasets\]"):
        digit_pairs.load_source_digits()


def test_importing_data_does_not_import_optional_dependencies(run_python):
    code = "import sys, kerasmtl.data\nprint('tensorflow_datasets' in sys.modules)\n"
    output = run_python("-c", code, timeout=120)
    assert output.strip() == "False"


# === task_dataset ===


def _features(num=6):
    rng = np.random.default_rng(0)
    return tf.data.Dataset.from_tensor_slices(
        {
            "image": rng.random((num, 4, 4, 1)).astype(np.float32),
            "meta": rng.random((num, 3)).astype(np.float32),
            "digit": np.arange(num, dtype=np.int64),
            "size": np.linspace(0.0, 1.0, num).astype(np.float32),
        }
    )


def test_task_dataset_dict_labels_and_inputs():
    dataset = data.task_dataset(
        _features(),
        {"digit": "digit", "size": "size", "parity": lambda ex: ex["digit"] % 2},
        inputs="image",
        batch_size=4,
    )
    x, y = next(iter(dataset))
    assert x.shape == (4, 4, 4, 1)
    assert sorted(y) == ["digit", "parity", "size"]
    np.testing.assert_array_equal(y["digit"], [0, 1, 2, 3])
    np.testing.assert_array_equal(y["parity"], [0, 1, 0, 1])
    assert [int(b[0].shape[0]) for b in dataset] == [4, 2]

    named = data.task_dataset(
        _features(), ["digit"], inputs={"pixels": "image", "extra": "meta"}, batch_size=None
    )
    x, y = next(iter(named))
    assert sorted(x) == ["extra", "pixels"] and x["extra"].shape == (3,)
    listed = data.task_dataset(
        _features(),
        "digit",
        inputs=["image", "meta"],
        batch_size=3,
        drop_remainder=True,
        shuffle=6,
        seed=1,
    )
    x, y = next(iter(listed))
    assert isinstance(x, tuple) and len(x) == 2
    assert sorted(np.concatenate([b[1]["digit"] for b in listed])) == list(range(6))


def test_task_dataset_fits_a_two_task_keras_model(small_dir):
    import keras

    dataset = data.load_multi_digits(
        "train[:64]", data_dir=str(small_dir), batch_size=32, config="small"
    )
    inputs = keras.Input((12, 12, 1), name="image")
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
    outputs = {task: keras.layers.Dense(10, name=task)(hidden) for task in ("left", "right")}
    model = keras.Model(inputs, outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="sgd", loss={"left": loss, "right": loss})
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert {"left_loss", "right_loss"} <= set(history.history)


def test_missing_label_key_fails_at_build_time_with_keys_and_tasks():
    with pytest.raises(ValueError) as error:
        data.task_dataset(_features(), {"digit": "digit", "depth": "depth"}, inputs="image")
    message = str(error.value)
    assert "'depth'" in message
    for key in ("image", "meta", "digit", "size"):
        assert f"'{key}'" in message
    assert "Tasks: ['digit', 'depth']" in message


def test_missing_input_key_fails_at_build_time():
    with pytest.raises(ValueError, match=r"'pixels'.*Available feature keys: \['digit'"):
        data.task_dataset(_features(), ["digit"], inputs={"x": "pixels"})


def test_callable_reading_missing_key_fails_at_build_time():
    with pytest.raises(ValueError, match=r"'colour'.*Tasks: \['colour'\]"):
        data.task_dataset(_features(), {"colour": lambda ex: ex["colour"]}, inputs="image")


def test_input_types_are_checked():
    with pytest.raises(TypeError, match="dicts of features"):
        data.task_dataset(tf.data.Dataset.range(3), ["digit"], inputs="image")
    with pytest.raises(TypeError, match="keyed by task name"):
        data.task_dataset(_features(), ["digit"], inputs="image", mask_values=-1)
    with pytest.raises(ValueError, match=r"not in `labels`: \['size'\]"):
        data.task_dataset(_features(), ["digit"], inputs="image", mask_values={"size": 0.0})


def test_model_task_names_are_checked():
    model = types.SimpleNamespace(task_names=["digit", "size"])
    dataset = data.task_dataset(_features(), ["digit", "size"], inputs="image", model=model)
    assert sorted(dataset.element_spec[1]) == ["digit", "size"]
    with pytest.raises(ValueError) as error:
        data.task_dataset(
            _features(),
            ["digit", "parity"],
            inputs="image",
            model=model,
            mask_values={"parity": -1},
        )
    message = str(error.value)
    assert "Unknown tasks: ['parity']" in message
    assert "Missing tasks: ['size']" in message
    assert "Model task names: ['digit', 'size']" in message
    with pytest.raises(TypeError, match="task_names"):
        data.task_dataset(_features(), ["digit"], inputs="image", model=object())


def test_mask_values_fill_absent_features_and_predicates():
    dataset = data.task_dataset(
        _features(),
        ["digit", "size", "depth", "segment"],
        inputs="image",
        mask_values={"depth": np.full((2,), np.nan, np.float32), "segment": -1},
        mask_when={"digit": lambda ex: ex["digit"] >= 4, "size": lambda ex: ex["size"] > 0.5},
        batch_size=None,
    )
    spec = dataset.element_spec[1]
    assert spec["depth"] == tf.TensorSpec((2,), tf.float32)
    assert spec["segment"] == tf.TensorSpec((), tf.int64)
    labels = [y for _, y in dataset.as_numpy_iterator()]
    np.testing.assert_array_equal([y["digit"] for y in labels], [0, 1, 2, 3, -1, -1])
    sizes = np.array([y["size"] for y in labels])
    np.testing.assert_allclose(sizes[:3], [0.0, 0.2, 0.4], rtol=0, atol=1e-6)
    assert np.isnan(sizes[3:]).all()
    assert all(np.isnan(y["depth"]).all() and y["segment"] == -1 for y in labels)


def test_minus_one_mask_is_ignored_by_sparse_cross_entropy():
    import keras

    logits = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], np.float32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    masked = float(loss(np.array([0, -1, 1]), logits))
    kept = logits[[0, 2]]
    log_softmax = kept - np.log(np.exp(kept).sum(axis=1, keepdims=True))
    # Keras averages over the unmasked labels only.
    expected = -(log_softmax[0, 0] + log_softmax[1, 1]) / 2
    np.testing.assert_allclose(masked, expected, rtol=1e-6)


# === fill_missing_labels ===


def test_fill_missing_labels_lets_datasets_with_different_tasks_mix():
    digits = data.task_dataset(_features(4), ["digit"], inputs="image", batch_size=None)
    sizes = data.task_dataset(_features(2), ["size"], inputs="image", batch_size=None)
    with pytest.raises((TypeError, ValueError)):
        tf.data.Dataset.sample_from_datasets([digits, sizes])
    digits, sizes = data.fill_missing_labels([digits, sizes])
    assert digits.element_spec == sizes.element_spec
    mixed = tf.data.Dataset.sample_from_datasets([digits, sizes], seed=0)
    labels = [y for _, y in mixed.as_numpy_iterator()]
    assert len(labels) == 6
    from_digits = [y for y in labels if y["digit"] >= 0]
    from_sizes = [y for y in labels if y["digit"] == -1]
    assert len(from_digits) == 4 and len(from_sizes) == 2
    assert all(np.isnan(y["size"]) for y in from_digits)
    assert not any(np.isnan(y["size"]) for y in from_sizes)


def test_fill_missing_labels_batched_and_custom_values():
    first = tf.data.Dataset.from_tensor_slices(
        (np.zeros((5, 3), np.float32), {"box": np.ones((5, 4), np.float32)})
    ).batch(2)
    second = tf.data.Dataset.from_tensor_slices(
        (np.zeros((3, 3), np.float32), {"digit": np.arange(3)})
    ).batch(2)
    filled = data.fill_missing_labels({"first": first, "second": second}, mask_values={"digit": -7})
    assert sorted(filled) == ["first", "second"]
    boxes = [y["box"] for _, y in filled["second"]]
    assert [b.shape for b in boxes] == [(2, 4), (1, 4)]
    assert all(np.isnan(b).all() for b in boxes)
    digits = np.concatenate([y["digit"] for _, y in filled["first"]])
    np.testing.assert_array_equal(digits, [-7] * 5)
    merged = filled["first"].concatenate(filled["second"])
    assert sum(int(x.shape[0]) for x, _ in merged) == 8


def test_fill_missing_labels_rejects_conflicting_dtypes():
    ints = tf.data.Dataset.from_tensor_slices((np.zeros((2, 1)), {"digit": np.arange(2)}))
    floats = tf.data.Dataset.from_tensor_slices(
        (np.zeros((2, 1)), {"digit": np.zeros(2, np.float32)})
    )
    with pytest.raises(ValueError, match="'digit' has labels of different types"):
        data.fill_missing_labels([ints, floats])
    with pytest.raises(TypeError, match=r"\(inputs, \{task: label\}\)"):
        data.fill_missing_labels([_features()])
