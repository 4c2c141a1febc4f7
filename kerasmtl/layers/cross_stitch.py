"""CrossStitch: learned linear mixing of the activations of parallel task networks."""

import keras
import numpy as np
from keras import ops

from kerasmtl.layers.layer_utils import standardize_data_format


@keras.saving.register_keras_serializable(package="kerasmtl")
class CrossStitch(keras.layers.Layer):
    """A cross-stitch unit: each task's activation becomes a learned mix of all tasks'.

    For `T` task networks with activations `x_1, ..., x_T` of one shape, the
    unit returns `y_i = sum_j alpha[i, j] x_j`, with the `T x T` mixing matrix
    `alpha` learned with the networks (Misra et al., "Cross-stitch Networks for
    Multi-task Learning", CVPR 2016). `alpha` starts at `alpha_self` on the
    diagonal and `(1 - alpha_self) / (T - 1)` elsewhere, so every row sums to
    1: `alpha_self=1` starts with independent networks, `alpha_self=1/T` with
    fully shared ones. With `channelwise=True` each channel has its own
    matrix (`(channels, T, T)` weights), as in the paper's channel-wise
    variant. The paper trains `alpha` with a larger learning rate than the
    networks; for that, give its variable (`layer.mixing`) its own optimizer
    or scale its gradients.

    Args:
        alpha_self: float, the starting weight of a task's own activation.
            Defaults to `0.9`.
        channelwise: bool, whether each channel has its own mixing matrix.
            Defaults to `False`.
        mixing_regularizer: optional regularizer of the mixing weights.
        data_format: `"channels_last"` or `"channels_first"`, where the
            channels of rank-4 maps are (used with `channelwise=True`).
            Defaults to `keras.config.image_data_format()`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a list of `T >= 2` tensors of one shape, one per task.

    Input shape:
        A list of `T` tensors `(batch, ...)` of one shape.

    Output shape:
        A list of `T` tensors of that shape, in the input order.

    Example:

    >>> import numpy as np
    >>> unit = CrossStitch(alpha_self=0.9)
    >>> a, b = unit([np.ones((1, 2)), np.zeros((1, 2))])
    >>> keras.ops.convert_to_numpy(a).astype("float64").round(3).tolist()
    [[0.9, 0.9]]
    >>> keras.ops.convert_to_numpy(b).astype("float64").round(3).tolist()
    [[0.1, 0.1]]
    """

    def __init__(
        self,
        alpha_self=0.9,
        channelwise=False,
        mixing_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.alpha_self = float(alpha_self)
        self.channelwise = bool(channelwise)
        self.mixing_regularizer = keras.regularizers.get(mixing_regularizer)
        self.data_format = standardize_data_format(data_format)

    def _channel_axis(self, rank):
        return 1 if rank == 4 and self.data_format == "channels_first" else rank - 1

    def _check_shapes(self, input_shape):
        is_list_of_shapes = (
            isinstance(input_shape, (list, tuple))
            and len(input_shape) >= 2
            and all(isinstance(shape, (list, tuple)) for shape in input_shape)
        )
        if not is_list_of_shapes:
            raise ValueError(
                "`CrossStitch` mixes the activations of two or more task networks: call it "
                "on a list of T >= 2 tensors of one shape. "
                f"Received: input_shape={input_shape}"
            )
        shapes = [tuple(shape) for shape in input_shape]
        if any(shape[1:] != shapes[0][1:] for shape in shapes):
            raise ValueError(
                "`CrossStitch` needs the task activations to have one shape. "
                f"Received: input_shape={shapes}"
            )
        return shapes

    def build(self, input_shape):
        shapes = self._check_shapes(input_shape)
        self.num_tasks = len(shapes)
        shape = (self.num_tasks, self.num_tasks)
        if self.channelwise:
            channels = shapes[0][self._channel_axis(len(shapes[0]))]
            if channels is None:
                raise ValueError(
                    "`CrossStitch(channelwise=True)` needs a known channel dimension. "
                    f"Received: input_shape={shapes}"
                )
            shape = (channels, *shape)
        self.mixing = self.add_weight(
            name="mixing",
            shape=shape,
            initializer=self._initial_mixing,
            regularizer=self.mixing_regularizer,
        )

    def _initial_mixing(self, shape, dtype=None):
        num_tasks = shape[-1]
        off_diagonal = (1.0 - self.alpha_self) / (num_tasks - 1)
        matrix = np.full((num_tasks, num_tasks), off_diagonal, dtype="float32")
        np.fill_diagonal(matrix, self.alpha_self)
        return ops.cast(np.broadcast_to(matrix, shape).copy(), dtype or "float32")

    def call(self, inputs):
        rank = len(inputs[0].shape)
        channel_axis = self._channel_axis(rank)
        mixing = ops.cast(self.mixing, inputs[0].dtype)
        if self.channelwise and channel_axis != rank - 1:
            inputs = [ops.moveaxis(x, channel_axis, -1) for x in inputs]
        stacked = ops.stack(inputs, axis=-1)  # (batch, ..., channels, T)
        if self.channelwise:
            mixed = ops.einsum("...cj,cij->...ci", stacked, mixing)
        else:
            mixed = ops.einsum("...j,ij->...i", stacked, mixing)
        outputs = [mixed[..., index] for index in range(self.num_tasks)]
        if self.channelwise and channel_axis != rank - 1:
            outputs = [ops.moveaxis(x, -1, channel_axis) for x in outputs]
        return outputs

    def compute_output_shape(self, input_shape):
        return [tuple(shape) for shape in self._check_shapes(input_shape)]

    def get_config(self):
        return {
            **super().get_config(),
            "alpha_self": self.alpha_self,
            "channelwise": self.channelwise,
            "mixing_regularizer": keras.regularizers.serialize(self.mixing_regularizer),
            "data_format": self.data_format,
        }
