"""Per-task losses with missing-label masks, and label validation."""

import keras
from keras import ops


def resolve_loss(identifier, task_name):
    """Returns a function `(y_true, y_pred) -> per-element losses` (no reduction)."""
    if identifier is None:
        raise ValueError(
            f"Task '{task_name}' has no loss. Give it one in `Task(loss=...)` or in "
            "`compile(loss={...})`."
        )
    if isinstance(identifier, str):
        resolved = keras.losses.get(identifier)
    else:
        resolved = identifier
    if isinstance(resolved, keras.losses.Loss):
        return resolved.call
    if callable(resolved):
        return resolved
    raise TypeError(
        f"Task '{task_name}': the loss must be a Keras loss name, a `keras.losses.Loss` or "
        f"a function `loss(y_true, y_pred)`. Received: loss={identifier!r}"
    )


def label_mask(y_true, mask_value=None):
    """Returns a boolean tensor, True where the label is present."""
    # As a backend tensor first: JAX (x64 off) holds a NumPy int64 label as int32.
    y_true = ops.convert_to_tensor(y_true)
    present = None
    if mask_value is not None:
        present = ops.not_equal(y_true, ops.cast(mask_value, y_true.dtype))
    if keras.backend.is_float_dtype(y_true.dtype):
        # NaN marks a missing float target; an infinite one cannot be a target either.
        finite = ops.isfinite(y_true)
        present = finite if present is None else ops.logical_and(present, finite)
    if present is None:
        present = ops.ones_like(y_true, dtype="bool")
    return present


def fit_mask_rank(mask, rank):
    """Reduces (all) trailing axes of `mask`, or expands it, to the given rank."""
    while len(mask.shape) > rank:
        mask = ops.all(mask, axis=-1)
    while len(mask.shape) < rank:
        mask = ops.expand_dims(mask, axis=-1)
    return mask


def masked_task_loss(loss_fn, y_true, y_pred, mask_value=None, sample_weight=None):
    """Returns `(loss, count)`: the mean loss over labelled elements and their count.

    Missing labels are replaced by zeros before the loss function sees them, so
    no NaN from a missing label can reach the loss or its gradient; their loss is
    then dropped. With no labelled element the loss is exactly 0.
    """
    y_pred = ops.cast(y_pred, "float32")
    present = label_mask(y_true, mask_value)
    y_safe = ops.where(present, y_true, ops.zeros_like(y_true))
    y_safe = ops.cast(y_safe, "float32")
    values = ops.cast(loss_fn(y_safe, y_pred), "float32")
    mask = ops.cast(fit_mask_rank(present, len(values.shape)), "float32")
    weights = mask
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        sample_weight = fit_sample_weight_rank(sample_weight, len(values.shape))
        weights = weights * sample_weight
    count = ops.sum(mask * ops.ones_like(values))
    total = ops.sum(ops.where(mask > 0, values * weights, ops.zeros_like(values)))
    return total / ops.maximum(count, 1.0), count


def fit_sample_weight_rank(sample_weight, rank):
    """Expands per-sample weights `(B,)` to broadcast against `rank`-d values."""
    while len(sample_weight.shape) > rank and sample_weight.shape[-1] == 1:
        sample_weight = ops.squeeze(sample_weight, axis=-1)
    while len(sample_weight.shape) < rank:
        sample_weight = ops.expand_dims(sample_weight, axis=-1)
    return sample_weight


def validate_labels(y, task_names, output_shapes):
    """Checks a label structure against the model's tasks before any step runs.

    Args:
        y: the labels: a dict keyed by task name (arrays, tensors or specs).
        task_names: the model's task names, in order.
        output_shapes: dict of each task's prediction shape.

    Raises:
        ValueError: naming the bad key or label and listing the task names.
    """
    if y is None:
        raise ValueError(
            "This multi-task model needs labels: a dict keyed by task name. "
            f"Tasks: {list(task_names)}. Received: y=None"
        )
    if not isinstance(y, dict):
        raise ValueError(
            "Labels of a multi-task model must be a dict keyed by task name, so that "
            f"no label reaches the wrong head. Tasks: {list(task_names)}. "
            f"Received: y of type {type(y).__name__}"
        )
    unknown = [key for key in y if key not in task_names]
    missing = [name for name in task_names if name not in y]
    if unknown:
        raise ValueError(
            f"Unknown label key(s) {unknown}: they match no task of this model. "
            f"Tasks: {list(task_names)}. Received: y keys={list(y)}"
        )
    if missing:
        raise ValueError(
            f"No labels for task(s) {missing}. Give a label for every task; mark samples "
            "without a label with the task's `mask_value` (or NaN for float targets). "
            f"Tasks: {list(task_names)}. Received: y keys={list(y)}"
        )
    for name in task_names:
        label = y[name]
        shape = getattr(label, "shape", None)
        dtype = getattr(label, "dtype", None)
        dtype_name = _dtype_name(dtype)
        if dtype_name is not None and (
            dtype_name.startswith(("str", "bytes", "<U", "|S")) or dtype_name == "object"
        ):
            raise ValueError(
                f"Labels for task '{name}' have dtype {dtype_name}; losses need numbers "
                "(class ids, or float targets). Map strings to ids first. "
                f"Tasks: {list(task_names)}. Received: y['{name}'].dtype={dtype_name}"
            )
        if shape is None:
            continue
        label_shape = tuple(shape)
        output_shape = tuple(output_shapes[name])
        if not _label_shape_fits(label_shape, output_shape):
            raise ValueError(
                f"Labels for task '{name}' have shape {label_shape}, which cannot match the "
                f"head's output shape {output_shape} (batch axis first). Expected either "
                "the output's shape, or the output's shape without its last axis (class "
                "ids), optionally with a trailing axis of size 1. "
                f"Tasks: {list(task_names)}. Received: y['{name}'].shape={label_shape}"
            )


def _dtype_name(dtype):
    if dtype is None:
        return None
    name = getattr(dtype, "name", None)
    return str(name if name is not None else dtype)


def _dims_compatible(a, b):
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _label_shape_fits(label_shape, output_shape):
    if not label_shape or not output_shape:
        return len(label_shape) == len(output_shape) or len(label_shape) <= 1
    # The batch axis of a label array may differ from a symbolic None: compare the rest.
    label_rest, output_rest = label_shape[1:], output_shape[1:]
    if _dims_compatible(label_rest, output_rest):
        return True
    # Class ids: the output's shape without its last (class) axis.
    if _dims_compatible(label_rest, output_rest[:-1]):
        return True
    # Class ids with a trailing axis of size 1.
    if label_rest and label_rest[-1] == 1 and _dims_compatible(label_rest[:-1], output_rest[:-1]):
        return True
    return False
