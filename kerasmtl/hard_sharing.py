"""Hard parameter sharing: one trunk, one named head per task."""

import keras

from kerasmtl.inputs import make_inputs, unwrap_single
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks


def hard_sharing(inputs, trunk, tasks, name="hard_sharing"):
    """Builds a `MultiTaskModel` with a shared trunk and a head per task.

    Hard parameter sharing (Caruana, "Multitask Learning", Machine Learning 1997):
    every task reads the same features, computed once by the trunk; only the
    heads are task-specific.

    Args:
        inputs: a named `keras.Input`, a list or dict of them, or a dict of
            shapes such as `{"image": (28, 28, 1)}`.
        trunk: the shared part: any Keras layer or model called on `inputs`
            (e.g. `keras.applications.ResNet50(include_top=False,
            weights=None, pooling="avg")`), or a function of the inputs that
            returns the features.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        name: the model name.

    Returns:
        A `MultiTaskModel` with one output per task, keyed by task name.

    Example:

    >>> from kerasmtl import Task
    >>> trunk = keras.Sequential([keras.layers.Dense(16, activation="relu")])
    >>> model = hard_sharing(
    ...     {"features": (8,)}, trunk,
    ...     [Task("a", head=1, loss="mse"), Task("b", head=3, loss="mse")])
    >>> sorted(model.output)
    ['a', 'b']
    """
    check_tasks(tasks)
    inputs = unwrap_single(make_inputs(inputs))
    features = trunk(inputs)
    outputs = {task.name: task.build_head()(features) for task in tasks}
    return MultiTaskModel(
        inputs, outputs, tasks, representation=_producer(trunk, features), name=name
    )


def _producer(trunk, features):
    """The name of the layer that outputs the shared features, if there is one."""
    if isinstance(trunk, keras.layers.Layer):
        return trunk.name
    history = getattr(features, "_keras_history", None)
    operation = getattr(history, "operation", None)
    if isinstance(operation, keras.layers.Layer) and len(operation._inbound_nodes) == 1:
        return operation.name
    return None
