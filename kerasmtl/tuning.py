"""Hyper-parameter search for multi-task models with keras-tuner.

`MultiTaskHyperModel` is a `keras_tuner.HyperModel` whose search space covers
how tasks are balanced (the weighting strategy, each strategy's own
hyper-parameters, static per-task weights) and what the network is (trunk and
head sizes, the learning rate). Its objective, `val_delta_m`, is one scalar
that is fair across tasks of different scales: delta-m (Maninis et al., CVPR
2019), the mean over tasks of each task's relative change against a reference,
written into the logs by the `DeltaMObjective` callback.

keras-tuner is an optional dependency, imported only when a tuning class is
used: importing `kerasmtl.tuning` does not import it, and
`kerasmtl.tuning.MultiTaskHyperModel` is made on first access (a module
`__getattr__`), since its base class lives in keras-tuner. Install it with
`pip install "kerasmtl[tuner]"`.
"""

import importlib.util
import inspect
import math
import warnings

import keras
import numpy as np

from kerasmtl import weighting as weighting_module
from kerasmtl.evaluation import delta_m, metric_direction, report_from_logs
from kerasmtl.hard_sharing import hard_sharing
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks

_INSTALL_HINT = 'pip install "kerasmtl[tuner]"'

#: The strategies searched by default: loss-based (no per-task gradients), so cheap.
DEFAULT_STRATEGIES = ("equal", "dwa", "uncertainty", "famo")

#: The default search space of each strategy's own hyper-parameters, keyed by
#: the strategy's registry name and then by its constructor argument. A spec is
#: `(min, max)` (a linear float), `(min, max, "log")` (a log-sampled float), a
#: list (a choice) or a single value (fixed). Strategies absent here have no
#: tuned hyper-parameters; `MultiTaskHyperModel(search_spaces=...)` overrides.
STRATEGY_SEARCH_SPACES = {
    "dwa": {"temperature": (0.5, 5.0, "log")},
    "loss_ratio": {"temperature": (0.5, 5.0, "log")},
    "famo": {"learning_rate": (1e-3, 1e-1, "log"), "weight_decay": (1e-4, 1e-2, "log")},
    "cagrad": {"c": (0.1, 0.9)},
    "grad_norm": {"alpha": (0.5, 3.0), "learning_rate": (1e-3, 1e-1, "log")},
    "dbmtl": {"beta": (0.5, 0.99)},
    "grad_vac": {"beta": (1e-3, 1e-1, "log")},
}

#: The name under which `DeltaMObjective` logs the objective (after the prefix).
OBJECTIVE_NAME = "delta_m"

# The defaults of the sizes of the built-in trunk and heads: (min, max, step).
_DEFAULT_SIZES = {
    "trunk_units": (16, 128, 16),
    "trunk_layers": (1, 3, 1),
    "head_units": (8, 64, 8),
    "head_layers": (0, 1, 1),
}
_SIZE_MINIMUM = {"trunk_units": 1, "trunk_layers": 1, "head_units": 1, "head_layers": 0}
# Arguments of `compile` that the hypermodel sets itself.
_TUNED_COMPILE_ARGS = ("optimizer", "weighting", "loss_weights")


def _import_keras_tuner():
    """Returns the `keras_tuner` module, or raises an `ImportError` with the install hint."""
    try:
        import keras_tuner
    except ImportError as error:
        raise ImportError(
            "kerasmtl.tuning needs keras-tuner, an optional dependency. Install it with: "
            f"{_INSTALL_HINT}"
        ) from error
    if importlib.util.find_spec("tensorboard") is None:
        # keras-tuner imports it at every trial under TensorFlow: without it every
        # trial would fail, one by one.
        raise ImportError(
            "kerasmtl.tuning needs tensorboard, which keras-tuner imports at every trial "
            f"under TensorFlow. Install both with: {_INSTALL_HINT}"
        )
    return keras_tuner


def _registry_name(cls):
    return weighting_module.registry_name(cls.__name__)


def _registry_names():
    return sorted(_registry_name(cls) for cls in weighting_module.ALL_OBJECTS)


def _strategy_class(name):
    """Returns the strategy class of a registry name, or raises a ValueError listing them."""
    if not isinstance(name, str):
        raise TypeError(
            "`strategies` must hold registry names of weighting strategies, such as "
            f"'dwa'. Valid names: {_registry_names()}. Received: {name!r}"
        )
    cls = weighting_module.ALL_OBJECTS_DICT.get(name) or weighting_module.ALL_OBJECTS_DICT.get(
        name.lower()
    )
    if cls is None:
        raise ValueError(
            f"Unknown weighting strategy '{name}' in `strategies`. Valid names: "
            f"{_registry_names()}. Received: strategies entry={name!r}"
        )
    return cls


# === Search-space specs ===


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_float_spec(spec, where):
    """Validates a float spec and returns it normalised: ("fixed", v), ("choice", values)
    or ("range", low, high, sampling)."""
    if _is_number(spec):
        return ("fixed", float(spec))
    if isinstance(spec, list):
        if not spec or not all(_is_number(v) for v in spec):
            raise ValueError(
                f"`{where}`: a list spec is a choice of numbers and cannot be empty. "
                f"Received: {where}={spec!r}"
            )
        if len(set(spec)) != len(spec):
            raise ValueError(f"`{where}`: the choices must be distinct. Received: {where}={spec!r}")
        return ("choice", [float(v) for v in spec])
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        low, high = spec[0], spec[1]
        sampling = spec[2] if len(spec) == 3 else "linear"
        if not (_is_number(low) and _is_number(high)) or sampling not in ("linear", "log"):
            raise ValueError(
                f"`{where}`: a range is `(min, max)` or `(min, max, 'log')`. "
                f"Received: {where}={spec!r}"
            )
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise ValueError(
                f"`{where}`: a range needs finite bounds with min < max. Received: {where}={spec!r}"
            )
        if sampling == "log" and low <= 0:
            raise ValueError(
                f"`{where}`: a log-sampled range needs min > 0. Received: {where}={spec!r}"
            )
        return ("range", low, high, sampling)
    raise ValueError(
        f"`{where}` must be a number (fixed), a list (a choice), `(min, max)` or "
        f"`(min, max, 'log')`. Received: {where}={spec!r}"
    )


def _check_int_spec(spec, where, minimum):
    """Validates an int spec: an int (fixed), a list (a choice), `(min, max)` or
    `(min, max, step)`."""

    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if is_int(spec):
        values = [int(spec)]
        normalised = ("fixed", int(spec))
    elif isinstance(spec, list) and spec and all(is_int(v) for v in spec):
        if len(set(spec)) != len(spec):
            raise ValueError(f"`{where}`: the choices must be distinct. Received: {where}={spec!r}")
        values = [int(v) for v in spec]
        normalised = ("choice", values)
    elif isinstance(spec, tuple) and len(spec) in (2, 3) and all(is_int(v) for v in spec):
        low, high = int(spec[0]), int(spec[1])
        step = int(spec[2]) if len(spec) == 3 else 1
        if low > high or step < 1:
            raise ValueError(
                f"`{where}`: a range `(min, max, step)` needs min <= max and step >= 1. "
                f"Received: {where}={spec!r}"
            )
        values = [low, high]
        normalised = ("range", low, high, step)
    else:
        raise ValueError(
            f"`{where}` must be an int (fixed), a list of ints (a choice), `(min, max)` or "
            f"`(min, max, step)`. Received: {where}={spec!r}"
        )
    if min(values) < minimum:
        raise ValueError(f"`{where}` must be >= {minimum}. Received: {where}={spec!r}")
    return normalised


def _spec_values(spec):
    """The extreme values of a normalised spec (to try a strategy's constructor on)."""
    kind = spec[0]
    if kind == "fixed":
        return [spec[1]]
    if kind == "choice":
        return list(spec[1])
    return [spec[1], spec[2]]


def _declare(hp, name, spec):
    """Declares one hyper-parameter from a normalised spec and returns its value."""
    if spec[0] == "fixed":
        return hp.Fixed(name, spec[1])
    if spec[0] == "choice":
        return hp.Choice(name, spec[1])
    if isinstance(spec[3], int):  # an int range has an int step, a float range a sampling
        return hp.Int(name, spec[1], spec[2], step=spec[3])
    return hp.Float(name, spec[1], spec[2], sampling=spec[3])


def _check_argument_spec(spec, default, where):
    """Validates the spec of a strategy argument, typed after the argument's default."""
    if isinstance(default, (bool, str)) or isinstance(spec, (bool, str)):
        if isinstance(spec, list):
            if not spec or len(set(spec)) != len(spec):
                raise ValueError(
                    f"`{where}`: the choices must be distinct and not empty. "
                    f"Received: {where}={spec!r}"
                )
            return ("choice", list(spec))
        if isinstance(spec, tuple):
            raise ValueError(
                f"`{where}` is not numeric: give a value or a list of choices. "
                f"Received: {where}={spec!r}"
            )
        return ("fixed", spec)
    if isinstance(default, (int, np.integer)):
        return _check_int_spec(spec, where, minimum=-(2**31))
    return _check_float_spec(spec, where)


def _try_strategy(cls, argument, value, where):
    """Raises a ValueError naming `where` if the strategy rejects `argument=value`."""
    try:
        cls(**{argument: value})
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where} holds a value that {cls.__name__} rejects: {error} "
            f"Received: {where}={value!r}"
        ) from None


# === Objective ===


def delta_m_objective(prefix="val_"):
    """Returns the `keras_tuner.Objective` that `MultiTaskHyperModel` optimises.

    The objective is delta-m as written into the logs by `DeltaMObjective`
    (`val_delta_m` for the validation data), maximised.

    Args:
        prefix: the log prefix of the data the objective is computed on: `"val_"`
            (validation data, the default) or `""` (training logs).

    Returns:
        `keras_tuner.Objective(f"{prefix}delta_m", direction="max")`.

    Example:

    ```python
    tuner = keras_tuner.RandomSearch(hypermodel, objective=delta_m_objective(),
                                     max_trials=10, directory="search")
    ```
    """
    keras_tuner = _import_keras_tuner()
    return keras_tuner.Objective(f"{prefix}{OBJECTIVE_NAME}", direction="max")


def delta_m_from_logs(logs, baselines, prefix="val_", higher_is_better=None):
    """Computes delta-m from Keras logs against per-task reference results.

    delta-m (Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR
    2019) is the mean over tasks of each task's mean relative change over its
    metrics, in percent:

        delta_m = 100 / T * sum_t 1 / M_t * sum_m s_m (M_t,m - B_t,m) / B_t,m

    with `s_m = +1` where higher is better and `-1` where lower is better. Each
    task counts once whatever the scale of its loss or metric, which makes it a
    fair single objective across tasks: a raw sum of losses would be ruled by
    the task with the largest loss.

    Args:
        logs: Keras logs holding `{prefix}{task}_{metric}` for every entry of
            `baselines`, e.g. the `logs` of `on_epoch_end`.
        baselines: the reference results `{task: {metric: value}}`, e.g. those of
            single-task models (`kerasmtl.evaluation.train_single_task_baselines`).
        prefix: the prefix of the log keys to read (`"val_"` or `""`).
        higher_is_better: the directions, as in `kerasmtl.evaluation.delta_m`
            (`None` infers them from the metric names).

    Returns:
        delta-m as a Python float, in percent; NaN if an entry of the logs is
        NaN or infinite.

    Raises:
        ValueError: if an entry of `baselines` has no `{prefix}{task}_{metric}`
            in the logs (listing the available keys).

    Example:

    >>> delta_m_from_logs({"val_a_loss": 0.5, "val_b_loss": 30.0},
    ...                   {"a": {"loss": 1.0}, "b": {"loss": 100.0}})
    60.0
    """
    logs = logs or {}
    task_names = list(baselines)
    table = report_from_logs(logs, task_names, prefix=prefix)
    missing = [
        f"{prefix}{task}_{metric}"
        for task, metrics in baselines.items()
        for metric in metrics
        if metric not in table[task]
    ]
    if missing:
        raise ValueError(
            f"delta-m needs the log entries {missing}, which are missing. Available keys: "
            f"{sorted(logs)}. Check the task and metric names of the baselines "
            "(and that there is validation data for 'val_' entries)."
        )
    values = [table[task][metric] for task, metrics in baselines.items() for metric in metrics]
    if not all(math.isfinite(value) for value in values):
        return float("nan")
    multi = {
        task: {metric: table[task][metric] for metric in metrics}
        for task, metrics in baselines.items()
    }
    return delta_m(multi, baselines, higher_is_better, task_names=task_names)


class DeltaMObjective(keras.callbacks.Callback):
    """Writes delta-m against reference results into the logs at each epoch end.

    At the end of each epoch it computes `delta_m_from_logs(logs, baselines,
    prefix)` and stores it as `logs[f"{prefix}delta_m"]`, so that keras-tuner
    (with `delta_m_objective(prefix)`), `EarlyStopping` and the `History` see it
    like any metric. Put it first in the callback list, before the callbacks
    that read it.

    A trial that diverges fails alone: if delta-m or the training loss is NaN
    or infinite, or if a task loss of a `MultiTaskModel` was (which the model
    leaves out of its logs), the callback raises
    `keras_tuner.errors.FailedTrialError` at the end of that epoch; keras-tuner
    records a failed trial and goes on with the search (a plain exception would
    be retried as an "invalid" trial, and a NaN objective would only be noticed
    after the last epoch).

    Args:
        baselines: the reference results `{task: {metric: value}}`; each value
            must be a finite non-zero number.
        prefix: `"val_"` to compute delta-m on the validation entries, `""` on
            the training entries.
        higher_is_better: the metric directions, as in
            `kerasmtl.evaluation.delta_m`.
        fail_on_non_finite: whether to raise `FailedTrialError` on a NaN or
            infinite objective or loss (needs keras-tuner); if false, the
            objective is logged as NaN instead (keras-tuner then marks the
            trial invalid after its last epoch).

    Example:

    >>> callback = DeltaMObjective({"a": {"loss": 2.0}, "b": {"loss": 100.0}})
    >>> logs = {"val_a_loss": 1.0, "val_b_loss": 100.0}
    >>> callback.on_epoch_end(0, logs)
    >>> logs["val_delta_m"]
    25.0
    """

    def __init__(self, baselines, prefix="val_", higher_is_better=None, fail_on_non_finite=True):
        super().__init__()
        if prefix not in ("val_", ""):
            raise ValueError(
                "`prefix` must be 'val_' (validation logs) or '' (training logs). "
                f"Received: prefix={prefix!r}"
            )
        self.baselines = _check_baselines(baselines, higher_is_better)
        self.prefix = prefix
        self.higher_is_better = higher_is_better
        self.fail_on_non_finite = bool(fail_on_non_finite)
        self._warned_missing = False

    @property
    def log_name(self):
        """The log key the objective is written to, e.g. `"val_delta_m"`."""
        return f"{self.prefix}{OBJECTIVE_NAME}"

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # A `MultiTaskModel` leaves a non-finite task loss out of the total and the
        # logs (so one bad batch cannot wreck training): a model whose every
        # prediction is NaN logs task losses of 0, which would look like a perfect
        # trial. Its count of non-finite steps (of the last pass, the validation
        # one when there is validation data) tells.
        non_finite = self._non_finite_steps()
        missing = [key for key in self._keys() if key not in logs]
        if missing:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(
                    f"DeltaMObjective needs the log entries {missing}, which are missing, so "
                    f"'{self.log_name}' is not logged. Available keys: {sorted(logs)}. Check "
                    "the task and metric names of the baselines (and that there is "
                    "validation data for 'val_' entries).",
                    stacklevel=2,
                )
            return
        value = delta_m_from_logs(logs, self.baselines, self.prefix, self.higher_is_better)
        loss = logs.get("loss")
        reason = None
        if non_finite:
            reason = (
                f"some task losses were NaN or infinite at epoch {epoch} (steps per task: "
                f"{non_finite})"
            )
        elif not math.isfinite(value):
            entries = {key: logs[key] for key in self._keys()}
            reason = f"{self.log_name} is not finite at epoch {epoch}: entries {entries}"
        elif loss is not None and not math.isfinite(float(loss)):
            reason = f"the training loss is {float(loss)} at epoch {epoch}"
        if reason is not None:
            if self.fail_on_non_finite:
                self._fail(reason)
            value = float("nan")
        logs[self.log_name] = value

    def _keys(self):
        return [
            f"{self.prefix}{task}_{metric}"
            for task, metrics in self.baselines.items()
            for metric in metrics
        ]

    def _non_finite_steps(self):
        counts_of = getattr(self.model, "non_finite_step_counts", None)
        counts = counts_of() if counts_of is not None else {}
        return {name: count for name, count in counts.items() if count}

    def _fail(self, reason):
        keras_tuner = _import_keras_tuner()
        raise keras_tuner.errors.FailedTrialError(
            f"The trial diverged: {reason}. It is recorded as failed and the search "
            "goes on with the next trial."
        )


def _check_baselines(baselines, higher_is_better, task_names=None, arg_name="baselines"):
    """Validates `{task: {metric: value}}` reference results; returns a float copy."""
    if (
        not isinstance(baselines, dict)
        or not baselines
        or not all(isinstance(metrics, dict) and metrics for metrics in baselines.values())
    ):
        raise ValueError(
            f"`{arg_name}` must be a non-empty per-task table {{task: {{metric: value}}}}, "
            "e.g. {'depth': {'mae': 0.31}, 'segment': {'accuracy': 0.82}} (single-task "
            f"results). Received: {arg_name}={baselines!r}"
        )
    if task_names is not None:
        unknown = [task for task in baselines if task not in task_names]
        if unknown:
            raise ValueError(
                f"Unknown task name(s) {unknown} in `{arg_name}`. Tasks: {list(task_names)}. "
                f"Received: {arg_name} keys={list(baselines)}"
            )
    checked = {}
    for task, metrics in baselines.items():
        checked[task] = {}
        for metric, value in metrics.items():
            if not _is_number(value) or not math.isfinite(float(value)) or float(value) == 0.0:
                raise ValueError(
                    f"`{arg_name}['{task}']['{metric}']` must be a finite non-zero number: "
                    "delta-m divides by it. "
                    f"Received: {arg_name}['{task}']['{metric}']={value!r}"
                )
            checked[task][metric] = float(value)
            _direction(task, metric, higher_is_better)
    return checked


def _direction(task, metric, higher_is_better):
    """Whether higher is better for an entry, as `kerasmtl.evaluation.delta_m` decides."""
    if isinstance(higher_is_better, bool):
        return higher_is_better
    if isinstance(higher_is_better, dict):
        for key in (f"{task}_{metric}", task, metric):
            if key in higher_is_better:
                return bool(higher_is_better[key])
    elif higher_is_better is not None:
        raise TypeError(
            "`higher_is_better` must be None (infer from metric names), a bool, or a dict "
            "keyed by `{task}_{metric}`, task or metric name. "
            f"Received: higher_is_better={higher_is_better!r}"
        )
    return metric_direction(metric)


# === HyperModel ===


class _MultiTaskHyperModelMethods:
    """The methods of `MultiTaskHyperModel`, kept free of keras-tuner at import time."""

    def __init__(
        self,
        build_fn=None,
        *,
        trunk_fn=None,
        tasks=None,
        inputs=None,
        strategies=DEFAULT_STRATEGIES,
        search_spaces=None,
        tune_static_weights=True,
        static_weight_range=(1e-2, 1e2),
        trunk_units=None,
        trunk_layers=None,
        head_units=None,
        head_layers=None,
        learning_rate=(1e-4, 1e-2, "log"),
        optimizer="adam",
        fixed=None,
        objective_baselines=None,
        objective_metrics=None,
        higher_is_better=None,
        task_names=None,
        compile_kwargs=None,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)

        # === Architecture ===
        if build_fn is not None:
            if not callable(build_fn):
                raise TypeError(
                    "`build_fn` must be a function `build_fn(hp) -> MultiTaskModel`. "
                    f"Received: build_fn={build_fn!r}"
                )
            extra = {
                key: value
                for key, value in (("trunk_fn", trunk_fn), ("tasks", tasks), ("inputs", inputs))
                if value is not None
            }
            if extra:
                raise ValueError(
                    "Pass either `build_fn(hp)` (it builds the whole model) or `tasks` and "
                    "`inputs` (with an optional `trunk_fn(hp)`), not both. "
                    f"Received: build_fn and {sorted(extra)}"
                )
        elif tasks is None or inputs is None:
            raise ValueError(
                "Give the model to tune: `build_fn(hp) -> MultiTaskModel`, or `tasks` (a list "
                "of `kerasmtl.Task` with heads) and `inputs` (e.g. {'features': (8,)}), with "
                "an optional `trunk_fn(hp)`. "
                f"Received: build_fn=None, tasks={tasks!r}, inputs={inputs!r}"
            )
        if trunk_fn is not None and not callable(trunk_fn):
            raise TypeError(
                "`trunk_fn` must be a function `trunk_fn(hp)` returning the shared trunk (a "
                f"layer, a model or a function of the inputs). Received: trunk_fn={trunk_fn!r}"
            )
        self.build_fn = build_fn
        self.trunk_fn = trunk_fn
        self._input_specs = None if inputs is None else _input_specs(inputs)
        if tasks is not None:
            task_names_found = check_tasks(tasks)
            if task_names is not None and list(task_names) != task_names_found:
                raise ValueError(
                    "`task_names` is for `build_fn`; with `tasks` the names come from the "
                    f"tasks. Tasks: {task_names_found}. Received: task_names={task_names!r}"
                )
            task_names = task_names_found
            self._task_templates = [_task_template(task) for task in tasks]
        else:
            self._task_templates = None
        if task_names is not None:
            if isinstance(task_names, str) or not all(isinstance(n, str) for n in task_names):
                raise TypeError(
                    f"`task_names` must be a list of task names. Received: {task_names!r}"
                )
            task_names = list(task_names)
        self.task_names = task_names

        self._sizes = {}
        sizes = {
            "trunk_units": trunk_units,
            "trunk_layers": trunk_layers,
            "head_units": head_units,
            "head_layers": head_layers,
        }
        for size_name, spec in sizes.items():
            used = self.build_fn is None and (size_name.startswith("head") or self.trunk_fn is None)
            if spec is not None and not used:
                raise ValueError(
                    f"`{size_name}` sizes the layers the hypermodel builds itself, so it "
                    + (
                        "does not apply with `build_fn` (size your model with `hp` there). "
                        if self.build_fn is not None
                        else "does not apply with `trunk_fn` (use `hp` inside it). "
                    )
                    + f"Received: {size_name}={spec!r}"
                )
            if used:
                self._sizes[size_name] = _check_int_spec(
                    _DEFAULT_SIZES[size_name] if spec is None else spec,
                    size_name,
                    _SIZE_MINIMUM[size_name],
                )
        if self.build_fn is None and self.trunk_fn is None:
            if len(self._input_specs) != 1:
                raise ValueError(
                    "The built-in trunk (a stack of Dense layers) reads one vector input; "
                    "for several inputs pass `trunk_fn(hp)` returning a function of the "
                    f"inputs. Received: inputs with names {[s[0] for s in self._input_specs]}"
                )

        # === Weighting ===
        if isinstance(strategies, str):
            strategies = [strategies]
        if not isinstance(strategies, (list, tuple)) or not strategies:
            raise ValueError(
                "`strategies` must be a non-empty list of weighting strategy names. "
                f"Valid names: {_registry_names()}. Received: strategies={strategies!r}"
            )
        classes = {}
        for entry in strategies:
            cls = _strategy_class(entry)
            canonical = _registry_name(cls)
            if canonical in classes:
                raise ValueError(
                    f"The strategy '{canonical}' appears twice in `strategies`. "
                    f"Received: strategies={list(strategies)}"
                )
            classes[canonical] = cls
        self.strategies = list(classes)
        self._strategy_classes = classes

        search_spaces = dict(search_spaces or {})
        for key in search_spaces:
            canonical = _registry_name(_strategy_class(key))
            if canonical not in classes:
                raise ValueError(
                    f"`search_spaces` has an entry for '{key}', which is not searched. "
                    f"Searched strategies: {self.strategies}. "
                    f"Received: search_spaces keys={list(search_spaces)}"
                )
        spaces = {}
        for canonical, cls in classes.items():
            raw = dict(STRATEGY_SEARCH_SPACES.get(canonical, {}))
            for key, value in search_spaces.items():
                if _registry_name(_strategy_class(key)) == canonical:
                    if not isinstance(value, dict):
                        raise ValueError(
                            f"`search_spaces['{key}']` must be a dict of "
                            "{argument: spec}, e.g. {'temperature': (1.0, 4.0)}. "
                            f"Received: search_spaces['{key}']={value!r}"
                        )
                    raw.update(value)
            spaces[canonical] = self._check_strategy_space(canonical, cls, raw)
        self._strategy_spaces = spaces

        self.tune_static_weights = bool(tune_static_weights)
        self._static_weight_spec = _check_float_spec(static_weight_range, "static_weight_range")
        if min(_spec_values(self._static_weight_spec)) <= 0:
            raise ValueError(
                "`static_weight_range` must hold positive weights. "
                f"Received: static_weight_range={static_weight_range!r}"
            )
        if learning_rate is None:
            self._learning_rate_spec = None
        else:
            self._learning_rate_spec = _check_float_spec(learning_rate, "learning_rate")
            if min(_spec_values(self._learning_rate_spec)) <= 0:
                raise ValueError(
                    f"`learning_rate` must be positive. Received: learning_rate={learning_rate!r}"
                )
        if isinstance(optimizer, keras.optimizers.Optimizer) or not (
            isinstance(optimizer, (str, dict)) or callable(optimizer)
        ):
            raise TypeError(
                "`optimizer` must be an optimizer name or config dict, or a function "
                "`optimizer(learning_rate=...)` returning a fresh optimizer: an instance "
                f"would be shared by every trial. Received: optimizer={optimizer!r}"
            )
        if isinstance(optimizer, (str, dict)):
            keras.optimizers.get(optimizer)  # raises a clear error for an unknown name
        self.optimizer = optimizer
        compile_kwargs = dict(compile_kwargs or {})
        tuned = [key for key in compile_kwargs if key in _TUNED_COMPILE_ARGS]
        if tuned:
            raise ValueError(
                f"`compile_kwargs` cannot set {tuned}: the hypermodel chooses them. Use "
                "`optimizer`, `learning_rate` and `strategies` instead. "
                f"Received: compile_kwargs keys={list(compile_kwargs)}"
            )
        self.compile_kwargs = compile_kwargs

        # === Fixed values ===
        self.fixed = self._check_fixed(fixed or {})

        # === Objective ===
        if objective_baselines is not None and objective_metrics is not None:
            raise ValueError(
                "With `objective_baselines`, the metrics of the objective are the keys of "
                "the baselines: leave `objective_metrics` as None. Received: "
                f"objective_metrics={objective_metrics!r}"
            )
        self.higher_is_better = higher_is_better
        self.objective_baselines = (
            None
            if objective_baselines is None
            else _check_baselines(
                objective_baselines, higher_is_better, self.task_names, "objective_baselines"
            )
        )
        self.objective_metrics = self._check_objective_metrics(objective_metrics)

    # --- constructor checks ---

    def _check_strategy_space(self, canonical, cls, raw):
        parameters = inspect.signature(cls.__init__).parameters
        valid = [p for p in parameters if p not in ("self", "kwargs")]
        space = {}
        for argument, spec in raw.items():
            where = f"search_spaces['{canonical}']['{argument}']"
            if argument not in valid:
                raise ValueError(
                    f"'{argument}' is not an argument of {cls.__name__}. Its arguments: "
                    f"{valid}. Received: {where}"
                )
            space[argument] = _check_argument_spec(spec, parameters[argument].default, where)
        # Each end of each range must give a valid strategy: the strategies check
        # their own arguments, and keras-tuner would turn a failure in `build` into
        # one invalid trial after another.
        for argument, spec in space.items():
            for value in _spec_values(spec):
                _try_strategy(cls, argument, value, f"search_spaces['{canonical}']['{argument}']")
        return space

    def _check_fixed(self, fixed):
        if not isinstance(fixed, dict):
            raise TypeError(
                f"`fixed` must be a dict {{hyper-parameter name: value}}. Received: fixed={fixed!r}"
            )
        names = self.hyperparameter_names()
        # With `build_fn` and no `task_names`, the static weights' names come with the
        # model; they are checked at the first build.
        weights_unchecked = (
            self.task_names is None and "fixed" in self.strategies and self.tune_static_weights
        )
        checked = {}
        for key, value in fixed.items():
            where = f"fixed['{key}']"
            is_weight = isinstance(key, str) and key.startswith("fixed_weight_")
            if key not in names and not (is_weight and weights_unchecked):
                hint = f" Tasks: {self.task_names}." if is_weight and self.task_names else ""
                raise ValueError(
                    f"Unknown hyper-parameter '{key}' in `fixed`.{hint} Hyper-parameters of "
                    f"this hypermodel: {names}. Received: fixed keys={list(fixed)}"
                )
            if key == "weighting":
                canonical = _registry_name(_strategy_class(value))
                if canonical not in self.strategies:
                    raise ValueError(
                        f"fixed['weighting'] must be one of the searched strategies "
                        f"{self.strategies}. Received: {where}={value!r}"
                    )
                checked[key] = canonical
                continue
            if isinstance(value, (list, tuple, dict)):
                raise ValueError(
                    "`fixed` holds single values; to search several, use the matching "
                    f"argument. Received: {where}={value!r}"
                )
            if key in self._sizes:
                _check_int_spec(value, where, _SIZE_MINIMUM[key])
            elif is_weight or key == "learning_rate":
                if not _is_number(value) or not 0 < float(value) < math.inf:
                    raise ValueError(
                        f"{where} must be a positive number. Received: {where}={value!r}"
                    )
            else:
                strategy, argument = self._strategy_argument(key)
                _try_strategy(self._strategy_classes[strategy], argument, value, where)
            checked[key] = value
        return checked

    def _check_objective_metrics(self, objective_metrics):
        if objective_metrics is None:
            return None
        if isinstance(objective_metrics, str):
            objective_metrics = [objective_metrics]
        if isinstance(objective_metrics, (list, tuple)):
            if not objective_metrics or not all(isinstance(m, str) for m in objective_metrics):
                raise ValueError(
                    "`objective_metrics` must be metric names (for every task) or a dict "
                    f"{{task: [metric names]}}. Received: objective_metrics={objective_metrics!r}"
                )
            for metric in objective_metrics:
                _direction("", metric, self.higher_is_better)
            return list(objective_metrics)
        if isinstance(objective_metrics, dict):
            if self.task_names is not None:
                unknown = [task for task in objective_metrics if task not in self.task_names]
                if unknown:
                    raise ValueError(
                        f"Unknown task name(s) {unknown} in `objective_metrics`. Tasks: "
                        f"{self.task_names}. Received: objective_metrics keys="
                        f"{list(objective_metrics)}"
                    )
            checked = {}
            for task, metrics in objective_metrics.items():
                metrics = [metrics] if isinstance(metrics, str) else list(metrics)
                if not metrics:
                    raise ValueError(
                        f"`objective_metrics['{task}']` is empty. "
                        f"Received: objective_metrics={objective_metrics!r}"
                    )
                for metric in metrics:
                    _direction(task, metric, self.higher_is_better)
                checked[task] = metrics
            return checked
        raise TypeError(
            "`objective_metrics` must be metric names or a dict {task: [metric names]}. "
            f"Received: objective_metrics={objective_metrics!r}"
        )

    # --- search space ---

    def hyperparameter_names(self):
        """Returns the names of the hyper-parameters this hypermodel declares.

        `"weighting"`; `"{strategy}_{argument}"` for each tuned argument of each
        strategy (`"dwa_temperature"`); `"fixed_weight_{task}"` for the static
        weights of strategy `fixed`; `"learning_rate"`; and the sizes the
        hypermodel builds itself (`"trunk_units"`, `"trunk_layers"`,
        `"head_units"`, `"head_layers"`). A `trunk_fn` or `build_fn` may declare
        more with its `hp`.
        """
        names = ["weighting"]
        for strategy, space in self._strategy_spaces.items():
            names += [f"{strategy}_{argument}" for argument in space]
        if "fixed" in self.strategies and self.tune_static_weights and self.task_names:
            names += [f"fixed_weight_{task}" for task in self.task_names]
        if self._learning_rate_spec is not None:
            names.append("learning_rate")
        names += [
            name
            for name in self._sizes
            if name != "head_units" or max(self._head_layer_values()) > 0
        ]
        return names

    def _spec_of(self, name):
        if name == "learning_rate":
            return self._learning_rate_spec
        if name in self._sizes:
            return self._sizes[name]
        if name.startswith("fixed_weight_"):
            return self._static_weight_spec
        strategy, argument = self._strategy_argument(name)
        return self._strategy_spaces[strategy][argument]

    def _strategy_argument(self, name):
        """`(strategy, argument)` of a strategy hyper-parameter name such as `dwa_temperature`."""
        for strategy, space in self._strategy_spaces.items():
            if name.startswith(f"{strategy}_") and name[len(strategy) + 1 :] in space:
                return strategy, name[len(strategy) + 1 :]
        raise KeyError(name)

    def _value(self, hp, name):
        if name in self.fixed:
            return hp.Fixed(name, self.fixed[name])
        return _declare(hp, name, self._spec_of(name))

    def _declare_weighting(self, hp, task_names):
        if "weighting" in self.fixed:
            chosen = hp.Fixed("weighting", self.fixed["weighting"])
        else:
            chosen = hp.Choice("weighting", self.strategies)
        arguments = {}
        # Every strategy's arguments are declared in every build, each in its own
        # conditional scope: the whole space is known from the first build.
        for strategy, space in self._strategy_spaces.items():
            with hp.conditional_scope("weighting", [strategy]):
                for argument in space:
                    value = self._value(hp, f"{strategy}_{argument}")
                    if strategy == chosen:
                        arguments[argument] = value
        static = None
        if "fixed" in self.strategies and self.tune_static_weights:
            with hp.conditional_scope("weighting", ["fixed"]):
                values = [self._value(hp, f"fixed_weight_{task}") for task in task_names]
            if chosen == "fixed":
                static = [float(value) for value in values]
        if chosen == "fixed" and static is not None:
            arguments["weights"] = static
        return self._strategy_classes[chosen](**arguments)

    # --- building ---

    def build(self, hp):
        keras_tuner = _import_keras_tuner()
        learning_rate = (
            None if self._learning_rate_spec is None else self._value(hp, "learning_rate")
        )
        if self.build_fn is not None:
            model = self.build_fn(hp)
            if not isinstance(model, MultiTaskModel):
                raise keras_tuner.errors.FatalTypeError(
                    "`build_fn(hp)` must return a `kerasmtl.MultiTaskModel`. "
                    f"Received: an object of type {type(model).__name__}"
                )
            self._check_built_tasks(model, keras_tuner)
        else:
            model = self._build_hard_sharing(hp)
        strategy = self._declare_weighting(hp, model.task_names)
        if strategy.__class__ is weighting_module.Fixed and strategy.weights_init is None:
            strategy = weighting_module.Fixed([task.loss_weight for task in model.tasks])
        model.compile(
            optimizer=self._make_optimizer(learning_rate),
            weighting=strategy,
            **self.compile_kwargs,
        )
        # Built now so that keras-tuner's `load_weights` (Hyperband's continued trials,
        # `get_best_models`) restores the optimizer's state rather than skipping it
        # with a warning.
        model.optimizer.build(model.trainable_variables)
        return model

    def _check_built_tasks(self, model, keras_tuner):
        names = model.task_names
        if self.task_names is not None:
            if names != self.task_names:
                raise keras_tuner.errors.FatalValueError(
                    f"`build_fn(hp)` built a model with tasks {names}, but `task_names` is "
                    f"{self.task_names}. Received: model.task_names={names}"
                )
            return
        for arg_name, table in (
            ("objective_baselines", self.objective_baselines),
            ("objective_metrics", self.objective_metrics),
        ):
            if isinstance(table, dict):
                unknown = [task for task in table if task not in names]
                if unknown:
                    raise keras_tuner.errors.FatalValueError(
                        f"Unknown task name(s) {unknown} in `{arg_name}`. Tasks of the "
                        f"model: {names}. Received: {arg_name} keys={list(table)}"
                    )
        unknown = [
            key[len("fixed_weight_") :]
            for key in self.fixed
            if key.startswith("fixed_weight_") and key[len("fixed_weight_") :] not in names
        ]
        if unknown:
            raise keras_tuner.errors.FatalValueError(
                f"Unknown task name(s) {unknown} in the `fixed_weight_*` keys of `fixed`. "
                f"Tasks of the model: {names}. Received: fixed keys={list(self.fixed)}"
            )

    def _build_hard_sharing(self, hp):
        inputs = {
            name: keras.Input(shape, name=name, dtype=dtype)
            for name, shape, dtype in self._input_specs
        }
        if self.trunk_fn is not None:
            trunk = self.trunk_fn(hp)
        else:
            num_layers = self._value(hp, "trunk_layers")
            units = self._value(hp, "trunk_units")
            trunk = keras.Sequential(
                [keras.layers.Dense(units, activation="relu") for _ in range(num_layers)],
                name="trunk",
            )
        head_layers = self._value(hp, "head_layers")
        head_units = None
        parents = [value for value in self._head_layer_values() if value > 0]
        if parents:
            # Active only when there are hidden head layers to size.
            with hp.conditional_scope("head_layers", parents):
                head_units = self._value(hp, "head_units")
        tasks = [
            _task_from_template(template, head_layers, head_units)
            for template in self._task_templates
        ]
        return hard_sharing(inputs, trunk, tasks, name="multi_task_hypermodel")

    def _head_layer_values(self):
        """Every value `head_layers` can take (its range, or the value in `fixed`)."""
        if "head_layers" in getattr(self, "fixed", {}):
            return [self.fixed["head_layers"]]
        spec = self._sizes["head_layers"]
        if spec[0] == "fixed":
            return [spec[1]]
        if spec[0] == "choice":
            return list(spec[1])
        return list(range(spec[1], spec[2] + 1, spec[3]))

    def _make_optimizer(self, learning_rate):
        optimizer = self.optimizer
        if isinstance(optimizer, (str, dict)):
            optimizer = keras.optimizers.get(optimizer)
            if learning_rate is None:
                return optimizer
            config = optimizer.get_config()
            config["learning_rate"] = float(learning_rate)
            return optimizer.__class__.from_config(config)
        if learning_rate is None:
            return optimizer()
        return optimizer(learning_rate=float(learning_rate))

    # --- training ---

    @property
    def objective(self):
        """The `keras_tuner.Objective` to give the tuner: `val_delta_m`, maximised."""
        return delta_m_objective("val_")

    def fit(self, hp, model, *args, **kwargs):
        """Trains one trial's model, with `val_delta_m` in its logs.

        Adds a `DeltaMObjective` callback in front of the callbacks keras-tuner
        passes (`MultiTaskModel.fit` adds a `LossWeightScheduler` itself for
        epoch-level strategies such as DWA). Without `objective_baselines`, the
        reference is the trial's untrained model, evaluated on the validation
        data before training (for a Hyperband trial that goes on from an earlier
        one, a freshly built model with the same hyper-parameters).
        """
        keras_tuner = _import_keras_tuner()
        validation_data = kwargs.get("validation_data")
        if validation_data is None and (
            self.objective_baselines is None or not kwargs.get("validation_split")
        ):
            raise keras_tuner.errors.FatalValueError(
                "The objective `val_delta_m` is computed on validation data: pass "
                "`validation_data=(x_val, y_val)` (or a dataset) to `tuner.search`"
                + (
                    " (or `validation_split` when `objective_baselines` is given)"
                    if self.objective_baselines is None
                    else ""
                )
                + ". Received: validation_data=None"
            )
        baselines = self.objective_baselines
        if baselines is None:
            reference_model = model
            if "tuner/trial_id" in hp.values:
                # Hyperband loaded the weights of an earlier trial into `model`.
                reference_model = self.build(hp)
            baselines = self._reference_results(
                reference_model, validation_data, kwargs.get("batch_size"), keras_tuner
            )
        objective = DeltaMObjective(
            baselines, prefix="val_", higher_is_better=self.higher_is_better
        )
        own = [objective]
        callbacks = list(kwargs.pop("callbacks", None) or [])
        # `fit` adds a LossWeightScheduler itself for strategies with an epoch update.
        history = model.fit(*args, callbacks=own + callbacks, **kwargs)
        if objective.log_name not in history.history:
            raise keras_tuner.errors.FatalValueError(
                f"The logs have no '{objective.log_name}': they lack entries "
                f"{[key for key in objective._keys() if key not in history.history]} "
                f"that the objective compares. Log keys: {sorted(history.history)}. Check the "
                "task and metric names of `objective_baselines` and the model's metrics."
            )
        return history

    def _reference_results(self, model, validation_data, batch_size, keras_tuner):
        if isinstance(validation_data, (tuple, list)):
            logs = model.evaluate(
                *validation_data, batch_size=batch_size, verbose=0, return_dict=True
            )
        else:
            logs = model.evaluate(validation_data, verbose=0, return_dict=True)
        table = report_from_logs(logs, model.task_names)
        selection = self.objective_metrics
        if selection is None:
            selection = {task: ["loss"] for task in model.task_names}
        elif isinstance(selection, list):
            selection = {task: list(selection) for task in model.task_names}
        reference = {}
        for task, metrics in selection.items():
            reference[task] = {}
            for metric in metrics:
                if metric not in table.get(task, {}):
                    raise keras_tuner.errors.FatalValueError(
                        f"`objective_metrics` names '{task}_{metric}', which the model does "
                        f"not log. Task '{task}' logs: {sorted(table.get(task, {}))}. "
                        f"Received: objective_metrics={self.objective_metrics!r}"
                    )
                value = table[task][metric]
                if not math.isfinite(value) or value == 0.0:
                    raise keras_tuner.errors.FailedTrialError(
                        f"The untrained model's '{task}_{metric}' is {value}: delta-m cannot "
                        "be measured against it. Give `objective_baselines` instead."
                    )
                reference[task][metric] = value
        return reference


def _input_specs(inputs):
    """`(name, shape, dtype)` of each input, so that every trial gets fresh `keras.Input`s."""
    if isinstance(inputs, dict):
        items = list(inputs.items())
    elif isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], keras.KerasTensor):
        items = [(tensor.name, tensor) for tensor in inputs]
    elif isinstance(inputs, keras.KerasTensor):
        items = [(inputs.name, inputs)]
    else:
        raise ValueError(
            "`inputs` must be a dict of named shapes such as {'features': (8,)}, or named "
            f"`keras.Input`s. Received: inputs={inputs!r}"
        )
    specs = []
    for name, value in items:
        if isinstance(value, keras.KerasTensor):
            if value.name.startswith("keras_tensor"):
                raise ValueError(
                    f"The input '{value.name}' has no name of its own. Name it: "
                    "keras.Input(shape, name='features')."
                )
            if value.name != name:
                raise ValueError(
                    f"The input under key '{name}' is named '{value.name}'. Use the same name "
                    f"for the key and the input. Received: inputs keys={[k for k, _ in items]}"
                )
            specs.append((value.name, tuple(value.shape[1:]), value.dtype))
        elif isinstance(value, (tuple, list)) and all(
            d is None or (isinstance(d, int) and d > 0) for d in value
        ):
            specs.append((name, tuple(value), None))
        else:
            raise ValueError(
                f"`inputs['{name}']` must be a shape such as (8,) or a named `keras.Input`. "
                f"Received: inputs['{name}']={value!r}"
            )
    return specs


def _task_template(task):
    """Checks that a task can give each trial a head with fresh weights."""
    head = task.head
    if head is None:
        raise ValueError(
            f"Task '{task.name}' has no head. Give each task a `head` (an int for a Dense "
            "layer with that many outputs, or an unbuilt layer)."
        )
    if isinstance(head, keras.layers.Layer) and head.built:
        raise ValueError(
            f"Task '{task.name}': its head layer is already built; every trial needs "
            "fresh weights. Pass an unbuilt layer or an int (the number of outputs). "
            f"Received: head={head.name}"
        )
    return task


def _task_from_template(task, head_layers, head_units):
    # Tasks are immutable and `build_head` copies a layer template per model, and
    # `compile` copies metric objects: an int head is the only one the tuner resizes.
    if not isinstance(task.head, int):
        return task
    if not head_layers:
        return task
    units = task.head

    def head():
        hidden = [keras.layers.Dense(head_units, activation="relu") for _ in range(head_layers)]
        return keras.Sequential([*hidden, keras.layers.Dense(units)], name=task.name)

    return task.replace(head=head)


_HYPERMODEL_DOC = """A keras-tuner `HyperModel` that searches task weighting and model sizes.

    Its search space (hyper-parameter names in quotes, see
    `hyperparameter_names()`):

    - `"weighting"`: a choice among `strategies` (registry names of
      `kerasmtl.weighting`).
    - Each strategy's own hyper-parameters, `"{strategy}_{argument}"`, each
      active only when that strategy is chosen (`hp.conditional_scope`):
      DWA's `"dwa_temperature"`, FAMO's `"famo_learning_rate"` and
      `"famo_weight_decay"`, CAGrad's `"cagrad_c"`, GradNorm's
      `"grad_norm_alpha"`... (`STRATEGY_SEARCH_SPACES`, overridden by
      `search_spaces`).
    - For strategy `"fixed"`, static per-task weights `"fixed_weight_{task}"`,
      log-sampled in `static_weight_range`.
    - `"learning_rate"` of the optimizer.
    - Without `build_fn`: the heads' `"head_layers"` and `"head_units"` (hidden
      Dense layers before the output of every task whose head is an int), and
      without `trunk_fn` the built-in trunk's `"trunk_layers"` and
      `"trunk_units"` (a stack of ReLU Dense layers on one vector input).

    The model is a `kerasmtl.MultiTaskModel`: from `build_fn(hp)`, or
    `kerasmtl.hard_sharing(inputs, trunk_fn(hp), tasks)` (fresh copies of the
    tasks and their heads for every trial). `build` compiles it with the chosen
    strategy and optimizer.

    The objective is one scalar that is fair across tasks of different scales,
    `val_delta_m` (maximise it: `hypermodel.objective` or
    `delta_m_objective()`): delta-m (Maninis et al., CVPR 2019), the mean over
    tasks of each task's mean relative change of its metrics against a
    reference, in percent. The reference is `objective_baselines`, typically
    single-task results (`kerasmtl.evaluation.train_single_task_baselines`);
    without it, each trial's untrained model evaluated on the validation data
    (delta-m is then the mean relative improvement over the start of
    training, by default of each task's validation loss). Either way each task
    counts once whatever the scale of its loss: a raw sum of losses would let
    the largest-scale task decide. A trial whose objective or loss turns NaN or
    infinite fails alone (`keras_tuner.errors.FailedTrialError`) and the
    search goes on.

    Settings are checked here, when the hypermodel is made: keras-tuner turns
    errors raised in `build` during the search into invalid trials.

    Works with `keras_tuner.RandomSearch`, `BayesianOptimization`,
    `Hyperband` and `GridSearch`, resumes with `overwrite=False`, and runs
    distributed (a chief and workers set up with the `KERASTUNER_TUNER_ID`,
    `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` environment
    variables). Pass `validation_data` to `tuner.search`.

    Args:
        build_fn: a function `build_fn(hp) -> MultiTaskModel` building the whole
            (uncompiled) model, with its own sizes from `hp`. Or leave it out and
            give `tasks` and `inputs`.
        trunk_fn: with `tasks` and `inputs`: a function `trunk_fn(hp)`
            returning the shared trunk (a layer, a model, or a function of the
            inputs), sized from `hp`. Defaults to the built-in Dense trunk.
        tasks: the `kerasmtl.Task`s, each with a head (an int, a Dense layer
            with that many outputs; or an unbuilt layer, cloned for each trial).
        inputs: the inputs: a dict of named shapes (`{"features": (8,)}`) or
            named `keras.Input`s.
        strategies: the registry names of the weighting strategies to search.
        search_spaces: overrides of the strategies' spaces, e.g.
            `{"dwa": {"temperature": (1.0, 4.0)}}`. A spec is `(min, max)`,
            `(min, max, "log")`, a list (a choice) or a single value (fixed).
        tune_static_weights: whether strategy `"fixed"` searches per-task
            weights (otherwise it uses each `Task.loss_weight`).
        static_weight_range: the range of the static weights (a float spec).
        trunk_units: units of the built-in trunk's layers: an int, a list, or
            `(min, max, step)`. Defaults to `(16, 128, 16)`.
        trunk_layers: number of the built-in trunk's layers, `>= 1`. Defaults
            to `(1, 3)`.
        head_units: units of the hidden head layers. Defaults to `(8, 64, 8)`.
        head_layers: number of hidden head layers, `>= 0`. Defaults to `(0, 1)`.
        learning_rate: the optimizer's learning rate (a float spec), or `None`
            to keep the optimizer's own.
        optimizer: an optimizer name or config dict, or a function
            `optimizer(learning_rate=...)` returning a fresh optimizer.
        fixed: values to hold fixed instead of searching, keyed by
            hyper-parameter name, e.g. `{"weighting": "dwa",
            "dwa_temperature": 2.0}`.
        objective_baselines: reference results `{task: {metric: value}}` of the
            objective (e.g. single-task models' validation results); the keys
            pick the metrics. Values must be finite and non-zero.
        objective_metrics: without `objective_baselines`: the metrics of the
            objective, a list of names for every task or a dict
            `{task: [names]}`. Defaults to each task's `loss`.
        higher_is_better: metric directions, as in
            `kerasmtl.evaluation.delta_m` (`None` infers them from the names).
        task_names: with `build_fn`, the task names of the model it builds, so
            that settings keyed by task are checked here; otherwise they are
            checked at the first build (when the tuner is made).
        compile_kwargs: other `MultiTaskModel.compile` arguments (`metrics`,
            `loss`, `gradients`, `jit_compile`...).
        name: the hypermodel's name.
        tunable: as in `keras_tuner.HyperModel`.

    Example:

    ```python
    hypermodel = kerasmtl.tuning.MultiTaskHyperModel(
        tasks=[Task("price", head=1, loss="mse"), Task("rating", head=1, loss="mse")],
        inputs={"features": (16,)},
        strategies=["equal", "dwa", "uncertainty", "fixed"],
        objective_baselines={"price": {"loss": 120.0}, "rating": {"loss": 0.8}},
    )
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective=hypermodel.objective, max_trials=20,
        directory="search", project_name="mtl")
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=10, batch_size=64)
    best = tuner.get_best_hyperparameters()[0]
    ```
    """


_CLASSES = {}


def _hypermodel_class():
    if "MultiTaskHyperModel" not in _CLASSES:
        keras_tuner = _import_keras_tuner()
        cls = type(
            "MultiTaskHyperModel",
            (_MultiTaskHyperModelMethods, keras_tuner.HyperModel),
            {"__doc__": _HYPERMODEL_DOC, "__module__": __name__},
        )
        _CLASSES["MultiTaskHyperModel"] = cls
    return _CLASSES["MultiTaskHyperModel"]


def __getattr__(name):
    # `MultiTaskHyperModel` subclasses `keras_tuner.HyperModel`: it is made on
    # first use, so that importing this module does not import keras-tuner.
    if name == "MultiTaskHyperModel":
        return _hypermodel_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "MultiTaskHyperModel"])


# `MultiTaskHyperModel` is public but left out of `__all__`: a star import must not
# import keras-tuner.
__all__ = [
    "DEFAULT_STRATEGIES",
    "DeltaMObjective",
    "OBJECTIVE_NAME",
    "STRATEGY_SEARCH_SPACES",
    "delta_m_from_logs",
    "delta_m_objective",
]
