"""Mixture of experts with DSelect-k gates."""

import keras

from kerasmtl import architecture_config as ac
from kerasmtl.layers import DSelectKGate
from kerasmtl.models.architecture_utils import (
    EXPERTS,
    base_config,
    check_factory,
    check_positive_int,
    check_units,
    deserialize_arguments,
    gated_mixture_graph,
    serialize_bottom,
    tower_names,
)
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class DSelectK(MultiTaskModel):
    """A multi-task mixture of experts whose task gates select at most `k` experts.

    From Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture
    of Experts with Applications to Multi-Task Learning" (NeurIPS 2021): the
    MMoE architecture (shared experts `expert_{i}`, a gate and a mixture per
    task, then towers and heads; see `mmoe`) with per-example DSelect-k gates
    (`kerasmtl.layers.DSelectKGate`, named `{task}_gate`) instead of softmax
    gates. A DSelect-k gate is smooth during training and converges to
    weights with at most `k` non-zeros; `entropy_regularization` speeds that
    up. With per-example gates (the default) samples near a selector's
    decision boundary can keep more than `k` experts; static gates
    (`per_example=False`, one selection per task) end exactly `k`-sparse.
    Read the gate weights with `kerasmtl.models.gate_weights(model, x)`.

    The expert outputs are stacked (layer `"experts"`,
    `kerasmtl.layers.ExpertStack`), the model's shared representation:
    gradient-based strategies can use `compile(gradients="representation")`.
    The config holds every argument; the layers built by `expert=` and
    `tower=` (functions cannot be saved) and a `bottom` layer are saved with
    `keras.layers.serialize`, as for `MMoE`.

    Args:
        inputs: the inputs: a named `keras.Input` or a list of them, or a dict
            mapping input names to shapes or to tabular feature specifications
            (`"numeric"`, `("numeric", size)`, `("categorical",
            vocabulary_size[, embedding_dim])`); see `kerasmtl.models`.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        num_experts: int >= 2, the number of experts.
        k: int in `[1, num_experts]`, the most experts each task's gate
            selects per sample.
        gamma: float, the width of the smooth-step's polynomial region.
        entropy_regularization: float >= 0, the coefficient of the gates'
            entropy regularizer (added to the loss in training); `0` for none.
        per_example: bool, whether each sample has its own selection (gates
            read the features) or each task has one selection (static gates).
        expert_units: tuple of ints, the units of each default expert's
            `Dense` layers (its length is the expert depth).
        tower_units: tuple of ints, the units of each task's tower; `()` for
            no tower.
        expert: optional function `expert(layer_name)` returning a new Keras
            layer or model per expert, replacing the default experts.
        bottom: optional Keras layer or model applied once to the inputs;
            the experts and gates read its output.
        tower: optional function `tower(layer_name)` returning a new layer
            per task, replacing the default towers.
        activation: activation of the default experts and towers.
        dropout: float, the dropout rate of the default experts and towers.
        embedding_dim: int, the embedding size of categorical features.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> from kerasmtl import Task
    >>> model = DSelectK({"features": (10,)},
    ...                  [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...                  num_experts=8, k=2, entropy_regularization=1e-3)
    >>> model.get_layer("a_gate").k
    2
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
        num_experts=4,
        k=2,
        gamma=1.0,
        entropy_regularization=0.0,
        per_example=True,
        expert_units=(16,),
        tower_units=(8,),
        expert=None,
        bottom=None,
        tower=None,
        activation="relu",
        dropout=0.0,
        embedding_dim=8,
        name="dselect_k",
        **kwargs,
    ):
        check_tasks(tasks)
        check_positive_int(num_experts, "num_experts")
        expert_units = check_units(expert_units, "expert_units", allow_empty=False)
        tower_units = check_units(tower_units, "tower_units")
        check_factory(expert, "expert")
        check_factory(tower, "tower")

        # === Layers ===
        def make_gate(gate_name):
            return DSelectKGate(
                num_experts,
                k,
                gamma=gamma,
                entropy_regularization=entropy_regularization,
                per_example=per_example,
                name=gate_name,
            )

        # === Functional Model ===
        model_inputs, outputs, features, shared = gated_mixture_graph(
            inputs,
            tasks,
            num_experts=num_experts,
            make_gate=make_gate,
            expert_units=expert_units,
            tower_units=tower_units,
            expert=expert,
            bottom=bottom,
            tower=tower,
            activation=activation,
            dropout=dropout,
            embedding_dim=embedding_dim,
        )
        super().__init__(model_inputs, outputs, tasks, representation=EXPERTS, name=name, **kwargs)

        # === Config ===
        self.num_experts = num_experts
        self.k = k
        self.gamma = gamma
        self.entropy_regularization = entropy_regularization
        self.per_example = per_example
        self.expert_units = expert_units
        self.tower_units = tower_units
        self.expert = expert
        self.bottom = bottom
        self.tower = tower
        self.activation = activation
        self.dropout = dropout
        self.embedding_dim = embedding_dim
        self._config_inputs = ac.serialize_inputs(inputs)
        self._bottom_config = serialize_bottom(bottom, features, shared)

    def get_config(self):
        return {
            **base_config(self),
            "num_experts": self.num_experts,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_regularization": self.entropy_regularization,
            "per_example": self.per_example,
            "expert_units": list(self.expert_units),
            "tower_units": list(self.tower_units),
            "expert": ac.serialize_factory(
                self, self.expert, [f"expert_{i}" for i in range(self.num_experts)]
            ),
            "bottom": self._bottom_config,
            "tower": ac.serialize_factory(self, self.tower, tower_names(self.tasks)),
            "activation": self.activation,
            "dropout": self.dropout,
            "embedding_dim": self.embedding_dim,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**deserialize_arguments(config))


def dselect_k(
    inputs,
    tasks,
    num_experts=4,
    k=2,
    gamma=1.0,
    entropy_regularization=0.0,
    per_example=True,
    expert_units=(16,),
    tower_units=(8,),
    expert=None,
    bottom=None,
    tower=None,
    activation="relu",
    dropout=0.0,
    embedding_dim=8,
    name="dselect_k",
):
    """Builds a `DSelectK` model: experts chosen by DSelect-k gates.

    The same as `DSelectK(inputs, tasks, num_experts=..., ...)`; see `DSelectK`
    for the method (Hazimeh et al., NeurIPS 2021) and the arguments.

    Returns:
        A `DSelectK` model with one output per task, keyed by task name.

    Example:

    >>> from kerasmtl import Task
    >>> model = dselect_k({"features": (10,)},
    ...                   [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...                   num_experts=8, k=2, entropy_regularization=1e-3)
    >>> model.get_layer("a_gate").k
    2
    """
    return DSelectK(
        inputs,
        tasks,
        num_experts=num_experts,
        k=k,
        gamma=gamma,
        entropy_regularization=entropy_regularization,
        per_example=per_example,
        expert_units=expert_units,
        tower_units=tower_units,
        expert=expert,
        bottom=bottom,
        tower=tower,
        activation=activation,
        dropout=dropout,
        embedding_dim=embedding_dim,
        name=name,
    )
