"""Model inputs of the multi-task architectures: dense vectors, tabular features, images.

Private to `kerasmtl.models`. The builders (`shared_bottom`, `mmoe`, `cgc`,
`ple`, `cross_stitch`, `dselect_k`) take an `inputs` argument in any of these
forms:

- a named `keras.Input`, or a list of them;
- a dict mapping each input name to one of
    - a shape tuple, e.g. `{"features": (100,)}` or `{"image": (32, 32, 3)}`:
      a float input of that shape;
    - a `keras.Input` of that name;
    - `"numeric"`: one float feature, an input of shape `(1,)`;
    - `("numeric", size)`: a float vector of `size` features;
    - `("categorical", vocabulary_size)` or
      `("categorical", vocabulary_size, embedding_dim)`: an int32 input of
      shape `(1,)` holding ids in `[0, vocabulary_size)`, embedded by a
      `keras.layers.Embedding` named `{name}_embedding` (of the builder's
      `embedding_dim` unless given).

Numeric features go in as they are: standardize them beforehand (or put a
`keras.layers.Normalization` in a `bottom`). Strings must be mapped to ids
beforehand (e.g. with `keras.layers.StringLookup` in the data pipeline).

The features the architecture reads are: the input itself for a single input
(any rank: a vector, or an image for convolutional experts); the
concatenation (layer `"features"`) of all inputs when there are several and
each is a vector after embedding; otherwise a dict of the processed inputs by
name, which only a `bottom` layer can read.
"""

import keras

from kerasmtl.inputs import make_inputs, unwrap_single

NUMERIC = "numeric"
CATEGORICAL = "categorical"


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value
    )


def _spec_error(name, spec):
    return ValueError(
        f"Input '{name}' has an unknown specification. Use a shape tuple such as (100,), "
        "a keras.Input, 'numeric', ('numeric', size), ('categorical', vocabulary_size) or "
        f"('categorical', vocabulary_size, embedding_dim). Received: {name}={spec!r}"
    )


def build_inputs(inputs, embedding_dim=8):
    """Returns `(model_inputs, features)` for the `inputs` specification.

    Args:
        inputs: the inputs specification (see the module docstring).
        embedding_dim: int, the default embedding size of categorical features.

    Returns:
        `model_inputs`: what `MultiTaskModel` takes as `inputs` (one tensor for
        a single input, else the dict or list); `features`: a tensor, or a
        dict of processed tensors by name when they cannot be concatenated.
    """
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(
            f"`embedding_dim` must be a positive integer. Received: embedding_dim={embedding_dim!r}"
        )
    if not isinstance(inputs, dict):
        model_inputs = make_inputs(inputs)
        processed = (
            {tensor.name: tensor for tensor in model_inputs}
            if isinstance(model_inputs, list)
            else {model_inputs.name: model_inputs}
        )
        return unwrap_single(model_inputs), _combine(processed)
    if not inputs:
        raise ValueError("`inputs` must name at least one input. Received: inputs={}")
    model_inputs, processed = {}, {}
    for name, spec in inputs.items():
        if isinstance(spec, keras.KerasTensor) or _is_shape(spec):
            tensor = make_inputs({name: spec})[name]
            model_inputs[name], processed[name] = tensor, tensor
        elif spec == NUMERIC:
            tensor = keras.Input((1,), name=name)
            model_inputs[name], processed[name] = tensor, tensor
        elif isinstance(spec, (list, tuple)) and spec and spec[0] == NUMERIC:
            if len(spec) != 2 or not _is_shape(spec[1:]):
                raise _spec_error(name, spec)
            tensor = keras.Input((spec[1],), name=name)
            model_inputs[name], processed[name] = tensor, tensor
        elif isinstance(spec, (list, tuple)) and spec and spec[0] == CATEGORICAL:
            if len(spec) not in (2, 3) or not _is_shape(spec[1:]):
                raise _spec_error(name, spec)
            vocabulary_size = spec[1]
            dim = spec[2] if len(spec) == 3 else embedding_dim
            tensor = keras.Input((1,), dtype="int32", name=name)
            embedded = keras.layers.Embedding(vocabulary_size, dim, name=f"{name}_embedding")(
                tensor
            )
            model_inputs[name] = tensor
            processed[name] = keras.layers.Reshape((dim,), name=f"{name}_embedded")(embedded)
        else:
            raise _spec_error(name, spec)
    return unwrap_single(model_inputs), _combine(processed)


def _combine(processed):
    if len(processed) == 1:
        return next(iter(processed.values()))
    if all(len(tensor.shape) == 2 for tensor in processed.values()):
        return keras.layers.Concatenate(name="features")(list(processed.values()))
    return processed
