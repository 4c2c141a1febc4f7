"""SpatialAlignment: brings feature maps of different sizes onto one grid."""

import keras

from kerasmtl.layers.base_grid_resampling import BaseGridResampling
from kerasmtl.layers.channel_projection import ChannelProjection
from kerasmtl.layers.layer_utils import check_positive_int


@keras.saving.register_keras_serializable(package="kerasmtl")
class SpatialAlignment(BaseGridResampling):
    """Resamples a list of feature maps to one grid and one channel count.

    Feature maps from different stages of a backbone (or from different
    backbones) differ in height, width and channels. Each map is resampled to
    the `output_size` grid and then projected to `filters` channels by its own
    `ChannelProjection` (1x1 convolution), so that the results can be added,
    concatenated or attended over, as in the lateral connections of Feature
    Pyramid Networks (Lin et al., CVPR 2017).

    Resampling has no weights: a dimension larger than the grid is reduced by
    adaptive pooling (`keras.layers.AdaptiveAveragePooling2D` or
    `AdaptiveMaxPooling2D`); a dimension smaller than the grid is first
    enlarged to it by bilinear resizing (adaptive pooling would only repeat
    pixels); a map already on the grid is left as is. Heights, widths and
    channels must be known when the layer is built, and all maps must share a
    batch size; otherwise `build` raises a `ValueError` naming every shape.

    Args:
        output_size: int or tuple `(height, width)`, the target grid.
        filters: int, the number of channels of every output map.
        pooling: `"average"` (default) or `"max"`, the adaptive pooling used
            to reduce maps larger than the grid.
        activation: activation of the projections. Defaults to `None`.
        use_bias: bool, whether the projections add a bias. Defaults to `True`.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        kernel_regularizer: optional regularizer of the projection kernels.
        bias_regularizer: optional regularizer of the projection biases.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()` (`"channels_last"` unless
            changed).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a list of rank-4 feature maps.

    Input shape:
        A list of `(batch, height_i, width_i, channels_i)` maps
        (`(batch, channels_i, height_i, width_i)` for `"channels_first"`).

    Output shape:
        A list, one per input, of `(batch, output_size[0], output_size[1],
        filters)` maps (`(batch, filters, output_size[0], output_size[1])` for
        `"channels_first"`).

    Example:

    >>> import numpy as np
    >>> layer = SpatialAlignment(output_size=(8, 8), filters=16)
    >>> outputs = layer([np.zeros((2, 32, 32, 3)), np.zeros((2, 4, 4, 64))])
    >>> [tuple(x.shape) for x in outputs]
    [(2, 8, 8, 16), (2, 8, 8, 16)]
    """

    def __init__(
        self,
        output_size,
        filters,
        pooling="average",
        activation=None,
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
        self._projections = []
        for index, shape in enumerate(shapes):
            # A fresh initializer per projection (from its config), so that a
            # seeded initializer does not give every projection the same draw.
            projection = ChannelProjection(
                self.filters,
                activation=self.activation,
                use_bias=self.use_bias,
                kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                bias_initializer=keras.initializers.serialize(self.bias_initializer),
                kernel_regularizer=self.kernel_regularizer,
                bias_regularizer=self.bias_regularizer,
                data_format=self.data_format,
                dtype=self.dtype_policy,
                name=f"projection_{index}",
            )
            projection.build(self._grid_shape(shape, shape[channel_axis]))
            self._projections.append(projection)

    def call(self, inputs):
        if len(inputs) != len(self._projections):
            raise ValueError(
                f"`SpatialAlignment` was built for {len(self._projections)} maps but "
                f"was called on {len(inputs)}. Received: len(inputs)={len(inputs)}"
            )
        return [
            projection(self._resample(index, x))
            for index, (projection, x) in enumerate(zip(self._projections, inputs))
        ]

    def compute_output_shape(self, input_shape):
        shapes = self._check_input_shapes(input_shape)
        return [self._grid_shape(shape, self.filters) for shape in shapes]

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
