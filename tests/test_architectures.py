"""Multi-task architectures (shared bottom, MMoE, CGC/PLE, cross-stitch, MTAN, DSelect-k).

Their layers (`Expert`, `Gate`, `DSelectKGate`, `ExpertMixture`, `CrossStitch`,
`TaskAttention`), their builders in `kerasmtl.models`, and `gate_weights`.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasmtl
from kerasmtl import Task, layers, models, weighting
from kerasmtl.layers.expert_stack import ExpertStack
from kerasmtl.testing import run_layer_test

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

BATCH = 8


def _random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _tasks():
    return [Task("a", head=1, loss="mse"), Task("b", head=2, loss="mse")]


def _labels(seed=1):
    return {"a": _random(BATCH, 1, seed=seed), "b": _random(BATCH, 2, seed=seed + 1)}


TABULAR = {"age": "numeric", "city": ("categorical", 5), "history": ("numeric", 3)}


def _tabular_x(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "age": rng.standard_normal((BATCH, 1)).astype("float32"),
        "city": rng.integers(0, 5, (BATCH, 1)).astype("int32"),
        "history": rng.standard_normal((BATCH, 3)).astype("float32"),
    }


def _conv_expert(layer_name):
    return keras.Sequential(
        [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D()],
        name=layer_name,
    )


# Each case: a builder call and its inputs; together they cover dense vectors,
# tabular dicts (numeric + categorical) and images.
ARCHITECTURES = {
    "shared_bottom": (
        lambda: models.shared_bottom(TABULAR, _tasks(), bottom_units=(8,), tower_units=(4,)),
        _tabular_x,
    ),
    "mmoe": (
        lambda: models.mmoe(TABULAR, _tasks(), num_experts=3, expert_units=(8,), tower_units=(4,)),
        _tabular_x,
    ),
    "cgc": (
        lambda: models.cgc({"features": (6,)}, _tasks(), expert_units=(8,), tower_units=(4,)),
        lambda: _random(BATCH, 6),
    ),
    "ple": (
        lambda: models.ple(
            {"features": (6,)}, _tasks(), num_levels=2, expert_units=(8,), tower_units=(4,)
        ),
        lambda: _random(BATCH, 6),
    ),
    "cross_stitch": (
        lambda: models.cross_stitch({"features": (6,)}, _tasks(), units=(8, 4)),
        lambda: _random(BATCH, 6),
    ),
    "mtan": (
        lambda: models.mtan({"image": (8, 8, 3)}, _tasks(), filters=(4, 8), tower_units=(4,)),
        lambda: _random(BATCH, 8, 8, 3),
    ),
    "dselect_k": (
        lambda: models.dselect_k(
            TABULAR, _tasks(), num_experts=3, k=2, expert_units=(8,), tower_units=(4,),
            entropy_regularization=1e-2,
        ),
        _tabular_x,
    ),
}


def _gradient_strategy():
    """A registered gradient-based strategy (any architecture works with any weighting)."""
    if "mgda" in weighting.ALL_OBJECTS_DICT:
        return "mgda"
    return weighting.Fixed([1.0, 1.0])


def _assert_outputs_close(actual, expected, atol):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(np.asarray(actual[name]), expected[name], atol=atol, rtol=0)


# === Docstrings ===


def test_public_names_are_exported():
    for name in ("CrossStitch", "DSelectKGate", "Expert", "ExpertMixture", "Gate", "TaskAttention"):
        assert name in layers.__all__ and hasattr(layers, name)
    for name in ("shared_bottom", "mmoe", "cgc", "ple", "cross_stitch", "mtan", "dselect_k",
                 "gate_weights"):
        assert name in models.__all__ and callable(getattr(models, name))
    for name in ("SharedBottom", "MMoE", "CGC", "PLE", "CrossStitchNetwork", "MTAN", "DSelectK",
                 "ClassifyAndLocalize", "SegmentAndDetect", "VisionLanguage"):
        assert name in models.__all__
        assert issubclass(getattr(models, name), kerasmtl.MultiTaskModel)
    for name in ("HardSharing", "SoftSharing"):
        assert name in kerasmtl.__all__
        assert issubclass(getattr(kerasmtl, name), kerasmtl.MultiTaskModel)


# === Layer contracts ===


@pytest.mark.parametrize(
    "layer_cls, init_kwargs, input_data, expected_output_shape, num_weights, run_fit",
    [
        (layers.Expert, {"units": (8, 4), "dropout": 0.1, "seed": 1}, _random(3, 5), (3, 4), 4,
         True),
        (layers.Expert, {"units": 6}, _random(3, 4, 4, 2), (3, 4, 4, 6), 2, True),
        (layers.Gate, {"num_experts": 3, "units": (4,)}, _random(3, 5), (3, 3), 4, True),
        (layers.Gate, {"num_experts": 3, "temperature": 2.0}, _random(3, 4, 4, 2), (3, 3), 2,
         True),
        (layers.DSelectKGate, {"num_experts": 5, "k": 2, "entropy_regularization": 0.1},
         _random(3, 5), (3, 5), 4, True),
        (layers.DSelectKGate, {"num_experts": 4, "k": 3, "per_example": False}, _random(3, 5),
         (3, 4), 2, True),
        (layers.DSelectKGate, {"num_experts": 3, "k": 1}, _random(3, 5), (3, 3), 2, True),
        (layers.Gate, {"num_experts": 1}, _random(3, 5), (3, 1), 0, False),
        (layers.ExpertMixture, {}, {"experts": _random(3, 4, 6), "gates": _random(3, 4)},
         (3, 6), 0, False),
        (layers.ExpertMixture, {"expert_indices": [3, 0]},
         {"experts": _random(3, 4, 6), "gates": _random(3, 2)}, (3, 6), 0, False),
        (ExpertStack, {}, [_random(3, 5), _random(3, 5), _random(3, 5)], (3, 3, 5), 0, False),
        (layers.CrossStitch, {"alpha_self": 0.8}, [_random(3, 6), _random(3, 6), _random(3, 6)],
         [(3, 6)] * 3, 1, True),
        (layers.CrossStitch, {"channelwise": True, "data_format": "channels_first"},
         [_random(3, 2, 4, 4), _random(3, 2, 4, 4)], [(3, 2, 4, 4)] * 2, 1, True),
        (layers.TaskAttention, {"hidden_filters": 3},
         {"features": _random(3, 4, 4, 6), "previous": _random(3, 4, 4, 2)}, (3, 4, 4, 6), 4,
         True),
        (layers.TaskAttention, {}, _random(3, 5, 6), (3, 5, 6), 4, True),
    ],
)
def test_layer_contract(
    layer_cls, init_kwargs, input_data, expected_output_shape, num_weights, run_fit, tmp_path
):
    # Seeded, so each run uses the same initial weights. Unseeded, the Expert case
    # (ReLU, dropout, trained towards zeros) failed the "fit changes a weight" check once
    # in a clean-clone CI run and passed 60 reruns; the likely cause is a start where
    # every output of its one training step is zero, so every gradient is zero.
    keras.utils.set_random_seed(0)
    run_layer_test(
        layer_cls,
        init_kwargs,
        input_data,
        expected_output_shape=expected_output_shape,
        expected_num_trainable_weights=num_weights,
        expected_num_non_trainable_weights=0,
        run_fit=run_fit,
        tmp_path=tmp_path,
    )


# === Layer numerics ===


def test_expert_mixture_matches_numpy_for_lists_stacks_and_maps():
    experts = [_random(4, 3, 3, 2, seed=seed) for seed in range(3)]
    gates = np.random.default_rng(9).dirichlet(np.ones(3), size=4).astype("float32")
    expected = sum(gates[:, i, None, None, None] * experts[i] for i in range(3))
    mixture = layers.ExpertMixture()
    np.testing.assert_allclose(_numpy(mixture(experts, gates)), expected, atol=1e-6)
    stacked = np.stack(experts, axis=1)
    np.testing.assert_allclose(_numpy(mixture(stacked, gates)), expected, atol=1e-6)
    with pytest.raises(ValueError, match="2 gate weights for 3 experts"):
        layers.ExpertMixture()(experts, gates[:, :2])
    # A subset of a stack, in the order of the gate weights (a CGC task's own + shared).
    selected = layers.ExpertMixture(expert_indices=[2, 0])(stacked, gates[:, :2])
    expected = (
        gates[:, 0, None, None, None] * experts[2] + gates[:, 1, None, None, None] * experts[0]
    )
    np.testing.assert_allclose(_numpy(selected), expected, atol=1e-6)
    np.testing.assert_allclose(_numpy(ExpertStack()(experts)), stacked, atol=0)
    with pytest.raises(ValueError, match="beyond the 3 of the stack"):
        layers.ExpertMixture(expert_indices=[0, 3])(stacked, gates[:, :2])
    with pytest.raises(ValueError, match="not from a list"):
        layers.ExpertMixture(expert_indices=[0, 1])(experts, gates[:, :2])
    with pytest.raises(ValueError, match="non-negative integers"):
        layers.ExpertMixture(expert_indices=[-1])


def test_gate_weights_are_a_softmax_of_the_logits():
    gate = layers.Gate(num_experts=4, temperature=0.5)
    x = _random(6, 5)
    weights = _numpy(gate(x))
    logits = (x @ _numpy(gate._logits.kernel) + _numpy(gate._logits.bias)) / 0.5
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    # A feature map is averaged over its positions first.
    image = _random(6, 3, 3, 5)
    np.testing.assert_allclose(
        _numpy(gate(image)), _numpy(gate(image.mean(axis=(1, 2)))), atol=1e-6
    )


def test_dselect_k_smooth_step_matches_numpy():
    gate = layers.DSelectKGate(num_experts=4, k=2, gamma=2.0)
    t = np.linspace(-2, 2, 41).astype("float32")
    expected = np.where(
        t <= -1.0, 0.0, np.where(t >= 1.0, 1.0, -2 / 8 * t**3 + 3 / 4 * t + 0.5)
    )
    np.testing.assert_allclose(_numpy(gate.smooth_step(t)), expected, atol=1e-6)


@pytest.mark.parametrize("num_experts", [4, 5, 8])
def test_dselect_k_weights_are_on_the_simplex_at_init(num_experts):
    gate = layers.DSelectKGate(num_experts=num_experts, k=2)
    weights = _numpy(gate(_random(32, 6, seed=3)))
    assert weights.shape == (32, num_experts)
    assert weights.min() >= 0.0
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    selectors = _numpy(gate.selector_outputs(_random(32, 6, seed=3)))
    np.testing.assert_allclose(selectors.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("num_experts, k", [(4, 1), (5, 2), (8, 3)])
def test_dselect_k_selects_at_most_k_experts_once_the_codes_are_binary(num_experts, k):
    # Binary codes: every |z| >= gamma / 2. A zero kernel and biases of +-gamma give
    # each selector one code for all samples; a large random kernel gives each
    # sample its own codes, all outside the polynomial region.
    gamma = 1.0
    gate = layers.DSelectKGate(num_experts=num_experts, k=k, gamma=gamma)
    x = _random(64, 6, seed=4)
    gate.build(x.shape)
    rng = np.random.default_rng(0)
    kernel = 100.0 * rng.standard_normal(gate._code_logits.kernel.shape)
    gate._code_logits.kernel.assign(kernel.astype("float32"))
    bias = gamma * np.sign(rng.standard_normal(gate._code_logits.bias.shape))
    gate._code_logits.bias.assign(bias.astype("float32"))
    z = x @ kernel + bias
    binary_rows = np.all(np.abs(z) >= gamma / 2, axis=-1)
    assert binary_rows.mean() > 0.9
    weights = _numpy(gate(x))
    nonzero = np.count_nonzero(weights, axis=-1)
    assert np.all(nonzero[binary_rows] <= k), nonzero
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)

    gate._code_logits.kernel.assign(np.zeros(gate._code_logits.kernel.shape, "float32"))
    weights = _numpy(gate(x))
    assert np.all(np.count_nonzero(weights, axis=-1) <= k)
    if k == 1:
        np.testing.assert_array_equal(weights.max(axis=-1), 1.0)


def test_dselect_k_static_gates_become_k_sparse_after_a_few_steps():
    keras.utils.set_random_seed(0)
    x = _random(64, 6, seed=5)
    y = {"a": x[:, :1] * 2.0, "b": np.sin(x[:, 1:3])}
    model = models.dselect_k(
        {"features": (6,)}, _tasks(), num_experts=4, k=2, expert_units=(8,), tower_units=(),
        entropy_regularization=1.0, per_example=False,
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    before = models.gate_weights(model, x)
    assert all(np.count_nonzero(w, axis=-1).min() == 4 for w in before.values())
    model.fit(x, y, batch_size=16, epochs=4, verbose=0)
    after = models.gate_weights(model, x)
    for task, w in after.items():
        assert np.all(np.count_nonzero(w, axis=-1) <= 2), (task, w[:2])
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-5)


def test_dselect_k_entropy_regularizer_is_a_training_loss_only():
    gate = layers.DSelectKGate(num_experts=4, k=2, entropy_regularization=0.5)
    x = _random(5, 3)
    gate(x, training=False)
    assert not gate.losses
    gate(x, training=True)
    assert len(gate.losses) == 1
    selectors = _numpy(gate.selector_outputs(x))
    entropy = -(selectors * np.log(selectors + 1e-6)).sum(-1).sum(-1).mean()
    np.testing.assert_allclose(_numpy(gate.losses[0]), 0.5 * entropy, rtol=1e-5)


@pytest.mark.parametrize("num_tasks, alpha_self", [(2, 0.9), (3, 0.7)])
def test_cross_stitch_mixes_with_the_configured_matrix(num_tasks, alpha_self):
    unit = layers.CrossStitch(alpha_self=alpha_self)
    inputs = [_random(4, 5, seed=seed) for seed in range(num_tasks)]
    outputs = unit(inputs)
    off = (1 - alpha_self) / (num_tasks - 1)
    expected_matrix = np.full((num_tasks, num_tasks), off)
    np.fill_diagonal(expected_matrix, alpha_self)
    np.testing.assert_allclose(_numpy(unit.mixing), expected_matrix, atol=1e-6)
    for i in range(num_tasks):
        expected = sum(expected_matrix[i, j] * inputs[j] for j in range(num_tasks))
        np.testing.assert_allclose(_numpy(outputs[i]), expected, atol=1e-6)


def test_cross_stitch_channelwise_matches_numpy():
    unit = layers.CrossStitch(channelwise=True)
    inputs = [_random(2, 3, 3, 4, seed=seed) for seed in range(2)]
    unit.build([x.shape for x in inputs])
    mixing = np.random.default_rng(0).random((4, 2, 2)).astype("float32")
    unit.mixing.assign(mixing)
    outputs = unit(inputs)
    for i in range(2):
        expected = sum(mixing[:, i, j] * inputs[j] for j in range(2))
        np.testing.assert_allclose(_numpy(outputs[i]), expected, atol=1e-5)


def test_cross_stitch_units_start_at_the_configured_mixing_and_learn():
    model = models.cross_stitch(
        {"features": (6,)}, _tasks() + [Task("c", head=1, loss="mse")], units=(8, 4),
        alpha_self=0.8,
    )
    start = np.full((3, 3), 0.1)
    np.fill_diagonal(start, 0.8)
    units = [model.get_layer(f"cross_stitch_{depth}") for depth in range(2)]
    for unit in units:
        np.testing.assert_allclose(_numpy(unit.mixing), start, atol=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    y = {**_labels(), "c": _random(BATCH, 1, seed=7)}
    model.fit(_random(BATCH, 6), y, batch_size=4, epochs=2, verbose=0)
    for unit in units:
        assert np.abs(_numpy(unit.mixing) - start).max() > 1e-3


def test_task_attention_masks_the_features():
    attention = layers.TaskAttention(hidden_filters=4)
    features, previous = _random(2, 4, 4, 6), _random(2, 4, 4, 3, seed=1)
    mask = _numpy(attention.attention_mask(features, previous))
    assert mask.shape == features.shape and mask.min() > 0.0 and mask.max() < 1.0
    np.testing.assert_allclose(_numpy(attention(features, previous)), mask * features, atol=1e-6)
    with pytest.raises(ValueError, match="spatial size"):
        layers.TaskAttention()(features, _random(2, 2, 2, 3))


# === Architectures ===


@pytest.mark.e2e
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_architecture_trains_saves_and_serves(architecture, tmp_path):
    build, make_x = ARCHITECTURES[architecture]
    model = build()
    assert isinstance(model, kerasmtl.MultiTaskModel)
    assert model.task_names == ["a", "b"]
    x, y = make_x(), _labels()
    # Any architecture trains with any weighting: here a gradient-based one.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=_gradient_strategy())
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert all(np.isfinite(history.history[key][-1]) for key in ("loss", "a_loss", "b_loss"))
    expected = model.predict(x, verbose=0)
    assert {name: value.shape for name, value in expected.items()} == {
        "a": (BATCH, 1), "b": (BATCH, 2)
    }

    path = os.path.join(tmp_path, f"{architecture}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    # The architecture's own class, with the same config (tests/test_architecture_configs.py).
    assert type(loaded) is type(model) and type(model) is not kerasmtl.MultiTaskModel
    assert loaded.get_config() == model.get_config()
    assert loaded.task_names == model.task_names
    _assert_outputs_close(loaded.predict(x, verbose=0), expected, atol=1e-6)

    if keras.backend.backend() != "tensorflow":
        return  # the export of a JAX-trained model: tests/test_backends.py
    export_path = os.path.join(tmp_path, f"{architecture}_saved_model")
    model.export(export_path, format="tf_saved_model", verbose=False)
    # Keep the loaded object alive: its variables go with it.
    reloaded = tf.saved_model.load(export_path)
    served = reloaded.serve(x)
    _assert_outputs_close({k: v.numpy() for k, v in served.items()}, expected, atol=1e-5)


@pytest.mark.parametrize("architecture", ["mmoe", "ple", "dselect_k"])
def test_gate_weights_are_non_negative_and_sum_to_one(architecture):
    build, make_x = ARCHITECTURES[architecture]
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = make_x()
    model.fit(x, _labels(), batch_size=4, epochs=1, verbose=0)
    weights = models.gate_weights(model, x)
    assert sorted(weights) == ["a", "b"]
    num_experts = model.get_layer("a_gate").num_experts
    for value in weights.values():
        assert value.shape == (BATCH, num_experts)
        assert value.min() >= 0.0
        np.testing.assert_allclose(value.sum(axis=-1), 1.0, atol=1e-5)
    # The weights are the ones the model mixes its experts with.
    expert_names = {
        "mmoe": ["expert_0", "expert_1", "expert_2"],
        "dselect_k": ["expert_0", "expert_1", "expert_2"],
        "ple": ["level2_a_expert_0", "level2_shared_expert_0", "level2_shared_expert_1"],
    }[architecture]
    probe = keras.Model(
        model.input,
        [model.get_layer("a_mixture").output]
        + [model.get_layer(name).output for name in expert_names],
    )
    mixture, *experts = probe.predict(x, verbose=0)
    expected = sum(weights["a"][:, i, None] * expert for i, expert in enumerate(experts))
    np.testing.assert_allclose(mixture, expected, atol=1e-5)


def test_ple_gates_mix_own_and_shared_experts():
    model = models.ple(
        {"features": (6,)}, _tasks(), num_levels=3, num_shared_experts=2, num_task_experts=3,
        expert_units=(4,),
    )
    assert model.get_layer("a_gate").num_experts == 5
    assert model.get_layer("level1_shared_gate").num_experts == 2 * 3 + 2
    assert model.get_layer("level2_b_gate").num_experts == 5
    names = {layer.name for layer in model.layers}
    assert "level3_shared_gate" not in names
    assert {"level3_a_expert_2", "level3_shared_expert_1"} <= names
    assert len(models.cgc({"features": (6,)}, _tasks()).get_layer("b_gate")._inbound_nodes) == 1


def test_single_expert_gates_train_without_missing_gradients():
    # A one-expert gate and a one-selector DSelect-k gate have no weights that the
    # loss cannot reach ("Gradients do not exist" would fail under warnings-as-errors).
    x = _random(BATCH, 6)
    for model in (
        models.ple({"features": (6,)}, _tasks(), num_levels=2, num_shared_experts=1,
                   num_task_experts=0, expert_units=(4,)),
        models.dselect_k({"features": (6,)}, _tasks(), num_experts=3, k=1, expert_units=(4,)),
    ):
        model.compile(optimizer="adam")
        model.fit(x, _labels(), epochs=1, verbose=0)
        for value in models.gate_weights(model, x).values():
            np.testing.assert_allclose(value.sum(axis=-1), 1.0, atol=1e-5)


def test_image_experts_and_bottom():
    image = _random(BATCH, 8, 8, 3)
    stem = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")
    model = models.mmoe(
        {"image": (8, 8, 3)}, _tasks(), num_experts=2, expert=_conv_expert, bottom=stem
    )
    model.compile(optimizer="adam")
    model.fit(image, _labels(), epochs=1, verbose=0)
    assert set(models.gate_weights(model, image)) == {"a", "b"}
    blocks = [lambda name: keras.layers.Conv2D(4, 3, activation="relu", name=name)]
    model = models.cross_stitch({"image": (8, 8, 3)}, _tasks(), blocks=blocks, channelwise=True)
    assert model.get_layer("cross_stitch_0").mixing.shape == (4, 2, 2)
    assert {k: v.shape for k, v in model.predict(image, verbose=0).items()} == {
        "a": (BATCH, 1), "b": (BATCH, 2)
    }


def test_shared_bottom_trains_with_representation_gradients():
    model = models.shared_bottom({"features": (6,)}, _tasks(), bottom_units=(8,))
    assert model.representation == "bottom"
    model.compile(optimizer="adam", weighting=_gradient_strategy(), gradients="representation")
    history = model.fit(_random(BATCH, 6), _labels(), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_tabular_inputs_embed_categorical_features():
    model = models.mmoe(
        {"age": "numeric", "city": ("categorical", 7, 3), "zip": ("categorical", 11)},
        _tasks(), embedding_dim=5,
    )
    assert set(model.input) == {"age", "city", "zip"}
    assert model.input["city"].dtype == "int32"
    assert model.get_layer("city_embedding").output_dim == 3
    assert model.get_layer("zip_embedding").output_dim == 5
    assert model.get_layer("features").output.shape == (None, 1 + 3 + 5)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: models.mmoe({"x": ("categorical",)}, _tasks()), ValueError, "specification"),
        (lambda: models.mmoe({"x": "text"}, _tasks()), ValueError, "specification"),
        (lambda: models.mmoe({"image": (8, 8, 3), "age": "numeric"}, _tasks()), ValueError,
         "bottom"),
        (lambda: models.mmoe({"x": (4,)}, _tasks(), num_experts=0), ValueError, "num_experts"),
        (lambda: models.mmoe({"x": (4,)}, _tasks(), expert=keras.layers.Dense(2)), TypeError,
         "expert"),
        (lambda: models.ple({"x": (4,)}, _tasks(), num_shared_experts=0, num_task_experts=0),
         ValueError, "at least one expert"),
        (lambda: models.cross_stitch({"x": (4,)}, _tasks()[:1]), ValueError, "two or more"),
        (lambda: models.mtan({"x": (4,)}, _tasks()), ValueError, "one image input"),
        (lambda: models.mtan({"image": (2, 2, 3)}, _tasks(), filters=(4, 4, 4)), ValueError,
         "at least 4"),
        (lambda: models.dselect_k({"x": (4,)}, _tasks(), num_experts=3, k=4), ValueError,
         "cannot exceed"),
        (lambda: models.gate_weights(models.shared_bottom({"x": (4,)}, _tasks()),
                                     np.zeros((1, 4))), ValueError, "no gate layer"),
    ],
)
def test_builders_reject_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
