"""`kerasmtl.inputs`: the one parser of input specifications, its forms and its errors."""

import keras
import pytest

import kerasmtl
from kerasmtl.inputs import InputSpec, make_inputs, parse_input_spec, parse_inputs

pytestmark = pytest.mark.backend_neutral


def test_shapes_become_named_float_inputs():
    made = make_inputs({"image": (8, 8, 1), "features": [3]})
    assert list(made) == ["image", "features"]
    assert made["image"].name == "image" and made["image"].shape == (None, 8, 8, 1)
    assert made["features"].shape == (None, 3)
    assert made["image"].dtype == keras.backend.floatx()


def test_the_users_own_inputs_are_returned_as_they_are():
    image = keras.Input((4, 4, 3), name="image")
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    assert make_inputs(image) is image
    assert make_inputs([image, tokens]) == [image, tokens]
    made = make_inputs({"image": image, "size": (2,)})
    assert made["image"] is image and made["size"].shape == (None, 2)
    (spec,) = parse_inputs(tokens)
    assert spec == InputSpec("tokens", (5,), "int32", tensor=tokens)
    assert spec.make_input() is tokens


def test_none_dimensions_are_shapes():
    (spec,) = parse_inputs({"sequence": (None, 6)})
    assert spec.shape == (None, 6)
    assert spec.make_input().shape == (None, None, 6)


def test_tabular_feature_specifications():
    specs = parse_inputs(
        {
            "age": "numeric",
            "history": ("numeric", 3),
            "city": ("categorical", 50),
            "device": ("categorical", 4, 2),
            "image": (8, 8, 1),
        },
        tabular=True,
    )
    by_name = {spec.name: spec for spec in specs}
    assert by_name["age"] == InputSpec("age", (1,))
    assert by_name["history"] == InputSpec("history", (3,))
    assert by_name["city"] == InputSpec("city", (1,), "int32", vocabulary_size=50)
    assert by_name["device"] == InputSpec("device", (1,), "int32", 4, 2)
    assert by_name["city"].categorical and not by_name["age"].categorical
    city = by_name["city"].make_input()
    assert city.dtype == "int32" and city.shape == (None, 1) and city.name == "city"
    # Each call makes a new input: a spec can build a fresh model (a tuner trial).
    assert by_name["age"].make_input() is not by_name["age"].make_input()


@pytest.mark.parametrize(
    "spec",
    [
        ("numeric", 0),
        ("numeric",),
        ("numeric", 2, 3),
        ("categorical", 5, 0),
        ("categorical",),
        ("categorical", True),
        ("ordinal", 3),
        "text",
        (8, -1),
        (2.5,),
        7,
    ],
)
def test_unknown_tabular_specification_lists_the_valid_ones(spec):
    with pytest.raises(ValueError, match="Input 'x' has an unknown specification") as error:
        parse_input_spec("x", spec, tabular=True)
    message = str(error.value)
    assert "('categorical', vocabulary_size)" in message and "'numeric'" in message
    assert message.endswith(f"Received: x={spec!r}")


@pytest.mark.parametrize("spec", ["numeric", ("categorical", 5), ("numeric", 2)])
def test_feature_specifications_outside_the_architectures_say_where_they_belong(spec):
    with pytest.raises(ValueError, match="read by the `kerasmtl.models` architectures"):
        make_inputs({"x": spec})


def test_a_key_naming_another_input_is_an_error():
    with pytest.raises(ValueError, match="The input under key 'b' is named 'a'"):
        make_inputs({"b": keras.Input((2,), name="a")})


def test_unnamed_inputs_and_shapes_without_names_are_errors():
    with pytest.raises(ValueError, match="has no name of its own"):
        make_inputs(keras.Input((2,)))
    with pytest.raises(ValueError, match="has no name of its own"):
        make_inputs({"a": keras.Input((2,))})
    with pytest.raises(ValueError, match="Give input shapes with names"):
        make_inputs((28, 28, 1))
    with pytest.raises(ValueError, match="must name at least one input"):
        parse_inputs({})
    with pytest.raises(TypeError, match="Expected a `keras.Input`"):
        make_inputs("features")


def test_the_builders_read_inputs_through_the_parser():
    trunk = keras.layers.Dense(4, name="trunk")
    tasks = [kerasmtl.Task("a", head=1, loss="mse")]
    with pytest.raises(ValueError, match="Input 'features' has an unknown specification"):
        kerasmtl.hard_sharing({"features": (0,)}, trunk, tasks)
    model = kerasmtl.hard_sharing({"features": (3,)}, trunk, tasks)
    assert [tensor.name for tensor in keras.tree.flatten(model.inputs)] == ["features"]
