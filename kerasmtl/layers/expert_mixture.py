"""ExpertMixture: the gate-weighted sum of expert outputs."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class ExpertMixture(keras.layers.Layer):
    """Sums expert outputs weighted by per-sample gate weights.

    `y = sum_i gates[:, i] * experts_i`: the combination step of a mixture of
    experts (Jacobs et al., "Adaptive Mixtures of Local Experts", Neural
    Computation 1991), applied per task in the Multi-gate Mixture-of-Experts
    (Ma et al., KDD 2018), PLE (Tang et al., RecSys 2020) and DSelect-k
    (Hazimeh et al., NeurIPS 2021). The gates come from a `Gate` or a
    `DSelectKGate`. The experts may output vectors, token sequences or
    feature maps, as long as all have the same shape; each sample's weight
    multiplies the whole of its expert output. The layer has no weights.

    Args:
        expert_indices: optional list of ints: the experts this mixture mixes,
            in the order of the gate weights, taken from axis 1 of a stacked
            `experts` tensor (e.g. a task's own experts and the shared ones of
            a stack of every expert in CGC). `None` (default) mixes them all.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        experts: a list of `num_experts` tensors of one shape
            `(batch, ...)`, or one tensor `(batch, num_experts, ...)` with the
            experts stacked on axis 1 (`kerasmtl.layers.ExpertStack`).
        gates: `(batch, num_experts)` weights.

    Input shape:
        `experts`: a list of `(batch, ...)` or `(batch, num_experts, ...)`;
        `gates`: `(batch, num_experts)`.

    Output shape:
        `(batch, ...)`, the shape of one expert output.

    Example:

    >>> import numpy as np
    >>> experts = [np.ones((2, 3)), 2 * np.ones((2, 3))]
    >>> gates = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> keras.ops.convert_to_numpy(ExpertMixture()(experts, gates)).tolist()
    [[1.0, 1.0, 1.0], [1.5, 1.5, 1.5]]
    """

    def __init__(self, expert_indices=None, **kwargs):
        super().__init__(**kwargs)
        if expert_indices is not None:
            if (
                not isinstance(expert_indices, (list, tuple))
                or not expert_indices
                or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0
                    for i in expert_indices
                )
            ):
                raise ValueError(
                    "`expert_indices` must be None or a non-empty list of non-negative "
                    f"integers. Received: expert_indices={expert_indices!r}"
                )
            expert_indices = list(expert_indices)
        self.expert_indices = expert_indices

    def get_config(self):
        return {**super().get_config(), "expert_indices": self.expert_indices}

    def _expert_shapes(self, experts_shape, gates_shape):
        """Returns `(num_experts, expert_shape)` after checking the shapes agree."""
        gates_shape = tuple(gates_shape)
        stacked = not (
            isinstance(experts_shape, (list, tuple))
            and experts_shape
            and isinstance(experts_shape[0], (list, tuple))
        )
        if self.expert_indices is not None and not stacked:
            raise ValueError(
                "`expert_indices` selects experts from one stacked tensor "
                "(batch, num_experts, ...), not from a list. "
                f"Received: experts_shape={experts_shape}, expert_indices={self.expert_indices}"
            )
        if stacked:
            experts_shape = tuple(experts_shape)
            num_experts = experts_shape[1] if len(experts_shape) > 1 else None
            if self.expert_indices is not None:
                if num_experts is not None and max(self.expert_indices) >= num_experts:
                    raise ValueError(
                        f"`expert_indices` {self.expert_indices} name experts beyond the "
                        f"{num_experts} of the stack. Received: experts_shape={experts_shape}"
                    )
                num_experts = len(self.expert_indices)
            expert_shape = (experts_shape[0], *experts_shape[2:])
            shapes = [expert_shape]
        else:
            shapes = [tuple(shape) for shape in experts_shape]
            num_experts = len(shapes)
            expert_shape = shapes[0]
        problems = []
        if any(shape[1:] != expert_shape[1:] for shape in shapes):
            problems.append(f"the expert outputs have different shapes {shapes}")
        if stacked and len(experts_shape) < 2:
            problems.append("a stacked `experts` tensor needs the experts on axis 1")
        if len(gates_shape) != 2:
            problems.append(f"`gates` has rank {len(gates_shape)} instead of 2")
        elif None not in (gates_shape[1], num_experts) and gates_shape[1] != num_experts:
            problems.append(f"{gates_shape[1]} gate weights for {num_experts} experts")
        if problems:
            raise ValueError(
                "`ExpertMixture` cannot mix these experts: " + "; ".join(problems) + ". "
                "Expected a list of expert outputs of one shape (or one tensor with the "
                "experts on axis 1) and gates of shape (batch, num_experts). "
                f"Received: experts_shape={experts_shape}, gates_shape={gates_shape}"
            )
        return num_experts, expert_shape

    def build(self, experts_shape, gates_shape):
        self._expert_shapes(experts_shape, gates_shape)

    def call(self, experts, gates):
        if isinstance(experts, (list, tuple)):
            experts = ops.stack(experts, axis=1)
        elif self.expert_indices is not None:
            experts = ops.take(experts, list(self.expert_indices), axis=1)
        gates = ops.cast(gates, experts.dtype)
        gates = ops.reshape(gates, (-1, gates.shape[1]) + (1,) * (len(experts.shape) - 2))
        return ops.sum(experts * gates, axis=1)

    def compute_output_shape(self, experts_shape, gates_shape):
        _, expert_shape = self._expert_shapes(experts_shape, gates_shape)
        return expert_shape
