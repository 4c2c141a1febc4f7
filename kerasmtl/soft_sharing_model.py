"""Soft parameter sharing: one tower per task, tied by a parameter-distance penalty."""

import keras
from keras import ops

from kerasmtl.multi_task_model import MultiTaskModel


@keras.saving.register_keras_serializable(package="kerasmtl")
class SoftSharingModel(MultiTaskModel):
    """A `MultiTaskModel` whose task towers are tied by an L2 parameter distance.

    Soft parameter sharing (Duong et al., "Low Resource Dependency Parsing:
    Cross-lingual Parameter Sharing in a Neural Network Parser", ACL 2015; see
    Ruder, "An Overview of Multi-Task Learning in Deep Neural Networks", 2017):
    each task has its own tower, and the loss adds

    `penalty * sum_{i < j} sum_v ||w_i[v] - w_j[v]||^2`

    over every pair of towers `i, j` and every pair of corresponding trainable
    weights `v` (the towers' trainable weights in order, which must match in
    number and shape). The term is logged as `sharing_penalty`; it is not part
    of any task loss, and weighting strategies do not scale it.

    Build one with `kerasmtl.soft_sharing`.

    Args:
        inputs: the model inputs.
        outputs: a dict of output tensors keyed by task name.
        tasks: the `Task`s.
        towers: the names of the tower layers to tie, one per task.
        penalty: the strength of the parameter-distance penalty (>= 0).
        **kwargs: `keras.Model` keyword arguments.
    """

    def __init__(self, inputs, outputs, tasks, towers, penalty=1e-3, **kwargs):
        super().__init__(inputs, outputs, tasks, **kwargs)
        penalty = float(penalty)
        if penalty < 0:
            raise ValueError(f"`penalty` must be >= 0. Received: penalty={penalty}")
        self.towers = list(towers)
        self.penalty = penalty
        layer_names = [layer.name for layer in self.layers]
        unknown = [tower for tower in self.towers if tower not in layer_names]
        if unknown:
            raise ValueError(
                f"Tower(s) {unknown} are not layers of this model. "
                f"Layers: {layer_names}. Received: towers={self.towers}"
            )
        tower_layers = [self.get_layer(tower) for tower in self.towers]
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
        self._tower_layers = tower_layers
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

    def extra_loss(self):
        penalty = self.sharing_penalty()
        self._penalty_tracker.update_state(penalty)
        return penalty

    def get_config(self):
        return {**super().get_config(), "towers": self.towers, "penalty": self.penalty}

    @classmethod
    def _extra_config_keys(cls):
        return ("towers", "penalty")
