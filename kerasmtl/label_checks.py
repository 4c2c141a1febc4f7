"""Checks of label values and sample weights before any training step runs.

Shapes and keys are checked from specs (`kerasmtl.task_loss.validate_labels`);
what needs the values (class ids in range) is checked here: in full for
in-memory data (NumPy arrays, tensors), on the first batch for a
`tf.data.Dataset`. A bad class id would otherwise reach the loss as a raw
backend error (or, on some devices, a silently wrong loss) naming no task.
"""

import inspect

import numpy as np

_SHOWN = 10


def check_sample_weight_keys(sample_weight, task_names):
    """Checks a `sample_weight` dict like a label dict: its keys are the task names.

    A single array (one weight per sample, for every task) is fine as it is.

    Raises:
        ValueError: naming the unknown or missing key(s) and listing the tasks.
    """
    if not isinstance(sample_weight, dict):
        return
    task_names = list(task_names)
    unknown = [key for key in sample_weight if key not in task_names]
    missing = [name for name in task_names if name not in sample_weight]
    if unknown:
        raise ValueError(
            f"Unknown sample_weight key(s) {unknown}: they match no task of this model. "
            "A `sample_weight` dict is keyed by task name, like the labels. "
            f"Tasks: {task_names}. Received: sample_weight keys={list(sample_weight)}"
        )
    if missing:
        raise ValueError(
            f"No sample weights for task(s) {missing}. A `sample_weight` dict needs a key "
            "for every task (give weights of 1 to tasks you do not weight), or pass one "
            f"array used by every task. Tasks: {task_names}. "
            f"Received: sample_weight keys={list(sample_weight)}"
        )


def check_class_ids(y, task_names, output_shapes, task_losses, mask_values):
    """Checks that every class id given to a sparse categorical loss is in range.

    Args:
        y: dict of labels keyed by task name; values that are not arrays or
            eager tensors (specs, symbolic tensors) are skipped.
        task_names: the model's task names, in order.
        output_shapes: dict of each task's prediction shape (classes last).
        task_losses: dict of each task's `kerasmtl.task_loss.TaskLoss`.
        mask_values: dict of each task's `mask_value`.

    Raises:
        ValueError: naming the task, the bad values, the valid range and the
            mask value.
    """
    for name in task_names:
        label = as_numpy(y[name])
        if label is None or not label.size:
            continue
        output_shape = tuple(output_shapes[name])
        loss = task_losses[name]
        if not loss.sparse_categorical(label.shape, output_shape):
            continue
        num_classes = output_shape[-1] if output_shape else None
        values = label.ravel()
        if not np.issubdtype(values.dtype, np.number):
            continue
        present = np.ones(values.shape, dtype=bool)
        if np.issubdtype(values.dtype, np.floating):
            present &= np.isfinite(values)  # NaN marks a missing float label.
        mask_value = mask_values[name]
        if mask_value is not None:
            present &= values != mask_value
        ignore_class = loss.ignore_class()
        if ignore_class is not None:
            present &= values != ignore_class
        ids = values[present]
        bad = ids < 0
        if num_classes is not None:
            bad |= ids >= num_classes
        if np.issubdtype(ids.dtype, np.floating):
            bad |= ids != np.floor(ids)
        if not bad.any():
            continue
        bad_values = np.unique(ids[bad])
        shown = [_python_number(value) for value in bad_values[:_SHOWN]]
        more = f" (and {len(bad_values) - _SHOWN} more)" if len(bad_values) > _SHOWN else ""
        valid = f"[0, {num_classes})" if num_classes is not None else "[0, num_classes)"
        if mask_value is None:
            how = (
                "To mark samples without a label, give the task a `mask_value` "
                f"(`Task('{name}', ..., mask_value=-1)`) and use it in the labels"
            )
        else:
            how = f"Mark samples without a label with the task's mask_value {mask_value!r}"
        raise ValueError(
            f"Labels for task '{name}' hold {int(bad.sum())} class id(s) outside the valid "
            f"range {valid}: its loss is sparse categorical crossentropy and its head has "
            f"{num_classes} classes, so a label must be a whole number in {valid} or the "
            f"task's mask_value ({mask_value!r}). {how}, or widen the head. "
            f"Received: bad values in y['{name}']={shown}{more}"
        )


def first_batch(dataset):
    """The first element of a `tf.data.Dataset`, or `None` if it has none.

    One element of the pipeline is computed (a shuffle buffer is filled once).
    """
    for element in dataset.take(1):
        return element
    return None


def is_dataset(data):
    """Whether `data` is a `tf.data.Dataset` (checked without importing TensorFlow)."""
    return hasattr(data, "element_spec") and hasattr(data, "take")


def as_numpy(value):
    """`value` as a NumPy array if it holds concrete values (array, eager tensor), else `None`."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
        try:
            return np.asarray(value)
        except (TypeError, ValueError, NotImplementedError):
            # A symbolic tensor: its values are not known before the step runs.
            return None
    return None


def bound_arguments(method, self, x, y, args, kwargs):
    """The arguments of a call `method(self, x, y, *args, **kwargs)`, by name."""
    try:
        bound = inspect.signature(method).bind(self, x, y, *args, **kwargs)
    except TypeError:
        # Keras will raise its own error for a call that does not fit its signature.
        return {}
    return bound.arguments


def _python_number(value):
    value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
