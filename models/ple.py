"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE)."""

from kerasmtl.layers import ExpertMixture, Gate
from kerasmtl.models.architecture_utils import (
    apply_bottom,
    check_factory,
    check_non_negative_int,
    check_positive_int,
    check_units,
    make_experts,
    task_outputs,
)
from kerasmtl.models.tabular_inputs import build_inputs
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks


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
    """Builds a Progressive Layered Extraction (PLE) model: task and shared experts, stacked.

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

    Returns:
        A `kerasmtl.MultiTaskModel` with one output per task, keyed by task
        name.

    Example:

    >>> from kerasmtl import Task
    >>> model = ple({"features": (10,)},
    ...             [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...             num_levels=2, num_shared_experts=2, num_task_experts=1)
    >>> model.get_layer("a_gate").num_experts
    3
    """
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
    expert_units = check_units(expert_units, "expert_units", allow_empty=False)
    gate_units = check_units(gate_units, "gate_units")
    tower_units = check_units(tower_units, "tower_units")
    check_factory(expert, "expert")
    check_factory(tower, "tower")

    def experts(level, group, inputs, count):
        names = [f"level{level}_{group}_expert_{index}" for index in range(count)]
        return make_experts(inputs, names, expert, expert_units, activation, dropout)

    def mix(gate_name, gate_input, expert_outputs):
        gates = Gate(
            len(expert_outputs), units=gate_units, activation=activation, name=f"{gate_name}_gate"
        )(gate_input)
        return ExpertMixture(name=f"{gate_name}_mixture")(expert_outputs, gates)

    # === Functional Model ===
    model_inputs, features = build_inputs(inputs, embedding_dim)
    features = apply_bottom(features, bottom)
    task_inputs = {task.name: features for task in tasks}
    shared_input = features
    for level in range(1, num_levels + 1):
        last = level == num_levels
        task_experts = {
            task.name: experts(level, task.name, task_inputs[task.name], num_task_experts)
            for task in tasks
        }
        shared_experts = experts(level, "shared", shared_input, num_shared_experts)
        next_task_inputs = {
            task.name: mix(
                task.name if last else f"level{level}_{task.name}",
                task_inputs[task.name],
                task_experts[task.name] + shared_experts,
            )
            for task in tasks
        }
        if not last:
            every_expert = [out for task in tasks for out in task_experts[task.name]]
            shared_input = mix(f"level{level}_shared", shared_input, every_expert + shared_experts)
        task_inputs = next_task_inputs
    outputs = task_outputs(task_inputs, tasks, tower_units, tower, activation, dropout)
    return MultiTaskModel(model_inputs, outputs, tasks, name=name)


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
    """Builds a Customized Gate Control (CGC) model: task-specific and shared experts.

    From Tang et al., "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations"
    (RecSys 2020), Sec. 4.1: PLE with one extraction level. Each task has
    `num_task_experts` experts of its own, and `num_shared_experts` experts
    are shared; task `k`'s gate (`{task}_gate`) mixes its own experts and the
    shared ones. Unlike MMoE, a task cannot use another task's private
    experts, which reduces negative transfer between conflicting tasks.

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

    Returns:
        A `kerasmtl.MultiTaskModel` with one output per task, keyed by task
        name.

    Example:

    >>> from kerasmtl import Task
    >>> model = cgc({"features": (10,)},
    ...             [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...             num_shared_experts=2, num_task_experts=2)
    >>> model.get_layer("b_gate").num_experts
    4
    """
    return ple(
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
    )
