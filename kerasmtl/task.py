"""The task specification: one name used as the key everywhere."""

import re

import keras

_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@keras.saving.register_keras_serializable(package="kerasmtl")
class Task:
    """One task of a multi-task model: a name, a head, a loss, metrics and a weight.

    The task name is the one key used everywhere: the head layer's name, the
    model's output dict key, the key of the label dict given to `fit`, the key of
    the `loss`, `metrics` and `loss_weights` dicts of `compile`, `{name}_loss`
    and `{name}_weight` in the training logs, and the output name of the
    exported serving signature.

    **Missing labels.** A sample may have no label for this task. Mark it with
    `mask_value` (for example `-1` for class ids, or `255` for "ignore" pixels of a
    segmentation map); NaN (and infinite) labels of floating-point targets are
    always treated as missing. Missing labels add nothing to the task's loss or metrics: the task
    loss is the mean over the labelled elements only, and a batch with no label
    for a task adds exactly zero to the total loss. For a label with trailing
    components (a 4-d box, a one-hot vector) a sample counts as missing when any
    of its components is missing.

    Args:
        name: the task name: a letter followed by letters, digits or `_`, so it
            is a valid layer name, dict key and serving output name.
        head: what turns the shared features into this task's prediction: a
            Keras layer or model, an integer (a `Dense` layer with that many
            units, linear), or `None` for builders that make heads themselves.
            A head layer is renamed to the task name if it has not been built
            yet; otherwise its name must already be the task name.
        loss: the task's loss: a Keras loss name, a `keras.losses.Loss`
            instance, or a function `loss(y_true, y_pred)` returning one value
            per sample (or per element, e.g. per pixel). Can also be given to
            `MultiTaskModel.compile`.
        metrics: a list of Keras metrics (names or instances) for this task.
        loss_weight: the task's static starting weight in the total loss.
        mask_value: the label value that marks a missing label, or `None`.

    Example:

    >>> task = Task("digit", head=10,
    ...             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...             metrics=["accuracy"], mask_value=-1)
    >>> task.name
    'digit'
    """

    def __init__(
        self,
        name,
        head=None,
        loss=None,
        metrics=None,
        loss_weight=1.0,
        mask_value=None,
    ):
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise ValueError(
                "A task name must be a string made of a letter followed by letters, "
                "digits or '_' (it becomes a layer name, a dict key and a serving "
                f"output name). Received: name={name!r}"
            )
        if head is not None and not (
            isinstance(head, keras.layers.Layer)
            or (isinstance(head, int) and not isinstance(head, bool) and head > 0)
            or callable(head)
        ):
            raise TypeError(
                f"Task '{name}': `head` must be a Keras layer, a positive int (units of a "
                f"Dense layer), a callable or None. Received: head={head!r}"
            )
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        try:
            loss_weight = float(loss_weight)
        except (TypeError, ValueError):
            raise TypeError(
                f"Task '{name}': `loss_weight` must be a number. "
                f"Received: loss_weight={loss_weight!r}"
            ) from None
        self.name = name
        self.head = head
        self.loss = loss
        self.metrics = None if metrics is None else list(metrics)
        self.loss_weight = loss_weight
        self.mask_value = mask_value

    def build_head(self):
        """Returns the head as a layer named after the task."""
        head = self.head
        if head is None:
            raise ValueError(
                f"Task '{self.name}' has no head. Pass `head=` (a layer, or an int for a "
                "Dense layer with that many units)."
            )
        if isinstance(head, int):
            head = keras.layers.Dense(head, name=self.name)
        elif isinstance(head, keras.layers.Layer) and head.name != self.name:
            if head.built:
                raise ValueError(
                    f"Task '{self.name}': its head layer is already built under the name "
                    f"'{head.name}'. Name the head after the task (name='{self.name}') or "
                    f"pass an unbuilt layer. Received: head={head.name}"
                )
            head.name = self.name
        self.head = head
        return head

    def get_config(self):
        # The head is not part of the task's config: it lives in the model graph.
        return {
            "name": self.name,
            "loss": _serialize(self.loss),
            "metrics": None
            if self.metrics is None
            else [_serialize(metric) for metric in self.metrics],
            "loss_weight": self.loss_weight,
            "mask_value": self.mask_value,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = _deserialize(config.get("loss"))
        if config.get("metrics") is not None:
            config["metrics"] = [_deserialize(metric) for metric in config["metrics"]]
        return cls(**config)

    def __repr__(self):
        return (
            f"Task(name={self.name!r}, loss={self.loss!r}, metrics={self.metrics!r}, "
            f"loss_weight={self.loss_weight}, mask_value={self.mask_value!r})"
        )


def check_tasks(tasks):
    """Raises a clear error unless `tasks` is a non-empty list of `Task`s with unique names."""
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ValueError(
            f"`tasks` must be a non-empty list of `kerasmtl.Task`. Received: {tasks!r}"
        )
    for task in tasks:
        if not isinstance(task, Task):
            raise TypeError(f"`tasks` must be a list of `kerasmtl.Task`. Received: {task!r}")
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Task names must be unique. Received duplicates: {duplicates}")
    return names


def _serialize(obj):
    if obj is None or isinstance(obj, str):
        return obj
    return keras.saving.serialize_keras_object(obj)


def _deserialize(config):
    if config is None or isinstance(config, str):
        return config
    return keras.saving.deserialize_keras_object(config)
