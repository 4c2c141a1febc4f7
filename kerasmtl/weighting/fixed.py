"""Static per-task loss weights, held in a variable."""

import keras
from keras import ops

from kerasmtl.weighting.base_weighting import Weighting, check_number_list


@keras.saving.register_keras_serializable(package="kerasmtl")
class Fixed(Weighting):
    """Fixed loss weights: total loss `sum_k w_k L_k` with user-given `w_k`.

    The weights live in a non-trainable variable, so a callback can change them
    during `fit` with `assign` and the train function is not traced again.

    Absent tasks get weight 0; the present tasks keep their own weights (they
    are not renormalised to make up for the absent ones), which is `Fixed` built
    on the present tasks' weights alone.

    Args:
        weights: a list of floats in task order, or `None` for all ones.
            `MultiTaskModel.compile(loss_weights={...})` passes the dict keyed
            by task name in the model's task order.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = Fixed([1.0, 0.5])
    >>> strategy.build((2,))
    >>> float(strategy.combine(keras.ops.convert_to_tensor([2.0, 4.0]))[0])
    4.0
    """

    def __init__(self, weights=None, **kwargs):
        super().__init__(**kwargs)
        weights = check_number_list(weights, "weights", "Fixed")
        self.weights_init = weights

    def build(self, losses_shape):
        super().build(losses_shape)
        if self.weights_init is not None and len(self.weights_init) != self.num_tasks:
            raise ValueError(
                f"`weights` has {len(self.weights_init)} values but the model has "
                f"{self.num_tasks} tasks. Received: weights={self.weights_init}"
            )
        initial = self.weights_init or [1.0] * self.num_tasks
        self.loss_weights = self.add_weight(
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(initial),
            trainable=False,
            name="loss_weights",
        )

    def compute_weights(self, losses, present=None):
        return ops.convert_to_tensor(self.loss_weights)

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_init}
