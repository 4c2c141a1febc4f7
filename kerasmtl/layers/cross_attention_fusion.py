"""CrossAttentionFusion: image queries attend over (padded) text tokens."""

import keras
from keras import ops

from kerasmtl.layers.base_attention_fusion import BaseAttentionFusion


@keras.saving.register_keras_serializable(package="kerasmtl")
class CrossAttentionFusion(BaseAttentionFusion):
    """Fuses a context sequence into queries with multi-head cross-attention.

    The queries (image tokens `(batch, query_tokens, query_channels)` or an
    image map, flattened to `height * width` tokens) attend over the context
    tokens `(batch, context_tokens, context_channels)` (e.g. text) with
    `keras.layers.MultiHeadAttention`; the attended values, projected to
    `query_channels`, are added to the queries (residual) and normalized with
    `keras.layers.LayerNormalization`. The output has the layout of the query:
    a map in gives a map out. This is the cross-attention block of the
    Transformer decoder (Vaswani et al., NeurIPS 2017) used for vision-language
    fusion, e.g. in ViLBERT (Lu et al., NeurIPS 2019).

    `context_mask` marks the real context tokens (1 or `True`) and the padding
    (0 or `False`). Padded tokens get exactly zero attention, and their values
    are zeroed before the projections, so the output does not depend on them
    at all. A row whose context is entirely padding has nothing to attend to:
    its attention branch is zero and the output is `LayerNorm(query)`, finite
    and independent of the padded values. When `context_mask` is not given,
    the Keras mask carried by `context` (e.g. from
    `keras.layers.Embedding(mask_zero=True)`) is used. The Keras mask of the
    query, if any, is passed on to the output.

    Args:
        num_heads: int, the number of attention heads.
        key_dim: int, the size of each head for queries and keys.
        value_dim: int, the size of each head for values. Defaults to
            `key_dim`.
        dropout: float, the dropout rate on the attention weights. Defaults to
            `0.0`.
        epsilon: float, the LayerNormalization epsilon. Defaults to `1e-6`.
        use_bias: bool, whether the attention projections add biases.
        kernel_initializer: initializer of the attention kernels.
        bias_initializer: initializer of the attention biases.
        kernel_regularizer: optional regularizer of the attention kernels.
        bias_regularizer: optional regularizer of the attention biases.
        data_format: `"channels_last"` or `"channels_first"`, the layout of a
            rank-4 query map. Defaults to `keras.config.image_data_format()`
            (`"channels_last"` unless changed).
        seed: optional int, the seed of the attention dropout.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        query: image tokens `(batch, query_tokens, query_channels)` or an image
            map `(batch, height, width, query_channels)`
            (`(batch, query_channels, height, width)` for `"channels_first"`).
        context: context tokens `(batch, context_tokens, context_channels)`.
        context_mask: optional `(batch, context_tokens)` bool or int tensor, 1
            for real tokens and 0 for padding.
        training: bool, whether dropout is active.

    Input shape:
        `query`: `(batch, query_tokens, query_channels)` or a rank-4 map;
        `context`: `(batch, context_tokens, context_channels)`;
        `context_mask`: `(batch, context_tokens)`.

    Output shape:
        The shape of `query`.

    Example:

    >>> import numpy as np
    >>> layer = CrossAttentionFusion(num_heads=2, key_dim=8)
    >>> image = np.random.rand(2, 4, 4, 16)
    >>> text = np.random.rand(2, 5, 32)
    >>> mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    >>> tuple(layer(image, text, context_mask=mask).shape)
    (2, 4, 4, 16)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
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
        # Lets the query's Keras mask (if any) flow to the output.
        self.supports_masking = True

    def _check_shapes(self, query_shape, context_shape, context_mask_shape):
        query_shape = tuple(query_shape)
        context_shape = tuple(context_shape)
        problems = self._input_problems(query_shape, "query")
        if len(context_shape) != 3:
            problems.append(
                f"`context` has rank {len(context_shape)} instead of 3 "
                "(batch, context_tokens, context_channels)"
            )
        elif context_shape[-1] is None:
            problems.append("`context` has an unknown channel dimension")
        batch_sizes = {query_shape[:1], context_shape[:1]}
        if context_mask_shape is not None:
            context_mask_shape = tuple(context_mask_shape)
            batch_sizes.add(context_mask_shape[:1])
            if len(context_mask_shape) != 2:
                problems.append(
                    f"`context_mask` has rank {len(context_mask_shape)} instead of 2 "
                    "(batch, context_tokens)"
                )
            elif len(context_shape) == 3 and None not in (
                context_mask_shape[1],
                context_shape[1],
            ):
                if context_mask_shape[1] != context_shape[1]:
                    problems.append(
                        "`context_mask` and `context` have different numbers of tokens"
                    )
        known_batch_sizes = {shape[0] for shape in batch_sizes if shape} - {None}
        if len(known_batch_sizes) > 1:
            problems.append(f"the batch sizes differ ({sorted(known_batch_sizes)})")
        if problems:
            raise ValueError(
                "`CrossAttentionFusion` cannot attend from this query over this "
                "context: " + "; ".join(problems) + ". Expected a query of shape "
                "(batch, query_tokens, channels) or a rank-4 map "
                f"(data_format='{self.data_format}'), a context of shape "
                "(batch, context_tokens, channels) and an optional context_mask of "
                f"shape (batch, context_tokens). Received: query_shape={query_shape}, "
                f"context_shape={context_shape}, context_mask_shape={context_mask_shape}"
            )
        return query_shape, context_shape

    def build(self, query_shape, context_shape, context_mask_shape=None):
        query_shape, context_shape = self._check_shapes(
            query_shape, context_shape, context_mask_shape
        )
        self._build_attention(self._token_shape(query_shape), context_shape)

    def call(self, query, context, context_mask=None, training=None):
        query_tokens = self._to_tokens(query)
        attention_mask = None
        if context_mask is not None:
            context_mask = ops.cast(context_mask, "bool")
            # Zeroed padding cannot leak into the output through inf/NaN values,
            # even where its attention weight is exactly zero.
            context = ops.where(
                ops.expand_dims(context_mask, -1), context, ops.zeros_like(context)
            )
            attention_mask = ops.expand_dims(context_mask, 1)
        attended = self._attention(
            query_tokens, context, attention_mask=attention_mask, training=training
        )
        if context_mask is not None:
            # A fully padded row would otherwise get uniform weights over padding.
            has_context = ops.any(context_mask, axis=-1)
            attended = ops.where(
                ops.reshape(has_context, (-1, 1, 1)), attended, ops.zeros_like(attended)
            )
        tokens = self._norm(ops.add(query_tokens, attended))
        return self._from_tokens(tokens, query)

    def compute_output_shape(self, query_shape, context_shape, context_mask_shape=None):
        query_shape, _ = self._check_shapes(query_shape, context_shape, context_mask_shape)
        return query_shape
