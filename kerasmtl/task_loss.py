"""Per-task losses with missing-label masks, and label validation."""

import keras
from keras import ops


def resolve_loss(identifier, task_name):
    """Returns a `TaskLoss`: `(y_true, y_pred) -> per-element losses` (no reduction).

    Resolved as `keras.Model.compile` resolves a loss: a name by `keras.losses.get`
    (`"crossentropy"` / `"ce"` picks binary, sparse or categorical crossentropy from
    the label and prediction shapes, as Keras does), and a function is called after
    Keras's rank matching, so `(N,)` labels work with an `(N, 1)` head exactly as in
    plain Keras.
    """
    if identifier is None:
        raise ValueError(
            f"Task '{task_name}' has no loss. Give it one in `Task(loss=...)` or in "
            "`compile(loss={...})`."
        )
    if isinstance(identifier, str) and identifier.lower() in _BY_SHAPE:
        return TaskLoss(None, identifier)
    try:
        resolved = keras.losses.get(identifier) if isinstance(identifier, str) else identifier
    except ValueError as error:
        raise ValueError(
            f"Task '{task_name}': unknown loss name {identifier!r}. Use a name of "
            "`keras.losses` (e.g. 'mse', 'binary_crossentropy'), a `keras.losses.Loss` or a "
            f"function `loss(y_true, y_pred)`. Received: loss={identifier!r}"
        ) from error
    if isinstance(resolved, keras.losses.Loss) or callable(resolved):
        return TaskLoss(resolved, identifier)
    raise TypeError(
        f"Task '{task_name}': the loss must be a Keras loss name, a `keras.losses.Loss` or "
        f"a function `loss(y_true, y_pred)`. Received: loss={identifier!r}"
    )


_BY_SHAPE = ("crossentropy", "ce")


class TaskLoss:
    """A task's loss function without reduction, called as Keras calls it.

    A `keras.losses.Loss` is called through its `call` (its own rank matching
    included, reduction left out); a function gets the rank matching that Keras's
    `compile` adds around it (`LossFunctionWrapper`).

    Attributes:
        loss: the resolved loss (`None` for `"crossentropy"`, resolved by shapes).
        identifier: what the user gave.
    """

    def __init__(self, loss, identifier):
        self.loss = loss
        self.identifier = identifier

    def sparse_categorical(self, label_shape=None, output_shape=None):
        """Whether the loss takes class ids (sparse categorical crossentropy)."""
        if self.loss is None:
            if label_shape is None or output_shape is None:
                return False
            return _shapes_say_sparse(label_shape, output_shape)
        if isinstance(self.loss, keras.losses.SparseCategoricalCrossentropy):
            return True
        return self.loss is keras.losses.sparse_categorical_crossentropy

    def ignore_class(self):
        """The `ignore_class` of a `SparseCategoricalCrossentropy`, or `None`."""
        return getattr(self.loss, "ignore_class", None)

    def __call__(self, y_true, y_pred):
        loss = self.loss
        if loss is None:
            loss = _crossentropy_by_shape(y_true.shape, y_pred.shape)
        if isinstance(loss, keras.losses.Loss):
            return loss.call(y_true, y_pred)
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return loss(y_true, y_pred)


def _shapes_say_sparse(label_shape, output_shape):
    # keras/src/trainers/compile_utils.py `is_binary_or_sparse_categorical`.
    label_shape, output_shape = tuple(label_shape), tuple(output_shape)
    if not output_shape or output_shape[-1] == 1:
        return False
    return len(label_shape) < len(output_shape) or (bool(label_shape) and label_shape[-1] == 1)


def _crossentropy_by_shape(label_shape, output_shape):
    # As `keras.Model.compile(loss="crossentropy")` (compile_utils.get_loss).
    if tuple(output_shape) and output_shape[-1] == 1:
        return keras.losses.binary_crossentropy
    if _shapes_say_sparse(label_shape, output_shape):
        return keras.losses.sparse_categorical_crossentropy
    return keras.losses.categorical_crossentropy


def squeeze_or_expand_to_same_rank(y_true, y_pred):
    """Keras's rank matching of labels and predictions before a loss function.

    The same rule as `keras/src/losses/loss.py` `squeeze_or_expand_to_same_rank`
    (private there): when the ranks differ by one and the longer one ends in an
    axis of size 1, a rank-1 tensor gets that axis, otherwise the axis is dropped.
    """
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            y_pred = ops.expand_dims(y_pred, axis=-1)
        else:
            y_true = ops.squeeze(y_true, axis=-1)
    elif pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            y_true = ops.expand_dims(y_true, axis=-1)
        else:
            y_pred = ops.squeeze(y_pred, axis=-1)
    return y_true, y_pred


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
    y_true = ops.convert_to_tensor(y_true)
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


def validate_labels(y, task_names, output_shapes, task_losses=None):
    """Checks a label structure against the model's tasks before any step runs.

    Args:
        y: the labels: a dict keyed by task name (arrays, tensors or specs).
        task_names: the model's task names, in order.
        output_shapes: dict of each task's prediction shape.
        task_losses: optional dict of each task's `TaskLoss`: labels with the
            output's shape (one-hot) for a sparse loss are rejected.

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
        loss = None if task_losses is None else task_losses.get(name)
        if (
            loss is not None
            and loss.sparse_categorical(label_shape, output_shape)
            and len(label_shape) == len(output_shape)
            and output_shape[-1] not in (None, 1)
            and _dims_compatible(label_shape[1:], output_shape[1:])
        ):
            raise ValueError(
                f"Labels for task '{name}' have the shape of its head's output "
                f"{output_shape}, as one-hot labels do, but the task's loss is sparse "
                "categorical crossentropy, which takes class ids (shape "
                f"{output_shape[:-1]}). Pass class ids (`np.argmax(labels, axis=-1)`), or "
                "use `keras.losses.CategoricalCrossentropy` for one-hot labels. "
                f"Received: y['{name}'].shape={label_shape}"
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
