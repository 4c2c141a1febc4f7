"""Named model inputs: the one parser of input specifications.

Every builder that takes an `inputs` argument (`hard_sharing`, `soft_sharing`,
the `kerasmtl.models` architectures, the tuner) reads it here, so the forms it
may take, their checks and their error messages are the same everywhere:

- a named `keras.Input`, or a list of them;
- a dict mapping each input name to
    - a shape tuple, e.g. `{"features": (100,)}` or `{"image": (32, 32, 3)}`:
      a float input of that shape;
    - a `keras.Input` of that name;
    - and, for the builders that read tabular features (`tabular=True`):
      `"numeric"` (one float feature, shape `(1,)`), `("numeric", size)`,
      `("categorical", vocabulary_size)` or
      `("categorical", vocabulary_size, embedding_dim)` (an int32 id of shape
      `(1,)` that the builder embeds).

Inputs are named because the names become the exported serving signature's
input names (an unnamed input would appear as `keras_tensor_N`).
"""

import dataclasses

import keras

NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input, as parsed from an input specification.

    Attributes:
        name: the input's name (the serving signature's input name).
        shape: the shape without the batch axis.
        dtype: the input's dtype (`None`: Keras's float type).
        vocabulary_size: for a categorical feature, the number of ids; else `None`.
        embedding_dim: for a categorical feature, its own embedding size, or
            `None` for the builder's default.
        tensor: the user's own `keras.Input`, reused as is, or `None`.
    """

    name: str
    shape: tuple
    dtype: str = None
    vocabulary_size: int = None
    embedding_dim: int = None
    tensor: object = None

    @property
    def categorical(self):
        return self.vocabulary_size is not None

    def make_input(self):
        """The `keras.Input` of this spec: the user's own one, else a new one."""
        if self.tensor is not None:
            return self.tensor
        return keras.Input(self.shape, name=self.name, dtype=self.dtype)


def _is_dimension(value):
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def _is_size(value):
    return value is not None and _is_dimension(value)


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(_is_dimension(d) for d in value)


def _spec_error(name, spec, tabular):
    choices = "a shape tuple such as (100,) or a keras.Input of that name"
    if tabular:
        choices += (
            ", 'numeric', ('numeric', size), ('categorical', vocabulary_size) or "
            "('categorical', vocabulary_size, embedding_dim)"
        )
    elif spec == NUMERIC or (
        isinstance(spec, (list, tuple)) and spec and spec[0] in (NUMERIC, CATEGORICAL)
    ):
        choices += (
            ". Feature specifications ('numeric', 'categorical') are read by the "
            "`kerasmtl.models` architectures, which embed categorical features"
        )
    return ValueError(
        f"Input '{name}' has an unknown specification. Use {choices}. Received: {name}={spec!r}"
    )


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


def _tensor_spec(tensor):
    return InputSpec(tensor.name, tuple(tensor.shape[1:]), tensor.dtype, tensor=tensor)


def parse_input_spec(name, spec, tabular=False):
    """The `InputSpec` of one entry `name: spec` of an inputs dict.

    Args:
        name: the key, which names the input.
        spec: a shape tuple, a `keras.Input` named `name` or, with `tabular`,
            a feature specification (see the module docstring).
        tabular: whether `"numeric"` and `"categorical"` specifications are read.

    Raises:
        ValueError: for an unknown specification (the message lists the valid
            ones), or a `keras.Input` named other than its key.

    Example:

    >>> spec = parse_input_spec("city", ("categorical", 50), tabular=True)
    >>> spec.shape, spec.dtype, spec.vocabulary_size, spec.embedding_dim
    ((1,), 'int32', 50, None)
    """
    if isinstance(spec, keras.KerasTensor):
        _check_named(spec)
        if spec.name != name:
            raise ValueError(
                f"The input under key '{name}' is named '{spec.name}'. Use the same name for "
                "the key and the input, since both name the serving input. "
                f"Received: {name}={spec.name!r}"
            )
        return _tensor_spec(spec)
    if isinstance(spec, str) or not isinstance(spec, (list, tuple)):
        if tabular and spec == NUMERIC:
            return InputSpec(name, (1,))
        raise _spec_error(name, spec, tabular)
    if spec and spec[0] in (NUMERIC, CATEGORICAL):
        if tabular and spec[0] == NUMERIC and len(spec) == 2 and _is_size(spec[1]):
            return InputSpec(name, (spec[1],))
        if (
            tabular
            and spec[0] == CATEGORICAL
            and len(spec) in (2, 3)
            and all(_is_size(size) for size in spec[1:])
        ):
            dim = spec[2] if len(spec) == 3 else None
            return InputSpec(name, (1,), "int32", vocabulary_size=spec[1], embedding_dim=dim)
        raise _spec_error(name, spec, tabular)
    if _is_shape(spec):
        return InputSpec(name, tuple(spec))
    raise _spec_error(name, spec, tabular)


def parse_inputs(inputs, tabular=False):
    """The `InputSpec`s of an `inputs` argument, in order.

    Args:
        inputs: a named `keras.Input`, a list of them, or a dict (see the module
            docstring).
        tabular: whether feature specifications (`"numeric"`, `"categorical"`)
            are read.

    Raises:
        ValueError: for an unnamed input, an empty dict, shapes without names,
            or an unknown specification.
        TypeError: for anything else.

    Example:

    >>> [spec.shape for spec in parse_inputs({"image": (8, 8, 1), "age": "numeric"},
    ...                                      tabular=True)]
    [(8, 8, 1), (1,)]
    """
    if isinstance(inputs, dict):
        if not inputs:
            raise ValueError("`inputs` must name at least one input. Received: inputs={}")
        return [parse_input_spec(name, spec, tabular) for name, spec in inputs.items()]
    if isinstance(inputs, (list, tuple)) and inputs and _is_shape(inputs):
        raise ValueError(
            "Give input shapes with names, e.g. inputs={'image': (28, 28, 1)}, so the "
            f"serving signature has named inputs. Received: inputs={inputs!r}"
        )
    if isinstance(inputs, (list, tuple)) and inputs:
        for value in inputs:
            _check_named(value)
        return [_tensor_spec(value) for value in inputs]
    _check_named(inputs)
    return [_tensor_spec(inputs)]


def make_inputs(inputs):
    """Returns named `keras.Input`s from inputs or shapes.

    Args:
        inputs: a `keras.Input`, a list or dict of them, or a dict mapping input
            names to shapes (`{"image": (28, 28, 1)}`).

    Returns:
        The same structure with `keras.Input`s: a dict by name, a list, or one
        tensor. The user's own inputs are returned as they are.

    Raises:
        ValueError: for an unnamed input, since its name would become
            `keras_tensor_N` in the exported serving signature.

    Example:

    >>> inputs = make_inputs({"features": (8,)})
    >>> inputs["features"].shape
    (None, 8)
    """
    specs = parse_inputs(inputs)
    if isinstance(inputs, dict):
        return {spec.name: spec.make_input() for spec in specs}
    if isinstance(inputs, (list, tuple)):
        return [spec.make_input() for spec in specs]
    return specs[0].make_input()


def unwrap_single(inputs):
    """What a trunk is called on: the tensor itself for a single input, else the structure."""
    if isinstance(inputs, dict) and len(inputs) == 1:
        return next(iter(inputs.values()))
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        return inputs[0]
    return inputs
