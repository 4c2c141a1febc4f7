"""The Multi-gate Mixture-of-Experts (MMoE) model."""

from kerasmtl.layers import Gate
from kerasmtl.models.architecture_utils import (
    check_factory,
    check_positive_int,
    check_units,
    gated_mixture_model,
)
from kerasmtl.task import check_tasks


def mmoe(
    inputs,
    tasks,
    num_experts=4,
    expert_units=(16,),
    gate_units=(),
    tower_units=(8,),
    expert=None,
    bottom=None,
    tower=None,
    activation="relu",
    dropout=0.0,
    embedding_dim=8,
    name="mmoe",
):
    """Builds a Multi-gate Mixture-of-Experts model: shared experts, one gate per task.

    From Ma et al., "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts" (KDD 2018). `num_experts` experts
    (`kerasmtl.layers.Expert`, named `expert_{i}`) read the features; each
    task `k` has a softmax gate (`kerasmtl.layers.Gate`, named `{task}_gate`)
    that weights the experts per sample, `f_k(x) = sum_i g_k(x)_i e_i(x)`
    (`kerasmtl.layers.ExpertMixture`, `{task}_mixture`), followed by the task's
    tower and head. Tasks that conflict can use different experts; related
    tasks share them. Read the gate weights with
    `kerasmtl.models.gate_weights(model, x)`.

    Args:
        inputs: the inputs: a named `keras.Input` or a list of them, or a dict
            mapping input names to shapes (`{"features": (100,)}`,
            `{"image": (32, 32, 3)}`) or to tabular feature specifications
            (`"numeric"`, `("numeric", size)`, `("categorical",
            vocabulary_size[, embedding_dim])`); see `kerasmtl.models`.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        num_experts: int, the number of experts.
        expert_units: tuple of ints, the units of each default expert's
            `Dense` layers (its length is the expert depth).
        gate_units: tuple of ints, hidden layers of each gate; `()` (default,
            as in the paper) for a linear gate.
        tower_units: tuple of ints, the units of each task's tower; `()` for
            no tower.
        expert: optional function `expert(layer_name)` returning a new Keras
            layer or model per expert, replacing the default experts; e.g.
            a small convolutional network for images. All experts must return
            one shape; feature maps are averaged to vectors before the towers.
        bottom: optional Keras layer or model applied once to the inputs;
            the experts and gates read its output (e.g. a convolutional stem
            for images, or a layer that combines an image with tabular
            features).
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

    >>> import numpy as np
    >>> from kerasmtl import Task
    >>> from kerasmtl.models import gate_weights
    >>> model = mmoe({"features": (10,)},
    ...              [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...              num_experts=3, expert_units=(8,), tower_units=(4,))
    >>> x = np.random.rand(5, 10).astype("float32")
    >>> {task: w.shape for task, w in gate_weights(model, x).items()}
    {'a': (5, 3), 'b': (5, 3)}
    """
    check_tasks(tasks)
    check_positive_int(num_experts, "num_experts")
    expert_units = check_units(expert_units, "expert_units", allow_empty=False)
    gate_units = check_units(gate_units, "gate_units")
    tower_units = check_units(tower_units, "tower_units")
    check_factory(expert, "expert")
    check_factory(tower, "tower")

    # === Functional Model ===
    return gated_mixture_model(
        inputs,
        tasks,
        num_experts,
        lambda gate_name: Gate(
            num_experts, units=gate_units, activation=activation, name=gate_name
        ),
        expert_units,
        tower_units,
        expert,
        bottom,
        tower,
        activation,
        dropout,
        embedding_dim,
        name,
    )
