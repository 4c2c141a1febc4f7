"""Image classification and box localization with one shared encoder."""

import keras

from kerasmtl import architecture_config as ac
from kerasmtl.hard_sharing import HardSharing
from kerasmtl.task import Task

from .architecture_utils import (
    check_downsampling,
    check_filters,
    check_image_shape,
    check_positive_int,
)

_POOLINGS = ("flatten", "avg", "max")


@keras.saving.register_keras_serializable(package="kerasmtl")
class ClassifyAndLocalize(HardSharing):
    """A model that classifies an image and regresses one box in it.

    A shared encoder reads the image once; two heads read its features: the
    class logits (task `"label"`) and four box coordinates squashed into
    `[0, 1]` by a sigmoid (task `"box"`): the box's corners `(x1, y1, x2, y2)`
    or its centre and size `(cx, cy, w, h)` as fractions of the image size,
    whichever convention the labels follow. The default encoder is the
    classic small convolutional network of the multi-task tutorials this
    library started from (Conv-ReLU-MaxPool blocks, `Flatten`, a shared
    `Dense` layer): hard parameter sharing (Caruana, "Multitask Learning",
    Machine Learning 1997) with classification and localization heads as in
    OverFeat (Sermanet et al., ICLR 2014). Any Keras model can replace it, for
    example a `keras.applications` backbone.

    Tasks (the keys of the outputs, labels, losses and metrics):

    - `"label"`: logits `(batch, num_classes)`; sparse categorical
      cross-entropy from logits, metric `"accuracy"`; class id `-1` marks a
      sample without a class label.
    - `"box"`: `(batch, 4)` in `[0, 1]`; mean squared error, metric `"mae"`;
      a box with a NaN coordinate marks a sample without a box. Pass
      `compile(loss={"box": "huber"})` for a Huber loss instead.

    The config holds these arguments (`from_config` rebuilds the model); a
    `trunk` is saved with `keras.layers.serialize`, as keras-hub saves a
    task's backbone.
    The model is built uncompiled: `model.compile(optimizer="adam")` uses
    the tasks' losses and metrics.

    Args:
        input_shape: tuple `(height, width, channels)` of the `"image"` input.
        num_classes: int, the number of classes of the `"label"` task.
        filters: tuple of ints, the filters of each Conv-ReLU-MaxPool block of
            the default encoder (each block halves the height and width).
            Unused when `trunk` is given.
        dense_units: int, the units of the shared `Dense` + ReLU layer that
            both heads read (named `"features"`), on top of the default
            encoder or of `trunk`; `None` for no shared dense layer.
        pooling: how a feature map becomes a vector before the shared dense
            layer: `"flatten"` (the classic choice; ties the weights to the
            input size), `"avg"` or `"max"` (global pooling). Applies to the
            default encoder, and to a `trunk` that returns a feature map.
        trunk: optional Keras model (or layer) mapping the image to features,
            a vector per image or a feature map, e.g.
            `keras.applications.ResNet50(weights=None, include_top=False,
            pooling="avg", input_shape=input_shape)`. Replaces the default
            encoder.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> import numpy as np
    >>> model = ClassifyAndLocalize(input_shape=(16, 16, 3), num_classes=3,
    ...                               filters=(8,), dense_units=16)
    >>> model.compile(optimizer="adam")
    >>> images = np.random.rand(4, 16, 16, 3).astype("float32")
    >>> labels = {"label": np.array([0, 2, -1, 1]),
    ...           "box": np.random.rand(4, 4).astype("float32")}
    >>> history = model.fit(images, labels, epochs=1, verbose=0)
    >>> {task: tuple(out.shape) for task, out in sorted(model.predict(images, verbose=0).items())}
    {'box': (4, 4), 'label': (4, 3)}
    """

    def __init__(
        self,
        *,
        input_shape=(64, 64, 3),
        num_classes=10,
        filters=(32, 64),
        dense_units=128,
        pooling="flatten",
        trunk=None,
        name="classify_and_localize",
        **kwargs,
    ):
        input_shape = check_image_shape(input_shape, "input_shape")
        check_positive_int(num_classes, "num_classes")
        if dense_units is not None:
            check_positive_int(dense_units, "dense_units")
        if pooling not in _POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {list(_POOLINGS)}. Received: pooling={pooling!r}"
            )
        if trunk is None:
            filters = _filters_for(filters, input_shape)
        elif not isinstance(trunk, keras.layers.Layer):
            raise TypeError(
                "`trunk` must be a Keras model or layer that maps the image to features, "
                "e.g. keras.applications.ResNet50(weights=None, include_top=False, "
                f"pooling='avg'). Received: trunk={trunk!r} of type {type(trunk).__name__}"
            )

        # === Layers ===
        def encoder(image):
            if trunk is None:
                x = image
                for index, block_filters in enumerate(filters, start=1):
                    x = keras.layers.Conv2D(
                        block_filters,
                        3,
                        padding="same",
                        activation="relu",
                        name=f"block{index}_conv",
                    )(x)
                    x = keras.layers.MaxPooling2D(2, name=f"block{index}_pool")(x)
            else:
                x = trunk(image)
            if len(x.shape) == 4:
                x = _pooling_layer(pooling)(x)
            elif len(x.shape) != 2:
                raise ValueError(
                    "`trunk` must return a vector per image (batch, features) or a feature "
                    "map (batch, height, width, channels). "
                    f"Received: trunk output shape={tuple(x.shape)}"
                )
            if dense_units is not None:
                x = keras.layers.Dense(dense_units, activation="relu", name="features")(x)
            return x

        tasks = [
            Task(
                "label",
                head=keras.layers.Dense(num_classes),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                mask_value=-1,
            ),
            Task(
                "box",
                head=keras.layers.Dense(4, activation="sigmoid"),
                loss=keras.losses.MeanSquaredError(),
                metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
            ),
        ]

        # === Functional Model ===
        image = keras.Input(input_shape, name="image")
        super().__init__(image, encoder, tasks, name=name, **kwargs)

        # === Config ===
        # `input_shape` is a read-only property of Keras layers.
        self._image_shape = input_shape
        self.num_classes = num_classes
        self.filters = filters
        self.dense_units = dense_units
        self.pooling = pooling
        self.trunk = trunk

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": list(self._image_shape),
            "num_classes": self.num_classes,
            "filters": None if self.filters is None else list(self.filters),
            "dense_units": self.dense_units,
            "pooling": self.pooling,
            "trunk": None if self.trunk is None else ac.serialize_layer(self.trunk),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if config.get("trunk") is not None:
            config["trunk"] = ac.deserialize_layer(config["trunk"])
        return cls(**config)


def classify_and_localize(
    input_shape=(64, 64, 3),
    num_classes=10,
    filters=(32, 64),
    dense_units=128,
    pooling="flatten",
    trunk=None,
    name="classify_and_localize",
):
    """Builds a `ClassifyAndLocalize` model: `ClassifyAndLocalize(...)` with these arguments.

    See `ClassifyAndLocalize` for the method and the arguments.

    Returns:
        A `ClassifyAndLocalize` model.

    Example:

    >>> model = classify_and_localize(input_shape=(16, 16, 3), num_classes=3,
    ...                               filters=(8,), dense_units=16)
    >>> sorted(model.get_config()["filters"]), model.representation
    ([8], 'features')
    """
    return ClassifyAndLocalize(
        input_shape=input_shape,
        num_classes=num_classes,
        filters=filters,
        dense_units=dense_units,
        pooling=pooling,
        trunk=trunk,
        name=name,
    )


def _pooling_layer(pooling):
    if pooling == "flatten":
        return keras.layers.Flatten(name="flatten")
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="global_pool")
    return keras.layers.GlobalMaxPooling2D(name="global_pool")


def _filters_for(filters, input_shape):
    filters = check_filters(filters)
    check_downsampling(filters, input_shape, "input_shape")
    return filters
