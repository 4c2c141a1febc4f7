"""Per-task evaluation: task reports, delta-m, and single-task baselines.

- `task_report` evaluates a `MultiTaskModel` and returns a per-task table
  `{task: {"loss": ..., metric: ...}}`; `report_from_logs` builds the same table
  from `evaluate` or `fit` logs, and `format_report` renders it as markdown.
- `delta_m` is the multi-task performance measure of Maninis et al. (CVPR 2019):
  the mean relative change of each task's metrics against single-task models.
- `train_single_task_baselines` trains those single-task models: one per task,
  with the multi-task model's trunk factory and the same training budget.
"""

import math

import keras
import numpy as np

from kerasmtl.multi_task_model import MultiTaskModel

# Metric names whose direction `delta_m` knows. A metric matches a name when it
# equals it or ends with `_{name}` (`sparse_categorical_accuracy`, `val_loss`).
HIGHER_IS_BETTER = (
    "accuracy",
    "acc",
    "auc",
    "iou",
    "miou",
    "precision",
    "recall",
    "f1",
    "f1_score",
    "fbeta_score",
    "r2",
    "r2_score",
)
LOWER_IS_BETTER = (
    "loss",
    "mse",
    "mae",
    "rmse",
    "mape",
    "msle",
    "error",
    "mean_squared_error",
    "mean_absolute_error",
    "root_mean_squared_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "crossentropy",
)
# Per-task log entries that describe training, not performance.
_NOT_PERFORMANCE = ("weight",)


def report_from_logs(logs, task_names, prefix="", include_weights=False):
    """Turns Keras logs into a per-task table `{task: {metric: value}}`.

    Log keys `{task}_{metric}` (as a `MultiTaskModel` writes them: `{task}_loss`,
    `{task}_accuracy`, ...) become `report[task][metric]`. A key matching two
    task names (tasks `a` and `a_b`, key `a_b_loss`) goes to the longer one. Keys
    of no task (the total `loss`) are left out, and so are `{task}_weight`
    entries unless `include_weights` is true.

    Args:
        logs: a dict of logs, e.g. `model.evaluate(..., return_dict=True)`, the
            `logs` of a callback, or `history.history` (lists: the last value is
            taken).
        task_names: the task names, e.g. `model.task_names`.
        prefix: a prefix of the keys to read, e.g. `"val_"` for the validation
            entries of `history.history`.
        include_weights: whether to keep the `{task}_weight` entries.

    Returns:
        A dict keyed by task name (in the order of `task_names`) of dicts
        `{metric: float}`, `loss` first.

    Example:

    >>> report_from_logs({"loss": 0.9, "a_loss": 0.5, "a_mae": 0.6, "b_loss": 0.4},
    ...                  ["a", "b"])
    {'a': {'loss': 0.5, 'mae': 0.6}, 'b': {'loss': 0.4}}
    """
    if not isinstance(logs, dict):
        raise TypeError(
            "`logs` must be a dict of Keras logs, e.g. "
            "`model.evaluate(x, y, return_dict=True)` or `history.history`. "
            f"Received: logs of type {type(logs).__name__}"
        )
    task_names = list(task_names)
    by_length = sorted(task_names, key=len, reverse=True)
    report = {name: {} for name in task_names}
    for key, value in logs.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        key = key[len(prefix) :]
        if prefix == "" and key.startswith("val_"):
            continue
        task = next((name for name in by_length if key.startswith(name + "_")), None)
        if task is None:
            continue
        metric = key[len(task) + 1 :]
        if metric in _NOT_PERFORMANCE and not include_weights:
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            value = value[-1]
        report[task][metric] = float(value)
    return {
        name: dict(sorted(metrics.items(), key=lambda item: item[0] != "loss"))
        for name, metrics in report.items()
    }


def task_report(model, x=None, y=None, batch_size=None, sample_weight=None, steps=None):
    """Evaluates a multi-task model and returns a per-task table of losses and metrics.

    Runs `model.evaluate(..., return_dict=True)` and splits its logs by task
    with `report_from_logs`: each task's `loss` (its unweighted loss, averaged
    over the labelled samples) and each of its metrics.

    Args:
        model: a compiled `MultiTaskModel`.
        x: inputs, or a `tf.data.Dataset` of `(inputs, labels)`.
        y: a label dict keyed by task name (`None` with a dataset).
        batch_size: as in `keras.Model.evaluate`.
        sample_weight: as in `keras.Model.evaluate`.
        steps: as in `keras.Model.evaluate`.

    Returns:
        A dict keyed by task name of dicts `{metric: float}`, e.g.
        `{"left": {"loss": 0.31, "accuracy": 0.92}, ...}`.

    Example:

    ```python
    report = task_report(model, x_test, y_test, batch_size=256)
    print(format_report(report))
    ```
    """
    task_names = _task_names_of(model)
    logs = model.evaluate(
        x,
        y,
        batch_size=batch_size,
        sample_weight=sample_weight,
        steps=steps,
        verbose=0,
        return_dict=True,
    )
    return report_from_logs(logs, task_names)


def format_report(report, baseline=None, higher_is_better=None, metrics=None, precision=4):
    """Renders a per-task table as markdown, optionally against single-task baselines.

    Args:
        report: a per-task table `{task: {metric: value}}`, from `task_report`.
        baseline: optional single-task results in the same form (e.g. from
            `train_single_task_baselines`). Adds a `{metric} (single-task)`
            column after each baseline metric, a `delta (%)` column (the task's
            relative change as in `delta_m`) and a final delta-m line.
        higher_is_better: directions for the delta columns, as in `delta_m`.
        metrics: the metric names the delta columns compare, as in `delta_m`.
        precision: decimals of the values.

    Returns:
        A markdown string: a header, a separator and one row per task.

    Example:

    >>> print(format_report({"a": {"loss": 0.5, "accuracy": 0.9}}))
    | task | loss | accuracy |
    |---|---|---|
    | a | 0.5000 | 0.9000 |
    """
    _check_nested(report, "report")
    columns = []
    for metrics_of_task in report.values():
        for name in metrics_of_task:
            if name not in columns:
                columns.append(name)
    header = ["task"]
    cells = {task: [task] for task in report}
    deltas = None
    if baseline is not None:
        _check_nested(baseline, "baseline")
        deltas = task_deltas(report, baseline, higher_is_better, metrics=metrics)
        baseline_columns = {name for values in baseline.values() for name in values}
    for name in columns:
        header.append(name)
        for task, values in report.items():
            cells[task].append(_format_value(values.get(name), precision))
        if baseline is not None and name in baseline_columns:
            header.append(f"{name} (single-task)")
            for task in report:
                cells[task].append(_format_value(baseline.get(task, {}).get(name), precision))
    if deltas is not None:
        header.append("delta (%)")
        for task in report:
            value = deltas.get(task)
            cells[task].append("" if value is None else f"{value:+.2f}")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(cells[task]) + " |" for task in report]
    if deltas is not None:
        overall = float(np.mean(list(deltas.values())))
        lines += ["", f"delta-m vs single-task: {overall:+.2f}%"]
    return "\n".join(lines)


def _format_value(value, precision):
    return "" if value is None else f"{value:.{precision}f}"


def metric_direction(metric, task=None, higher_is_better=None):
    """Returns whether a higher value of a metric is better.

    The one table of metric directions of the kit: `delta_m`, `task_deltas`
    and `kerasmtl.tuning`'s objective all read it.

    Args:
        metric: a metric name, such as `"accuracy"`, `"sparse_categorical_accuracy"`,
            `"mse"` or `"loss"`.
        task: the task the metric belongs to, to look up `higher_is_better`
            keys of the form `{task}_{metric}` or `{task}`.
        higher_is_better: `None` to infer the direction from the name, a bool for
            every metric, or a dict whose keys are `{task}_{metric}`, task names
            or metric names (looked up in that order; names it lacks are
            inferred).

    Returns:
        `True` if higher is better (accuracy, AUC, IoU, ...), `False` if lower is
        better (loss, MSE, MAE, RMSE, ...).

    Raises:
        ValueError: for a metric name of unknown direction.
        TypeError: for a `higher_is_better` that is not None, a bool or a dict.

    Example:

    >>> metric_direction("sparse_categorical_accuracy")
    True
    >>> metric_direction("mae", task="depth", higher_is_better={"depth_mae": True})
    True
    """
    if isinstance(higher_is_better, bool):
        return higher_is_better
    if isinstance(higher_is_better, dict):
        keys = (f"{task}_{metric}", task, metric)
        if task is None or metric is None:
            keys = (metric if task is None else task,)
        for key in keys:
            if key in higher_is_better:
                return bool(higher_is_better[key])
    elif higher_is_better is not None:
        raise TypeError(
            "`higher_is_better` must be None (infer from metric names), a bool, or a "
            "dict keyed by `{task}_{metric}`, task or metric name. "
            f"Received: higher_is_better={higher_is_better!r}"
        )
    if metric is None:
        raise ValueError(
            f"Cannot tell whether a higher result of task '{task}' is better: it is "
            "given without a metric name. Key results by `{task}_{metric}` (e.g. "
            f"'{task}_accuracy') or pass `higher_is_better`, e.g. "
            f"higher_is_better={{'{task}': True}}. Received: key={task!r}"
        )
    name = str(metric).lower()
    for known, higher in _known_directions():
        if name == known or name.endswith("_" + known):
            return higher
    raise ValueError(
        f"Cannot tell whether a higher '{metric}' is better. Known higher-is-better "
        f"metrics: {list(HIGHER_IS_BETTER)}; lower-is-better: {list(LOWER_IS_BETTER)} "
        "(a name may also end with `_<known name>`). Pass `higher_is_better`, e.g. "
        f"higher_is_better={{'{metric}': True}}. Received: metric={metric!r}"
    )


def _known_directions():
    # Longest names first, so that `mean_squared_error` is not read as `error`.
    pairs = [(name, True) for name in HIGHER_IS_BETTER]
    pairs += [(name, False) for name in LOWER_IS_BETTER]
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def task_deltas(multi, single, higher_is_better=None, task_names=None, metrics=None):
    """Each task's relative change against its single-task baseline, in percent.

    For task t with metrics m = 1..M_t:
    `100 / M_t * sum_m (-1)^l_m (M_multi,m - M_single,m) / M_single,m`, with
    `l_m = 1` where lower is better. `delta_m` is the mean of these values.
    Arguments as in `delta_m`.

    Returns:
        A dict `{task: percent}` in the task order of `single`.
    """
    entries = _comparison_entries(multi, single, task_names, metrics)
    directions = _directions(entries, higher_is_better)
    per_task = {}
    for (task, metric), (value, base) in entries.items():
        if base == 0.0:
            where = task if metric is None else f"{task}_{metric}"
            raise ValueError(
                f"The single-task baseline of '{where}' is 0, so the relative change of "
                f"task '{task}' is undefined. delta-m divides by the baseline; compare a "
                "metric with a non-zero baseline, or leave it out with `metrics=`. "
                f"Received: single['{where}']={base}"
            )
        sign = 1.0 if directions[(task, metric)] else -1.0
        per_task.setdefault(task, []).append(sign * (value - base) / base)
    return {task: 100.0 * float(np.mean(changes)) for task, changes in per_task.items()}


def delta_m(multi, single, higher_is_better=None, task_names=None, metrics=None):
    """The multi-task performance delta-m, in percent, against single-task models.

    delta-m (Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR
    2019; as computed by Vandenhende et al., "Multi-Task Learning for Dense
    Prediction Tasks: A Survey", TPAMI 2021, and LibMTL) is the mean over tasks
    of each task's mean relative change over its metrics:

        delta_m = 100 / T * sum_t 1 / M_t * sum_m (-1)^l_m (M_multi - M_single) / M_single

    with `l_m = 1` where lower is better, so a positive delta-m means the
    multi-task model beats the single-task models on average.

    The baseline here is a set of real single-task models (see
    `train_single_task_baselines`: one per task, same trunk, same budget), as
    in Maninis et al. and Vandenhende et al. LibMTL instead measures against a
    base result it records from its own run (at epoch 0 by default), which is
    not the same number.

    Every entry of `single` is compared (optionally only the metrics named in
    `metrics`); `multi` may hold more entries (weights, other metrics, the
    total loss), which are ignored.

    Args:
        multi: the multi-task model's results, in one of these forms:
            a per-task table `{task: {metric: value}}` (`task_report`);
            a flat dict keyed by `{task}_{metric}` (`evaluate` logs); or a flat
            dict keyed by task, one value per task (then give
            `higher_is_better`).
        single: the single-task results, in one of the same forms.
        higher_is_better: `None` to infer each direction from the metric name
            (accuracy, AUC, IoU: higher is better; loss, MSE, MAE, RMSE: lower;
            see `metric_direction`), a bool for every entry, or a dict whose keys
            are `{task}_{metric}`, task names or metric names (looked up in that
            order).
        task_names: the task names, needed only to split flat `{task}_{metric}`
            keys when a task or metric name is ambiguous; by default a flat key
            is split at the longest known metric name it ends with
            (`left_accuracy` -> task `left`, metric `accuracy`).
        metrics: optional metric names to compare (e.g. `["accuracy"]`); by
            default every entry of `single`. Losses are usually left out of
            delta-m: pass the task metrics here when `single` holds losses too.

    Returns:
        delta-m as a Python float, in percent.

    Raises:
        ValueError: if an entry's direction is unknown (naming the metric and
            listing the known ones), if a baseline is 0 (naming the task), or if
            an entry of `single` is missing from `multi`.

    Example:

    >>> delta_m({"left": {"accuracy": 0.75}, "right": {"mse": 0.75}},
    ...         {"left": {"accuracy": 0.50}, "right": {"mse": 1.00}})
    37.5
    """
    deltas = task_deltas(multi, single, higher_is_better, task_names=task_names, metrics=metrics)
    return float(np.mean(list(deltas.values())))


def _comparison_entries(multi, single, task_names, metrics):
    """Returns `{(task, metric): (multi value, single value)}` for every compared entry."""
    single_entries = _flatten_results(single, "single", task_names)
    multi_entries = _flatten_results(multi, "multi", task_names)
    if metrics is not None:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        single_entries = {key: value for key, value in single_entries.items() if key[1] in metrics}
    if not single_entries:
        raise ValueError(
            "Nothing to compare: `single` has no entries"
            + ("" if metrics is None else f" for the metrics {metrics}")
            + f". Received: single={single!r}"
        )
    entries = {}
    for key, base in single_entries.items():
        if key not in multi_entries:
            raise ValueError(
                f"`multi` has no result for {_entry_name(key)!r}, which `single` has. "
                f"Entries of multi: {[_entry_name(k) for k in multi_entries]}. "
                f"Received: single entries={[_entry_name(k) for k in single_entries]}"
            )
        entries[key] = (multi_entries[key], base)
    return entries


def _entry_name(key):
    task, metric = key
    return task if metric is None else f"{task}_{metric}"


def _flatten_results(results, arg_name, task_names):
    if not isinstance(results, dict) or not results:
        raise TypeError(
            f"`{arg_name}` must be a non-empty dict: a per-task table "
            "{task: {metric: value}}, or a flat dict keyed by task or `{task}_{metric}`. "
            f"Received: {arg_name}={results!r}"
        )
    flat = {}
    for key, value in results.items():
        if isinstance(value, dict):
            for metric, metric_value in value.items():
                flat[(key, metric)] = _to_float(metric_value, f"{arg_name}[{key!r}][{metric!r}]")
            continue
        if key == "loss" or key.endswith("_" + _NOT_PERFORMANCE[0]):
            # The weighted total loss and loss weights of `evaluate` logs.
            continue
        flat[_split_key(key, task_names)] = _to_float(value, f"{arg_name}[{key!r}]")
    return flat


def _split_key(key, task_names):
    if task_names is not None:
        for name in sorted(task_names, key=len, reverse=True):
            if key == name:
                return (name, None)
            if key.startswith(name + "_"):
                return (name, key[len(name) + 1 :])
        return (key, None)
    for known, _ in _known_directions():
        if key.endswith("_" + known) and len(key) > len(known) + 1:
            return (key[: -len(known) - 1], known)
    return (key, None)


def _to_float(value, where):
    try:
        value = float(np.asarray(value))
    except (TypeError, ValueError):
        raise TypeError(f"Results must be numbers. Received: {where}={value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"Results must be finite numbers. Received: {where}={value}")
    return value


def _directions(entries, higher_is_better):
    return {
        (task, metric): metric_direction(metric, task, higher_is_better)
        for task, metric in entries
    }


def _check_nested(report, arg_name):
    if not isinstance(report, dict) or not all(isinstance(v, dict) for v in report.values()):
        raise TypeError(
            f"`{arg_name}` must be a per-task table {{task: {{metric: value}}}}, as "
            f"`task_report` returns. Received: {arg_name}={report!r}"
        )


def _task_names_of(model):
    if not isinstance(model, MultiTaskModel):
        raise TypeError(
            "Expected a `kerasmtl.MultiTaskModel`, whose logs are keyed by task name. "
            f"Received: model of type {type(model).__name__}"
        )
    return model.task_names


def train_single_task_baselines(
    build_fn,
    x,
    y=None,
    task_names=None,
    *,
    epochs=1,
    batch_size=None,
    optimizer="adam",
    validation_data=None,
    evaluation_data=None,
    seed=0,
    fit_kwargs=None,
    compile_kwargs=None,
    verbose=0,
    return_models=False,
):
    """Trains one single-task model per task, with the same trunk and budget, and evaluates it.

    The single-task baselines of delta-m (Maninis et al., "Attentive
    Single-Tasking of Multiple Tasks", CVPR 2019; Vandenhende et al., TPAMI
    2021): for each task, `build_fn([task])` builds a model from the same trunk
    factory as the multi-task model, which is trained with the same budget
    (epochs, batch size, a fresh optimizer from the same factory, the same seed)
    on that task's labels only, then evaluated. Unlike LibMTL, which compares
    against a base result recorded from its own run, delta-m here compares
    against these real single-task models.

    Args:
        build_fn: a function `build_fn(task_names) -> MultiTaskModel` that
            builds a fresh model with one head per given task, from a fresh
            trunk, e.g. `lambda names: kerasmtl.hard_sharing(inputs,
            make_trunk(), [make_task(name) for name in names])`.
            It may return the model compiled; otherwise it is compiled here with
            `optimizer` and `compile_kwargs`.
        x: training inputs (arrays), or a `tf.data.Dataset` of
            `(inputs, labels)` (or `(inputs, labels, sample_weight)`) with label
            dicts keyed by task name; other tasks' labels are dropped.
        y: the training label dict keyed by task name (`None` with a dataset).
        task_names: the tasks to train a baseline for; defaults to the keys of
            `y` (or of the dataset's labels).
        epochs: the number of epochs, as for the multi-task model.
        batch_size: the batch size, as for the multi-task model (`None` with a
            dataset).
        optimizer: the optimizer of models that `build_fn` returns uncompiled:
            a name, a config dict, a function returning a fresh optimizer, or an
            optimizer instance (each model gets a fresh copy from its config).
        validation_data: optional `(x, y)` or dataset passed to `fit` (labels
            restricted to the task).
        evaluation_data: the `(x, y)` or dataset each model is evaluated on;
            defaults to `validation_data`, else the training data.
        seed: the random seed set (`keras.utils.set_random_seed`) before each
            model is built, so every baseline starts as a model built with that
            seed would.
        fit_kwargs: other `fit` arguments (e.g. `{"shuffle": False}`).
        compile_kwargs: other `compile` arguments for uncompiled models.
        verbose: `fit` verbosity.
        return_models: if true, also return the trained models.

    Returns:
        A dict keyed by task name of that task's evaluation table
        `{metric: value}` (its `loss` and metrics, as in `task_report`); with
        `return_models=True`, a tuple `(results, models)` with `models` keyed by
        task name too.

    Example:

    ```python
    def build(names):
        return kerasmtl.hard_sharing({"image": (12, 12, 1)}, make_trunk(),
                                     [make_task(name) for name in names])

    single = train_single_task_baselines(
        build, x_train, y_train, epochs=8, batch_size=64,
        optimizer=lambda: keras.optimizers.Adam(1e-3),
        evaluation_data=(x_test, y_test))
    multi = task_report(model, x_test, y_test)
    print(format_report(multi, single, metrics=["accuracy"]))
    ```
    """
    if not callable(build_fn):
        raise TypeError(
            "`build_fn` must be a function `build_fn(task_names) -> MultiTaskModel`. "
            f"Received: build_fn={build_fn!r}"
        )
    is_dataset = _is_dataset(x)
    if is_dataset and y is not None:
        raise ValueError(
            "With a dataset as `x`, the labels come from the dataset: leave `y` as None. "
            f"Received: y of type {type(y).__name__}"
        )
    available = _label_keys(x, y, is_dataset)
    if task_names is None:
        task_names = available
    elif isinstance(task_names, str):
        task_names = [task_names]
    task_names = list(task_names)
    unknown = [name for name in task_names if name not in available]
    if unknown:
        raise ValueError(
            f"No training labels for task(s) {unknown}. Label keys: {available}. "
            f"Received: task_names={task_names}"
        )
    if evaluation_data is None:
        evaluation_data = (
            validation_data if validation_data is not None else (x if is_dataset else (x, y))
        )
    results, models = {}, {}
    for name in task_names:
        keras.utils.set_random_seed(seed)
        model = build_fn([name])
        if not isinstance(model, MultiTaskModel) or model.task_names != [name]:
            raise ValueError(
                f"`build_fn([{name!r}])` must return a MultiTaskModel with the one task "
                f"'{name}'. Received: "
                + (
                    f"a model with tasks {model.task_names}"
                    if isinstance(model, MultiTaskModel)
                    else f"an object of type {type(model).__name__}"
                )
            )
        if not model.compiled:
            model.compile(optimizer=_fresh_optimizer(optimizer), **(compile_kwargs or {}))
        model.fit(
            *_select(x, None if is_dataset else y, name),
            epochs=epochs,
            batch_size=batch_size,
            validation_data=None
            if validation_data is None
            else _select_pair(validation_data, name),
            verbose=verbose,
            **(fit_kwargs or {}),
        )
        eval_x, eval_y = _select_pair(evaluation_data, name)
        logs = model.evaluate(
            eval_x,
            eval_y,
            batch_size=None if _is_dataset(eval_x) else batch_size,
            verbose=0,
            return_dict=True,
        )
        results[name] = report_from_logs(logs, [name])[name]
        models[name] = model
    return (results, models) if return_models else results


def _fresh_optimizer(optimizer):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    if isinstance(optimizer, (str, dict)):
        return keras.optimizers.get(optimizer)
    if callable(optimizer):
        return optimizer()
    raise TypeError(
        "`optimizer` must be an optimizer name, config dict, instance, or a function "
        f"returning a fresh optimizer. Received: optimizer={optimizer!r}"
    )


def _is_dataset(data):
    return hasattr(data, "element_spec") and hasattr(data, "map")


def _label_keys(x, y, is_dataset):
    if is_dataset:
        spec = x.element_spec
        labels = spec[1] if isinstance(spec, (tuple, list)) and len(spec) >= 2 else None
    else:
        labels = y
    if not isinstance(labels, dict):
        raise ValueError(
            "Training labels must be a dict keyed by task name "
            "(for a dataset: elements `(inputs, {task: label})`). "
            f"Received: labels of type {type(labels).__name__}"
        )
    return list(labels)


def _select(x, y, name):
    """Returns `(x, y)` for `fit`, with the labels of task `name` only."""
    if _is_dataset(x):

        def keep_task(inputs, labels, *rest):
            return (inputs, {name: labels[name]}, *rest)

        return x.map(keep_task), None
    return x, {name: y[name]}


def _select_pair(data, name):
    if _is_dataset(data):
        return _select(data, None, name)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "Validation and evaluation data must be a tuple `(x, y)` with a label dict, or "
            f"a dataset. Received: data of type {type(data).__name__}"
        )
    x, y = data
    if not isinstance(y, dict) or name not in y:
        raise ValueError(
            f"The validation or evaluation labels must be a dict with a key for task "
            f"'{name}'. Received: "
            + (f"keys {list(y)}" if isinstance(y, dict) else f"y of type {type(y).__name__}")
        )
    return x, {name: y[name]}
