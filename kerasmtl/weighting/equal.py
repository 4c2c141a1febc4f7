"""Equal weighting, the baseline every method is measured against."""

import keras
from keras import ops

from kerasmtl.weighting.base_weighting import Weighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class Equal(Weighting):
    """Equal weighting: total loss `sum_k L_k` (every `w_k = 1`).

    LibMTL's `EW` averages (`w_k = 1/K`); we sum, as Keras does for several
    outputs, so a two-task model compiled with no weights matches
    `keras.Model.compile(loss={...})` exactly.

    Absent tasks get weight 0; the present tasks keep weight 1 (no
    renormalisation), which is `Equal` built on the present tasks alone.

    Example:

    >>> strategy = Equal()
    >>> strategy.build((2,))
    >>> float(strategy.combine(keras.ops.convert_to_tensor([2.0, 4.0]))[0])
    6.0
    """

    def compute_weights(self, losses, present=None):
        return ops.ones((self.num_tasks,), dtype="float32")
