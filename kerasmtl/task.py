"""The task specification: one name used as the key everywhere."""

import re

import keras

from kerasmtl.checks import check_number

_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

# Keras logs the total loss as `loss` and each validation value as `val_<key>`: a task
# called `loss`, or `val_a` (whose `val_a_loss` would be overwritten by task `a`'s
# validation loss), would make two values share one log key.
RESERVED_NAMES = ("loss",)
RESERVED_PREFIX = "val_"


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
            is a valid layer name, dict key and serving output name. `loss`
            and names starting with `val_` are reserved by Keras's log names.
        head: what turns the shared features into this task's prediction: a
            Keras layer or model (a template: each model built from the task
            gets its own copy, named after the task, with the template's
            weights if it is built), a factory `() -> layer` called once per
            model, an integer (a `Dense` layer with that many units, linear),
            or `None` for builders that make heads themselves.
        loss: the task's loss: a Keras loss name, a `keras.losses.Loss`
            instance, or a function `loss(y_true, y_pred)` returning one value
            per sample (or per element, e.g. per pixel). Can also be given to
            `MultiTaskModel.compile`.
        metrics: a list of Keras metrics (names or instances) for this task.
        loss_weight: the task's static starting weight in the total loss: a
            finite number >= 0.
        mask_value: the label value that marks a missing label, or `None`.

    A `Task` is an immutable description: building a model never changes it, so
    one task list can build several independent models. `task.replace(...)`
    makes a changed copy.

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
        check_task_name(name)
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
        loss_weight = check_number(loss_weight, "loss_weight", f"Task '{name}'")
        values = {
            "name": name,
            "head": head,
            "loss": loss,
            "metrics": None if metrics is None else tuple(metrics),
            "loss_weight": loss_weight,
            "mask_value": mask_value,
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key, value):
        raise AttributeError(
            f"Task '{self.name}' is immutable (a model built from it must not change when "
            f"it does). Make a changed copy with `task.replace({key}=...)`. "
            f"Received: task.{key}={value!r}"
        )

    def replace(self, **changes):
        """Returns a copy of the task with some fields changed (`name`, `head`, `loss`, ...)."""
        fields = {
            "name": self.name,
            "head": self.head,
            "loss": self.loss,
            "metrics": self.metrics,
            "loss_weight": self.loss_weight,
            "mask_value": self.mask_value,
        }
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ValueError(
                f"Unknown Task field(s) {unknown}. Fields: {sorted(fields)}. "
                f"Received: {sorted(changes)}"
            )
        return Task(**{**fields, **changes})

    def build_head(self):
        """Returns a new head layer named after the task; the task is left unchanged.

        Each call makes a layer of its own, so two models built from one task list
        have independent heads: an int gives a new `Dense`, a factory is called
        again, and a layer given as `head` is a template, copied from its config
        (with its weights, if it is built).
        """
        head = self.head
        if head is None:
            raise ValueError(
                f"Task '{self.name}' has no head. Pass `head=` (a layer, or an int for a "
                "Dense layer with that many units)."
            )
        if isinstance(head, int):
            return keras.layers.Dense(head, name=self.name)
        if isinstance(head, keras.layers.Layer):
            return _copy_layer(head, self.name)
        layer = head()
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"Task '{self.name}': the head factory must return a Keras layer. "
                f"Received: {layer!r}"
            )
        return layer if layer.name == self.name else _copy_layer(layer, self.name)

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


def check_task_name(name):
    """Raises a `ValueError` if a task name would collide with Keras's log names."""
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"The task name {name!r} collides with Keras's log names: Keras logs the total "
            f"loss as `loss` and every validation value as `val_<key>`, and task {name!r} "
            f"would log `{name}_loss`, `{name}_weight` and `{name}_<metric>`. Reserved: the "
            f"name{'s' if len(RESERVED_NAMES) > 1 else ''} {list(RESERVED_NAMES)} and names "
            f"starting with '{RESERVED_PREFIX}'. Rename the task (e.g. "
            f"'{_suggested_name(name)}'). Received: name={name!r}"
        )


def _suggested_name(name):
    if name.startswith(RESERVED_PREFIX) and len(name) > len(RESERVED_PREFIX):
        return f"{name[len(RESERVED_PREFIX):]}_val"
    return f"{name}_task"


def metric_log_name(metric):
    """The name Keras gives a metric given to `compile` (`"mae"`, `metric.name`, ...)."""
    if isinstance(metric, str):
        return metric
    if isinstance(metric, keras.metrics.Metric):
        return metric.name
    name = getattr(metric, "__name__", None)
    return name if name is not None else type(metric).__name__


def task_log_keys(task_name, metrics=None):
    """The log keys of one task: `{task}_loss`, `{task}_weight`, `{task}_{metric}`."""
    keys = [f"{task_name}_loss", f"{task_name}_weight"]
    keys += [f"{task_name}_{metric_log_name(metric)}" for metric in metrics or ()]
    return keys


def check_log_keys(task_metrics, model_keys=("loss",)):
    """Raises a `ValueError` if two values would share one log key.

    Args:
        task_metrics: dict `{task name: list of metrics}` in task order.
        model_keys: the keys the model itself logs (Keras's `loss`, a penalty, ...).

    Returns:
        A dict `{log key: task name}` of every task's keys.
    """
    owners = {key: "the model" for key in model_keys}
    keys_of_tasks = {}
    for name, metrics in task_metrics.items():
        for key in task_log_keys(name, metrics):
            if key in owners:
                first = owners[key]
                first = first if first == "the model" else f"task '{first}'"
                raise ValueError(
                    f"Task '{name}' would log '{key}', which {first} already logs, so one "
                    "value would overwrite the other in the logs. A task logs "
                    "`{task}_loss`, `{task}_weight` and `{task}_{metric}` for each of its "
                    f"metrics; the model logs {list(model_keys)}. Rename the task or the "
                    f"metric (`keras.metrics.X(name=...)`). Tasks: {list(task_metrics)}. "
                    f"Received: metrics of task '{name}'="
                    f"{[metric_log_name(m) for m in metrics or ()]}"
                )
            owners[key] = name
            keys_of_tasks[key] = name
    return keys_of_tasks


def _copy_layer(layer, name):
    """A new layer (or model) of `layer`'s class and config, named `name`, with its weights."""
    config = {**layer.get_config(), "name": name}
    copy = layer.__class__.from_config(config)
    if layer.built and layer.weights:
        build_config = layer.get_build_config()
        if build_config is None:
            raise ValueError(
                f"The head '{layer.name}' is built but cannot say its input shape, so "
                f"its weights cannot be copied to task '{name}'. Pass an unbuilt layer "
                f"or a factory. Received: head={layer.name}"
            )
        copy.build_from_config(build_config)
        copy.set_weights(layer.get_weights())
    return copy


def _serialize(obj):
    if obj is None or isinstance(obj, str):
        return obj
    return keras.saving.serialize_keras_object(obj)


def _deserialize(config):
    if config is None or isinstance(config, str):
        return config
    return keras.saving.deserialize_keras_object(config)
