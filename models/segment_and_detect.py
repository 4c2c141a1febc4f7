"""Semantic segmentation and grid object detection with one shared encoder."""

import keras

from kerasmtl.layers import ChannelProjection
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import Task

from .architecture_utils import check_filters, check_image_shape, check_positive_int

# Relative: this package is installed as `kerasmtl.models` from `models/`.
from .detection_loss import DetectionLoss


def _count_dtype():
    if keras.backend.backend() != "jax":
        return "float64"
    import jax

    return "float64" if jax.config.jax_enable_x64 else "float32"


@keras.saving.register_keras_serializable(package="kerasmtl")
class SegmentAndDetect(MultiTaskModel):
    """A model that segments an image and detects objects on a grid.

    A convolutional encoder (Conv-ReLU-MaxPool blocks) computes one shared
    feature map (the layer `"encoder"`), read by two heads:

    - `"segmentation"`: an upsampling decoder, one stride-2
      `Conv2DTranspose` + ReLU per encoder block (the encoder's filters in
      reverse), then a 1x1 convolution to per-pixel class logits at the full
      input resolution, as in fully convolutional networks (Long et al.,
      CVPR 2015). Loss: sparse categorical cross-entropy from logits over the
      labelled pixels; pixels labelled `mask_value` (255, the "ignore" label
      of PASCAL VOC) count neither in the loss nor in the metrics
      (`"accuracy"`, `"mean_iou"`).
    - `"detection"`: the shared map is brought to a `grid_size` x
      `grid_size` grid by `keras.layers.AdaptiveAveragePooling2D` (whatever
      the input size), projected by a `kerasmtl.layers.ChannelProjection`
      (1x1 convolution) to `detection_filters` channels and mixed by a 3x3
      convolution; each cell then predicts 4 box values in `[0, 1]`
      (sigmoid) and 1 objectness logit, concatenated as
      `(batch, grid, grid, 5)`: the grid detector of YOLO (Redmon et al.,
      "You Only Look Once: Unified, Real-Time Object Detection", CVPR 2016),
      one box per cell. Loss: `kerasmtl.models.DetectionLoss` (objectness
      BCE, box squared error in cells with an object). A cell whose target
      holds a NaN is unlabelled; a whole image without detection labels is
      all NaN.

    Detection targets, per cell: `(cx, cy, w, h, objectness)`, the box in
    `[0, 1]` (e.g. YOLO's centre offset within the cell and size relative to
    the image), objectness 1 where an object's centre falls in the cell and
    0 elsewhere (the box values of empty cells are ignored; use 0).

    The config holds these arguments (`from_config` rebuilds the model).
    The model is built uncompiled: `model.compile(optimizer="adam")` uses
    the tasks' losses and metrics.

    Args:
        input_shape: tuple `(height, width, channels)` of the `"image"`
            input; height and width must be multiples of
            `2 ** len(filters)`.
        num_classes: int, the number of segmentation classes.
        grid_size: int, the detection grid is `grid_size` x `grid_size`.
        filters: tuple of ints, the filters of each encoder block (each block
            halves the height and width); the decoder mirrors them.
        detection_filters: int, the channels of the detection head.
        box_weight: float, the weight of the box term of the detection loss
            (YOLO's `lambda_coord`).
        no_object_weight: float, the weight of the objectness term in cells
            without an object (YOLO's `lambda_noobj`).
        mask_value: int, the segmentation label of pixels to ignore.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> import numpy as np
    >>> model = SegmentAndDetect(input_shape=(16, 16, 3), num_classes=3,
    ...                            grid_size=2, filters=(8, 16), detection_filters=8)
    >>> model.compile(optimizer="adam")
    >>> images = np.random.rand(2, 16, 16, 3).astype("float32")
    >>> segmentation = np.random.randint(0, 3, (2, 16, 16))
    >>> segmentation[:, :2] = 255
    >>> detection = np.zeros((2, 2, 2, 5), "float32")
    >>> detection[0, 1, 0] = [0.5, 0.5, 0.3, 0.4, 1.0]
    >>> history = model.fit(images, {"segmentation": segmentation, "detection": detection},
    ...                     epochs=1, verbose=0)
    >>> {task: tuple(out.shape) for task, out in sorted(model.predict(images, verbose=0).items())}
    {'detection': (2, 2, 2, 5), 'segmentation': (2, 16, 16, 3)}
    """

    def __init__(
        self,
        *,
        input_shape=(64, 64, 3),
        num_classes=5,
        grid_size=8,
        filters=(16, 32, 64),
        detection_filters=64,
        box_weight=5.0,
        no_object_weight=0.5,
        mask_value=255,
        name="segment_and_detect",
        **kwargs,
    ):
        input_shape = check_image_shape(input_shape, "input_shape")
        for arg_name, value in (
            ("num_classes", num_classes),
            ("grid_size", grid_size),
            ("detection_filters", detection_filters),
        ):
            check_positive_int(value, arg_name)
        filters = _check_filters(filters, input_shape)
        if (
            isinstance(mask_value, bool)
            or not isinstance(mask_value, int)
            or (0 <= mask_value < num_classes)
        ):
            raise ValueError(
                "`mask_value` must be an integer outside the class ids "
                f"[0, {num_classes}), e.g. 255. Received: mask_value={mask_value!r}"
            )
        detection_loss = DetectionLoss(box_weight=box_weight, no_object_weight=no_object_weight)

        # === Layers ===
        image = keras.Input(input_shape, name="image")
        x = image
        for index, block_filters in enumerate(filters, start=1):
            x = keras.layers.Conv2D(
                block_filters, 3, padding="same", activation="relu", name=f"encoder_conv{index}"
            )(x)
            pool_name = "encoder" if index == len(filters) else f"encoder_pool{index}"
            x = keras.layers.MaxPooling2D(2, name=pool_name)(x)
        features = x

        # Segmentation: back to the input resolution, one stride-2 step per block.
        x = features
        for index, block_filters in enumerate(reversed(filters), start=1):
            x = keras.layers.Conv2DTranspose(
                block_filters,
                3,
                strides=2,
                padding="same",
                activation="relu",
                name=f"segmentation_up{index}",
            )(x)
        segmentation = keras.layers.Conv2D(num_classes, 1, name="segmentation")(x)

        # Detection: the encoder map, whatever its size, pooled to the grid.
        x = keras.layers.AdaptiveAveragePooling2D(grid_size, name="detection_pool")(features)
        x = ChannelProjection(detection_filters, activation="relu", name="detection_projection")(x)
        x = keras.layers.Conv2D(
            detection_filters, 3, padding="same", activation="relu", name="detection_conv"
        )(x)
        boxes = keras.layers.Conv2D(4, 1, activation="sigmoid", name="detection_box")(x)
        objectness = keras.layers.Conv2D(1, 1, name="detection_objectness")(x)
        detection = keras.layers.Concatenate(name="detection")([boxes, objectness])

        tasks = [
            Task(
                "segmentation",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[
                    keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                    # float64 counts: the mask arrives as a float sample weight, and
                    # float32 counts stop growing past 2**24 labelled pixels. JAX has no
                    # float64 unless x64 is enabled.
                    keras.metrics.MeanIoU(
                        num_classes, sparse_y_pred=False, dtype=_count_dtype(), name="mean_iou"
                    ),
                ],
                mask_value=mask_value,
            ),
            Task("detection", loss=detection_loss),
        ]

        # === Functional Model ===
        super().__init__(
            image,
            {"segmentation": segmentation, "detection": detection},
            tasks,
            representation="encoder",
            name=name,
            **kwargs,
        )

        # === Config ===
        # `input_shape` is a read-only property of Keras layers.
        self._image_shape = input_shape
        self.num_classes = num_classes
        self.grid_size = grid_size
        self.filters = filters
        self.detection_filters = detection_filters
        self.box_weight = box_weight
        self.no_object_weight = no_object_weight
        self.mask_value = mask_value

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": list(self._image_shape),
            "num_classes": self.num_classes,
            "grid_size": self.grid_size,
            "filters": list(self.filters),
            "detection_filters": self.detection_filters,
            "box_weight": self.box_weight,
            "no_object_weight": self.no_object_weight,
            "mask_value": self.mask_value,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def segment_and_detect(
    input_shape=(64, 64, 3),
    num_classes=5,
    grid_size=8,
    filters=(16, 32, 64),
    detection_filters=64,
    box_weight=5.0,
    no_object_weight=0.5,
    mask_value=255,
    name="segment_and_detect",
):
    """Builds a `SegmentAndDetect` model: the same as `SegmentAndDetect(...)` with these arguments.

    See `SegmentAndDetect` for the method and the arguments.

    Returns:
        A `SegmentAndDetect` model.

    Example:

    >>> model = segment_and_detect(input_shape=(16, 16, 3), num_classes=3,
    ...                            grid_size=2, filters=(8, 16), detection_filters=8)
    >>> model.get_config()["grid_size"]
    2
    """
    return SegmentAndDetect(
        input_shape=input_shape,
        num_classes=num_classes,
        grid_size=grid_size,
        filters=filters,
        detection_filters=detection_filters,
        box_weight=box_weight,
        no_object_weight=no_object_weight,
        mask_value=mask_value,
        name=name,
    )


def _check_filters(filters, input_shape):
    filters = check_filters(filters, what="encoder block")
    stride = 2 ** len(filters)
    if input_shape[0] % stride or input_shape[1] % stride:
        raise ValueError(
            f"The encoder's {len(filters)} blocks halve the image {len(filters)} times and "
            f"the decoder doubles it back, so the height and width must be multiples of "
            f"{stride}. Pad or resize the images, or change the number of blocks. "
            f"Received: input_shape={input_shape}, filters={tuple(filters)}"
        )
    return filters
