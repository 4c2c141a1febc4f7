"""Contract tests for kerasmtl layers and models.

`keras.src.testing` is private, so kerasmtl has its own small harness. Both
functions are plain functions usable from any pytest test (or a script): they
raise `AssertionError` with a message saying which check failed.

- `run_layer_test` checks that a layer class honours the Keras layer contract:
  config round trip, build, `compute_output_shape`, symbolic and eager calls,
  weight counts, one `fit` step, and a `.keras` save/load.
- `run_model_test` checks a whole (compiled) model: predict, one `fit` step
  with the given labels, and a `.keras` round trip.

Layer inputs (`input_data`) come in three forms:

- one array: `layer(x)`, `build(x_shape)`;
- a list or tuple of arrays, passed as ONE list argument (layers that take a list of
  maps, such as `SpatialAlignment`): `layer([a, b])`, `build([a_shape, b_shape])`;
- a dict of arrays, passed as keyword arguments named after the call
  arguments (multi-input layers): `layer(query=q, context=c)`,
  `build(query_shape=..., context_shape=...)`.

Example:

```python
def test_channel_projection():
    run_layer_test(
        ChannelProjection,
        init_kwargs={"filters": 4},
        input_data=np.random.rand(2, 8, 8, 3).astype("float32"),
        expected_output_shape=(2, 8, 8, 4),
        expected_num_trainable_weights=2,
    )
```
"""

import os
import tempfile

import keras
import numpy as np

_LOAD_ATOL = 1e-6


def _fail(message):
    raise AssertionError(message)


def _shape_of(array):
    return tuple(array.shape)


def _map_inputs(input_data, fn):
    """Applies `fn(name, array)` to each input, keeping the dict/list/array form."""
    if isinstance(input_data, dict):
        return {name: fn(name, array) for name, array in input_data.items()}
    if isinstance(input_data, (list, tuple)):
        return [fn(f"input_{i}", array) for i, array in enumerate(input_data)]
    return fn("inputs", input_data)


def _call(layer, inputs, **kwargs):
    if isinstance(inputs, dict):
        return layer(**inputs, **kwargs)
    return layer(inputs, **kwargs)


def _call_with_shapes(method, shapes):
    """Calls `build` or `compute_output_shape` the way Keras does."""
    if isinstance(shapes, dict):
        return method(**{f"{name}_shape": shape for name, shape in shapes.items()})
    return method(shapes)


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(
        d is None or isinstance(d, (int, np.integer)) for d in value
    )


def _flat_shapes(value):
    """Flattens tensors, arrays or (nested) shape tuples to a list of shape tuples."""
    if hasattr(value, "shape") and not isinstance(value, (list, tuple, dict)):
        return [tuple(value.shape)]
    if isinstance(value, dict):
        return [shape for key in sorted(value) for shape in _flat_shapes(value[key])]
    if _is_shape(value):
        return [tuple(None if d is None else int(d) for d in value)]
    return [shape for item in value for shape in _flat_shapes(item)]


def _flat_arrays(value):
    return [keras.ops.convert_to_numpy(x) for x in keras.tree.flatten(value)]


def _assert_shapes_equal(actual, expected, what):
    if _flat_shapes(actual) != _flat_shapes(expected):
        _fail(f"{what}: got shapes {_flat_shapes(actual)}, expected {_flat_shapes(expected)}.")


def _assert_all_close(actual, expected, what, atol=_LOAD_ATOL):
    actual, expected = _flat_arrays(actual), _flat_arrays(expected)
    if len(actual) != len(expected):
        _fail(f"{what}: got {len(actual)} outputs, expected {len(expected)}.")
    for index, (a, e) in enumerate(zip(actual, expected)):
        if a.shape != e.shape or not np.allclose(a, e, atol=atol, rtol=0.0):
            difference = np.max(np.abs(a - e)) if a.shape == e.shape else "shape mismatch"
            _fail(f"{what}: output {index} differs (max abs difference {difference}).")


def _assert_finite(value, what):
    for index, array in enumerate(_flat_arrays(value)):
        if not np.all(np.isfinite(array)):
            _fail(f"{what}: output {index} is not finite.")


def _check_weight_counts(layer, expected_trainable, expected_non_trainable, when):
    for expected, weights, kind in (
        (expected_trainable, layer.trainable_weights, "trainable"),
        (expected_non_trainable, layer.non_trainable_weights, "non-trainable"),
    ):
        if expected is not None and len(weights) != expected:
            _fail(
                f"{when}: {layer.name} has {len(weights)} {kind} weights, expected "
                f"{expected}: {[w.path for w in weights]}."
            )


def _save_and_load(model, directory):
    path = os.path.join(directory, f"{model.name}.keras")
    model.save(path)
    # No `custom_objects`: registration alone must be enough to load.
    return keras.saving.load_model(path)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    run_fit=True,
    run_saving=True,
    tmp_path=None,
):
    """Checks that `layer_cls` honours the Keras layer contract.

    In order, on fresh layers built from `init_kwargs`:

    1. config round trip: `from_config(get_config())` has the same config and
       the same public attribute for each argument in `init_kwargs` (stored
       under the argument's name), and `keras.saving` (de)serialization gives
       back `layer_cls` by its registered name;
    2. build: `build(...)` with the input shapes builds the layer and creates
       the expected numbers of weights;
    3. symbolic call on `keras.Input`s: the output shapes equal
       `compute_output_shape` of the input shapes with an unknown batch size;
    4. eager call on `input_data`: the outputs are finite, their shapes equal
       `compute_output_shape` of the concrete input shapes and
       `expected_output_shape`, and the weight counts are as expected;
    5. `fit` (if `run_fit`): one step of a functional model wrapping the layer,
       MSE against zeros of the output shapes with Adam, gives a finite loss
       and changes the trainable weights (if there are any);
    6. saving (if `run_saving`): the model saved as `.keras` and loaded with no
       `custom_objects` holds a `layer_cls` layer and predicts the same
       outputs (atol 1e-6).

    Args:
        layer_cls: the layer class under test.
        init_kwargs: dict, the constructor arguments.
        input_data: one array, a list/tuple of arrays passed as one argument,
            or a dict of arrays passed as keyword arguments (see the module
            docstring). The first axis is the batch.
        expected_output_shape: optional shape (or nested structure of shapes,
            like the outputs) of the eager output, batch included.
        expected_num_trainable_weights: optional int.
        expected_num_non_trainable_weights: optional int.
        run_fit: bool, whether to run the `fit` step.
        run_saving: bool, whether to run the `.keras` round trip.
        tmp_path: optional directory for the `.keras` file (pytest's
            `tmp_path`); a temporary directory is used when `None`.

    Returns:
        The eager outputs of step 4, for further checks by the caller.
    """
    # 1. Config round trip.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    revived = layer_cls.from_config(config)
    if revived.get_config() != config:
        _fail(
            f"{layer_cls.__name__}.from_config(get_config()) changed the config:\n"
            f"{config}\n!=\n{revived.get_config()}"
        )
    for name in init_kwargs:
        if not hasattr(layer, name):
            _fail(
                f"{layer_cls.__name__} does not store the constructor argument `{name}` "
                "as a public attribute of the same name."
            )
        original = keras.saving.serialize_keras_object(getattr(layer, name))
        if keras.saving.serialize_keras_object(getattr(revived, name)) != original:
            _fail(
                f"{layer_cls.__name__}.from_config(get_config()) lost the constructor "
                f"argument `{name}`: {original} became {getattr(revived, name)}."
            )
    deserialized = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    if type(deserialized) is not layer_cls:
        _fail(f"keras.saving deserialized {type(deserialized)}, expected {layer_cls}.")

    input_shapes = _map_inputs(input_data, lambda name, array: _shape_of(array))
    symbolic_shapes = _map_inputs(input_data, lambda name, array: (None, *array.shape[1:]))

    # 2. Build.
    layer = layer_cls(**init_kwargs)
    _call_with_shapes(layer.build, input_shapes)
    if not layer.built:
        _fail(f"{layer_cls.__name__}.build() did not set `built`.")
    _check_weight_counts(
        layer,
        expected_num_trainable_weights,
        expected_num_non_trainable_weights,
        "after build",
    )

    # 3. Symbolic call.
    def make_input(name, array):
        return keras.Input(shape=array.shape[1:], dtype=str(array.dtype), name=name)

    symbolic_inputs = _map_inputs(input_data, make_input)
    layer = layer_cls(**init_kwargs)
    symbolic_outputs = _call(layer, symbolic_inputs)
    _assert_shapes_equal(
        symbolic_outputs,
        _call_with_shapes(layer.compute_output_shape, symbolic_shapes),
        "symbolic call vs compute_output_shape",
    )

    # 4. Eager call.
    layer = layer_cls(**init_kwargs)
    outputs = _call(layer, input_data)
    _assert_finite(outputs, "eager call")
    _assert_shapes_equal(
        outputs,
        _call_with_shapes(layer.compute_output_shape, input_shapes),
        "eager call vs compute_output_shape",
    )
    if expected_output_shape is not None:
        _assert_shapes_equal(outputs, expected_output_shape, "eager call")
    _check_weight_counts(
        layer,
        expected_num_trainable_weights,
        expected_num_non_trainable_weights,
        "after the eager call",
    )

    if not (run_fit or run_saving):
        return outputs

    # A tiny functional model around a fresh layer, for fit and saving.
    layer = layer_cls(**init_kwargs)
    model_inputs = _map_inputs(input_data, make_input)
    model_outputs = keras.tree.flatten(_call(layer, model_inputs))
    model = keras.Model(model_inputs, model_outputs)
    x = _map_inputs(input_data, lambda name, array: array)
    batch_size = len(keras.tree.flatten(input_data)[0])

    # 5. One fit step.
    if run_fit:
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=["mse"] * len(model_outputs))
        zeros = [np.zeros(shape, "float32") for shape in _flat_shapes(model(x))]
        before = [w.numpy().copy() for w in layer.trainable_weights]
        history = model.fit(x, zeros, batch_size=batch_size, epochs=1, verbose=0)
        loss = history.history["loss"][-1]
        if not np.isfinite(loss):
            _fail(f"fit: the loss is not finite ({loss}).")
        after = [w.numpy().copy() for w in layer.trainable_weights]
        if before and all(np.array_equal(b, a) for b, a in zip(before, after)):
            _fail("fit: one step did not change any trainable weight.")

    # 6. Save and load.
    if run_saving:
        expected = model(x, training=False)
        with tempfile.TemporaryDirectory() as directory:
            loaded = _save_and_load(model, str(tmp_path) if tmp_path else directory)
        loaded_layer = loaded.get_layer(layer.name)
        if type(loaded_layer) is not layer_cls:
            _fail(f"saving: loaded {type(loaded_layer)}, expected {layer_cls}.")
        _assert_all_close(loaded(x, training=False), expected, "saving: loaded predictions")

    return outputs


def run_model_test(model, x, y, tmp_path=None):
    """Checks a compiled model: predict, one `fit` step, `.keras` round trip.

    1. `predict(x)` gives finite outputs;
    2. one `fit` epoch on `(x, y)` with the whole data as one batch gives a
       finite loss;
    3. the model saved as `.keras` and loaded with no `custom_objects` is of
       the same class and predicts the same outputs (atol 1e-6).

    Args:
        model: a compiled `keras.Model` (e.g. a `MultiTaskModel`).
        x: model inputs: an array, a list or a dict of arrays.
        y: labels, usually a dict `{task_name: array}`.
        tmp_path: optional directory for the `.keras` file (pytest's
            `tmp_path`); a temporary directory is used when `None`.

    Returns:
        The loaded model, for further checks by the caller.
    """
    if not model.compiled:
        raise ValueError(
            "run_model_test needs a compiled model; call `model.compile(...)` first. "
            f"Received: model={model.name}"
        )
    predictions = model.predict(x, verbose=0)
    _assert_finite(predictions, "predict")

    batch_size = len(keras.tree.flatten(x)[0])
    history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    if not np.isfinite(loss):
        _fail(f"fit: the loss is not finite ({loss}).")

    expected = model.predict(x, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        loaded = _save_and_load(model, str(tmp_path) if tmp_path else directory)
    if type(loaded) is not type(model):
        _fail(f"saving: loaded {type(loaded)}, expected {type(model)}.")
    _assert_all_close(loaded.predict(x, verbose=0), expected, "saving: loaded predictions")
    return loaded
