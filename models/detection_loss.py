"""DetectionLoss: objectness and box regression on a grid of detection cells."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmtl")
class DetectionLoss(keras.losses.Loss):
    """Loss of a grid detection head: objectness BCE plus box regression.

    Each cell of a `(grid, grid)` detection map predicts 4 box values and 1
    objectness logit, and has a target of the same layout: 4 box values and
    an objectness target of 1 (an object is centred in the cell) or 0. The
    loss of a cell is

    `w_obj * BCE(o, sigmoid(z)) + box_weight * [o == 1] * sum_i (b_i - p_i)^2`

    where `z` is the predicted objectness logit, `o` the objectness target,
    `p` the predicted and `b` the target box, and `w_obj` is 1 for cells with
    an object and `no_object_weight` for the others. The box term counts only
    in cells with an object, so the box targets of empty cells are ignored
    (give them any finite value, e.g. 0). This is the grid loss of YOLO
    (Redmon et al., "You Only Look Once: Unified, Real-Time Object
    Detection", CVPR 2016), whose `lambda_coord = 5` and `lambda_noobj = 0.5`
    are the defaults here, with a binary cross-entropy on the objectness
    logit in place of YOLO's squared error on the confidence.

    `call` returns one value per cell, without reduction, so that
    `kerasmtl.MultiTaskModel` can average over the labelled cells only (a
    cell whose target holds a NaN counts as unlabelled). Called as
    `loss(y_true, y_pred)` it applies `reduction` like any Keras loss.

    Args:
        box_weight: float, the weight of the box term (YOLO's
            `lambda_coord`). Defaults to `5.0`.
        no_object_weight: float, the weight of the objectness term in cells
            without an object (YOLO's `lambda_noobj`). Defaults to `0.5`.
        name: the loss name. Defaults to `"detection_loss"`.
        reduction: the Keras reduction used by `__call__`. Defaults to
            `"sum_over_batch_size"`.
        dtype: the dtype of the loss computation.

    Example:

    >>> import numpy as np
    >>> y_true = np.zeros((1, 2, 2, 5), "float32")
    >>> y_true[0, 0, 1] = [0.5, 0.5, 0.2, 0.3, 1.0]
    >>> y_pred = np.zeros((1, 2, 2, 5), "float32")
    >>> tuple(DetectionLoss().call(y_true, y_pred).shape)
    (1, 2, 2)
    """

    def __init__(
        self,
        box_weight=5.0,
        no_object_weight=0.5,
        name="detection_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        for arg_name, value in (("box_weight", box_weight), ("no_object_weight", no_object_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"`{arg_name}` must be a non-negative number. Received: {arg_name}={value!r}"
                )
        self.box_weight = float(box_weight)
        self.no_object_weight = float(no_object_weight)

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != 5:
            raise ValueError(
                "`DetectionLoss` expects predictions with 5 values per cell (4 box "
                "values and 1 objectness logit) on the last axis. "
                f"Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true = ops.cast(y_true, y_pred.dtype)
        objectness = y_true[..., 4]
        positive = ops.cast(ops.equal(objectness, 1.0), y_pred.dtype)
        objectness_weight = positive + self.no_object_weight * (1.0 - positive)
        # BCE from the logit as o * softplus(-z) + (1 - o) * softplus(z): exact for confident
        # logits on every backend (torch's `binary_crossentropy` rounds log(1 + e^-40) to 0).
        logits = y_pred[..., 4]
        objectness_loss = objectness * ops.softplus(-logits)
        objectness_loss += (1.0 - objectness) * ops.softplus(logits)
        box_error = ops.sum(ops.square(y_true[..., :4] - y_pred[..., :4]), axis=-1)
        return objectness_weight * objectness_loss + self.box_weight * positive * box_error

    def get_config(self):
        return {
            **super().get_config(),
            "box_weight": self.box_weight,
            "no_object_weight": self.no_object_weight,
        }
