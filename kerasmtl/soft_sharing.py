"""Builder for soft parameter sharing."""

import keras

from kerasmtl.inputs import make_inputs, unwrap_single
from kerasmtl.soft_sharing_model import SoftSharingModel
from kerasmtl.task import check_tasks


def soft_sharing(inputs, tower, tasks, penalty=1e-3, name="soft_sharing"):
    """Builds a `SoftSharingModel`: one tower per task, tied by an L2 penalty.

    Args:
        inputs: a named `keras.Input`, a list or dict of them, or a dict of
            shapes such as `{"image": (28, 28, 1)}`.
        tower: a function `tower(task_name)` returning a new, unbuilt Keras layer
            or model; it is called once per task, and every tower must have the
            same trainable weight shapes. A tower is named `{task}_tower`.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        penalty: the strength of the parameter-distance penalty.
        name: the model name.

    Returns:
        A `SoftSharingModel`.

    Example:

    >>> from kerasmtl import Task
    >>> def tower(task_name):
    ...     return keras.Sequential([keras.layers.Dense(8, activation="relu")])
    >>> model = soft_sharing(
    ...     {"features": (4,)}, tower,
    ...     [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...     penalty=1e-2)
    >>> model.towers
    ['a_tower', 'b_tower']
    """
    check_tasks(tasks)
    if not callable(tower) or isinstance(tower, keras.layers.Layer):
        raise TypeError(
            "`tower` must be a function `tower(task_name)` that returns a new layer or "
            f"model for each task. Received: tower={tower!r}"
        )
    inputs = unwrap_single(make_inputs(inputs))
    outputs, tower_names = {}, []
    for task in tasks:
        layer = tower(task.name)
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"`tower('{task.name}')` must return a Keras layer or model. Received: {layer!r}"
            )
        if layer.built:
            raise ValueError(
                f"`tower('{task.name}')` returned a built layer '{layer.name}'; return a new "
                "layer per task so the towers do not share weights."
            )
        layer.name = f"{task.name}_tower"
        tower_names.append(layer.name)
        outputs[task.name] = task.build_head()(layer(inputs))
    return SoftSharingModel(inputs, outputs, tasks, towers=tower_names, penalty=penalty, name=name)
