"""Pieces shared by the multi-task architecture builders (not public API)."""

import keras

from kerasmtl.layers import Expert


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
    if factory is not None and (
        not callable(factory) or isinstance(factory, keras.layers.Layer)
    ):
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
    if layer.built:
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
