"""The Multi-gate Mixture-of-Experts (MMoE) model."""

import keras

from kerasmtl.layers import Gate
from kerasmtl.models.architecture_utils import check_positive_int, check_units
from kerasmtl.models.base_gated_mixture import BaseGatedMixture, shared_expert_mixtures
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class MMoE(BaseGatedMixture):
    """A Multi-gate Mixture-of-Experts model: shared experts, one gate per task.

    From Ma et al., "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts" (KDD 2018). `num_experts` experts
    (`kerasmtl.layers.Expert`, named `expert_{i}`) read the features; their
    outputs are stacked (`kerasmtl.layers.ExpertStack`, the layer
    `"experts"`); each task `k` has a softmax gate (`kerasmtl.layers.Gate`,
    named `{task}_gate`) that weights the experts per sample,
    `f_k(x) = sum_i g_k(x)_i e_i(x)` (`kerasmtl.layers.ExpertMixture`,
    `{task}_mixture`), followed by the task's tower and head. Tasks that
    conflict can use different experts; related tasks share them. Read the
    gate weights with `kerasmtl.models.gate_weights(model, x)`.

    The stacked expert outputs are the model's shared representation
    (`representation == "experts"`): gradient-based strategies can use
    `compile(gradients="representation")`, the task gradients with respect to
    the expert outputs.

    The config holds every argument below, so a saved MMoE says how many
    experts it has and `from_config` rebuilds it. Functions cannot be saved:
    for `expert=` and `tower=`, the layers they built are saved with
    `keras.layers.serialize` (and rebuilt from those configs); a `bottom`
    layer is serialized the same way (a bottom function: the graph it built).

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
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> from kerasmtl import Task
    >>> model = MMoE({"features": (10,)},
    ...              [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...              num_experts=3, expert_units=(8,), tower_units=(4,))
    >>> model.get_config()["num_experts"], model.representation
    (3, 'experts')
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
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
        **kwargs,
    ):
        check_tasks(tasks)
        check_positive_int(num_experts, "num_experts")
        gate_units = check_units(gate_units, "gate_units")

        # === Layers ===
        def gate(layer_name):
            return Gate(num_experts, units=gate_units, activation=activation, name=layer_name)

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
        self.gate_units = gate_units

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "gate_units": list(self.gate_units),
        }


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
    """Builds an `MMoE` model: shared experts, one gate per task.

    The same as `MMoE(inputs, tasks, num_experts=..., ...)`; see `MMoE` for the
    method (Ma et al., KDD 2018) and the arguments.

    Returns:
        An `MMoE` model with one output per task, keyed by task name.

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
    return MMoE(**locals())
