"""ChannelProjection: a per-position linear map of the channel axis."""

import keras
from keras import ops

from kerasmtl.layers.layer_utils import check_positive_int, standardize_data_format


@keras.saving.register_keras_serializable(package="kerasmtl")
class ChannelProjection(keras.layers.Layer):
    """Projects the channels of feature maps or token sequences to `filters`.

    The same linear map (plus bias and activation) is applied at every spatial
    position or token: a 1x1 `keras.layers.Conv2D` for rank-4 feature maps and a
    `keras.layers.Dense` for rank-3 token sequences `(batch, tokens, channels)`.
    Which one is chosen at build time from the input rank, so one configuration
    serves convolutional and transformer trunks alike. It is the "1x1 lateral
    connection" of Feature Pyramid Networks (Lin et al., CVPR 2017).

    Args:
        filters: int, the number of output channels.
        activation: activation function or its name. Defaults to `None`
            (linear).
        use_bias: bool, whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer of the `(channels, filters)` kernel.
        bias_initializer: initializer of the bias.
        kernel_regularizer: optional regularizer of the kernel.
        bias_regularizer: optional regularizer of the bias.
        kernel_constraint: optional constraint on the kernel.
        bias_constraint: optional constraint on the bias.
        data_format: `"channels_last"` or `"channels_first"`, the layout of
            rank-4 maps. Token sequences are always channels-last. Defaults to
            `keras.config.image_data_format()` (`"channels_last"` unless
            changed).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a rank-4 feature map or a rank-3 token sequence.

    Input shape:
        - `(batch, height, width, channels)` (`"channels_last"`),
          `(batch, channels, height, width)` (`"channels_first"`), or
        - `(batch, tokens, channels)`.

    Output shape:
        The input shape with `channels` replaced by `filters`.

    Example:

    >>> import numpy as np
    >>> layer = ChannelProjection(filters=8)
    >>> tuple(layer(np.zeros((2, 16, 16, 3))).shape)
    (2, 16, 16, 8)
    >>> layer = ChannelProjection(filters=8)
    >>> tuple(layer(np.zeros((2, 10, 32))).shape)
    (2, 10, 8)
    """

    def __init__(
        self,
        filters,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.data_format = standardize_data_format(data_format)

    def _channel_axis(self, input_shape):
        rank = len(input_shape)
        if rank == 3:
            return 2
        if rank == 4:
            return 1 if self.data_format == "channels_first" else 3
        raise ValueError(
            "`ChannelProjection` expects a rank-4 feature map "
            "(batch, height, width, channels) or a rank-3 token sequence "
            f"(batch, tokens, channels), but got a rank-{rank} input. "
            f"Received: input_shape={tuple(input_shape)}"
        )

    def build(self, input_shape):
        axis = self._channel_axis(input_shape)
        if input_shape[axis] is None:
            raise ValueError(
                "`ChannelProjection` needs a known channel dimension (axis "
                f"{axis}) to create its kernel. Received: input_shape={tuple(input_shape)}"
            )
        common_kwargs = dict(
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
        )
        if len(input_shape) == 4:
            # Always channels-last inside: with data_format="channels_first",
            # Keras 3.15's TF `ops.add` takes the (1, filters, 1, 1) bias of
            # `Conv2D` for an NHWC bias whenever width == filters and adds it
            # along the width. `call` transposes around the convolution instead.
            self._projection = keras.layers.Conv2D(
                self.filters,
                kernel_size=1,
                data_format="channels_last",
                name="conv",
                **common_kwargs,
            )
            if self.data_format == "channels_first":
                input_shape = (input_shape[0], *input_shape[2:], input_shape[1])
        else:
            self._projection = keras.layers.Dense(
                self.filters, name="dense", **common_kwargs
            )
        self._projection.build(tuple(input_shape))

    @property
    def kernel(self):
        """The kernel: `(1, 1, channels, filters)` for maps, `(channels, filters)` for tokens."""
        return self._projection.kernel

    @property
    def bias(self):
        """The bias variable `(filters,)`, or `None` when `use_bias=False`."""
        return self._projection.bias

    def call(self, inputs):
        if len(inputs.shape) == 4 and self.data_format == "channels_first":
            outputs = self._projection(ops.transpose(inputs, (0, 2, 3, 1)))
            return ops.transpose(outputs, (0, 3, 1, 2))
        return self._projection(inputs)

    def compute_output_shape(self, input_shape):
        output_shape = list(input_shape)
        output_shape[self._channel_axis(input_shape)] = self.filters
        return tuple(output_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "data_format": self.data_format,
        }
