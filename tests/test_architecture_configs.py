"""Architectures as Keras objects: their config, `.keras` round trips, representation gradients.

Every architecture (`HardSharing`, `SoftSharing`, the classes of `kerasmtl.models`)
is a `MultiTaskModel` subclass whose `get_config` holds its hyper-parameters and
whose `from_config` rebuilds it (issue 12, item 3); the mixtures train with
gradients with respect to their stacked expert outputs (issue 13, item 6).
"""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
from keras import ops

import kerasmtl
from kerasmtl import HardSharing, MultiTaskModel, SoftSharing, Task, models, weighting

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

BATCH = 16
TABULAR = {"age": "numeric", "city": ("categorical", 5), "history": ("numeric", 3)}


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _tasks():
    return [Task("a", head=1, loss="mse"), Task("b", head=2, loss="mse")]


def _vector_x(seed=0, size=6):
    return np.random.default_rng(seed).standard_normal((BATCH, size)).astype("float32")


def _tabular_x(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "age": rng.standard_normal((BATCH, 1)).astype("float32"),
        "city": rng.integers(0, 5, (BATCH, 1)).astype("int32"),
        "history": rng.standard_normal((BATCH, 3)).astype("float32"),
    }


def _labels(seed=1):
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((BATCH, 1)).astype("float32"),
        "b": rng.standard_normal((BATCH, 2)).astype("float32"),
    }


def _dense_factory(units):
    def factory(layer_name):
        return keras.layers.Dense(units, activation="relu")

    return factory


def _sequential_tower(layer_name):
    return keras.Sequential([keras.layers.Dense(3, activation="relu")])


def _function_trunk(inputs):
    hidden = keras.layers.Dense(5, activation="relu", name="trunk_hidden")(inputs)
    return keras.layers.Dense(4, activation="relu", name="trunk_out")(hidden)


def _function_bottom(features):
    return keras.layers.Dense(7, activation="relu", name="bottom_dense")(features)


# Each case: (builder, inputs, the expected class, hyper-parameters the config must show).
CASES = {
    "hard_sharing_layer_trunk": (
        lambda: kerasmtl.hard_sharing(
            {"features": (6,)}, keras.layers.Dense(8, activation="relu", name="trunk"), _tasks()
        ),
        _vector_x,
        HardSharing,
        {},
    ),
    "hard_sharing_function_trunk": (
        lambda: HardSharing({"features": (6,)}, _function_trunk, _tasks(), name="hs"),
        _vector_x,
        HardSharing,
        {"name": "hs"},
    ),
    "soft_sharing": (
        lambda: kerasmtl.soft_sharing({"features": (6,)}, _sequential_tower, _tasks(), 0.01),
        _vector_x,
        SoftSharing,
        {"penalty": 0.01},
    ),
    "shared_bottom_function_bottom": (
        lambda: models.shared_bottom(TABULAR, _tasks(), bottom=_function_bottom, tower_units=(4,)),
        _tabular_x,
        models.SharedBottom,
        {"tower_units": [4]},
    ),
    "mmoe_factories_and_bottom": (
        lambda: models.mmoe(
            TABULAR,
            _tasks(),
            num_experts=3,
            expert=_dense_factory(5),
            tower=_sequential_tower,
            bottom=keras.layers.Dense(7, activation="relu", name="stem"),
        ),
        _tabular_x,
        models.MMoE,
        {"num_experts": 3},
    ),
    "cgc": (
        lambda: models.CGC({"features": (6,)}, _tasks(), num_task_experts=2, expert_units=(4,)),
        _vector_x,
        models.CGC,
        {"num_task_experts": 2, "num_shared_experts": 2},
    ),
    "ple": (
        lambda: models.ple({"features": (6,)}, _tasks(), num_levels=3, expert=_dense_factory(4)),
        _vector_x,
        models.PLE,
        {"num_levels": 3},
    ),
    "dselect_k": (
        lambda: models.dselect_k(
            {"features": (6,)}, _tasks(), num_experts=4, k=2, entropy_regularization=1e-2
        ),
        _vector_x,
        models.DSelectK,
        {"num_experts": 4, "k": 2, "entropy_regularization": 1e-2},
    ),
    "cross_stitch_blocks": (
        lambda: models.cross_stitch(
            {"features": (6,)}, _tasks(), blocks=[_dense_factory(5), _dense_factory(3)]
        ),
        _vector_x,
        models.CrossStitchNetwork,
        {"alpha_self": 0.9},
    ),
    "mtan": (
        lambda: models.mtan(
            {"image": (8, 8, 3)}, _tasks(), filters=(4, 8), tower=_sequential_tower
        ),
        lambda: np.random.default_rng(0).random((BATCH, 8, 8, 3)).astype("float32"),
        models.MTAN,
        {"filters": [4, 8]},
    ),
}


def _plain(config):
    """The config as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(config))


def _saved_config(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_architecture_config_round_trips_through_keras_file(case, tmp_path):
    build, make_x, cls, shown = CASES[case]
    keras.utils.set_random_seed(0)
    model = build()
    assert type(model) is cls and isinstance(model, MultiTaskModel)
    config = model.get_config()
    for key, value in shown.items():
        assert config[key] == value, key
    json.dumps(config)  # plain JSON: no function, tensor or layer object

    revived = cls.from_config(config)
    assert type(revived) is cls and revived.get_config() == config
    assert revived.representation == model.representation
    assert [w.shape for w in revived.weights] == [w.shape for w in model.weights]

    x, y = make_x(), _labels()
    model.compile(optimizer=keras.optimizers.SGD(1e-2))
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    expected = model.predict(x, verbose=0)
    path = os.path.join(tmp_path, f"{case}.keras")
    model.save(path)
    saved = _saved_config(path)
    assert saved["class_name"] == cls.__name__ and saved["registered_name"].startswith("kerasmtl>")
    for key, value in shown.items():
        assert saved["config"][key] == value, key

    loaded = keras.saving.load_model(path)  # no custom_objects
    assert type(loaded) is cls
    assert _plain(loaded.get_config()) == _plain(config)
    actual = loaded.predict(x, verbose=0)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=1e-6)
    # A reloaded model trains on.
    history = loaded.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_saved_mmoe_config_shows_its_hyper_parameters(tmp_path):
    model = models.mmoe(
        TABULAR, _tasks(), num_experts=5, expert_units=(6, 4), gate_units=(3,), tower_units=()
    )
    path = os.path.join(tmp_path, "mmoe.keras")
    model.save(path)
    config = _saved_config(path)["config"]
    assert config["num_experts"] == 5
    assert config["expert_units"] == [6, 4] and config["gate_units"] == [3]
    assert config["tower_units"] == [] and config["expert"] is None
    assert config["inputs"] == {"age": "numeric", "city": ["categorical", 5], "history": [
        "numeric", 3]}
    assert [task["name"] for task in config["tasks"]] == ["a", "b"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.MMoE({"features": (4,)}, _tasks(), 3),
        lambda: models.PLE({"features": (4,)}, _tasks(), 2),
        lambda: kerasmtl.SoftSharing({"features": (4,)}, _sequential_tower, _tasks(), 0.1),
        lambda: models.SegmentAndDetect((32, 32, 3)),
    ],
)
def test_hyper_parameters_are_keyword_only(build):
    with pytest.raises(TypeError, match="positional"):
        build()


def test_seed_model_configs_hold_their_arguments():
    model = models.vision_language(
        image_shape=(16, 16, 3), vocabulary_size=20, sequence_length=5, embedding_dim=8,
        num_classes=3, filters=(4,), image_grid=2, dense_units=8,
    )
    config = model.get_config()
    assert type(model) is models.VisionLanguage
    assert config["vocabulary_size"] == 20 and config["image_shape"] == [16, 16, 3]
    assert models.VisionLanguage.from_config(config).get_config() == config
    trunk = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    located = models.classify_and_localize(input_shape=(8, 8, 3), trunk=trunk, dense_units=4)
    config = located.get_config()
    assert type(located) is models.ClassifyAndLocalize and isinstance(located, HardSharing)
    assert config["trunk"]["class_name"] == "Sequential"
    revived = models.ClassifyAndLocalize.from_config(config)
    assert revived.get_config() == config and revived.representation == "features"


def test_hard_sharing_keeps_its_builder_signature():
    trunk = keras.layers.Dense(4, name="trunk")
    model = kerasmtl.hard_sharing({"features": (3,)}, trunk, _tasks(), name="tuned")
    assert type(model) is HardSharing and model.name == "tuned"
    assert model.representation == "trunk" and model.trunk is trunk


# === Soft sharing's penalty: a loss of the model (`add_loss`), not a training hook ===


def test_the_extra_loss_hook_is_gone():
    assert not hasattr(MultiTaskModel, "extra_loss")
    assert kerasmtl.SoftSharingModel is SoftSharing


def test_soft_sharing_penalty_is_a_model_loss_and_its_step_matches_numpy():
    keras.utils.set_random_seed(0)

    def tower(task_name):
        return keras.layers.Dense(3)

    tasks = [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")]
    model = SoftSharing({"features": (4,)}, tower, tasks, penalty=0.5)
    x = _vector_x(size=4)
    model(x)
    assert len(model.losses) == 1
    kernels = [_numpy(model.get_layer(f"{t}_tower").kernel).astype("float64") for t in "ab"]
    biases = [_numpy(model.get_layer(f"{t}_tower").bias).astype("float64") for t in "ab"]
    reference = 0.5 * (
        np.sum((kernels[0] - kernels[1]) ** 2) + np.sum((biases[0] - biases[1]) ** 2)
    )
    np.testing.assert_allclose(float(_numpy(model.losses[0])), reference, rtol=1e-5)
    np.testing.assert_allclose(float(_numpy(model.extra_loss_total())), reference, rtol=1e-5)

    # Labels equal to the predictions: the task losses have zero gradient, so one SGD
    # step moves the towers by the penalty's gradient alone, 2 * penalty * (w_a - w_b).
    y = {name: np.asarray(value) for name, value in model.predict(x, verbose=0).items()}
    learning_rate = 0.1
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    logs = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(logs["sharing_penalty"][0], reference, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"][0], reference, rtol=1e-5, atol=1e-7)
    for index, task in enumerate("ab"):
        other = 1 - index
        layer = model.get_layer(f"{task}_tower")
        expected_kernel = kernels[index] - learning_rate * 2 * 0.5 * (
            kernels[index] - kernels[other]
        )
        expected_bias = biases[index] - learning_rate * 2 * 0.5 * (biases[index] - biases[other])
        np.testing.assert_allclose(_numpy(layer.kernel), expected_kernel, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_numpy(layer.bias), expected_bias, rtol=1e-5, atol=1e-6)


# === Representation gradients for the mixtures ===


MIXTURES = {
    "mmoe": lambda: models.mmoe(TABULAR, _tasks(), num_experts=3, expert_units=(8,)),
    "cgc": lambda: models.cgc(TABULAR, _tasks(), expert_units=(8,)),
    "ple": lambda: models.ple(
        {"features": (6,)}, _tasks(), num_levels=2, expert_units=(8,),
        bottom=keras.layers.Dense(6, activation="relu", name="stem"),
    ),
    "dselect_k": lambda: models.dselect_k(
        {"features": (6,)}, _tasks(), num_experts=4, k=2, entropy_regularization=1e-2
    ),
}


def _mixture_data(architecture, seed=0):
    x = _tabular_x(seed) if architecture in ("mmoe", "cgc") else _vector_x(seed)
    rng = np.random.default_rng(seed + 10)
    # Learnable targets: fixed random functions of the inputs.
    flat = np.concatenate(list(x.values()), axis=1) if isinstance(x, dict) else x
    flat = flat.astype("float32")
    y = {
        "a": np.tanh(flat @ rng.standard_normal((flat.shape[1], 1))).astype("float32"),
        "b": np.tanh(flat @ rng.standard_normal((flat.shape[1], 2))).astype("float32"),
    }
    return x, y


@pytest.mark.parametrize("architecture", sorted(MIXTURES))
def test_mixture_representation_is_the_stacked_experts(architecture):
    model = MIXTURES[architecture]()
    assert model.representation == "experts"
    stack = model.get_layer("experts")
    assert isinstance(stack, kerasmtl.layers.expert_stack.ExpertStack)
    # Every task's output depends on the stack.
    num_experts = stack.output.shape[1]
    gates = [model.get_layer(f"{name}_gate").num_experts for name in model.task_names]
    assert all(1 <= count <= num_experts for count in gates)


@pytest.mark.parametrize("strategy", ["pcgrad", "mgda"])
@pytest.mark.parametrize("architecture", sorted(MIXTURES))
def test_mixture_trains_with_representation_gradients(architecture, strategy):
    keras.utils.set_random_seed(0)
    model = MIXTURES[architecture]()
    x, y = _mixture_data(architecture)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05), weighting=strategy, gradients="representation"
    )
    assert model.gradient_source == "representation"
    logs = model.fit(x, y, batch_size=BATCH, epochs=12, shuffle=False, verbose=0).history
    for key in ("loss", "a_loss", "b_loss", "a_weight", "b_weight"):
        assert np.all(np.isfinite(logs[key])), key
    task_total = np.add(logs["a_loss"], logs["b_loss"])
    assert task_total[-1] < task_total[0]
    if strategy == "mgda":
        # MGDA's weights lie on the simplex.
        np.testing.assert_allclose(np.add(logs["a_weight"], logs["b_weight"]), 1.0, atol=1e-4)
        assert min(logs["a_weight"] + logs["b_weight"]) >= -1e-6
    assert all(np.all(np.isfinite(_numpy(w))) for w in model.weights)


@keras.saving.register_keras_serializable(package="kerasmtl_tests")
class _EqualFromGram(weighting.Weighting):
    """A gradient-based strategy whose coefficients are all 1: the plain sum of the tasks."""

    requires_gradients = True

    def compute_weights_from_gram(self, gram, losses, present=None):
        return ops.ones_like(ops.cast(losses, "float32"))


@pytest.mark.parametrize("architecture", sorted(MIXTURES))
def test_representation_route_equals_parameter_route_for_equal_weights(architecture):
    """With coefficients 1, both routes step along the gradient of sum_k L_k + extra."""
    keras.utils.set_random_seed(0)
    model = MIXTURES[architecture]()
    x, y = _mixture_data(architecture)
    initial = [_numpy(w).copy() for w in model.trainable_weights]
    results = {}
    for route in ("loss", "parameters", "representation"):
        for variable, value in zip(model.trainable_weights, initial):
            variable.assign(value)
        if route == "loss":
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        else:
            model.compile(
                optimizer=keras.optimizers.SGD(0.1), weighting=_EqualFromGram(), gradients=route
            )
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        results[route] = [_numpy(w).copy() for w in model.trainable_weights]
    moved = [
        not np.array_equal(a, b) for a, b in zip(results["loss"], initial)
    ]
    assert sum(moved) > len(initial) // 2
    for route in ("parameters", "representation"):
        for expected, actual in zip(results["loss"], results[route]):
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
