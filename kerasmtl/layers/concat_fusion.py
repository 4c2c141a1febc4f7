"""ConcatFusion: fuses feature maps by concatenation and a 1x1 convolution."""

import keras
from keras import ops

from kerasmtl.layers.base_grid_resampling import BaseGridResampling
from kerasmtl.layers.channel_projection import ChannelProjection
from kerasmtl.layers.layer_utils import check_positive_int


@keras.saving.register_keras_serializable(package="kerasmtl")
class ConcatFusion(BaseGridResampling):
    """Fuses feature maps by resampling, concatenation and a 1x1 convolution.

    The maps are brought to the `output_size` grid exactly as in
    `SpatialAlignment` (adaptive pooling to reduce, bilinear resizing to
    enlarge, no weights), concatenated on the channel axis and mixed by one
    1x1 convolution to `filters` channels followed by `activation`. It is the
    fusion of multi-scale features used by HRNet (Wang et al., TPAMI 2020) and
    the "concatenate then 1x1" baseline of multi-modal fusion.

    Args:
        output_size: int or tuple `(height, width)`, the target grid.
        filters: int, the number of output channels.
        activation: activation after the convolution. Defaults to `"relu"`.
        pooling: `"average"` (default) or `"max"`, the adaptive pooling used
            to reduce maps larger than the grid.
        use_bias: bool, whether the convolution adds a bias. Defaults to
            `True`.
        kernel_initializer: initializer of the convolution kernel.
        bias_initializer: initializer of the convolution bias.
        kernel_regularizer: optional regularizer of the kernel.
        bias_regularizer: optional regularizer of the bias.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()` (`"channels_last"` unless
            changed).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a list of rank-4 feature maps with known height, width and
            channels.

    Input shape:
        A list of `(batch, height_i, width_i, channels_i)` maps
        (`(batch, channels_i, height_i, width_i)` for `"channels_first"`).

    Output shape:
        `(batch, output_size[0], output_size[1], filters)`
        (`(batch, filters, output_size[0], output_size[1])` for
        `"channels_first"`).

    Example:

    >>> import numpy as np
    >>> layer = ConcatFusion(output_size=8, filters=16)
    >>> tuple(layer([np.zeros((2, 32, 32, 3)), np.zeros((2, 8, 8, 64))]).shape)
    (2, 8, 8, 16)
    """

    def __init__(
        self,
        output_size,
        filters,
        activation="relu",
        pooling="average",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        super().__init__(
            output_size=output_size, pooling=pooling, data_format=data_format, **kwargs
        )
        self.filters = check_positive_int(filters, "filters")
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def build(self, input_shape):
        shapes = self._check_input_shapes(input_shape)
        self._build_resampling(shapes)
        _, channel_axis = self._spatial_and_channel_axes()
        self._num_inputs = len(shapes)
        concatenated_channels = sum(shape[channel_axis] for shape in shapes)
        self._projection = ChannelProjection(
            self.filters,
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            data_format=self.data_format,
            dtype=self.dtype_policy,
            name="projection",
        )
        self._projection.build(self._grid_shape(shapes[0], concatenated_channels))

    @property
    def projection(self):
        """The `ChannelProjection` applied to the concatenated maps."""
        return self._projection

    def call(self, inputs):
        if len(inputs) != self._num_inputs:
            raise ValueError(
                f"`ConcatFusion` was built for {self._num_inputs} maps but was "
                f"called on {len(inputs)}. Received: len(inputs)={len(inputs)}"
            )
        _, channel_axis = self._spatial_and_channel_axes()
        aligned = [self._resample(index, x) for index, x in enumerate(inputs)]
        return self._projection(ops.concatenate(aligned, axis=channel_axis))

    def compute_output_shape(self, input_shape):
        shapes = self._check_input_shapes(input_shape)
        batch_size = next((shape[0] for shape in shapes if shape[0] is not None), None)
        return self._grid_shape(shapes[0], self.filters, batch_size=batch_size)

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
        }
