"""The shared plumbing of the tower architectures (`models/base_*.py`).

`SharedBottom`, `CrossStitchNetwork`, `MMoE`, `PLE`, `CGC` and `DSelectK` share one
private base for their inputs, bottom, towers, experts and config. These tests pin
what the base must keep for every class: the config keys (the saved-file format),
the model's name, the builders' positional signatures, and the experts that the
config of `expert=` saves (exactly the experts that were built).
"""

import inspect

import keras
import numpy as np
import pytest

from kerasmtl import Task, models

pytestmark = pytest.mark.backend_neutral

_SHARED_KEYS = {"name", "trainable", "inputs", "tasks", "activation", "dropout", "embedding_dim"}
_TOWER_KEYS = _SHARED_KEYS | {"tower_units", "tower"}
_MIXTURE_KEYS = _TOWER_KEYS | {"expert_units", "expert", "bottom"}

# The config keys of each class as saved before the shared base existed (a `.keras`
# file holds them): the base must neither add nor drop one.
CONFIG_KEYS = {
    models.MMoE: _MIXTURE_KEYS | {"num_experts", "gate_units"},
    models.PLE: _MIXTURE_KEYS
    | {"num_levels", "num_shared_experts", "num_task_experts", "gate_units"},
    models.CGC: _MIXTURE_KEYS | {"num_shared_experts", "num_task_experts", "gate_units"},
    models.DSelectK: _MIXTURE_KEYS
    | {"num_experts", "k", "gamma", "entropy_regularization", "per_example"},
    models.SharedBottom: _TOWER_KEYS | {"bottom_units", "bottom"},
    models.CrossStitchNetwork: _TOWER_KEYS | {"units", "blocks", "alpha_self", "channelwise"},
}

BUILDERS = {
    models.MMoE: models.mmoe,
    models.PLE: models.ple,
    models.CGC: models.cgc,
    models.DSelectK: models.dselect_k,
    models.SharedBottom: models.shared_bottom,
    models.CrossStitchNetwork: models.cross_stitch,
}


def _tasks():
    return [Task("a", head=1, loss="mse"), Task("b", head=2, loss="mse")]


def _dense_factory(units):
    return lambda layer_name: keras.layers.Dense(units, activation="relu")


@pytest.mark.parametrize("cls", list(CONFIG_KEYS), ids=lambda cls: cls.__name__)
def test_config_keys_are_those_saved_before_the_shared_base(cls):
    model = cls({"features": (6,)}, _tasks())
    assert set(model.get_config()) == CONFIG_KEYS[cls]


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.MMoE({"features": (6,)}, _tasks(), name="given"),
        lambda: models.DSelectK({"features": (6,)}, _tasks(), name="given"),
        lambda: models.CGC({"features": (6,)}, _tasks(), name="given"),
        lambda: models.PLE({"features": (6,)}, _tasks(), num_levels=2, name="given"),
        lambda: models.PLE({"features": (6,)}, _tasks(), num_levels=3, name="given"),
        lambda: models.SharedBottom({"features": (6,)}, _tasks(), name="given"),
        lambda: models.CrossStitchNetwork({"features": (6,)}, _tasks(), name="given"),
    ],
    ids=["mmoe", "dselect_k", "cgc", "ple_2_levels", "ple_3_levels", "shared_bottom", "cross"],
)
def test_model_keeps_the_name_it_was_given(build):
    # A PLE with two or more levels used to be named after its last shared gate
    # ("level1_shared"): a loop variable shadowed the `name` argument.
    model = build()
    assert model.name == "given"
    assert type(model).from_config(model.get_config()).name == "given"


@pytest.mark.parametrize("cls", list(BUILDERS), ids=lambda cls: cls.__name__)
def test_builder_takes_the_class_arguments_positionally(cls):
    builder = BUILDERS[cls]
    builder_parameters = inspect.signature(builder).parameters
    class_parameters = inspect.signature(cls).parameters
    assert list(builder_parameters) == [name for name in class_parameters if name != "kwargs"]
    for name, parameter in builder_parameters.items():
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert parameter.default == class_parameters[name].default
    # Every argument by position (the names and defaults of the class), the last
    # one changed: the builder forwards each to the class.
    values = [{"features": (6,)}, _tasks()]
    values += [parameter.default for parameter in list(builder_parameters.values())[2:-1]]
    model = builder(*values, "positional")
    assert type(model) is cls and model.name == "positional"
    expected = cls({"features": (6,)}, _tasks(), name="positional").get_config()
    assert model.get_config() == expected


@pytest.mark.parametrize(
    "build, expert_names",
    [
        (
            lambda: models.MMoE(
                {"features": (6,)}, _tasks(), num_experts=3, expert=_dense_factory(4)
            ),
            ["expert_0", "expert_1", "expert_2"],
        ),
        (
            lambda: models.PLE(
                {"features": (6,)},
                _tasks(),
                num_levels=2,
                num_shared_experts=1,
                num_task_experts=2,
                expert=_dense_factory(4),
            ),
            [
                f"level{level}_{group}_expert_{index}"
                for level in (1, 2)
                for group, count in (("a", 2), ("b", 2), ("shared", 1))
                for index in range(count)
            ],
        ),
    ],
    ids=["mmoe", "ple"],
)
def test_saved_expert_layers_are_the_built_experts(build, expert_names):
    model = build()
    saved = model.get_config()["expert"]["layers"]
    assert list(saved) == expert_names
    built = [layer.name for layer in model.layers if "expert_" in layer.name]
    assert sorted(built) == sorted(expert_names)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    revived = type(model).from_config(model.get_config())
    revived.set_weights(model.get_weights())
    for task in ("a", "b"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(revived(x)[task]),
            keras.ops.convert_to_numpy(model(x)[task]),
            rtol=1e-6,
            atol=1e-6,
        )
