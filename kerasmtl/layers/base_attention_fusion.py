"""Private base of the attention fusion layers."""

import keras
from keras import ops

from kerasmtl.layers.layer_utils import check_positive_int, standardize_data_format


class BaseAttentionFusion(keras.layers.Layer):
    """Base of layers that attend over tokens and add a residual + LayerNorm.

    It owns the arguments shared by `SelfAttentionFusion` and
    `CrossAttentionFusion`, the `keras.layers.MultiHeadAttention` and
    `keras.layers.LayerNormalization` sublayers, and the conversion between
    rank-4 feature maps and `(batch, height * width, channels)` token
    sequences (rank-3 inputs are already tokens).

    Args:
        num_heads: int, the number of attention heads.
        key_dim: int, the size of each head for queries and keys.
        value_dim: int, the size of each head for values. Defaults to
            `key_dim`.
        dropout: float, the dropout rate on the attention weights.
        epsilon: float, the LayerNormalization epsilon.
        use_bias: bool, whether the attention projections add biases.
        kernel_initializer: initializer of the attention kernels.
        bias_initializer: initializer of the attention biases.
        kernel_regularizer: optional regularizer of the attention kernels.
        bias_regularizer: optional regularizer of the attention biases.
        data_format: `"channels_last"` or `"channels_first"`, the layout of
            rank-4 maps; `None` reads `keras.config.image_data_format()`.
        seed: optional int, the seed of the attention dropout.
        **kwargs: base layer keyword arguments.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        epsilon=1e-6,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        data_format=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.key_dim = check_positive_int(key_dim, "key_dim")
        self.value_dim = None if value_dim is None else check_positive_int(value_dim, "value_dim")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
        self.dropout = dropout
        self.epsilon = epsilon
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.data_format = standardize_data_format(data_format)
        self.seed = seed

    def _input_problems(self, shape, arg_name):
        """Why `shape` is not a map or token sequence with known channels."""
        if len(shape) not in (3, 4):
            return [f"`{arg_name}` has rank {len(shape)} instead of 3 (tokens) or 4 (a map)"]
        if shape[self._channel_axis(shape)] is None:
            return [f"`{arg_name}` has an unknown channel dimension"]
        return []

    def _channel_axis(self, shape):
        if len(shape) == 4 and self.data_format == "channels_first":
            return 1
        return len(shape) - 1

    def _token_shape(self, shape):
        """The `(batch, tokens, channels)` shape of a map or token shape."""
        if len(shape) == 3:
            return tuple(shape)
        if self.data_format == "channels_first":
            batch_size, channels, height, width = shape
        else:
            batch_size, height, width, channels = shape
        num_tokens = None if height is None or width is None else height * width
        return (batch_size, num_tokens, channels)

    def _build_attention(self, query_token_shape, context_token_shape):
        self._attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            seed=self.seed,
            dtype=self.dtype_policy,
            name="attention",
        )
        self._attention.build(query_token_shape, context_token_shape)
        self._norm = keras.layers.LayerNormalization(
            epsilon=self.epsilon, dtype=self.dtype_policy, name="norm"
        )
        self._norm.build(query_token_shape)

    def _to_tokens(self, x):
        if len(x.shape) == 3:
            return x
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        shape = ops.shape(x)
        return ops.reshape(x, (-1, shape[1] * shape[2], shape[3]))

    def _from_tokens(self, tokens, like):
        """Reshapes `tokens` back to the layout of the map (or tokens) `like`."""
        if len(like.shape) == 3:
            return tokens
        shape = ops.shape(like)
        if self.data_format == "channels_first":
            maps = ops.reshape(tokens, (-1, shape[2], shape[3], shape[1]))
            return ops.transpose(maps, (0, 3, 1, 2))
        return ops.reshape(tokens, (-1, shape[1], shape[2], shape[3]))

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "epsilon": self.epsilon,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "data_format": self.data_format,
            "seed": self.seed,
        }
