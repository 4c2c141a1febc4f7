"""MGDA-UB: MGDA on the gradients of the shared representation."""

import keras

from kerasmtl.weighting.mgda import MGDA


@keras.saving.register_keras_serializable(package="kerasmtl")
class MGDAUB(MGDA):
    """MGDA-UB: the min-norm MGDA weights computed from representation gradients.

    Follows Sener & Koltun, "Multi-Task Learning as Multi-Objective
    Optimization" (NeurIPS 2018), MGDA-UB: minimising the upper bound
    `||sum_k a_k d L_k / d z||` over the gradients with respect to the shared
    representation `z` instead of the shared parameters, so one backward pass
    through the trunk suffices. The solver and the normalisation options are
    those of `MGDA` (exact active-set enumeration, LibMTL's `mgda_gn`); the only
    difference is the declared `preferred_gradients = "representation"`, which
    the trainer reads to build the Gram matrix from representation gradients
    (LibMTL's `MGDA` with `rep_grad=True`).

    Absent tasks: as `MGDA`, the min-norm point over the simplex of the present
    tasks only (weight 0 for the absent ones), never the zero vector because a
    task is absent.

    Args:
        normalization: `"none"` (default), `"l2"`, `"loss"` or `"loss+"`.
        num_iterations: the most active-set iterations (more than 5 tasks; 3 on PyTorch).
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = MGDAUB()
    >>> strategy.build((2,))
    >>> gram = keras.ops.convert_to_tensor([[1.0, -1.0], [-1.0, 1.0]])
    >>> [round(float(a), 3) for a in strategy.compute_weights_from_gram(gram, [1.0, 1.0])]
    [0.5, 0.5]
    """

    #: Gradients the strategy is designed for: the shared representation's.
    preferred_gradients = "representation"
