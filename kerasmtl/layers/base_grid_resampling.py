"""Private base of the layers that bring several feature maps onto one grid."""

import keras
from keras import ops

from kerasmtl.layers.layer_utils import standardize_data_format, standardize_output_size


class BaseGridResampling(keras.layers.Layer):
    """Base of layers that resample a list of feature maps to one spatial grid.

    Each map is brought to `output_size` without weights: a dimension larger
    than the grid is reduced by adaptive pooling (`keras.layers.
    AdaptiveAveragePooling2D` or `AdaptiveMaxPooling2D`), a dimension smaller
    than the grid is first enlarged to the grid by bilinear resizing. Adaptive
    pooling could enlarge too, but only by repeating pixels; bilinear
    interpolation gives smooth maps, as in FPN-style top-down paths. A map
    already on the grid passes through unchanged. The heights and widths must
    therefore be known when the layer is built.

    Subclasses call `_check_input_shapes` and `_build_resampling` in `build`
    and `_resample` in `call`.

    Args:
        output_size: int or tuple `(height, width)`, the grid.
        pooling: `"average"` or `"max"`, the adaptive pooling used to reduce.
        data_format: `"channels_last"` or `"channels_first"`; `None` reads
            `keras.config.image_data_format()`.
        **kwargs: base layer keyword arguments.
    """

    def __init__(self, output_size, pooling="average", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.output_size = standardize_output_size(output_size)
        if pooling not in ("average", "max"):
            raise ValueError(
                f"`pooling` must be 'average' or 'max'. Received: pooling={pooling}"
            )
        self.pooling = pooling
        self.data_format = standardize_data_format(data_format)

    def _spatial_and_channel_axes(self):
        if self.data_format == "channels_first":
            return (2, 3), 1
        return (1, 2), 3

    def _check_input_shapes(self, input_shape):
        """Validates a list of map shapes; returns them as a list of tuples."""
        name = self.__class__.__name__
        is_list_of_shapes = (
            isinstance(input_shape, (list, tuple))
            and len(input_shape) > 0
            and all(isinstance(shape, (list, tuple)) for shape in input_shape)
        )
        if not is_list_of_shapes:
            raise ValueError(
                f"`{name}` expects a non-empty list of feature maps, e.g. "
                f"`{name}(...)([map_a, map_b])`. Received: input_shape={input_shape}"
            )
        shapes = [tuple(shape) for shape in input_shape]
        (height_axis, width_axis), channel_axis = self._spatial_and_channel_axes()
        layout = (
            "(batch, channels, height, width)"
            if self.data_format == "channels_first"
            else "(batch, height, width, channels)"
        )
        problems = []
        for index, shape in enumerate(shapes):
            if len(shape) != 4:
                problems.append(
                    f"input {index} has rank {len(shape)} instead of a rank-4 map {layout}"
                )
                continue
            if shape[channel_axis] is None:
                problems.append(f"input {index} has an unknown channel dimension")
            if shape[height_axis] is None or shape[width_axis] is None:
                problems.append(
                    f"input {index} has an unknown height or width, which the "
                    "choice between pooling and resizing needs"
                )
        batch_sizes = {shape[0] for shape in shapes if len(shape) == 4} - {None}
        if len(batch_sizes) > 1:
            problems.append(f"the batch sizes differ ({sorted(batch_sizes)})")
        if problems:
            raise ValueError(
                f"`{name}` cannot align these feature maps onto the "
                f"{self.output_size[0]}x{self.output_size[1]} grid: "
                + "; ".join(problems)
                + f". Expected rank-4 maps {layout} (data_format='{self.data_format}') "
                "with known height, width and channels and one batch size. "
                f"Received: input_shape={shapes}"
            )
        return shapes

    def _build_resampling(self, shapes):
        (height_axis, width_axis), _ = self._spatial_and_channel_axes()
        grid_height, grid_width = self.output_size
        resize_sizes = []
        needs_pooling = []
        for shape in shapes:
            height, width = shape[height_axis], shape[width_axis]
            enlarged = (max(height, grid_height), max(width, grid_width))
            resize_sizes.append(None if enlarged == (height, width) else enlarged)
            needs_pooling.append(enlarged != self.output_size)
        self._resize_sizes = tuple(resize_sizes)
        self._needs_pooling = tuple(needs_pooling)
        pooling_class = (
            keras.layers.AdaptiveAveragePooling2D
            if self.pooling == "average"
            else keras.layers.AdaptiveMaxPooling2D
        )
        self._pooling_layer = pooling_class(
            self.output_size,
            data_format=self.data_format,
            dtype=self.dtype_policy,
            name="pooling",
        )
        self._pooling_layer.build(shapes[0])

    def _grid_shape(self, shape, channels, batch_size=None):
        """The shape of `shape` once on the grid, with `channels` channels."""
        batch_size = shape[0] if batch_size is None else batch_size
        if self.data_format == "channels_first":
            return (batch_size, channels, *self.output_size)
        return (batch_size, *self.output_size, channels)

    def _resample(self, index, x):
        if self._resize_sizes[index] is not None:
            x = ops.image.resize(
                x,
                self._resize_sizes[index],
                interpolation="bilinear",
                data_format=self.data_format,
            )
        if self._needs_pooling[index]:
            x = self._pooling_layer(x)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "output_size": self.output_size,
            "pooling": self.pooling,
            "data_format": self.data_format,
        }
