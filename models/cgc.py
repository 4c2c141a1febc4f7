"""Customized Gate Control (CGC): PLE with one extraction level."""

import keras

from kerasmtl.models.ple import PLE


@keras.saving.register_keras_serializable(package="kerasmtl")
class CGC(PLE):
    """A Customized Gate Control (CGC) model: task-specific and shared experts.

    From Tang et al., "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations"
    (RecSys 2020), Sec. 4.1: PLE with one extraction level. Each task has
    `num_task_experts` experts of its own, and `num_shared_experts` experts
    are shared; task `k`'s gate (`{task}_gate`) mixes its own experts and the
    shared ones. Unlike MMoE, a task cannot use another task's private
    experts, which reduces negative transfer between conflicting tasks.
    The stacked expert outputs (layer `"experts"`) are the shared
    representation, and the config holds every argument, as for `PLE`.

    Args:
        inputs: the inputs, as for `ple`.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        num_shared_experts: int >= 0, the number of shared experts.
        num_task_experts: int >= 0, the number of experts of each task.
        expert_units: tuple of ints, the units of each default expert.
        gate_units: tuple of ints, hidden layers of each gate.
        tower_units: tuple of ints, the units of each task's tower.
        expert: optional function `expert(layer_name)` returning a new layer
            per expert.
        bottom: optional Keras layer or model applied once to the inputs.
        tower: optional function `tower(layer_name)` returning a new layer
            per task.
        activation: activation of the default experts, gates and towers.
        dropout: float, the dropout rate of the default experts and towers.
        embedding_dim: int, the embedding size of categorical features.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> from kerasmtl import Task
    >>> model = CGC({"features": (10,)},
    ...             [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...             num_shared_experts=2, num_task_experts=2)
    >>> model.get_layer("b_gate").num_experts
    4
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
        num_shared_experts=2,
        num_task_experts=1,
        expert_units=(16,),
        gate_units=(),
        tower_units=(8,),
        expert=None,
        bottom=None,
        tower=None,
        activation="relu",
        dropout=0.0,
        embedding_dim=8,
        name="cgc",
        **kwargs,
    ):
        super().__init__(
            inputs,
            tasks,
            num_levels=1,
            num_shared_experts=num_shared_experts,
            num_task_experts=num_task_experts,
            expert_units=expert_units,
            gate_units=gate_units,
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

    def get_config(self):
        config = super().get_config()
        del config["num_levels"]
        return config


def cgc(
    inputs,
    tasks,
    num_shared_experts=2,
    num_task_experts=1,
    expert_units=(16,),
    gate_units=(),
    tower_units=(8,),
    expert=None,
    bottom=None,
    tower=None,
    activation="relu",
    dropout=0.0,
    embedding_dim=8,
    name="cgc",
):
    """Builds a `CGC` model: task-specific and shared experts, one level.

    The same as `CGC(inputs, tasks, num_shared_experts=..., ...)`; see `CGC`
    for the method (Tang et al., RecSys 2020) and the arguments.

    Returns:
        A `CGC` model with one output per task, keyed by task name.

    Example:

    >>> from kerasmtl import Task
    >>> model = cgc({"features": (10,)},
    ...             [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...             num_shared_experts=2, num_task_experts=2)
    >>> model.get_layer("b_gate").num_experts
    4
    """
    return CGC(**locals())
