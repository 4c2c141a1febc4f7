"""Plots of multi-task training: loss-weight trajectories and per-task learning curves.

Both functions read the logs a `MultiTaskModel` writes (`{task}_loss`,
`{task}_weight`, `val_{task}_loss`) from a `keras.callbacks.History`, its
`.history` dict, or a CSV file written by `keras.callbacks.CSVLogger`, and write
a PNG. They need matplotlib (`pip install "kerasmtl[plots]"`), imported only
when a plot is drawn; the Agg backend is used, so no display is needed.
"""

import csv
import math
import os

import keras

_WEIGHT_SUFFIX = "_weight"
_LOSS_SUFFIX = "_loss"
_VALIDATION_PREFIX = "val_"


def load_history(history_or_csv):
    """Returns training logs as a dict `{key: [value per epoch]}`.

    Args:
        history_or_csv: a `keras.callbacks.History` (as `fit` returns), its
            `.history` dict, or the path of a CSV file written by
            `keras.callbacks.CSVLogger`.

    Returns:
        A dict of lists of floats, one value per epoch; the CSV's `epoch`
        column is kept as `epoch`. Empty CSV cells become NaN.
    """
    if isinstance(history_or_csv, keras.callbacks.History):
        logs = history_or_csv.history
    elif isinstance(history_or_csv, dict):
        logs = history_or_csv
    elif isinstance(history_or_csv, (str, os.PathLike)):
        return _read_csv(history_or_csv)
    else:
        raise TypeError(
            "Expected a `keras.callbacks.History`, its `.history` dict, or the path of a "
            "CSV file written by `keras.callbacks.CSVLogger`. "
            f"Received: history_or_csv of type {type(history_or_csv).__name__}"
        )
    return {key: [_to_float(value) for value in values] for key, values in logs.items()}


def _read_csv(path):
    if not os.path.isfile(path):
        raise ValueError(
            f"No CSV file at {os.fspath(path)!r}. Expected a file written by "
            f"`keras.callbacks.CSVLogger`. Received: history_or_csv={os.fspath(path)!r}"
        )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(
            f"The CSV file {os.fspath(path)!r} has no epoch rows. "
            f"Received: history_or_csv={os.fspath(path)!r}"
        )
    return {key: [_to_float(row.get(key)) for row in rows] for key in rows[0] if key}


def _to_float(value):
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _epochs(logs):
    length = max(len(values) for values in logs.values())
    if "epoch" in logs and len(logs["epoch"]) == length:
        # CSVLogger counts epochs from 0.
        return [value + 1 for value in logs["epoch"]]
    return list(range(1, length + 1))


def _weight_tasks(logs):
    return [
        key[: -len(_WEIGHT_SUFFIX)]
        for key in logs
        if key.endswith(_WEIGHT_SUFFIX)
        and not key.startswith(_VALIDATION_PREFIX)
        and len(key) > len(_WEIGHT_SUFFIX)
    ]


def plot_loss_weights(history_or_csv, path, tasks=None, title="Loss weights"):
    """Plots each task's loss-weight trajectory over epochs and writes a PNG.

    Reads the `{task}_weight` entries that a `MultiTaskModel` logs (the mean
    effective weight of the task in each epoch, set by the weighting strategy).

    Args:
        history_or_csv: a `keras.callbacks.History`, its `.history` dict, or
            the path of a `keras.callbacks.CSVLogger` CSV file.
        path: the PNG file to write.
        tasks: the task names to plot; defaults to every task with a
            `{task}_weight` entry.
        title: the figure title.

    Returns:
        `path`.

    Raises:
        ValueError: if the logs have no `{task}_weight` entries (or none for a
            requested task), listing the keys they have.

    Example:

    ```python
    history = model.fit(x, y, epochs=5)
    plot_loss_weights(history, "loss_weights.png")
    ```
    """
    logs = load_history(history_or_csv)
    available = _weight_tasks(logs)
    if not available:
        raise ValueError(
            "The logs have no `{task}_weight` entries, which a `kerasmtl.MultiTaskModel` "
            "writes for each task during `fit`. Available keys: "
            f"{sorted(logs)}. Received: history_or_csv={_describe(history_or_csv)}"
        )
    tasks = _check_tasks(tasks, available, _WEIGHT_SUFFIX, logs)
    plt = _pyplot()
    epochs = _epochs(logs)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for task in tasks:
        values = logs[task + _WEIGHT_SUFFIX]
        axis.plot(epochs[: len(values)], values, marker="o", label=task)
    _integer_epochs(axis)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss weight")
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_learning_curves(history_or_csv, path, tasks=None, title="Per-task learning curves"):
    """Plots each task's training and validation loss over epochs and writes a PNG.

    One panel per task with `{task}_loss` and, where logged, `val_{task}_loss`
    (the unweighted task losses of a `MultiTaskModel`).

    Args:
        history_or_csv: a `keras.callbacks.History`, its `.history` dict, or
            the path of a `keras.callbacks.CSVLogger` CSV file.
        path: the PNG file to write.
        tasks: the task names to plot; defaults to the tasks with a
            `{task}_weight` entry, else every `{task}_loss` entry.
        title: the figure title.

    Returns:
        `path`.

    Raises:
        ValueError: if the logs have no per-task loss (or none for a
            requested task), listing the keys they have.

    Example:

    ```python
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=5)
    plot_learning_curves(history, "learning_curves.png")
    ```
    """
    logs = load_history(history_or_csv)
    available = [task for task in _weight_tasks(logs) if task + _LOSS_SUFFIX in logs] or [
        key[: -len(_LOSS_SUFFIX)]
        for key in logs
        if key.endswith(_LOSS_SUFFIX)
        and not key.startswith(_VALIDATION_PREFIX)
        and len(key) > len(_LOSS_SUFFIX)
    ]
    if not available:
        raise ValueError(
            "The logs have no per-task `{task}_loss` entries, which a "
            "`kerasmtl.MultiTaskModel` writes for each task. Available keys: "
            f"{sorted(logs)}. Received: history_or_csv={_describe(history_or_csv)}"
        )
    tasks = _check_tasks(tasks, available, _LOSS_SUFFIX, logs)
    plt = _pyplot()
    epochs = _epochs(logs)
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 0.6, 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        curves = (("", "train", "-o"), (_VALIDATION_PREFIX, "validation", "--s"))
        for prefix, label, style in curves:
            key = prefix + task + _LOSS_SUFFIX
            if key in logs:
                values = logs[key]
                axis.plot(epochs[: len(values)], values, style, label=label, markersize=4)
        axis.set_title(task)
        _integer_epochs(axis)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0][0].set_ylabel("task loss")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _check_tasks(tasks, available, suffix, logs):
    if tasks is None:
        return available
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    missing = [task for task in tasks if task + suffix not in logs]
    if missing:
        raise ValueError(
            f"No `{{task}}{suffix}` entries for task(s) {missing}. Tasks in the logs: "
            f"{available}; available keys: {sorted(logs)}. Received: tasks={tasks}"
        )
    return tasks


def _integer_epochs(axis):
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _describe(history_or_csv):
    if isinstance(history_or_csv, (str, os.PathLike)):
        return repr(os.fspath(history_or_csv))
    return type(history_or_csv).__name__


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            'Plotting needs matplotlib. Install it with `pip install "kerasmtl[plots]"`.'
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
