"""Expert: a small feed-forward network, the unit of mixture-of-experts models."""

import keras

from kerasmtl.layers.layer_utils import check_positive_int


@keras.saving.register_keras_serializable(package="kerasmtl")
class Expert(keras.layers.Layer):
    """A feed-forward expert: `Dense` layers with an activation and dropout.

    Each entry of `units` adds one `keras.layers.Dense` layer with
    `activation`, followed by `keras.layers.Dropout` when `dropout > 0`. The
    layers act on the last axis, so an expert reads feature vectors
    `(batch, features)` as well as token sequences or channels-last feature
    maps (where it is a stack of 1x1 convolutions). It is the expert network of
    the Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships
    in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018), of
    PLE (Tang et al., RecSys 2020) and of DSelect-k (Hazimeh et al., NeurIPS
    2021); the builders of `kerasmtl.models` also use it for shared bottoms
    and task towers.

    Args:
        units: int or tuple of ints, the units of each `Dense` layer (its
            length is the depth of the expert).
        activation: activation of every layer. Defaults to `"relu"`.
        dropout: float in `[0, 1)`, the dropout rate after each layer.
            Defaults to `0.0` (no dropout layers).
        use_bias: bool, whether the layers add biases. Defaults to `True`.
        kernel_initializer: initializer of the kernels.
        bias_initializer: initializer of the biases.
        kernel_regularizer: optional regularizer of the kernels.
        bias_regularizer: optional regularizer of the biases.
        seed: optional int, the seed of the dropout layers.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor whose last axis holds the features.
        training: bool, whether dropout is active.

    Input shape:
        `(batch, ..., features)`.

    Output shape:
        `(batch, ..., units[-1])`.

    Example:

    >>> import numpy as np
    >>> expert = Expert(units=(16, 8), dropout=0.1)
    >>> tuple(expert(np.zeros((4, 32))).shape)
    (4, 8)
    """

    def __init__(
        self,
        units,
        activation="relu",
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _standardize_units(units)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.seed = seed

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "`Expert` needs a known last (feature) dimension to create its kernels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._dense_layers = []
        self._dropout_layers = []
        shape = tuple(input_shape)
        for index, units in enumerate(self.units):
            dense = keras.layers.Dense(
                units,
                activation=self.activation,
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                bias_initializer=self.bias_initializer,
                kernel_regularizer=self.kernel_regularizer,
                bias_regularizer=self.bias_regularizer,
                dtype=self.dtype_policy,
                name=f"dense_{index}",
            )
            dense.build(shape)
            shape = dense.compute_output_shape(shape)
            self._dense_layers.append(dense)
            if self.dropout > 0.0:
                self._dropout_layers.append(
                    keras.layers.Dropout(
                        self.dropout,
                        seed=None if self.seed is None else self.seed + index,
                        dtype=self.dtype_policy,
                        name=f"dropout_{index}",
                    )
                )

    def call(self, inputs, training=None):
        x = inputs
        for index, dense in enumerate(self._dense_layers):
            x = dense(x)
            if self._dropout_layers:
                x = self._dropout_layers[index](x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "units": list(self.units),
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "seed": self.seed,
        }


def _standardize_units(units):
    if isinstance(units, int) and not isinstance(units, bool):
        units = (units,)
    if not isinstance(units, (list, tuple)) or not units:
        raise ValueError(
            "`units` must be a positive integer or a non-empty tuple of positive integers, "
            f"one per Dense layer. Received: units={units!r}"
        )
    for value in units:
        check_positive_int(value, "units")
    return tuple(units)
