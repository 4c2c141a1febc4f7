"""TaskAttention: a task-specific soft attention mask over shared features (MTAN)."""

import keras
from keras import ops

from kerasmtl.layers.channel_projection import ChannelProjection
from kerasmtl.layers.layer_utils import check_positive_int, standardize_data_format


@keras.saving.register_keras_serializable(package="kerasmtl")
class TaskAttention(keras.layers.Layer):
    """Selects a task's features from a shared map with a learned soft mask.

    The attention module of the Multi-Task Attention Network (Liu et al.,
    "End-to-End Multi-Task Learning with Attention", CVPR 2019): a mask
    `a = sigmoid(P2(relu(P1([features; previous]))))` in `(0, 1)`, one value
    per position and channel, computed by two 1x1 projections
    (`ChannelProjection`) from the shared features and (from the second stage
    on) the task's own attended features of the previous stage, concatenated
    on the channel axis. The output is `a * features`: the task keeps the part
    of the shared features it needs. `previous` must already have the spatial
    size of `features`; MTAN brings it there with a 3x3 convolution and
    pooling (see `kerasmtl.models.mtan`).

    Simplifications (documented in `kerasmtl.models.mtan` too): the mask is
    computed from the stage output itself rather than from the first
    convolution of the stage, and the projections have no batch
    normalization.

    Args:
        hidden_filters: int, the channels of the hidden projection. Defaults
            to `None`: the channels of `features`.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        kernel_regularizer: optional regularizer of the projection kernels.
        bias_regularizer: optional regularizer of the projection biases.
        data_format: `"channels_last"` or `"channels_first"`, the layout of
            rank-4 maps. Defaults to `keras.config.image_data_format()`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        features: the shared features, a rank-4 map or a rank-3 token
            sequence.
        previous: optional task features of the previous stage, with the
            spatial size (or number of tokens) of `features`.

    Input shape:
        `features`: `(batch, height, width, channels)` (or channels-first) or
        `(batch, tokens, channels)`; `previous`: the same but with any number
        of channels.

    Output shape:
        The shape of `features`.

    Example:

    >>> import numpy as np
    >>> attention = TaskAttention()
    >>> shared = np.random.rand(2, 8, 8, 16).astype("float32")
    >>> previous = np.random.rand(2, 8, 8, 4).astype("float32")
    >>> tuple(attention(shared, previous=previous).shape)
    (2, 8, 8, 16)
    """

    def __init__(
        self,
        hidden_filters=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_filters = (
            None if hidden_filters is None else check_positive_int(hidden_filters, "hidden_filters")
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.data_format = standardize_data_format(data_format)

    def _channel_axis(self, rank):
        return 1 if rank == 4 and self.data_format == "channels_first" else rank - 1

    def _check_shapes(self, features_shape, previous_shape):
        features_shape = tuple(features_shape)
        rank = len(features_shape)
        problems = []
        if rank not in (3, 4):
            problems.append(f"`features` has rank {rank} instead of 3 or 4")
        elif features_shape[self._channel_axis(rank)] is None:
            problems.append("`features` has an unknown channel dimension")
        if previous_shape is not None and not problems:
            previous_shape = tuple(previous_shape)
            axis = self._channel_axis(rank)
            positions = [d for i, d in enumerate(features_shape) if i not in (0, axis)]
            previous_positions = [d for i, d in enumerate(previous_shape) if i not in (0, axis)]
            if len(previous_shape) != rank:
                problems.append(f"`previous` has rank {len(previous_shape)}, not {rank}")
            elif previous_shape[axis] is None:
                problems.append("`previous` has an unknown channel dimension")
            elif any(
                a is not None and b is not None and a != b
                for a, b in zip(positions, previous_positions)
            ):
                problems.append(
                    f"`previous` has the spatial size {previous_positions} instead of "
                    f"{positions}; resize or pool it first"
                )
        if problems:
            raise ValueError(
                "`TaskAttention` cannot attend over these features: " + "; ".join(problems)
                + f". Expected rank-3 or rank-4 inputs (data_format='{self.data_format}'). "
                f"Received: features_shape={features_shape}, previous_shape={previous_shape}"
            )
        return features_shape

    def build(self, features_shape, previous_shape=None):
        features_shape = self._check_shapes(features_shape, previous_shape)
        rank = len(features_shape)
        axis = self._channel_axis(rank)
        channels = features_shape[axis]
        input_shape = list(features_shape)
        if previous_shape is not None:
            input_shape[axis] = channels + tuple(previous_shape)[axis]
        common = dict(
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            data_format=self.data_format,
            dtype=self.dtype_policy,
        )
        self._hidden = ChannelProjection(
            self.hidden_filters or channels, activation="relu", name="hidden", **common
        )
        self._hidden.build(tuple(input_shape))
        self._mask = ChannelProjection(channels, activation="sigmoid", name="mask", **common)
        self._mask.build(self._hidden.compute_output_shape(tuple(input_shape)))

    def attention_mask(self, features, previous=None):
        """Returns the `(0, 1)` mask that `call` multiplies `features` by."""
        if not self.built:
            self.build(features.shape, None if previous is None else previous.shape)
        x = features
        if previous is not None:
            x = ops.concatenate(
                [features, ops.cast(previous, features.dtype)],
                axis=self._channel_axis(len(features.shape)),
            )
        return self._mask(self._hidden(x))

    def call(self, features, previous=None):
        return self.attention_mask(features, previous) * features

    def compute_output_shape(self, features_shape, previous_shape=None):
        return self._check_shapes(features_shape, previous_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_filters": self.hidden_filters,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "data_format": self.data_format,
        }
