"""Soft parameter sharing: one tower per task, tied by a parameter-distance penalty."""

import keras
from keras import ops

from kerasmtl import architecture_config as ac
from kerasmtl.inputs import make_inputs, unwrap_single
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class SoftSharing(MultiTaskModel):
    """One tower per task, tied by an L2 distance between their parameters.

    Soft parameter sharing (Duong et al., "Low Resource Dependency Parsing:
    Cross-lingual Parameter Sharing in a Neural Network Parser", ACL 2015; see
    Ruder, "An Overview of Multi-Task Learning in Deep Neural Networks", 2017):
    each task has its own tower (`{task}_tower`, built by `tower(task_name)`),
    and the loss adds

    `penalty * sum_{i < j} sum_v ||w_i[v] - w_j[v]||^2`

    over every pair of towers `i, j` and every pair of corresponding trainable
    weights `v` (the towers' trainable weights in order, which must match in
    number and shape). The model adds the term with `add_loss` in every
    forward pass, so it is part of `model.losses` like a weight regulariser:
    it is in `loss` and in the gradient of every training route, it is not
    part of any task loss, and weighting strategies do not scale it. It is
    logged as `sharing_penalty`.

    The config holds the inputs, the tasks (with their built heads), `penalty`
    and the towers: `tower` is a function, which cannot be saved, so the
    towers it built are serialized with `keras.layers.serialize` and
    `from_config` rebuilds them from those configs (`SerializedLayers`).

    Args:
        inputs: a named `keras.Input`, a list or dict of them, or a dict of
            shapes such as `{"image": (28, 28, 1)}`.
        tower: a function `tower(task_name)` returning a new, unbuilt Keras
            layer or model; it is called once per task, and every tower must
            have the same trainable weight shapes.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        penalty: the strength of the parameter-distance penalty (>= 0).
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> from kerasmtl import Task
    >>> def tower(task_name):
    ...     return keras.Sequential([keras.layers.Dense(8, activation="relu")])
    >>> model = SoftSharing(
    ...     {"features": (4,)}, tower,
    ...     [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...     penalty=1e-2)
    >>> model.towers, model.penalty
    (['a_tower', 'b_tower'], 0.01)
    """

    def __init__(self, inputs, tower, tasks, *, penalty=1e-3, name="soft_sharing", **kwargs):
        check_tasks(tasks)
        if not callable(tower) or isinstance(tower, keras.layers.Layer):
            raise TypeError(
                "`tower` must be a function `tower(task_name)` that returns a new layer or "
                f"model for each task. Received: tower={tower!r}"
            )
        penalty = float(penalty)
        if not penalty >= 0:
            raise ValueError(f"`penalty` must be >= 0. Received: penalty={penalty}")

        # === Layers ===
        tower_layers = []
        for task in tasks:
            layer = tower(task.name)
            if not isinstance(layer, keras.layers.Layer):
                raise TypeError(
                    f"`tower('{task.name}')` must return a Keras layer or model. "
                    f"Received: {layer!r}"
                )
            # A saved tower comes back new (maybe built: a Sequential builds itself).
            if layer.built and not isinstance(tower, ac.SerializedLayers):
                raise ValueError(
                    f"`tower('{task.name}')` returned a built layer '{layer.name}'; return a "
                    "new layer per task so the towers do not share weights."
                )
            layer.name = f"{task.name}_tower"
            tower_layers.append(layer)

        # === Functional Model ===
        model_inputs = unwrap_single(make_inputs(inputs))
        outputs = {
            task.name: task.build_head()(layer(model_inputs))
            for task, layer in zip(tasks, tower_layers)
        }
        super().__init__(model_inputs, outputs, tasks, name=name, **kwargs)
        _check_pairable(tower_layers)

        # === Config ===
        self.tower = tower
        self.penalty = penalty
        self.towers = [layer.name for layer in tower_layers]
        self._tower_layers = tower_layers
        self._config_inputs = ac.serialize_inputs(inputs)
        self._penalty_tracker = keras.metrics.Mean(name="sharing_penalty")

    def sharing_penalty(self):
        """Returns the parameter-distance penalty, already scaled by `penalty`."""
        total = ops.convert_to_tensor(0.0, "float32")
        weights = [tower.trainable_weights for tower in self._tower_layers]
        for i in range(len(weights)):
            for j in range(i + 1, len(weights)):
                for w_i, w_j in zip(weights[i], weights[j]):
                    difference = ops.cast(w_i, "float32") - ops.cast(w_j, "float32")
                    total = total + ops.sum(ops.square(difference))
        return self.penalty * total

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training, mask=mask)
        penalty = self.sharing_penalty()
        # A symbolic call (this model nested in another graph) has no value to add.
        # `Layer.add_loss`: `Functional.add_loss` is for symbolic losses, which
        # Keras 3 does not implement; the layer's own records the eager value
        # (or gives it to the stateless scope on JAX), and `model.losses` has it.
        if not isinstance(penalty, keras.KerasTensor):
            keras.layers.Layer.add_loss(self, penalty)
        return outputs

    def extra_loss_total(self, forward_losses=None):
        # Where the model's own losses are totalled (every training route), the
        # penalty is logged; its value is among those losses (`add_loss` in `call`).
        self._penalty_tracker.update_state(self.sharing_penalty())
        return super().extra_loss_total(forward_losses)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "inputs": self._config_inputs,
            "tower": ac.serialize_factory(self, self.tower, self.towers, keys=self.task_names),
            "tasks": ac.serialize_tasks(self, self.tasks),
            "penalty": self.penalty,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        return cls(
            inputs=ac.deserialize_inputs(config.pop("inputs")),
            tower=ac.deserialize_factory(config.pop("tower")),
            tasks=ac.deserialize_tasks(config.pop("tasks")),
            **config,
        )


def _check_pairable(tower_layers):
    reference = tower_layers[0]
    reference_shapes = [tuple(w.shape) for w in reference.trainable_weights]
    for tower in tower_layers[1:]:
        shapes = [tuple(w.shape) for w in tower.trainable_weights]
        if shapes != reference_shapes:
            raise ValueError(
                f"Towers '{reference.name}' and '{tower.name}' cannot be paired weight by "
                "weight for the parameter-distance penalty: their trainable weights "
                f"differ. '{reference.name}': {reference_shapes}; "
                f"'{tower.name}': {shapes}. Build every tower with the same architecture."
            )


def soft_sharing(inputs, tower, tasks, penalty=1e-3, name="soft_sharing"):
    """Builds a `SoftSharing` model: one tower per task, tied by an L2 penalty.

    The same as `SoftSharing(inputs, tower, tasks, penalty=penalty, name=name)`;
    see `SoftSharing` for the method (Duong et al., ACL 2015).

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
        A `SoftSharing` model.

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
    return SoftSharing(inputs, tower, tasks, penalty=penalty, name=name)
