"""Tests of the alignment and fusion layers of kerasmtl.layers."""


import keras
import numpy as np
import pytest
from keras import ops

from kerasmtl import layers
from kerasmtl.testing import run_layer_test, run_model_test

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral


def _random(*shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _to_channels_first(x):
    return np.transpose(x, (0, 3, 1, 2))


# === Exports ===


def test_adaptive_pooling_is_reexported_unchanged():
    assert layers.AdaptiveAveragePooling2D is keras.layers.AdaptiveAveragePooling2D
    assert layers.AdaptiveMaxPooling2D is keras.layers.AdaptiveMaxPooling2D


# === ChannelProjection ===


@pytest.mark.parametrize(
    "init_kwargs, input_shape, expected_output_shape",
    [
        ({"filters": 4}, (2, 8, 8, 3), (2, 8, 8, 4)),
        ({"filters": 4, "data_format": "channels_first"}, (2, 3, 8, 8), (2, 4, 8, 8)),
        ({"filters": 6, "activation": "relu"}, (2, 5, 3), (2, 5, 6)),
    ],
    ids=["map", "map_channels_first", "tokens"],
)
def test_channel_projection_contract(init_kwargs, input_shape, expected_output_shape, tmp_path):
    run_layer_test(
        layers.ChannelProjection,
        init_kwargs=init_kwargs,
        input_data=_random(*input_shape),
        expected_output_shape=expected_output_shape,
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_channel_projection_without_bias_has_one_weight():
    run_layer_test(
        layers.ChannelProjection,
        init_kwargs={"filters": 4, "use_bias": False},
        input_data=_random(2, 5, 3),
        expected_output_shape=(2, 5, 4),
        expected_num_trainable_weights=1,
        run_fit=False,
        run_saving=False,
    )


@pytest.mark.parametrize("data_format", ["tokens", "channels_last", "channels_first"])
def test_channel_projection_is_x_times_kernel_plus_bias(data_format):
    x = _random(2, 4, 4, 3, seed=1)
    layer = layers.ChannelProjection(
        4,
        bias_initializer="random_normal",
        data_format="channels_first" if data_format == "channels_first" else "channels_last",
    )
    if data_format == "tokens":
        x = x.reshape(2, 16, 3)
    output = _numpy(layer(_to_channels_first(x) if data_format == "channels_first" else x))
    if data_format == "channels_first":
        output = np.transpose(output, (0, 2, 3, 1))
    kernel = _numpy(layer.kernel).reshape(3, 4)
    bias = _numpy(layer.bias)
    assert np.any(bias != 0)
    np.testing.assert_allclose(output, x @ kernel + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("input_shape", [(2, 3), (2, 4, 4, 4, 3), (2, 4, 4, None), (2, 7, None)])
def test_channel_projection_rejects_bad_shapes(input_shape):
    with pytest.raises(ValueError, match="ChannelProjection") as info:
        layers.ChannelProjection(4).build(input_shape)
    assert str(input_shape) in str(info.value)


# === SpatialAlignment ===


@pytest.mark.parametrize(
    "init_kwargs, input_shapes, expected_output_shape",
    [
        # Larger, smaller, mixed (taller but narrower) and on-grid maps.
        (
            {"output_size": 4, "filters": 4},
            [(2, 8, 8, 3), (2, 2, 2, 6), (2, 6, 2, 5), (2, 4, 4, 8)],
            [(2, 4, 4, 4)] * 4,
        ),
        (
            {"output_size": (4, 2), "filters": 5, "pooling": "max", "activation": "relu"},
            [(2, 8, 8, 3), (2, 5, 3, 6)],
            [(2, 4, 2, 5)] * 2,
        ),
        (
            {"output_size": 4, "filters": 4, "data_format": "channels_first"},
            [(2, 3, 8, 8), (2, 6, 2, 2)],
            [(2, 4, 4, 4)] * 2,
        ),
    ],
    ids=["average", "max_rectangular_grid", "channels_first"],
)
def test_spatial_alignment_contract(init_kwargs, input_shapes, expected_output_shape, tmp_path):
    run_layer_test(
        layers.SpatialAlignment,
        init_kwargs=init_kwargs,
        input_data=[_random(*shape, seed=i) for i, shape in enumerate(input_shapes)],
        expected_output_shape=expected_output_shape,
        expected_num_trainable_weights=2 * len(input_shapes),
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_spatial_alignment_pools_reduces_and_resizes_then_projects():
    large = _random(2, 8, 8, 3, seed=1)
    small = _random(2, 2, 2, 3, seed=2)
    layer = layers.SpatialAlignment(output_size=4, filters=4, bias_initializer="random_normal")
    pooled_output, resized_output = (_numpy(y) for y in layer([large, small]))

    def project(x, index):
        projection = layer._projections[index]
        return x @ _numpy(projection.kernel).reshape(3, 4) + _numpy(projection.bias)

    # Average pooling 8 -> 4 is the mean of 2x2 blocks.
    blocks = large.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(pooled_output, project(blocks, 0), rtol=1e-5, atol=1e-5)
    # Maps smaller than the grid are resized bilinearly, not pooled.
    resized = _numpy(ops.image.resize(small, (4, 4), interpolation="bilinear"))
    np.testing.assert_allclose(resized_output, project(resized, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "input_shape",
    [
        [(2, 8, 8, 3), (2, 8, 3)],  # rank 3 in a list of maps
        [(2, 8, 8, 3), (2, 4, 4, None)],  # unknown channels
        [(2, 8, 8, 3), (2, None, 4, 5)],  # unknown height
        [(2, 8, 8, 3), (3, 4, 4, 5)],  # batch sizes differ
    ],
    ids=["rank", "channels", "height", "batch"],
)
@pytest.mark.parametrize("layer_cls", [layers.SpatialAlignment, layers.ConcatFusion])
def test_alignment_rejects_unalignable_shapes(layer_cls, input_shape):
    with pytest.raises(ValueError, match=layer_cls.__name__) as info:
        layer_cls(output_size=4, filters=4).build(input_shape)
    for shape in input_shape:
        assert str(shape) in str(info.value)


def test_spatial_alignment_rejects_a_single_map():
    with pytest.raises(ValueError, match="list of feature maps"):
        layers.SpatialAlignment(output_size=4, filters=4).build((2, 8, 8, 3))


@pytest.mark.parametrize(
    "init_kwargs",
    [{"output_size": 0}, {"output_size": (4, 4, 4)}, {"pooling": "median"}, {"filters": 0}],
)
def test_spatial_alignment_rejects_bad_arguments(init_kwargs):
    with pytest.raises(ValueError, match="Received"):
        layers.SpatialAlignment(**{"output_size": 4, "filters": 4, **init_kwargs})


# === ConcatFusion ===


@pytest.mark.parametrize(
    "init_kwargs, input_shapes, expected_output_shape",
    [
        (
            {"output_size": 4, "filters": 6},
            [(2, 8, 8, 3), (2, 2, 2, 5), (2, 4, 4, 4)],
            (2, 4, 4, 6),
        ),
        (
            {
                "output_size": (2, 4),
                "filters": 4,
                "pooling": "max",
                "data_format": "channels_first",
            },
            [(2, 3, 8, 8), (2, 5, 4, 2)],
            (2, 4, 2, 4),
        ),
    ],
    ids=["channels_last", "channels_first_max"],
)
def test_concat_fusion_contract(init_kwargs, input_shapes, expected_output_shape, tmp_path):
    run_layer_test(
        layers.ConcatFusion,
        init_kwargs=init_kwargs,
        input_data=[_random(*shape, seed=i) for i, shape in enumerate(input_shapes)],
        expected_output_shape=expected_output_shape,
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_concat_fusion_on_the_grid_is_concat_then_1x1_conv(data_format):
    maps = [_random(2, 4, 4, 3, seed=1), _random(2, 4, 4, 5, seed=2)]
    layer = layers.ConcatFusion(
        output_size=4, filters=6, bias_initializer="random_normal", data_format=data_format
    )
    if data_format == "channels_first":
        output = np.transpose(_numpy(layer([_to_channels_first(x) for x in maps])), (0, 2, 3, 1))
    else:
        output = _numpy(layer(maps))
    kernel = _numpy(layer.projection.kernel).reshape(8, 6)
    expected = np.maximum(np.concatenate(maps, axis=-1) @ kernel + _numpy(layer.projection.bias), 0)
    assert np.any(expected == 0) and np.any(expected > 0)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)


# === SelfAttentionFusion ===


@pytest.mark.parametrize(
    "init_kwargs, input_shape",
    [
        ({"num_heads": 2, "key_dim": 4}, (2, 4, 4, 8)),
        ({"num_heads": 2, "key_dim": 4, "data_format": "channels_first"}, (2, 8, 4, 2)),
        ({"num_heads": 1, "key_dim": 4, "use_positional_embedding": True}, (2, 4, 4, 8)),
        ({"num_heads": 2, "key_dim": 4, "dropout": 0.1, "seed": 1}, (2, 6, 8)),
    ],
    ids=["map", "map_channels_first", "positional_embedding", "tokens_dropout"],
)
def test_self_attention_fusion_contract(init_kwargs, input_shape, tmp_path):
    # query, key, value, output: kernel + bias each; LayerNorm: gamma, beta.
    num_weights = 10 + int(init_kwargs.get("use_positional_embedding", False))
    run_layer_test(
        layers.SelfAttentionFusion,
        init_kwargs=init_kwargs,
        input_data=_random(*input_shape),
        expected_output_shape=input_shape,
        expected_num_trainable_weights=num_weights,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_self_attention_fusion_channels_first_equals_channels_last():
    x = _random(2, 3, 5, 8, seed=3)
    last = layers.SelfAttentionFusion(num_heads=2, key_dim=4)
    first = layers.SelfAttentionFusion(num_heads=2, key_dim=4, data_format="channels_first")
    expected = _numpy(last(x))
    first.build(_to_channels_first(x).shape)
    first.set_weights(last.get_weights())
    output = np.transpose(_numpy(first(_to_channels_first(x))), (0, 2, 3, 1))
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)


def test_self_attention_fusion_accepts_unknown_spatial_size():
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, layers.SelfAttentionFusion(num_heads=2, key_dim=4)(inputs))
    for height, width in [(4, 4), (2, 3)]:
        assert tuple(model(_random(2, height, width, 8)).shape) == (2, height, width, 8)


@pytest.mark.parametrize(
    "init_kwargs, input_shape",
    [
        ({}, (2, 8)),
        ({}, (2, 4, 4, None)),
        ({"use_positional_embedding": True}, (2, None, 4, 8)),
    ],
    ids=["rank", "channels", "positional_embedding_needs_size"],
)
def test_self_attention_fusion_rejects_bad_shapes(init_kwargs, input_shape):
    with pytest.raises(ValueError, match="SelfAttentionFusion") as info:
        layers.SelfAttentionFusion(num_heads=2, key_dim=4, **init_kwargs).build(input_shape)
    assert str(input_shape) in str(info.value)


# === CrossAttentionFusion ===


_CONTEXT_MASK = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], "int32")


@pytest.mark.parametrize(
    "init_kwargs, query_shape, mask",
    [
        ({"num_heads": 2, "key_dim": 4}, (3, 4, 4, 8), _CONTEXT_MASK),
        ({"num_heads": 2, "key_dim": 4, "data_format": "channels_first"}, (3, 8, 2, 4), None),
        (
            {"num_heads": 1, "key_dim": 6, "dropout": 0.1, "seed": 2},
            (3, 7, 8),
            _CONTEXT_MASK.astype(bool),
        ),
    ],
    ids=["map_int_mask", "map_channels_first_no_mask", "tokens_bool_mask_dropout"],
)
def test_cross_attention_fusion_contract(init_kwargs, query_shape, mask, tmp_path):
    input_data = {"query": _random(*query_shape, seed=1), "context": _random(3, 5, 6, seed=2)}
    if mask is not None:
        input_data["context_mask"] = mask
    run_layer_test(
        layers.CrossAttentionFusion,
        init_kwargs=init_kwargs,
        input_data=input_data,
        expected_output_shape=query_shape,
        expected_num_trainable_weights=10,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("query_shape", [(3, 4, 4, 8), (3, 7, 8)], ids=["map", "tokens"])
def test_cross_attention_fusion_ignores_padded_context(query_shape):
    layer = layers.CrossAttentionFusion(num_heads=2, key_dim=4)
    query = _random(*query_shape, seed=1)
    context = _random(3, 5, 6, seed=2)
    output = _numpy(layer(query, context, context_mask=_CONTEXT_MASK))

    padding = _CONTEXT_MASK[..., None] == 0
    changed = np.where(padding, _random(3, 5, 6, seed=3, scale=1e4), context)
    changed[2, 0, 0] = np.inf  # even non-finite padding must not leak
    changed_output = _numpy(layer(query, changed, context_mask=_CONTEXT_MASK))
    np.testing.assert_array_equal(changed_output, output)

    # The mask matters for rows with real tokens (the test would be empty otherwise).
    unmasked_output = _numpy(layer(query, context))
    assert not np.allclose(unmasked_output[:2], output[:2])


def test_cross_attention_fusion_fully_padded_row_is_layer_norm_of_query():
    layer = layers.CrossAttentionFusion(num_heads=2, key_dim=4, epsilon=1e-6)
    query = _random(3, 7, 8, seed=1)
    output = _numpy(layer(query, _random(3, 5, 6, seed=2), context_mask=_CONTEXT_MASK))
    assert np.all(np.isfinite(output))
    # Row 2 has no real token: the attention branch is zero; gamma=1, beta=0 at init.
    row = query[2]
    mean, variance = row.mean(-1, keepdims=True), row.var(-1, keepdims=True)
    np.testing.assert_allclose(output[2], (row - mean) / np.sqrt(variance + 1e-6), atol=1e-5)


def test_cross_attention_fusion_uses_the_keras_mask_of_the_context():
    query = keras.Input((4, 4, 8), name="query")
    token_ids = keras.Input((5,), dtype="int32", name="token_ids")
    embedding = keras.layers.Embedding(20, 6, mask_zero=True)
    fusion = layers.CrossAttentionFusion(num_heads=2, key_dim=4)
    model = keras.Model([query, token_ids], fusion(query, embedding(token_ids)))

    ids = np.array([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]], "int32")
    images = _random(3, 4, 4, 8, seed=1)
    implicit = _numpy(model([images, ids]))
    embedded = _numpy(embedding(ids))  # a NumPy copy carries no Keras mask
    explicit = _numpy(fusion(images, embedded, context_mask=ids != 0))
    np.testing.assert_array_equal(implicit, explicit)
    assert not np.allclose(_numpy(fusion(images, embedded)), explicit)


@pytest.mark.parametrize(
    "query_shape, context_shape, context_mask_shape",
    [
        ((2, 8), (2, 5, 6), None),
        ((2, 4, 4, 8), (2, 6), None),
        ((2, 4, 4, 8), (2, 5, None), None),
        ((2, 4, 4, 8), (2, 5, 6), (2, 4)),
        ((2, 4, 4, 8), (3, 5, 6), (3, 5)),
    ],
    ids=["query_rank", "context_rank", "context_channels", "mask_length", "batch"],
)
def test_cross_attention_fusion_rejects_bad_shapes(query_shape, context_shape, context_mask_shape):
    layer = layers.CrossAttentionFusion(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="CrossAttentionFusion") as info:
        layer.build(query_shape, context_shape, context_mask_shape)
    for shape in (query_shape, context_shape, context_mask_shape):
        assert str(shape) in str(info.value)


# === The harness itself ===


@keras.saving.register_keras_serializable(package="kerasmtl_tests")
class _WrongOutputShape(keras.layers.Layer):
    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


@keras.saving.register_keras_serializable(package="kerasmtl_tests")
class _LostConfig(keras.layers.Layer):
    def __init__(self, units=1, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "units": 1}  # forgets self.units


def test_run_layer_test_catches_a_wrong_compute_output_shape():
    with pytest.raises(AssertionError, match="eager call vs compute_output_shape"):
        run_layer_test(_WrongOutputShape, {}, _random(2, 3), run_fit=False, run_saving=False)


def test_run_layer_test_catches_a_config_that_loses_arguments():
    with pytest.raises(AssertionError, match="lost the constructor argument `units`"):
        run_layer_test(_LostConfig, {"units": 3}, _random(2, 3), run_fit=False, run_saving=False)


def test_run_layer_test_catches_wrong_weight_counts():
    with pytest.raises(AssertionError, match="trainable weights, expected 3"):
        run_layer_test(
            layers.ChannelProjection,
            {"filters": 2},
            _random(2, 5, 3),
            expected_num_trainable_weights=3,
            run_fit=False,
            run_saving=False,
        )


def test_run_model_test_on_a_two_task_model(tmp_path):
    maps = [keras.Input((8, 8, 3), name="image"), keras.Input((4, 4, 5), name="depth")]
    fused = layers.ConcatFusion(output_size=4, filters=4)(maps)
    fused = layers.SelfAttentionFusion(num_heads=1, key_dim=4)(fused)
    pooled = keras.layers.GlobalAveragePooling2D()(fused)
    outputs = {
        "label": keras.layers.Dense(3, name="label")(pooled),
        "score": keras.layers.Dense(1, name="score")(pooled),
    }
    model = keras.Model(maps, outputs)
    model.compile(
        optimizer="adam",
        loss={"label": "sparse_categorical_crossentropy", "score": "mse"},
    )
    x = [_random(4, 8, 8, 3, seed=1), _random(4, 4, 4, 5, seed=2)]
    y = {"label": np.array([0, 1, 2, 1]), "score": _random(4, 1, seed=3)}
    loaded = run_model_test(model, x, y, tmp_path=tmp_path)
    assert isinstance(loaded.get_layer(index=2), layers.ConcatFusion)


def test_run_model_test_needs_a_compiled_model():
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="compiled"):
        run_model_test(keras.Model(inputs, keras.layers.Dense(1)(inputs)), _random(2, 3), None)
