"""The ready architectures of `kerasmtl.models`."""

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl import models
from kerasmtl.testing import run_model_test

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

# Keras's own MeanIoU asks JAX for int64 (truncated to int32 with x64 off), a warning of
# Keras's metric, not of the kit: segment_and_detect logs a MeanIoU.
_KERAS_MEAN_IOU_ON_JAX = pytest.mark.filterwarnings(
    "ignore:Explicitly requested dtype int64 requested in asarray:UserWarning"
)

BATCH = 4


def _rng(seed=0):
    return np.random.default_rng(seed)


def _images(shape, seed=0):
    return _rng(seed).random((BATCH, *shape)).astype("float32")


def _output_shapes(outputs):
    return {name: tuple(value.shape) for name, value in outputs.items()}


def _check_contract(model, x, y, expected_shapes, tmp_path):
    """Symbolic and eager shapes, one fit step, `.keras` and config round trips."""
    assert isinstance(model, kerasmtl.MultiTaskModel)
    assert _output_shapes(model.output) == {
        name: (None, *shape[1:]) for name, shape in expected_shapes.items()
    }
    assert _output_shapes(model(x)) == expected_shapes

    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    weights_before = [w.numpy().copy() for w in model.trainable_weights]
    loaded = run_model_test(model, x, y, tmp_path=tmp_path)
    assert not all(
        np.array_equal(b, a.numpy()) for b, a in zip(weights_before, model.trainable_weights)
    )
    # The architecture's own class, with the same config.
    assert type(loaded) is type(model) and type(model) is not kerasmtl.MultiTaskModel
    assert loaded.get_config() == model.get_config()
    assert loaded.task_names == model.task_names
    expected = model.predict(x, verbose=0)
    reloaded = loaded.predict(x, verbose=0)
    for name in model.task_names:
        np.testing.assert_array_equal(reloaded[name], expected[name])

    config = model.get_config()
    revived = type(model).from_config(config)
    assert type(revived) is type(model)
    # The name is checked in `test_config_round_trip_keeps_the_model_name`.
    assert revived.get_config() == config
    assert revived.representation == model.representation
    for layer in model.layers:
        revived.get_layer(layer.name).set_weights(layer.get_weights())
    revived_predictions = revived.predict(x, verbose=0)
    for name in model.task_names:
        np.testing.assert_array_equal(revived_predictions[name], expected[name])
    return loaded


def test_config_round_trip_keeps_the_model_name(tmp_path):
    model = models.classify_and_localize(input_shape=(16, 16, 3), filters=(4,), dense_units=4)
    assert type(model).from_config(model.get_config()).name == model.name


def _log_softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _detection_loss_reference(y_true, y_pred, box_weight, no_object_weight):
    objectness, logits = y_true[..., 4], y_pred[..., 4]
    bce = _softplus(logits) - objectness * logits
    positive = (objectness == 1.0).astype("float64")
    weight = positive + no_object_weight * (1.0 - positive)
    box_error = ((y_true[..., :4] - y_pred[..., :4]) ** 2).sum(axis=-1)
    return weight * bce + box_weight * positive * box_error


# === classify_and_localize ===


def test_classify_and_localize_contract(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.classify_and_localize(
        input_shape=(16, 16, 3), num_classes=3, filters=(4, 8), dense_units=8
    )
    assert model.input.name == "image"
    assert model.task_names == ["label", "box"]
    assert model.representation == "features"
    boxes = _rng(1).random((BATCH, 4)).astype("float32")
    boxes[1] = np.nan  # no box for this sample
    y = {"label": np.array([0, 2, -1, 1]), "box": boxes}
    _check_contract(
        model,
        _images((16, 16, 3)),
        y,
        {"label": (BATCH, 3), "box": (BATCH, 4)},
        tmp_path,
    )
    box = model.predict(_images((16, 16, 3), seed=2), verbose=0)["box"]
    assert np.all((box >= 0.0) & (box <= 1.0))


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="a full keras.applications trunk compiles for 45-100 s on JAX's CPU; the matrix "
    "covers applications trunks with tests/test_representation_trunks.py",
)
def test_classify_and_localize_with_applications_trunk(tmp_path):
    keras.utils.set_random_seed(0)
    trunk = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        alpha=0.75,
        minimalistic=True,
        include_top=False,
        weights=None,
        pooling="avg",
        include_preprocessing=False,
    )
    model = models.classify_and_localize(
        input_shape=(32, 32, 3), num_classes=4, dense_units=None, trunk=trunk
    )
    assert model.representation == trunk.name
    assert _output_shapes(model.output) == {"label": (None, 4), "box": (None, 4)}
    # Eager: tracing the MobileNet train step costs ~20 s on 2 cores, one eager step ~3 s.
    model.compile(optimizer="adam", run_eagerly=True)
    y = {
        "label": np.array([0, 3, -1, 1]),
        "box": _rng(1).random((BATCH, 4)).astype("float32"),
    }
    trunk_before = [w.numpy().copy() for w in trunk.trainable_weights]
    history = model.fit(_images((32, 32, 3)), y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Every trunk weight gets a gradient through the shared features.
    for before, after in zip(trunk_before, trunk.trainable_weights):
        assert not np.array_equal(before, after.numpy()), after.path
    assert {"label_loss", "box_loss", "label_accuracy", "box_mae"} <= set(history.history)


def test_classify_and_localize_pools_a_trunk_feature_map():
    trunk = keras.Sequential(
        [keras.layers.Conv2D(6, 3, strides=2, activation="relu")], name="small_trunk"
    )
    model = models.classify_and_localize(
        input_shape=(16, 16, 3), num_classes=2, dense_units=5, pooling="avg", trunk=trunk
    )
    assert _output_shapes(model(_images((16, 16, 3)))) == {"label": (BATCH, 2), "box": (BATCH, 4)}
    assert model.get_layer("features").input.shape == (None, 6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"trunk": "resnet"}, TypeError, r"`trunk` must be a Keras model.*Received: trunk="),
        ({"filters": (8, 8, 8, 8, 8)}, ValueError, r"at least 32.*Received: input_shape="),
        ({"pooling": "mean"}, ValueError, r"Received: pooling='mean'"),
        ({"num_classes": 0}, ValueError, r"Received: num_classes=0"),
    ],
)
def test_classify_and_localize_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        models.classify_and_localize(input_shape=(16, 16, 3), **kwargs)


# === segment_and_detect ===


def _segment_and_detect_data():
    rng = _rng(3)
    x = _images((16, 16, 3))
    segmentation = rng.integers(0, 3, size=(BATCH, 16, 16))
    segmentation[:, :3] = 255  # ignored pixels
    segmentation[2] = 255  # an image without segmentation labels
    detection = np.zeros((BATCH, 2, 2, 5), "float32")
    detection[..., :4] = rng.random((BATCH, 2, 2, 4))
    detection[0, 0, 1, 4] = 1.0
    detection[1, 1, 1, 4] = 1.0
    detection[3, 0, 0, 4] = 1.0
    detection[1] = np.nan  # an image without detection labels
    detection[3, 1, 0] = np.nan  # one unlabelled cell
    return x, {"segmentation": segmentation, "detection": detection}


@_KERAS_MEAN_IOU_ON_JAX
def test_segment_and_detect_contract(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.segment_and_detect(
        input_shape=(16, 16, 3), num_classes=3, grid_size=2, filters=(4, 8), detection_filters=4
    )
    assert model.input.name == "image"
    assert model.task_names == ["segmentation", "detection"]
    assert model.representation == "encoder"
    assert isinstance(model.get_layer("detection_projection"), kerasmtl.layers.ChannelProjection)
    x, y = _segment_and_detect_data()
    loaded = _check_contract(
        model,
        x,
        y,
        {"segmentation": (BATCH, 16, 16, 3), "detection": (BATCH, 2, 2, 5)},
        tmp_path,
    )
    assert isinstance(loaded.tasks[1].loss, models.DetectionLoss)


@_KERAS_MEAN_IOU_ON_JAX
def test_segment_and_detect_task_losses_skip_masked_labels():
    keras.utils.set_random_seed(1)
    model = models.segment_and_detect(
        input_shape=(16, 16, 3),
        num_classes=3,
        grid_size=2,
        filters=(4, 8),
        detection_filters=4,
        box_weight=2.0,
        no_object_weight=0.25,
    )
    model.compile(optimizer="adam")
    x, y = _segment_and_detect_data()
    logs = model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    predictions = model.predict(x, verbose=0)

    labelled = y["segmentation"] != 255
    log_probabilities = _log_softmax(predictions["segmentation"].astype("float64"))
    safe = np.where(labelled, y["segmentation"], 0)
    picked = np.take_along_axis(log_probabilities, safe[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(logs["segmentation_loss"], -picked[labelled].mean(), rtol=1e-5)
    accuracy = (predictions["segmentation"].argmax(-1) == y["segmentation"])[labelled].mean()
    np.testing.assert_allclose(logs["segmentation_accuracy"], accuracy, rtol=1e-5)

    cells = ~np.isnan(y["detection"]).any(axis=-1)
    values = _detection_loss_reference(
        np.nan_to_num(y["detection"]).astype("float64"),
        predictions["detection"].astype("float64"),
        box_weight=2.0,
        no_object_weight=0.25,
    )
    np.testing.assert_allclose(logs["detection_loss"], values[cells].mean(), rtol=1e-5)


@_KERAS_MEAN_IOU_ON_JAX
def test_segment_and_detect_pools_any_encoder_size_to_the_grid():
    model = models.segment_and_detect(
        input_shape=(32, 24, 1), num_classes=2, grid_size=3, filters=(4, 4), detection_filters=4
    )
    assert _output_shapes(model(np.zeros((2, 32, 24, 1), "float32"))) == {
        "segmentation": (2, 32, 24, 2),
        "detection": (2, 3, 3, 5),
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (18, 16, 3)}, r"multiples of 4.*Received: input_shape=\(18, 16, 3\)"),
        ({"mask_value": 1}, r"outside the class ids.*Received: mask_value=1"),
        ({"grid_size": 0}, r"Received: grid_size=0"),
        ({"box_weight": -1.0}, r"Received: box_weight=-1.0"),
    ],
)
@_KERAS_MEAN_IOU_ON_JAX
def test_segment_and_detect_rejects_bad_arguments(kwargs, match):
    arguments = {"input_shape": (16, 16, 3), "num_classes": 3, "filters": (4, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        models.segment_and_detect(**arguments)


# === DetectionLoss ===


def test_detection_loss_matches_numpy_reference():
    rng = _rng(4)
    y_true = np.zeros((2, 3, 3, 5), "float32")
    y_true[..., :4] = rng.random((2, 3, 3, 4))
    y_true[0, 0, 0, 4] = 1.0
    y_true[0, 2, 1, 4] = 1.0
    y_true[1, 1, 1, 4] = 1.0
    y_pred = rng.normal(size=(2, 3, 3, 5)).astype("float32")
    # Confident logits, right and wrong: the BCE must stay finite and exact.
    y_pred[0, 0, 0, 4] = 40.0
    y_pred[0, 2, 1, 4] = -40.0
    y_pred[1, 0, 0, 4] = 40.0
    y_pred[1, 2, 2, 4] = -40.0
    loss = models.DetectionLoss(box_weight=3.0, no_object_weight=0.1)
    values = keras.ops.convert_to_numpy(loss.call(y_true, y_pred))
    expected = _detection_loss_reference(
        y_true.astype("float64"), y_pred.astype("float64"), 3.0, 0.1
    )
    assert values.shape == (2, 3, 3)
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss(y_true, y_pred)), expected.mean(), rtol=1e-5
    )
    # Box targets of cells without an object do not matter.
    y_true_other_boxes = y_true.copy()
    y_true_other_boxes[1, 2, 2, :4] = 100.0
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loss.call(y_true_other_boxes, y_pred)), values
    )


def test_detection_loss_config_and_errors():
    loss = models.DetectionLoss(box_weight=2.0, no_object_weight=0.3)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(revived) is models.DetectionLoss
    assert revived.get_config() == loss.get_config()
    with pytest.raises(ValueError, match=r"5 values per cell.*Received: y_pred.shape"):
        loss.call(np.zeros((1, 2, 2, 4), "float32"), np.zeros((1, 2, 2, 4), "float32"))
    with pytest.raises(ValueError, match=r"Received: no_object_weight=-0.5"):
        models.DetectionLoss(no_object_weight=-0.5)


# === vision_language ===


def _vision_language_model():
    return models.vision_language(
        image_shape=(16, 16, 3),
        vocabulary_size=20,
        sequence_length=6,
        embedding_dim=8,
        num_heads=2,
        num_classes=3,
        filters=(4,),
        image_grid=2,
        dense_units=8,
    )


def _vision_language_inputs():
    tokens = np.array(
        [[3, 7, 9, 0, 0, 0], [5, 1, 2, 8, 4, 6], [11, 0, 0, 0, 0, 0], [2, 2, 13, 19, 0, 0]],
        "int32",
    )
    return {"image": _images((16, 16, 3)), "tokens": tokens}


def test_vision_language_contract(tmp_path):
    keras.utils.set_random_seed(0)
    model = _vision_language_model()
    assert sorted(tensor.name for tensor in model.inputs) == ["image", "tokens"]
    assert model.task_names == ["match", "label"]
    assert isinstance(model.get_layer("fusion"), kerasmtl.layers.CrossAttentionFusion)
    y = {
        "match": np.array([1.0, 0.0, -1.0, 1.0], "float32"),
        "label": np.array([-1, 2, 0, 1]),
    }
    loaded = _check_contract(
        model,
        _vision_language_inputs(),
        y,
        {"match": (BATCH, 1), "label": (BATCH, 3)},
        tmp_path,
    )
    assert loaded.get_layer("token_embedding").mask_zero


def test_vision_language_outputs_do_not_depend_on_padding():
    keras.utils.set_random_seed(0)
    model = _vision_language_model()
    x = _vision_language_inputs()
    x["tokens"][3] = 0  # all padding: nothing to attend to
    before = model.predict(x, verbose=0)
    assert all(np.all(np.isfinite(value)) for value in before.values())

    embedding = model.get_layer("token_embedding")
    table = embedding.embeddings.numpy()
    table[0] = _rng(5).normal(scale=100.0, size=table.shape[1])
    embedding.embeddings.assign(table)
    after = model.predict(x, verbose=0)
    for name in model.task_names:
        np.testing.assert_array_equal(after[name], before[name])

    # Not vacuous: a real token does reach the outputs.
    changed = {"image": x["image"], "tokens": x["tokens"].copy()}
    changed["tokens"][0, 1] = 15
    moved = model.predict(changed, verbose=0)
    assert not np.allclose(moved["match"][0], before["match"][0])
    np.testing.assert_array_equal(moved["match"][1:], before["match"][1:])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"embedding_dim": 10, "num_heads": 3}, r"multiple of `num_heads`.*num_heads=3"),
        ({"vocabulary_size": 1}, r"at least 2.*Received: vocabulary_size=1"),
        ({"image_shape": (16, 16)}, r"Received: image_shape=\(16, 16\)"),
    ],
)
def test_vision_language_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.vision_language(**kwargs)
