"""Gate: softmax weights over experts, computed from the gate input."""

import keras
from keras import ops

from kerasmtl.layers.base_gate import BaseGate
from kerasmtl.layers.layer_utils import check_positive_int


@keras.saving.register_keras_serializable(package="kerasmtl")
class Gate(BaseGate):
    """Softmax gating network: per-sample weights over `num_experts` experts.

    `g(x) = softmax(W x + b)`, optionally after hidden `Dense` layers
    (`units`). This is the gate of the Multi-gate Mixture-of-Experts (Ma et
    al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018), where each task has its own linear gate
    (the default, `units=()`), and of the extraction networks of PLE (Tang et
    al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
    (MTL) Model for Personalized Recommendations", RecSys 2020). Combine the
    weights with the experts' outputs using `ExpertMixture`.

    The weights of every sample are non-negative and sum to 1. A rank-3 or
    rank-4 gate input (tokens, a feature map) is first averaged over its
    positions.

    Args:
        num_experts: int, the number of experts, the size of the output.
        units: tuple of ints, the units of hidden `Dense` layers before the
            softmax layer. Defaults to `()` (a linear gate).
        activation: activation of the hidden layers. Defaults to `"relu"`.
        temperature: float > 0, the softmax temperature: the logits are
            divided by it. Defaults to `1.0`.
        use_bias: bool, whether the layers add biases. Defaults to `True`.
        kernel_initializer: initializer of the kernels.
        bias_initializer: initializer of the biases.
        kernel_regularizer: optional regularizer of the kernels.
        bias_regularizer: optional regularizer of the biases.
        data_format: `"channels_last"` or `"channels_first"`, the layout of a
            rank-4 gate input. Defaults to `keras.config.image_data_format()`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: the gate input.

    Input shape:
        `(batch, features)`, `(batch, tokens, features)` or a rank-4 map.

    Output shape:
        `(batch, num_experts)`.

    Example:

    >>> import numpy as np
    >>> gate = Gate(num_experts=4)
    >>> weights = gate(np.random.rand(2, 16).astype("float32"))
    >>> tuple(weights.shape)
    (2, 4)
    >>> np.allclose(keras.ops.convert_to_numpy(keras.ops.sum(weights, axis=-1)), 1.0)
    True
    """

    def __init__(
        self,
        num_experts,
        units=(),
        activation="relu",
        temperature=1.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        super().__init__(num_experts=num_experts, data_format=data_format, **kwargs)
        if isinstance(units, int) and not isinstance(units, bool):
            units = (units,)
        if not isinstance(units, (list, tuple)):
            raise ValueError(
                f"`units` must be a tuple of positive integers. Received: units={units!r}"
            )
        self.units = tuple(check_positive_int(value, "units") for value in units)
        if not float(temperature) > 0.0:
            raise ValueError(
                f"`temperature` must be positive. Received: temperature={temperature}"
            )
        self.activation = keras.activations.get(activation)
        self.temperature = float(temperature)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def _dense(self, units, activation, name):
        return keras.layers.Dense(
            units,
            activation=activation,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _build_gate(self, vector_shape):
        self._hidden_layers = []
        if self.num_experts == 1:
            # One expert always gets weight 1: no weights that would get no gradient.
            return
        shape = vector_shape
        for index, units in enumerate(self.units):
            layer = self._dense(units, self.activation, f"hidden_{index}")
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            self._hidden_layers.append(layer)
        self._logits = self._dense(self.num_experts, None, "logits")
        self._logits.build(shape)

    def _gate_weights(self, vector, training=None):
        if self.num_experts == 1:
            return ops.ones_like(vector[:, :1])
        x = vector
        for layer in self._hidden_layers:
            x = layer(x)
        logits = self._logits(x)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return ops.softmax(logits, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "units": list(self.units),
            "activation": keras.activations.serialize(self.activation),
            "temperature": self.temperature,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        }
