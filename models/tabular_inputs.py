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

from kerasmtl.inputs import CATEGORICAL, NUMERIC, parse_inputs, unwrap_single

__all__ = ["CATEGORICAL", "NUMERIC", "build_inputs"]


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
    # One parser of input specifications (`kerasmtl.inputs`); this adds the embeddings.
    model_inputs, processed = {}, {}
    for spec in parse_inputs(inputs, tabular=True):
        tensor = model_inputs[spec.name] = spec.make_input()
        if spec.categorical:
            dim = spec.embedding_dim or embedding_dim
            embedded = keras.layers.Embedding(
                spec.vocabulary_size, dim, name=f"{spec.name}_embedding"
            )(tensor)
            tensor = keras.layers.Reshape((dim,), name=f"{spec.name}_embedded")(embedded)
        processed[spec.name] = tensor
    if not isinstance(inputs, dict):
        model_inputs = list(model_inputs.values())
        model_inputs = model_inputs if isinstance(inputs, (list, tuple)) else model_inputs[0]
    return unwrap_single(model_inputs), _combine(processed)


def _combine(processed):
    if len(processed) == 1:
        return next(iter(processed.values()))
    if all(len(tensor.shape) == 2 for tensor in processed.values()):
        return keras.layers.Concatenate(name="features")(list(processed.values()))
    return processed
