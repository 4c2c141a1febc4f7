"""Image-text matching and image classification with cross-attention fusion."""

import keras

from kerasmtl.layers import ChannelProjection, CrossAttentionFusion
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import Task

from .architecture_utils import (
    check_downsampling,
    check_filters,
    check_image_shape,
    check_positive_int,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class VisionLanguage(MultiTaskModel):
    """An image-text model that matches pairs and classifies images.

    Two modalities, aligned then fused:

    1. Image: Conv-ReLU-MaxPool blocks, then
       `keras.layers.AdaptiveAveragePooling2D` to an `image_grid` x
       `image_grid` map whatever the image size, then a
       `kerasmtl.layers.ChannelProjection` (1x1 convolution) to
       `embedding_dim` channels: `image_grid ** 2` image tokens.
    2. Text: `keras.layers.Embedding(vocabulary_size, embedding_dim,
       mask_zero=True)`; token id 0 is padding, and the padding mask
       `tokens != 0` travels with the text tokens.
    3. Fusion: `kerasmtl.layers.CrossAttentionFusion`, the image tokens as
       queries attending over the text tokens (padding gets no attention, so
       the outputs do not depend on it), with a residual connection and
       LayerNorm; then global average pooling and a shared `Dense` + ReLU
       layer (`"features"`) that both heads read.

    This is the co-attention fusion of ViLBERT (Lu et al., NeurIPS 2019),
    one direction only, with the alignment steps (adaptive pooling, 1x1
    channel projection, cross-attention) of the multi-task tutorials this
    library started from. The text tokens carry no position information
    (a bag of tokens), enough for matching an image with a short caption.

    Tasks (the keys of the outputs, labels, losses and metrics):

    - `"match"`: one logit `(batch, 1)`, whether the text describes the
      image; binary cross-entropy from logits, metrics `"accuracy"`
      (threshold 0 on the logit) and `"auc"`; label `-1` (or NaN) marks a
      sample without a match label.
    - `"label"`: the image class logits `(batch, num_classes)`; sparse
      categorical cross-entropy from logits, metric `"accuracy"`; class id
      `-1` marks a sample without a class label.

    The config holds these arguments (`from_config` rebuilds the model).
    The model is built uncompiled: `model.compile(optimizer="adam")` uses
    the tasks' losses and metrics.

    Args:
        image_shape: tuple `(height, width, channels)` of the `"image"` input.
        vocabulary_size: int, the number of token ids (0 is padding).
        sequence_length: int, the length of the `"tokens"` input.
        embedding_dim: int, the width of the image and text tokens.
        num_heads: int, the number of attention heads; `embedding_dim` must
            be a multiple of it (each head has `embedding_dim // num_heads`
            dimensions).
        num_classes: int, the number of image classes.
        filters: tuple of ints, the filters of each Conv-ReLU-MaxPool block of
            the image encoder (each block halves the height and width).
        image_grid: int, the image tokens form an `image_grid` x `image_grid`
            map.
        dense_units: int, the units of the shared dense layer.
        dropout: float, the dropout rate on the attention weights.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> import numpy as np
    >>> model = VisionLanguage(image_shape=(16, 16, 3), vocabulary_size=50,
    ...                         sequence_length=6, embedding_dim=8, num_heads=2,
    ...                         num_classes=3, filters=(8,), image_grid=2, dense_units=8)
    >>> model.compile(optimizer="adam")
    >>> x = {"image": np.random.rand(4, 16, 16, 3).astype("float32"),
    ...      "tokens": np.array([[5, 9, 2, 0, 0, 0]] * 4)}
    >>> y = {"match": np.array([1.0, 0.0, -1.0, 1.0]), "label": np.array([0, 2, 1, -1])}
    >>> history = model.fit(x, y, epochs=1, verbose=0)
    >>> {task: tuple(out.shape) for task, out in sorted(model.predict(x, verbose=0).items())}
    {'label': (4, 3), 'match': (4, 1)}
    """

    def __init__(
        self,
        *,
        image_shape=(32, 32, 3),
        vocabulary_size=1000,
        sequence_length=16,
        embedding_dim=32,
        num_heads=2,
        num_classes=5,
        filters=(16, 32),
        image_grid=4,
        dense_units=64,
        dropout=0.0,
        name="vision_language",
        **kwargs,
    ):
        image_shape = check_image_shape(image_shape, "image_shape")
        for arg_name, value in (
            ("vocabulary_size", vocabulary_size),
            ("sequence_length", sequence_length),
            ("embedding_dim", embedding_dim),
            ("num_heads", num_heads),
            ("num_classes", num_classes),
            ("image_grid", image_grid),
            ("dense_units", dense_units),
        ):
            check_positive_int(value, arg_name)
        if vocabulary_size < 2:
            raise ValueError(
                "`vocabulary_size` must be at least 2: id 0 is padding. "
                f"Received: vocabulary_size={vocabulary_size}"
            )
        if embedding_dim % num_heads:
            raise ValueError(
                "`embedding_dim` must be a multiple of `num_heads`, so that each head gets "
                f"embedding_dim // num_heads dimensions. Received: embedding_dim={embedding_dim}, "
                f"num_heads={num_heads}"
            )
        filters = _filters_for(filters, image_shape)

        # === Layers ===
        image = keras.Input(image_shape, name="image")
        tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")

        x = image
        for index, block_filters in enumerate(filters, start=1):
            x = keras.layers.Conv2D(
                block_filters, 3, padding="same", activation="relu", name=f"image_conv{index}"
            )(x)
            x = keras.layers.MaxPooling2D(2, name=f"image_pool{index}")(x)
        x = keras.layers.AdaptiveAveragePooling2D(image_grid, name="image_grid")(x)
        image_tokens = ChannelProjection(embedding_dim, name="image_projection")(x)

        # `mask_zero=True`: the padding mask reaches `CrossAttentionFusion` as the
        # Keras mask of its `context`, which fills its `context_mask` argument.
        text_tokens = keras.layers.Embedding(
            vocabulary_size, embedding_dim, mask_zero=True, name="token_embedding"
        )(tokens)

        fused = CrossAttentionFusion(
            num_heads=num_heads,
            key_dim=embedding_dim // num_heads,
            dropout=dropout,
            name="fusion",
        )(image_tokens, text_tokens)
        pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(fused)
        features = keras.layers.Dense(dense_units, activation="relu", name="features")(pooled)
        match = keras.layers.Dense(1, name="match")(features)
        label = keras.layers.Dense(num_classes, name="label")(features)

        tasks = [
            Task(
                "match",
                loss=keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[
                    keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
                    keras.metrics.AUC(from_logits=True, name="auc"),
                ],
                mask_value=-1,
            ),
            Task(
                "label",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                mask_value=-1,
            ),
        ]

        # === Functional Model ===
        super().__init__(
            {"image": image, "tokens": tokens},
            {"match": match, "label": label},
            tasks,
            representation="features",
            name=name,
            **kwargs,
        )

        # === Config ===
        self.image_shape = image_shape
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.filters = filters
        self.image_grid = image_grid
        self.dense_units = dense_units
        self.dropout = dropout

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_shape": list(self.image_shape),
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "embedding_dim": self.embedding_dim,
            "num_heads": self.num_heads,
            "num_classes": self.num_classes,
            "filters": list(self.filters),
            "image_grid": self.image_grid,
            "dense_units": self.dense_units,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def vision_language(
    image_shape=(32, 32, 3),
    vocabulary_size=1000,
    sequence_length=16,
    embedding_dim=32,
    num_heads=2,
    num_classes=5,
    filters=(16, 32),
    image_grid=4,
    dense_units=64,
    dropout=0.0,
    name="vision_language",
):
    """Builds a `VisionLanguage` model: the same as `VisionLanguage(...)` with these arguments.

    See `VisionLanguage` for the method and the arguments.

    Returns:
        A `VisionLanguage` model.

    Example:

    >>> model = vision_language(image_shape=(16, 16, 3), vocabulary_size=50,
    ...                         sequence_length=6, embedding_dim=8, num_heads=2,
    ...                         num_classes=3, filters=(8,), image_grid=2, dense_units=8)
    >>> model.get_config()["vocabulary_size"]
    50
    """
    return VisionLanguage(
        image_shape=image_shape,
        vocabulary_size=vocabulary_size,
        sequence_length=sequence_length,
        embedding_dim=embedding_dim,
        num_heads=num_heads,
        num_classes=num_classes,
        filters=filters,
        image_grid=image_grid,
        dense_units=dense_units,
        dropout=dropout,
        name=name,
    )


def _filters_for(filters, image_shape):
    filters = check_filters(filters)
    check_downsampling(filters, image_shape, "image_shape")
    return filters
