"""Hard parameter sharing: one trunk, one named head per task."""

import keras

from kerasmtl import architecture_config as ac
from kerasmtl.inputs import make_inputs, unwrap_single
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class HardSharing(MultiTaskModel):
    """A shared trunk and a head per task: the one "trunk + heads" model of kerasmtl.

    Hard parameter sharing (Caruana, "Multitask Learning", Machine Learning
    1997): every task reads the same features, computed once by the trunk;
    only the heads are task-specific. The trunk is the model's shared
    representation (`representation`), so gradient-based strategies can use
    `compile(gradients="representation")`.

    The config holds what the model was built from, as keras-hub's tasks hold
    their backbone: the inputs, the tasks (each with its built head layer,
    serialized), and the trunk: a Keras layer or model is serialized with
    `keras.layers.serialize`; a function cannot be saved, so the functional
    graph it built from the inputs to the features is saved instead and
    `from_config` replays it with the same layers (`SerializedGraph`).
    `keras.saving.load_model` gives back a `HardSharing` with the same config
    and outputs.

    Args:
        inputs: a named `keras.Input`, a list or dict of them, or a dict of
            shapes such as `{"image": (28, 28, 1)}`.
        trunk: the shared part: any Keras layer or model called on `inputs`
            (e.g. `keras.applications.ResNet50(include_top=False,
            weights=None, pooling="avg")`), or a function of the inputs that
            returns the features.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments (`trainable`, `dtype`).

    Example:

    >>> from kerasmtl import Task
    >>> trunk = keras.layers.Dense(16, activation="relu", name="trunk")
    >>> model = HardSharing(
    ...     {"features": (8,)}, trunk,
    ...     [Task("a", head=1, loss="mse"), Task("b", head=3, loss="mse")])
    >>> sorted(model.output), model.representation
    (['a', 'b'], 'trunk')
    """

    def __init__(self, inputs, trunk, tasks, *, name="hard_sharing", **kwargs):
        check_tasks(tasks)
        if not isinstance(trunk, keras.layers.Layer) and not callable(trunk):
            raise TypeError(
                "`trunk` must be a Keras layer or model, or a function of the inputs that "
                f"returns the features. Received: trunk={trunk!r}"
            )

        # === Functional Model ===
        model_inputs = unwrap_single(make_inputs(inputs))
        features = trunk(model_inputs)
        outputs = {task.name: task.build_head()(features) for task in tasks}
        super().__init__(model_inputs, outputs, tasks, name=name, **kwargs)
        if isinstance(trunk, keras.layers.Layer):
            self.representation = trunk.name
        else:
            self.representation = ac.layer_called_once(self, features)

        # === Config ===
        self.trunk = trunk
        self._config_inputs = ac.serialize_inputs(inputs)
        self._trunk_graph = None
        if not isinstance(trunk, keras.layers.Layer):
            self._trunk_graph = ac.graph_config(model_inputs, features, "trunk_graph")

    def get_config(self):
        if isinstance(self.trunk, keras.layers.Layer):
            trunk = ac.serialize_layer(self.trunk)
        else:
            trunk = {"graph": self._trunk_graph}
        return {
            "name": self.name,
            "trainable": self.trainable,
            "inputs": self._config_inputs,
            "trunk": trunk,
            "tasks": ac.serialize_tasks(self, self.tasks),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        trunk = config.pop("trunk")
        if isinstance(trunk, dict) and set(trunk) == {"graph"}:
            trunk = ac.SerializedGraph(trunk["graph"])
        else:
            trunk = ac.deserialize_layer(trunk)
        return cls(
            inputs=ac.deserialize_inputs(config.pop("inputs")),
            trunk=trunk,
            tasks=ac.deserialize_tasks(config.pop("tasks")),
            **config,
        )


def hard_sharing(inputs, trunk, tasks, name="hard_sharing"):
    """Builds a `HardSharing` model: a shared trunk and a head per task.

    Hard parameter sharing (Caruana, "Multitask Learning", Machine Learning
    1997): every task reads the same features, computed once by the trunk;
    only the heads are task-specific. The same as `HardSharing(inputs, trunk,
    tasks, name=name)`.

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
        A `HardSharing` model with one output per task, keyed by task name.

    Example:

    >>> from kerasmtl import Task
    >>> trunk = keras.Sequential([keras.layers.Dense(16, activation="relu")])
    >>> model = hard_sharing(
    ...     {"features": (8,)}, trunk,
    ...     [Task("a", head=1, loss="mse"), Task("b", head=3, loss="mse")])
    >>> sorted(model.output)
    ['a', 'b']
    """
    return HardSharing(inputs, trunk, tasks, name=name)
