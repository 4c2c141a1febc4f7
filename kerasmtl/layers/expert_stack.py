"""ExpertStack: the expert outputs of a mixture as one tensor."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class ExpertStack(keras.layers.Layer):
    """Stacks expert outputs on a new axis 1: `(batch, num_experts, ...)`.

    The experts' outputs of a mixture of experts (Ma et al., KDD 2018; Tang et
    al., RecSys 2020; Hazimeh et al., NeurIPS 2021) as one tensor, which the
    task mixtures (`ExpertMixture`) read. Being one layer's output, it can be
    the model's shared representation: gradient-based weighting strategies
    then use the task gradients with respect to the expert outputs
    (`compile(gradients="representation")`). The layer has no weights.

    Args:
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        experts: a list of `num_experts` tensors of one shape `(batch, ...)`.

    Input shape:
        A list of `num_experts` shapes `(batch, ...)`, all equal.

    Output shape:
        `(batch, num_experts, ...)`.

    Example:

    >>> import numpy as np
    >>> stacked = ExpertStack()([np.zeros((2, 3)), np.ones((2, 3))])
    >>> tuple(stacked.shape)
    (2, 2, 3)
    """

    def _check(self, experts_shape):
        if (
            not isinstance(experts_shape, (list, tuple))
            or not experts_shape
            or not isinstance(experts_shape[0], (list, tuple))
        ):
            raise ValueError(
                "`ExpertStack` stacks a non-empty list of expert outputs. "
                f"Received: experts_shape={experts_shape}"
            )
        shapes = [tuple(shape) for shape in experts_shape]
        if any(shape[1:] != shapes[0][1:] for shape in shapes):
            raise ValueError(
                f"`ExpertStack` needs expert outputs of one shape. Received: experts_shape={shapes}"
            )
        return shapes

    def build(self, experts_shape):
        self._check(experts_shape)

    def call(self, experts):
        return ops.stack(list(experts), axis=1)

    def compute_output_shape(self, experts_shape):
        shapes = self._check(experts_shape)
        return (shapes[0][0], len(shapes), *shapes[0][1:])
