"""Mixture of experts with DSelect-k gates."""

import keras

from kerasmtl.layers import DSelectKGate
from kerasmtl.models.architecture_utils import check_positive_int
from kerasmtl.models.base_gated_mixture import BaseGatedMixture, shared_expert_mixtures
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class DSelectK(BaseGatedMixture):
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

        # === Layers ===
        def gate(layer_name):
            return DSelectKGate(
                num_experts,
                k,
                gamma=gamma,
                entropy_regularization=entropy_regularization,
                per_example=per_example,
                name=layer_name,
            )

        # === Functional Model ===
        def mixtures(shared, experts):
            return shared_expert_mixtures(shared, tasks, num_experts, gate, experts)

        super().__init__(
            inputs,
            tasks,
            mixtures=mixtures,
            expert_units=expert_units,
            tower_units=tower_units,
            expert=expert,
            bottom=bottom,
            tower=tower,
            activation=activation,
            dropout=dropout,
            embedding_dim=embedding_dim,
            name=name,
            **kwargs,
        )

        # === Config ===
        self.num_experts = num_experts
        self.k = k
        self.gamma = gamma
        self.entropy_regularization = entropy_regularization
        self.per_example = per_example

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "k": self.k,
            "gamma": self.gamma,
            "entropy_regularization": self.entropy_regularization,
            "per_example": self.per_example,
        }


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
    return DSelectK(**locals())
