"""Config pieces shared by the architecture classes (not public API).

An architecture (`HardSharing`, `SoftSharing`, `kerasmtl.models.MMoE`, ...) is a
`MultiTaskModel` subclass whose `get_config` returns the keyword arguments it
was built from, as keras-hub's backbones do, and whose `from_config` rebuilds
it by calling the class again. These helpers turn the arguments that are not
plain values into JSON-friendly configs and back:

- `inputs`: `keras.Input`s become `{"keras_input": {shape, dtype, name}}`;
  shapes and tabular specifications stay as they are.
- `tasks`: each task's config plus its head, the model's built head layer
  serialized with `keras.layers.serialize` (a `Task`'s own config has no head).
- factories (`expert=`, `tower=`, `block=`): a function cannot be saved, so the
  layers it built are serialized by name, and the rebuilt model's factory is a
  `SerializedLayers` that returns a fresh copy of the layer of that name.
- a trunk function: the functional graph it built from the inputs to the
  features is saved, and replayed on the new inputs with the same layers.
"""

import copy
import json

import keras

from kerasmtl.task import Task

_INPUT_KEY = "keras_input"


def serialize_inputs(inputs):
    """Returns a JSON-friendly copy of an `inputs` argument."""
    if isinstance(inputs, keras.KerasTensor):
        return {
            _INPUT_KEY: {
                "shape": list(inputs.shape[1:]),
                "dtype": inputs.dtype,
                "name": inputs.name,
                "sparse": bool(getattr(inputs, "sparse", False)),
            }
        }
    if isinstance(inputs, dict):
        return {key: serialize_inputs(value) for key, value in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [serialize_inputs(value) for value in inputs]
    return inputs


def deserialize_inputs(config):
    """The inverse of `serialize_inputs`: fresh `keras.Input`s, shapes as tuples."""
    if isinstance(config, dict):
        if set(config) == {_INPUT_KEY}:
            spec = config[_INPUT_KEY]
            return keras.Input(
                tuple(spec["shape"]),
                dtype=spec["dtype"],
                sparse=spec.get("sparse", False),
                name=spec["name"],
            )
        return {key: deserialize_inputs(value) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        values = [deserialize_inputs(value) for value in config]
        if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            return tuple(values)
        if values and isinstance(values[0], str):
            # A tabular specification such as ("categorical", 10).
            return tuple(values)
        return values
    return config


def serialize_layer(layer):
    """`keras.layers.serialize` without the build config: the copy is built by its call."""
    config = keras.layers.serialize(layer)
    if isinstance(config, dict):
        config = {key: value for key, value in config.items() if key != "build_config"}
    return config


def deserialize_layer(config):
    """A new layer from `serialize_layer`'s config (which Keras would change: a copy)."""
    return keras.layers.deserialize(copy.deepcopy(config))


def serialize_tasks(model, tasks):
    """Each task's config with its head: the model's built head layer, serialized."""
    configs = []
    for task in tasks:
        config = task.get_config()
        if task.head is not None:
            config["head"] = serialize_layer(model.get_layer(task.name))
        configs.append(config)
    return configs


def deserialize_tasks(configs):
    """The inverse of `serialize_tasks`: `Task`s whose heads are the saved layers."""
    tasks = []
    for config in configs:
        if isinstance(config, Task):
            tasks.append(config)
            continue
        config = dict(config)
        head = config.pop("head", None)
        task = Task.from_config(config)
        if isinstance(head, dict):
            task = task.replace(head=deserialize_layer(head))
        tasks.append(task)
    return tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class SerializedLayers:
    """A layer factory `factory(layer_name)` that rebuilds saved layers by name.

    What a saved architecture's `from_config` passes as `expert=`, `tower=` or
    a `block`: each call returns a new, unbuilt layer from the config saved
    under that name.

    Args:
        layers: a dict `{layer_name: serialized layer config}`.
    """

    def __init__(self, layers):
        self.layers = dict(layers)

    def __call__(self, layer_name):
        if layer_name not in self.layers:
            raise ValueError(
                f"No saved layer named '{layer_name}'. Saved layers: {sorted(self.layers)}. "
                f"Received: layer_name={layer_name!r}"
            )
        return deserialize_layer(self.layers[layer_name])

    def get_config(self):
        return {"layers": self.layers}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def serialize_factory(model, factory, layer_names, keys=None):
    """`None` for no factory, else `{"layers": {key: config}}` of the layers it built.

    `keys` are what the factory is called with (the layer names by default).
    """
    if factory is None:
        return None
    keys = layer_names if keys is None else keys
    return {
        "layers": {
            key: serialize_layer(model.get_layer(name)) for key, name in zip(keys, layer_names)
        }
    }


def deserialize_factory(config):
    """The inverse of `serialize_factory`: `None`, a function, or a `SerializedLayers`."""
    if isinstance(config, dict) and set(config) == {"layers"}:
        return SerializedLayers(config["layers"])
    return config


@keras.saving.register_keras_serializable(package="kerasmtl")
class SerializedGraph:
    """A trunk function that replays a saved functional graph on new inputs.

    What `HardSharing.from_config` passes as `trunk=` when the model was built
    from a function: the graph that function built (the layers between the
    inputs and the features) is saved as a functional config; calling the
    object calls the same layers, in the same order, on the new inputs, so the
    rebuilt model has the flat layer list of the original (and loads its
    weights).

    Args:
        graph: the config of a functional `keras.Model` from the inputs to the
            features.
    """

    def __init__(self, graph):
        self.graph = graph

    def __call__(self, inputs):
        # A copy: `from_config` pops keys from the dict it reads.
        model = keras.Model.from_config(copy.deepcopy(self.graph))
        # The same layers called on `inputs`, node by node, as `Functional.call` runs
        # them (`keras.models.clone_model` would wrap an intermediate tensor in a new
        # `Input`, cutting it from the model's inputs). `_run_through_graph` is the
        # graph walk of keras/src/ops/function.py; Keras has no public name for it.
        return model._run_through_graph(inputs, operation_fn=lambda operation: operation)

    def get_config(self):
        return {"graph": self.graph}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def graph_config(inputs, outputs, name):
    """The config of the functional graph from `inputs` to `outputs`, with stable names.

    An intermediate tensor as a graph input becomes an `InputLayer` named after the
    tensor (`keras_tensor_123CLONE`), a counter that differs from one build to the
    next; it is renamed `{name}_input_{i}`, so a rebuilt model has the same config.
    """
    config = keras.Model(inputs, outputs, name=name).get_config()
    text = json.dumps(config)
    for index, layer in enumerate(config["layers"]):
        if layer["class_name"] == "InputLayer" and layer["name"].startswith("keras_tensor"):
            text = text.replace(f'"{layer["name"]}"', f'"{name}_input_{index}"')
    return json.loads(text)


def layer_called_once(model, tensor):
    """The name of the layer that outputs `tensor`, if it is called once in `model`."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    if not isinstance(operation, keras.layers.Layer):
        return None
    nodes = [
        node
        for depth_nodes in model._nodes_by_depth.values()
        for node in depth_nodes
        if node.operation is operation
    ]
    if len(nodes) != 1 or len(nodes[0].output_tensors) != 1:
        return None
    return operation.name
