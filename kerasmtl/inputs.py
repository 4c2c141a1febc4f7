"""Named model inputs for the builders."""

import keras


def make_inputs(inputs):
    """Returns named `keras.Input`s from inputs or shapes.

    Args:
        inputs: a `keras.Input`, a list or dict of them, or a dict mapping input
            names to shapes (`{"image": (28, 28, 1)}`).

    Raises:
        ValueError: for an unnamed input, since its name would become
            `keras_tensor_N` in the exported serving signature.
    """
    if isinstance(inputs, dict):
        made = {}
        for name, value in inputs.items():
            if isinstance(value, (tuple, list)):
                made[name] = keras.Input(tuple(value), name=name)
            else:
                _check_named(value)
                if value.name != name:
                    raise ValueError(
                        f"The input under key '{name}' is named '{value.name}'. Use the same "
                        "name for the key and the input, since both name the serving input. "
                        f"Received: inputs keys={list(inputs)}"
                    )
                made[name] = value
        return made
    if isinstance(inputs, (list, tuple)) and inputs and not isinstance(inputs[0], int):
        for value in inputs:
            _check_named(value)
        return list(inputs)
    if isinstance(inputs, (list, tuple)):
        raise ValueError(
            "Give input shapes with names, e.g. inputs={'image': (28, 28, 1)}, so the "
            f"serving signature has named inputs. Received: inputs={inputs!r}"
        )
    _check_named(inputs)
    return inputs


def _check_named(tensor):
    if not isinstance(tensor, keras.KerasTensor):
        raise TypeError(
            "Expected a `keras.Input`, a list or dict of them, or a dict of shapes. "
            f"Received: {tensor!r} of type {type(tensor).__name__}"
        )
    if tensor.name.startswith("keras_tensor"):
        raise ValueError(
            f"The input '{tensor.name}' has no name of its own; it would appear as "
            f"'{tensor.name}' in the exported serving signature. Name it: "
            "keras.Input(shape, name='image')."
        )


def unwrap_single(inputs):
    """What a trunk is called on: the tensor itself for a single input, else the structure."""
    if isinstance(inputs, dict) and len(inputs) == 1:
        return next(iter(inputs.values()))
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        return inputs[0]
    return inputs
