"""Pieces shared by the architectures: checks, experts, towers, configs (not public API)."""

import keras

from kerasmtl import architecture_config as ac
from kerasmtl.layers import Expert

#: The layer whose output stacks the experts the task gates mix: the shared
#: representation of the mixture architectures.
EXPERTS = "experts"


def check_positive_int(value, name):
    """Raises a `ValueError` unless `value` is a positive int; returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value


def check_non_negative_int(value, name):
    """Raises a `ValueError` unless `value` is an int >= 0; returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return value


def check_image_shape(shape, arg_name):
    """Returns `shape` as a tuple of three positive ints (height, width, channels)."""
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise ValueError(
            f"`{arg_name}` must be a tuple of three positive integers "
            f"(height, width, channels). Received: {arg_name}={shape!r}"
        )
    return tuple(shape)


def check_filters(filters, what="Conv-ReLU-MaxPool block"):
    """Returns `filters` as a non-empty tuple of positive ints, one per block."""
    if (
        not isinstance(filters, (list, tuple))
        or not filters
        or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters)
    ):
        raise ValueError(
            "`filters` must be a non-empty tuple of positive integers, one per "
            f"{what}. Received: filters={filters!r}"
        )
    return tuple(filters)


def check_downsampling(filters, shape, arg_name):
    """Raises unless an image of `shape` survives one halving per block."""
    smallest = 2 ** len(filters)
    if min(shape[:2]) < smallest:
        raise ValueError(
            f"{len(filters)} blocks halve the image {len(filters)} times, so the height "
            f"and width must be at least {smallest}. Use a larger image or fewer blocks. "
            f"Received: {arg_name}={shape}, filters={tuple(filters)}"
        )


def check_units(units, name, allow_empty=True):
    """Returns `units` (an int or a tuple of positive ints) as a tuple."""
    if isinstance(units, int) and not isinstance(units, bool):
        units = (units,)
    if (
        not isinstance(units, (list, tuple))
        or (not units and not allow_empty)
        or not all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units)
    ):
        raise ValueError(
            f"`{name}` must be a {'' if allow_empty else 'non-empty '}tuple of positive "
            f"integers, the units of each Dense layer. Received: {name}={units!r}"
        )
    return tuple(units)


def check_factory(factory, name):
    """Raises a `TypeError` unless `factory` is `None` or a function returning layers."""
    if factory is not None and (not callable(factory) or isinstance(factory, keras.layers.Layer)):
        raise TypeError(
            f"`{name}` must be a function `{name}(layer_name)` that returns a new, unbuilt "
            f"Keras layer or model each time it is called. Received: {name}={factory!r}"
        )
    return factory


def make_layer(factory, name, factory_name):
    """Calls `factory(name)` and returns the new layer, renamed to `name`."""
    layer = factory(name)
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            f"`{factory_name}('{name}')` must return a Keras layer or model. Received: {layer!r}"
        )
    # A saved layer comes back new (maybe built: a Sequential builds itself).
    if layer.built and not isinstance(factory, ac.SerializedLayers):
        raise ValueError(
            f"`{factory_name}('{name}')` returned the built layer '{layer.name}'; return a new "
            "layer on each call, so that layers do not share weights by accident."
        )
    layer.name = name
    return layer


def apply_bottom(features, bottom):
    """The shared bottom applied to the features, if there is one."""
    if bottom is None:
        if isinstance(features, dict):
            raise ValueError(
                "Several inputs that are not all vectors (e.g. an image and tabular "
                "features) cannot be concatenated. Pass a `bottom` layer that maps the dict "
                f"of inputs to features. Received: inputs={sorted(features)}"
            )
        return features
    if not isinstance(bottom, keras.layers.Layer) and not callable(bottom):
        raise TypeError(
            "`bottom` must be a Keras layer or model (or a function of the features). "
            f"Received: bottom={bottom!r}"
        )
    return bottom(features)


def make_experts(inputs, names, expert, expert_units, activation, dropout):
    """Returns the outputs of one new expert per name, each applied to `inputs`."""
    outputs = []
    for name in names:
        if expert is None:
            layer = Expert(expert_units, activation=activation, dropout=dropout, name=name)
        else:
            layer = make_layer(expert, name, "expert")
        outputs.append(layer(inputs))
    return outputs


def task_outputs(features_by_task, tasks, tower_units, tower, activation, dropout):
    """Returns `{task: prediction}`: pooling if needed, the task's tower, then its head."""
    outputs = {}
    for task in tasks:
        x = features_by_task[task.name]
        if len(x.shape) == 4:
            x = keras.layers.GlobalAveragePooling2D(name=f"{task.name}_pool")(x)
        elif len(x.shape) == 3:
            x = keras.layers.GlobalAveragePooling1D(name=f"{task.name}_pool")(x)
        if tower is not None:
            x = make_layer(tower, f"{task.name}_tower", "tower")(x)
        elif tower_units:
            x = Expert(
                tower_units, activation=activation, dropout=dropout, name=f"{task.name}_tower"
            )(x)
        outputs[task.name] = task.build_head()(x)
    return outputs


# === Config ===


def base_config(model):
    """The config every architecture shares: name, trainable, inputs, tasks with heads."""
    return {
        "name": model.name,
        "trainable": model.trainable,
        "inputs": model._config_inputs,
        "tasks": ac.serialize_tasks(model, model.tasks),
    }


def serialize_bottom(bottom, features, shared):
    """A bottom layer serialized, a bottom function as its graph (replayed on load)."""
    if bottom is None:
        return None
    if isinstance(bottom, keras.layers.Layer):
        return ac.serialize_layer(bottom)
    return {"graph": ac.graph_config(features, shared, "bottom_graph")}


def deserialize_arguments(config):
    """The keyword arguments of an architecture from its config (`from_config`)."""
    config = dict(config)
    config["inputs"] = ac.deserialize_inputs(config["inputs"])
    if "tasks" in config:
        config["tasks"] = ac.deserialize_tasks(config["tasks"])
    for key in ("expert", "tower"):
        if key in config:
            config[key] = ac.deserialize_factory(config[key])
    if isinstance(config.get("blocks"), list):
        config["blocks"] = [ac.deserialize_factory(block) for block in config["blocks"]]
    bottom = config.get("bottom")
    if isinstance(bottom, dict):
        if set(bottom) == {"graph"}:
            config["bottom"] = ac.SerializedGraph(bottom["graph"])
        else:
            config["bottom"] = ac.deserialize_layer(bottom)
    return config


def tower_names(tasks):
    return [f"{task.name}_tower" for task in tasks]
