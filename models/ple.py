"""Progressive Layered Extraction (PLE)."""

import keras

from kerasmtl.layers import ExpertMixture, Gate
from kerasmtl.layers.expert_stack import ExpertStack
from kerasmtl.models.architecture_utils import (
    EXPERTS,
    check_non_negative_int,
    check_positive_int,
    check_units,
)
from kerasmtl.models.base_gated_mixture import BaseGatedMixture
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class PLE(BaseGatedMixture):
    """A Progressive Layered Extraction (PLE) model: task and shared experts, stacked in levels.

    From Tang et al., "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations"
    (RecSys 2020). Each of the `num_levels` extraction levels has
    `num_task_experts` experts per task and `num_shared_experts` shared
    experts (`kerasmtl.layers.Expert`). At each level, task `k`'s gate
    (`kerasmtl.layers.Gate`) reads the task's output of the previous level
    (the features at the first level) and mixes the task's own experts and the
    shared experts (`kerasmtl.layers.ExpertMixture`); below the last level, a
    shared gate reads the shared output of the previous level and mixes all
    experts of the level into the next shared input. Each task's last-level
    output goes to its tower and head. One level is CGC (Customized Gate
    Control, see `cgc`).

    The last level's expert outputs are stacked (layer `"experts"`,
    `kerasmtl.layers.ExpertStack`: every task's experts in task order, then
    the shared experts), and each task's last mixture reads its own and the
    shared experts from the stack: the stack is the model's shared
    representation, so gradient-based strategies can use
    `compile(gradients="representation")`.

    The config holds every argument; the layers built by `expert=` and
    `tower=` (functions cannot be saved) and a `bottom` layer are saved with
    `keras.layers.serialize`, as for `MMoE`.

    Layer names: the last level's gates are `{task}_gate` (read them with
    `kerasmtl.models.gate_weights`: weights over the task's experts first,
    then the shared experts); the experts of level `l` are
    `level{l}_{task}_expert_{i}` and `level{l}_shared_expert_{i}`, the other
    gates `level{l}_{task}_gate` and `level{l}_shared_gate`.

    Args:
        inputs: the inputs: a named `keras.Input` or a list of them, or a dict
            mapping input names to shapes (`{"features": (100,)}`,
            `{"image": (32, 32, 3)}`) or to tabular feature specifications
            (`"numeric"`, `("numeric", size)`, `("categorical",
            vocabulary_size[, embedding_dim])`); see `kerasmtl.models`.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        num_levels: int, the number of extraction levels (1 is CGC).
        num_shared_experts: int >= 0, the shared experts per level.
        num_task_experts: int >= 0, the experts of each task per level (at
            least one of the two counts must be positive).
        expert_units: tuple of ints, the units of each default expert's
            `Dense` layers (its length is the expert depth).
        gate_units: tuple of ints, hidden layers of each gate; `()` for linear
            gates.
        tower_units: tuple of ints, the units of each task's tower; `()` for
            no tower.
        expert: optional function `expert(layer_name)` returning a new Keras
            layer or model per expert, replacing the default experts. With
            more than one level, an expert must read what experts return.
        bottom: optional Keras layer or model applied once to the inputs
            before the first level.
        tower: optional function `tower(layer_name)` returning a new layer
            per task, replacing the default towers.
        activation: activation of the default experts, gates and towers.
        dropout: float, the dropout rate of the default experts and towers.
        embedding_dim: int, the embedding size of categorical features.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> from kerasmtl import Task
    >>> model = PLE({"features": (10,)},
    ...             [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...             num_levels=2, num_shared_experts=2, num_task_experts=1)
    >>> model.get_layer("a_gate").num_experts
    3
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
        num_levels=2,
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
        name="ple",
        **kwargs,
    ):
        check_tasks(tasks)
        check_positive_int(num_levels, "num_levels")
        check_non_negative_int(num_shared_experts, "num_shared_experts")
        check_non_negative_int(num_task_experts, "num_task_experts")
        if num_shared_experts + num_task_experts < 1:
            raise ValueError(
                "Each gate needs at least one expert: `num_shared_experts` and "
                "`num_task_experts` cannot both be 0. "
                f"Received: num_shared_experts={num_shared_experts}, "
                f"num_task_experts={num_task_experts}"
            )
        gate_units = check_units(gate_units, "gate_units")

        # === Layers ===
        def gate(prefix, gate_input, count):
            return Gate(count, units=gate_units, activation=activation, name=f"{prefix}_gate")(
                gate_input
            )

        # === Functional Model ===
        def mixtures(shared, experts):
            def level_experts(level, group, inputs, count):
                return experts(inputs, [f"level{level}_{group}_expert_{i}" for i in range(count)])

            task_inputs = {task.name: shared for task in tasks}
            shared_input = shared
            for level in range(1, num_levels):
                task_experts = {
                    task.name: level_experts(
                        level, task.name, task_inputs[task.name], num_task_experts
                    )
                    for task in tasks
                }
                shared_experts = level_experts(level, "shared", shared_input, num_shared_experts)
                next_task_inputs = {}
                for task in tasks:
                    mixed = task_experts[task.name] + shared_experts
                    prefix = f"level{level}_{task.name}"
                    next_task_inputs[task.name] = ExpertMixture(name=f"{prefix}_mixture")(
                        mixed, gate(prefix, task_inputs[task.name], len(mixed))
                    )
                every_expert = [out for task in tasks for out in task_experts[task.name]]
                every_expert += shared_experts
                prefix = f"level{level}_shared"
                shared_input = ExpertMixture(name=f"{prefix}_mixture")(
                    every_expert, gate(prefix, shared_input, len(every_expert))
                )
                task_inputs = next_task_inputs
            # The last level: one stack of every expert, the shared representation.
            task_experts = [
                out
                for task in tasks
                for out in level_experts(
                    num_levels, task.name, task_inputs[task.name], num_task_experts
                )
            ]
            shared_experts = level_experts(num_levels, "shared", shared_input, num_shared_experts)
            stacked = ExpertStack(name=EXPERTS)(task_experts + shared_experts)
            shared_indices = [len(task_experts) + index for index in range(num_shared_experts)]
            mixed_by_task = {}
            for position, task in enumerate(tasks):
                own = [position * num_task_experts + index for index in range(num_task_experts)]
                indices = own + shared_indices
                mixed_by_task[task.name] = ExpertMixture(
                    expert_indices=indices, name=f"{task.name}_mixture"
                )(stacked, gate(task.name, task_inputs[task.name], len(indices)))
            return mixed_by_task

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
        self.num_levels = num_levels
        self.num_shared_experts = num_shared_experts
        self.num_task_experts = num_task_experts
        self.gate_units = gate_units

    def get_config(self):
        return {
            **super().get_config(),
            "num_levels": self.num_levels,
            "num_shared_experts": self.num_shared_experts,
            "num_task_experts": self.num_task_experts,
            "gate_units": list(self.gate_units),
        }


def ple(
    inputs,
    tasks,
    num_levels=2,
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
    name="ple",
):
    """Builds a `PLE` model: task and shared experts, stacked in levels.

    The same as `PLE(inputs, tasks, num_levels=..., ...)`; see `PLE` for the
    method (Tang et al., RecSys 2020) and the arguments.

    Returns:
        A `PLE` model with one output per task, keyed by task name.

    Example:

    >>> from kerasmtl import Task
    >>> model = ple({"features": (10,)},
    ...             [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...             num_levels=2, num_shared_experts=2, num_task_experts=1)
    >>> model.get_layer("a_gate").num_experts
    3
    """
    return PLE(**locals())
