"""The private base of the architectures that end in a tower and a head per task."""

from kerasmtl import architecture_config as ac
from kerasmtl.models.architecture_utils import (
    apply_bottom,
    base_config,
    check_factory,
    check_units,
    deserialize_arguments,
    serialize_bottom,
    task_outputs,
    tower_names,
)
from kerasmtl.models.tabular_inputs import build_inputs
from kerasmtl.multi_task_model import MultiTaskModel


class BaseArchitecture(MultiTaskModel):
    """An architecture from inputs to features per task, then a tower and a head per task.

    What `SharedBottom`, `CrossStitchNetwork` and the gated mixtures
    (`BaseGatedMixture`: `MMoE`, `PLE`, `CGC`, `DSelectK`) share, written once,
    as keras-hub's `Task` holds what its tasks share: the checks of
    `tower_units` and `tower`; the functional graph around the part that
    differs (below it the inputs, `kerasmtl.models.tabular_inputs.build_inputs`,
    and the optional bottom; above it pooling, the towers and the heads,
    `task_outputs`); the arguments that all of them store; and the config
    plumbing (`get_config` with the shared keys, `from_config` that calls the
    class with its deserialized config). Not public API.

    A subclass checks its own arguments (`check_tasks` first), defines the part
    that differs as `trunk(shared)` in its `# === Functional Model ===`
    section, calls `super().__init__`, then stores its own arguments and adds
    them to `get_config`, including `"bottom": self._bottom_config` when it
    takes a `bottom`.

    Args:
        inputs: the subclass's `inputs` argument (saved in the config).
        tasks: a list of `kerasmtl.Task`, already checked.
        trunk: function `trunk(shared)` returning `{task_name: features}`, where
            `shared` is the bottom's output (the features without a bottom).
        bottom: the layer or function applied once to the features, or `None`.
        tower_units: tuple of ints, the units of each task's default tower.
        tower: optional function `tower(layer_name)` returning a new layer per
            task, replacing the default towers.
        activation: activation of the default towers.
        dropout: float, the dropout rate of the default towers.
        embedding_dim: int, the embedding size of categorical features.
        **kwargs: `MultiTaskModel` keyword arguments (`name`,
            `representation`, ...).
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
        trunk,
        bottom,
        tower_units,
        tower,
        activation,
        dropout,
        embedding_dim,
        **kwargs,
    ):
        tower_units = check_units(tower_units, "tower_units")
        check_factory(tower, "tower")

        # === Functional Model ===
        model_inputs, features = build_inputs(inputs, embedding_dim)
        shared = apply_bottom(features, bottom)
        outputs = task_outputs(trunk(shared), tasks, tower_units, tower, activation, dropout)
        super().__init__(model_inputs, outputs, tasks, **kwargs)

        # === Config ===
        self.tower_units = tower_units
        self.tower = tower
        self.activation = activation
        self.dropout = dropout
        self.embedding_dim = embedding_dim
        self._config_inputs = ac.serialize_inputs(inputs)
        self._bottom_config = serialize_bottom(bottom, features, shared)

    def get_config(self):
        return {
            **base_config(self),
            "tower_units": list(self.tower_units),
            "tower": ac.serialize_factory(self, self.tower, tower_names(self.tasks)),
            "activation": self.activation,
            "dropout": self.dropout,
            "embedding_dim": self.embedding_dim,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**deserialize_arguments(config))
