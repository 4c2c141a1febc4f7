"""The private base of the gated mixtures of experts (MMoE, PLE and CGC, DSelect-k)."""

from kerasmtl import architecture_config as ac
from kerasmtl.layers import ExpertMixture
from kerasmtl.layers.expert_stack import ExpertStack
from kerasmtl.models.architecture_utils import EXPERTS, check_factory, check_units, make_experts
from kerasmtl.models.base_architecture import BaseArchitecture


class BaseGatedMixture(BaseArchitecture):
    """A mixture of experts: experts, task gates and mixtures, then towers and heads.

    What `MMoE`, `PLE` (and `CGC`) and `DSelectK` share, written once: the
    checks of `expert_units` and `expert`; the experts themselves (default
    `kerasmtl.layers.Expert`s, or the layers `expert(layer_name)` returns);
    the stacked experts (the layer `"experts"`) as the shared representation;
    and the config keys of the experts and the bottom. Each subclass builds
    its own gates and mixtures. Not public API.

    Args:
        inputs: the subclass's `inputs` argument (saved in the config).
        tasks: a list of `kerasmtl.Task`, already checked.
        mixtures: function `mixtures(shared, experts)` returning
            `{task_name: mixed features}`; it makes its experts with
            `experts(inputs, layer_names)`, which returns one expert output per
            name (in the config, the experts `expert=` built are saved under
            these names). The graph must contain an `ExpertStack` named
            `"experts"` (see `shared_expert_mixtures`).
        expert_units: tuple of ints, the units of each default expert.
        expert: optional function `expert(layer_name)` returning a new layer
            per expert, replacing the default experts.
        bottom: optional Keras layer or model (or function) applied once to
            the inputs; the experts and gates read its output.
        activation: activation of the default experts and towers.
        dropout: float, the dropout rate of the default experts and towers.
        **kwargs: the other `BaseArchitecture` arguments (`tower_units`,
            `tower`, `embedding_dim`, `name`, ...).
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
        mixtures,
        expert_units,
        expert,
        bottom,
        activation,
        dropout,
        **kwargs,
    ):
        expert_units = check_units(expert_units, "expert_units", allow_empty=False)
        check_factory(expert, "expert")
        expert_names = []

        # === Layers ===
        def experts(expert_inputs, names):
            expert_names.extend(names)
            return make_experts(expert_inputs, names, expert, expert_units, activation, dropout)

        # === Functional Model ===
        super().__init__(
            inputs,
            tasks,
            trunk=lambda shared: mixtures(shared, experts),
            bottom=bottom,
            activation=activation,
            dropout=dropout,
            representation=EXPERTS,
            **kwargs,
        )

        # === Config ===
        self.expert_units = expert_units
        self.expert = expert
        self.bottom = bottom
        self._expert_names = tuple(expert_names)

    def get_config(self):
        return {
            **super().get_config(),
            "expert_units": list(self.expert_units),
            "expert": ac.serialize_factory(self, self.expert, list(self._expert_names)),
            "bottom": self._bottom_config,
        }


def shared_expert_mixtures(shared, tasks, num_experts, gate, experts):
    """Shared experts `expert_{i}`, stacked (`"experts"`), a gate and a mixture per task.

    The graph of MMoE and DSelect-k between the bottom and the towers;
    `gate(layer_name)` returns a task's gate layer (named `{task}_gate`, read by
    `gate_weights`), which reads `shared`. Returns `{task_name: mixture}`.
    """
    stacked = ExpertStack(name=EXPERTS)(
        experts(shared, [f"expert_{index}" for index in range(num_experts)])
    )
    mixed = {}
    for task in tasks:
        gates = gate(f"{task.name}_gate")(shared)
        mixed[task.name] = ExpertMixture(name=f"{task.name}_mixture")(stacked, gates)
    return mixed
