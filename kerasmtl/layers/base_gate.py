"""Private base of the gates that weight the experts of a mixture."""

import keras
from keras import ops

from kerasmtl.layers.layer_utils import check_positive_int, standardize_data_format


class BaseGate(keras.layers.Layer):
    """Base of layers that map a gate input to expert weights `(batch, num_experts)`.

    The gate input is a feature vector `(batch, features)`. A rank-3 or rank-4
    input (tokens, a feature map) is first averaged over its positions (global
    average pooling), so that a gate can read the same tensor as convolutional
    experts. Subclasses implement `_build_gate(vector_shape)` and
    `_gate_weights(vector, training)`, whose rows are non-negative and sum to 1.

    Args:
        num_experts: int, the number of experts the gate weights.
        data_format: `"channels_last"` or `"channels_first"`, the layout of a
            rank-4 gate input. Defaults to `keras.config.image_data_format()`.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, num_experts, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int(num_experts, "num_experts")
        self.data_format = standardize_data_format(data_format)

    def _pooled_axes(self, rank):
        if rank == 4 and self.data_format == "channels_first":
            return (2, 3)
        return tuple(range(1, rank - 1))

    def _channel_axis(self, rank):
        return 1 if rank == 4 and self.data_format == "channels_first" else rank - 1

    def _vector_shape(self, input_shape):
        input_shape = tuple(input_shape)
        rank = len(input_shape)
        if rank not in (2, 3, 4) or input_shape[self._channel_axis(rank)] is None:
            raise ValueError(
                f"`{self.__class__.__name__}` reads a feature vector (batch, features), "
                "a token sequence (batch, tokens, features) or a feature map (rank 4) "
                "with a known feature dimension. "
                f"Received: input_shape={input_shape}"
            )
        return (input_shape[0], input_shape[self._channel_axis(rank)])

    def _to_vector(self, inputs):
        rank = len(inputs.shape)
        if rank == 2:
            return inputs
        return ops.mean(inputs, axis=self._pooled_axes(rank))

    def build(self, input_shape):
        self._build_gate(self._vector_shape(input_shape))

    def call(self, inputs, training=None):
        return self._gate_weights(self._to_vector(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return (self._vector_shape(input_shape)[0], self.num_experts)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "data_format": self.data_format,
        }
