"""DSelectKGate: a differentiable gate that converges to at most k experts per sample."""

import math

import keras
import numpy as np
from keras import ops

from kerasmtl.layers.base_gate import BaseGate
from kerasmtl.layers.layer_utils import check_positive_int

# Keeps the logarithm of the entropy regularizer finite at exactly-zero weights.
_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="kerasmtl")
class DSelectKGate(BaseGate):
    """DSelect-k gate: a smooth gate that learns to select at most `k` experts.

    From Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of
    Experts with Applications to Multi-Task Learning" (NeurIPS 2021). The gate
    has `k` single-expert selectors. Selector `i` has
    `m = ceil(log2(num_experts))` logits `z_i` (per sample, a `Dense` layer of
    the gate input; or, with `per_example=False`, variables shared by all
    samples), passes them through the smooth-step function

        S(t) = 0 if t <= -gamma/2, 1 if t >= gamma/2,
               else -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2,

    and reads them as a soft binary code: the weight of code `c` is
    `prod_l S(z_il) if bit l of c is 1 else 1 - S(z_il)`, a distribution over
    the `2^m` codes. A softmax over `k` more logits mixes the selectors. The
    gate weights are therefore non-negative and sum to 1 for every sample.
    Once a sample's smooth-step outputs are binary (0 or 1, i.e. every
    `|z_il| >= gamma/2`) each selector picks exactly one expert, so at most
    `k` experts have a non-zero weight. Training (helped by the optional
    entropy regularizer) drives the logits there. With per-example routing
    this happens sample by sample: samples close to a selector's decision
    boundary keep a smooth mix of more than `k` experts; a static gate
    (`per_example=False`) becomes exactly `k`-sparse for all samples once its
    logits leave the polynomial region.

    Deviations from the reference implementation: when `num_experts` is not a
    power of 2, the unused codes `c >= num_experts` are folded onto expert
    `c mod num_experts` (so the weights always sum to exactly 1), instead of a
    `1 / sum(weights)` penalty that keeps selectors away from the unused
    codes. The entropy regularizer is `entropy_regularization` times the
    batch mean of the summed entropies of the `k` selectors, added with
    `add_loss` in training only; the reference sums over the batch and takes
    a schedule for the coefficient.

    Args:
        num_experts: int >= 2, the number of experts, the size of the output.
        k: int in `[1, num_experts]`, the most experts a sample selects.
        gamma: float > 0, the width of the smooth-step's polynomial region.
            Defaults to `1.0`.
        entropy_regularization: float >= 0, the coefficient of the entropy
            regularizer. Defaults to `0.0` (off).
        per_example: bool. `True` (default): the logits are `Dense` layers of
            the gate input, so each sample has its own selection. `False`:
            the logits are plain variables (the paper's "static" gate, one
            selection per task for all samples); the input only gives the
            batch size.
        code_initializer: initializer of the kernel of the code logits `z`
            (of the logits themselves when `per_example=False`).
            Defaults to uniform in `[-gamma/100, gamma/100]`, as in the
            reference implementation: every smooth-step starts in its
            polynomial region, where it has a gradient. Biases start at 0.
        selector_initializer: initializer of the kernel of the selector
            logits (of the logits themselves when `per_example=False`).
            Defaults to `"random_uniform"`.
        kernel_regularizer: optional regularizer of the kernels.
        data_format: `"channels_last"` or `"channels_first"`, the layout of a
            rank-4 gate input. Defaults to `keras.config.image_data_format()`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: the gate input.
        training: bool, whether the entropy regularizer is added.

    Input shape:
        `(batch, features)`, `(batch, tokens, features)` or a rank-4 map.

    Output shape:
        `(batch, num_experts)`.

    Example:

    >>> import numpy as np
    >>> gate = DSelectKGate(num_experts=8, k=2)
    >>> weights = gate(np.random.rand(3, 16).astype("float32"))
    >>> tuple(weights.shape)
    (3, 8)
    >>> np.allclose(keras.ops.convert_to_numpy(keras.ops.sum(weights, axis=-1)), 1.0)
    True
    """

    def __init__(
        self,
        num_experts,
        k,
        gamma=1.0,
        entropy_regularization=0.0,
        per_example=True,
        code_initializer=None,
        selector_initializer="random_uniform",
        kernel_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        super().__init__(num_experts=num_experts, data_format=data_format, **kwargs)
        if self.num_experts < 2:
            raise ValueError(
                f"`DSelectKGate` selects among 2 or more experts. "
                f"Received: num_experts={num_experts}"
            )
        self.k = check_positive_int(k, "k")
        if self.k > self.num_experts:
            raise ValueError(
                f"`k` cannot exceed `num_experts`. Received: k={k}, num_experts={num_experts}"
            )
        if not float(gamma) > 0.0:
            raise ValueError(f"`gamma` must be positive. Received: gamma={gamma}")
        if not float(entropy_regularization) >= 0.0:
            raise ValueError(
                "`entropy_regularization` must be non-negative. "
                f"Received: entropy_regularization={entropy_regularization}"
            )
        self.gamma = float(gamma)
        self.entropy_regularization = float(entropy_regularization)
        self.per_example = bool(per_example)
        if code_initializer is None:
            code_initializer = keras.initializers.RandomUniform(
                -self.gamma / 100.0, self.gamma / 100.0
            )
        self.code_initializer = keras.initializers.get(code_initializer)
        self.selector_initializer = keras.initializers.get(selector_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.num_binary = max(1, math.ceil(math.log2(self.num_experts)))

    def _build_gate(self, vector_shape):
        num_codes = 2**self.num_binary
        # bits[c, l]: bit l (most significant first) of code c.
        self._bits = np.array(
            [
                [(code >> (self.num_binary - 1 - bit)) & 1 for bit in range(self.num_binary)]
                for code in range(num_codes)
            ],
            dtype="float32",
        )
        # Code c selects expert c mod num_experts.
        self._folding = np.zeros((num_codes, self.num_experts), dtype="float32")
        self._folding[np.arange(num_codes), np.arange(num_codes) % self.num_experts] = 1.0
        # With k = 1 there is nothing to mix: no selector logits (they would get no
        # gradient).
        if self.per_example:
            self._code_logits = self._dense(self.k * self.num_binary, self.code_initializer,
                                            "code_logits")
            self._code_logits.build(vector_shape)
            if self.k > 1:
                self._selector_logits = self._dense(self.k, self.selector_initializer,
                                                    "selector_logits")
                self._selector_logits.build(vector_shape)
        else:
            self.code_logits = self.add_weight(
                name="code_logits",
                shape=(self.k, self.num_binary),
                initializer=self.code_initializer,
            )
            if self.k > 1:
                self.selector_logits = self.add_weight(
                    name="selector_logits",
                    shape=(self.k,),
                    initializer=self.selector_initializer,
                )

    def _dense(self, units, kernel_initializer, name):
        return keras.layers.Dense(
            units,
            kernel_initializer=kernel_initializer,
            bias_initializer="zeros",
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def smooth_step(self, t):
        """The cubic smooth-step `S(t)`: 0 below `-gamma/2`, 1 above `gamma/2`."""
        gamma = self.gamma
        cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
        return ops.where(
            t <= -gamma / 2.0,
            ops.zeros_like(t),
            ops.where(t >= gamma / 2.0, ops.ones_like(t), cubic),
        )

    def selector_outputs(self, inputs):
        """Returns the `(batch, k, num_experts)` distributions of the `k` selectors."""
        if not self.built:
            self.build(inputs.shape)
        return self._selectors(self._to_vector(inputs))

    def _selectors(self, vector):
        if self.per_example:
            z = ops.reshape(self._code_logits(vector), (-1, self.k, 1, self.num_binary))
        else:
            # The same logits for every sample of the batch.
            z = ops.reshape(self.code_logits, (1, self.k, 1, self.num_binary))
            z = z + ops.reshape(ops.zeros_like(vector[:, :1]), (-1, 1, 1, 1))
        steps = self.smooth_step(z)
        bits = ops.cast(self._bits, steps.dtype)
        # (batch, k, codes, bits) -> (batch, k, codes)
        code_weights = ops.prod(bits * steps + (1.0 - bits) * (1.0 - steps), axis=-1)
        return ops.matmul(code_weights, ops.cast(self._folding, code_weights.dtype))

    def _gate_weights(self, vector, training=None):
        selectors = self._selectors(vector)
        if self.k == 1:
            mixing = ops.ones((1, 1), dtype=selectors.dtype)
        elif self.per_example:
            mixing = ops.softmax(self._selector_logits(vector), axis=-1)
        else:
            mixing = ops.softmax(ops.expand_dims(self.selector_logits, 0), axis=-1)
        weights = ops.sum(ops.expand_dims(mixing, -1) * selectors, axis=1)
        if training and self.entropy_regularization > 0.0:
            entropy = -ops.sum(selectors * ops.log(selectors + _EPSILON), axis=-1)
            self.add_loss(self.entropy_regularization * ops.mean(ops.sum(entropy, axis=-1)))
        return weights

    def get_config(self):
        return {
            **super().get_config(),
            "k": self.k,
            "gamma": self.gamma,
            "entropy_regularization": self.entropy_regularization,
            "per_example": self.per_example,
            "code_initializer": keras.initializers.serialize(self.code_initializer),
            "selector_initializer": keras.initializers.serialize(self.selector_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }
