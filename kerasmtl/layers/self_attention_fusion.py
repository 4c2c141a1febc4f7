"""SelfAttentionFusion: global self-attention over the positions of a map."""

import keras
from keras import ops

from kerasmtl.layers.base_attention_fusion import BaseAttentionFusion


@keras.saving.register_keras_serializable(package="kerasmtl")
class SelfAttentionFusion(BaseAttentionFusion):
    """Mixes the positions of a feature map with multi-head self-attention.

    The map `(batch, height, width, channels)` is flattened to
    `height * width` tokens, passed through `keras.layers.MultiHeadAttention`
    (every position attends to every position), added back to the tokens
    (residual) and normalized by `keras.layers.LayerNormalization`, then
    reshaped to the input layout: the post-norm Transformer encoder sub-block
    of Vaswani et al. (NeurIPS 2017) applied to image positions, as in
    non-local networks (Wang et al., CVPR 2018). Placed after a fusion of
    several backbones' maps it lets every position see global context.

    With `use_positional_embedding=True` a learned `(height * width, channels)`
    embedding is added to the tokens that enter the attention (queries, keys
    and values); the residual branch keeps the un-embedded tokens. The
    embedding needs the height and width to be known at build time; without
    it they may be unknown. Rank-3 token sequences are accepted as well.

    Args:
        num_heads: int, the number of attention heads.
        key_dim: int, the size of each head for queries and keys.
        value_dim: int, the size of each head for values. Defaults to
            `key_dim`.
        dropout: float, the dropout rate on the attention weights. Defaults to
            `0.0`.
        use_positional_embedding: bool, whether to add a learned positional
            embedding. Defaults to `False`.
        epsilon: float, the LayerNormalization epsilon. Defaults to `1e-6`.
        use_bias: bool, whether the attention projections add biases.
        kernel_initializer: initializer of the attention kernels.
        bias_initializer: initializer of the attention biases.
        kernel_regularizer: optional regularizer of the attention kernels.
        bias_regularizer: optional regularizer of the attention biases.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()` (`"channels_last"` unless
            changed).
        seed: optional int, the seed of the attention dropout.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a rank-4 feature map, or a rank-3 token sequence.
        training: bool, whether dropout is active.

    Input shape:
        `(batch, height, width, channels)` (`(batch, channels, height, width)`
        for `"channels_first"`), or `(batch, tokens, channels)`.

    Output shape:
        The input shape.

    Example:

    >>> import numpy as np
    >>> layer = SelfAttentionFusion(num_heads=2, key_dim=8)
    >>> tuple(layer(np.zeros((2, 4, 4, 16))).shape)
    (2, 4, 4, 16)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_positional_embedding=False,
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
        super().__init__(
            num_heads=num_heads,
            key_dim=key_dim,
            value_dim=value_dim,
            dropout=dropout,
            epsilon=epsilon,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            data_format=data_format,
            seed=seed,
            **kwargs,
        )
        self.use_positional_embedding = use_positional_embedding

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        problems = self._input_problems(input_shape, "inputs")
        if not problems:
            token_shape = self._token_shape(input_shape)
            if self.use_positional_embedding and token_shape[1] is None:
                problems.append(
                    "the height and width (token count) must be known for the "
                    "positional embedding"
                )
        if problems:
            raise ValueError(
                "`SelfAttentionFusion` expects a feature map with known channels "
                f"(data_format='{self.data_format}') or a (batch, tokens, channels) "
                "sequence: " + "; ".join(problems) + f". Received: input_shape={input_shape}"
            )
        if self.use_positional_embedding:
            self.positional_embedding = self.add_weight(
                name="positional_embedding",
                shape=token_shape[1:],
                initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=self.seed),
                trainable=True,
            )
        self._build_attention(token_shape, token_shape)

    def call(self, inputs, training=None):
        tokens = self._to_tokens(inputs)
        attention_input = tokens
        if self.use_positional_embedding:
            attention_input = ops.add(
                tokens, ops.cast(self.positional_embedding, tokens.dtype)
            )
        attended = self._attention(attention_input, attention_input, training=training)
        tokens = self._norm(ops.add(tokens, attended))
        return self._from_tokens(tokens, inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "use_positional_embedding": self.use_positional_embedding,
        }
