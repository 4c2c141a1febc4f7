"""Hyper-parameter search for multi-task models, on keras-tuner's own primitives.

`MultiTaskHyperModel` is a `keras_tuner.HyperModel`: its `build(hp)` picks a
weighting strategy and that strategy's own hyper-parameters with `hp`
(`STRATEGY_HYPERPARAMETERS`), sizes the trunk (and heads) through the user's
factories, and builds the model with `kerasmtl.hard_sharing`. Values are fixed,
narrowed or widened the keras-tuner way: declare them in a
`keras_tuner.HyperParameters` given to the tuner as `hyperparameters=` (with
`tune_new_entries=False` to hold everything else at its default).

The objective, `val_delta_m`, is one scalar that is fair across tasks of
different scales: delta-m (Maninis et al., "Attentive Single-Tasking of Multiple
Tasks", CVPR 2019), the mean over tasks of each task's relative change against a
reference, written into the logs by the `DeltaMObjective` callback.

keras-tuner is an optional dependency (`pip install "kerasmtl[tuner]"`):
`import kerasmtl` does not import this module; `kerasmtl.tuning` (or
`import kerasmtl.tuning`) does, and imports keras-tuner.
"""

import importlib.util
import math
import warnings

import keras

from kerasmtl import weighting as weighting_module
from kerasmtl.evaluation import delta_m, metric_direction, report_from_logs
from kerasmtl.hard_sharing import hard_sharing
from kerasmtl.inputs import make_inputs
from kerasmtl.task import check_tasks

_INSTALL_HINT = 'pip install "kerasmtl[tuner]"'
try:
    import keras_tuner
except ImportError as error:
    raise ImportError(
        f"kerasmtl.tuning needs keras-tuner, an optional dependency. Install it with: "
        f"{_INSTALL_HINT}",
        name="keras_tuner",
    ) from error
if importlib.util.find_spec("tensorboard") is None:
    # keras-tuner imports it at every trial under TensorFlow: without it every trial
    # would fail, one by one.
    raise ImportError(
        "kerasmtl.tuning needs tensorboard, which keras-tuner imports at every trial under "
        f"TensorFlow. Install both with: {_INSTALL_HINT}",
        name="tensorboard",
    )

#: The strategies searched by default: loss-based (no per-task gradients), so cheap.
DEFAULT_STRATEGIES = ("equal", "dwa", "uncertainty", "famo")


def _float(min_value, max_value, default, sampling="linear"):
    return lambda hp, name, task_names: hp.Float(
        name, min_value, max_value, sampling=sampling, default=default
    )


def _per_task(declare):
    return lambda hp, name, task_names: [declare(hp, f"{name}_{t}", task_names) for t in task_names]


#: Each strategy's tunable constructor arguments, keyed by registry name, then by
#: argument: a function `(hp, name, task_names)` declaring the hyper-parameter
#: `name` = `"{strategy}_{argument}"` (`"dwa_temperature"`; per task:
#: `"fixed_weights_{task}"`). Defaults are the strategies' own. Strategies absent
#: here have no tuned arguments. Narrow or fix a range by declaring the same name
#: in the tuner's `hyperparameters=`.
STRATEGY_HYPERPARAMETERS = {
    "dwa": {"temperature": _float(0.5, 5.0, 2.0, "log")},
    "loss_ratio": {"temperature": _float(0.5, 5.0, 1.0, "log")},
    "famo": {
        "learning_rate": _float(1e-3, 1e-1, 0.025, "log"),
        "weight_decay": _float(1e-4, 1e-2, 1e-3, "log"),
    },
    "cagrad": {"c": _float(0.1, 0.9, 0.4)},
    "grad_norm": {
        "alpha": _float(0.5, 3.0, 1.5),
        "learning_rate": _float(1e-3, 1e-1, 0.025, "log"),
    },
    "dbmtl": {"beta": _float(0.5, 0.99, 0.9)},
    "grad_vac": {"beta": _float(1e-3, 1e-1, 1e-2, "log")},
    "fixed": {"weights": _per_task(_float(1e-2, 1e2, 1.0, "log"))},
    "fair_grad": {"alpha": _float(0.5, 2.0, 1.0)},
    "stch": {"mu": _float(0.05, 1.0, 1.0, "log")},
    "imtl": {"learning_rate": _float(1e-4, 1e-2, 1e-3, "log")},
    "excess_mtl": {"robust_step_size": _float(1e-3, 1e-1, 1e-2, "log")},
    "auto_lambda": {
        "initial_weight": _float(1e-2, 1.0, 0.1, "log"),
        "meta_learning_rate": _float(1e-5, 1e-3, 1e-4, "log"),
    },
}

#: The name under which `DeltaMObjective` logs the objective (after the prefix).
OBJECTIVE_NAME = "delta_m"


# === Objective ===


def objective(name=f"val_{OBJECTIVE_NAME}"):
    """Returns the `keras_tuner.Objective` of a log entry, with its direction.

    `delta_m` and `val_delta_m` (written by `DeltaMObjective`) are maximised.
    Any other name takes its direction from the kit's metric table
    (`kerasmtl.evaluation.metric_direction`, which also reads task-prefixed
    names such as `val_depth_mae`), and failing that from keras-tuner's own
    `infer_metric_direction`.

    Args:
        name: the log entry to optimise. Defaults to `"val_delta_m"`.

    Returns:
        A `keras_tuner.Objective`.

    Example:

    >>> objective().direction
    'max'
    >>> objective("val_depth_mae").direction
    'min'
    """
    if name in (OBJECTIVE_NAME, f"val_{OBJECTIVE_NAME}"):
        return keras_tuner.Objective(name, direction="max")
    try:
        higher = metric_direction(name.removeprefix("val_"))
    except ValueError as error:
        direction = keras_tuner.engine.metrics_tracking.infer_metric_direction(name)
        if direction is None:
            raise error from None
    else:
        direction = "max" if higher else "min"
    return keras_tuner.Objective(name, direction=direction)


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
        higher_is_better: the directions, as in
            `kerasmtl.evaluation.metric_direction`.

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
    table = report_from_logs(logs, list(baselines), prefix=prefix)
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
    multi = {task: {m: table[task][m] for m in metrics} for task, metrics in baselines.items()}
    if not all(math.isfinite(v) for metrics in multi.values() for v in metrics.values()):
        return float("nan")
    return delta_m(multi, baselines, higher_is_better, task_names=list(baselines))


class DeltaMObjective(keras.callbacks.Callback):
    """Writes delta-m against reference results into the logs at each epoch end.

    At the end of each epoch it computes `delta_m_from_logs(logs, baselines,
    prefix)` and stores it as `logs[f"{prefix}delta_m"]`, so that keras-tuner
    (with `objective(f"{prefix}delta_m")`), `EarlyStopping` and the `History`
    see it like any metric. Put it first in the callback list.

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
            `kerasmtl.evaluation.metric_direction`.
        fail_on_non_finite: whether to raise `FailedTrialError` on a NaN or
            infinite objective or loss; if false, the objective is logged as NaN
            (keras-tuner then marks the trial invalid after its last epoch).

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
        self.log_name = f"{prefix}{OBJECTIVE_NAME}"
        self.keys = [f"{prefix}{t}_{m}" for t, metrics in self.baselines.items() for m in metrics]
        self._warned_missing = False

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        missing = [key for key in self.keys if key not in logs]
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
        # A `MultiTaskModel` leaves a non-finite task loss out of the total and the
        # logs, so a model predicting NaN everywhere logs task losses of 0, which would
        # look like a perfect trial; its count of non-finite steps tells.
        counts_of = getattr(self.model, "non_finite_step_counts", None)
        non_finite = {k: v for k, v in (counts_of() if counts_of else {}).items() if v}
        loss = float(logs.get("loss", 0.0))
        reason = None
        if non_finite:
            reason = f"some task losses were NaN or infinite (steps per task: {non_finite})"
        elif not math.isfinite(value):
            reason = f"{self.log_name} is not finite: entries {[logs[k] for k in self.keys]}"
        elif not math.isfinite(loss):
            reason = f"the training loss is {loss}"
        if reason is not None and self.fail_on_non_finite:
            raise keras_tuner.errors.FailedTrialError(
                f"The trial diverged at epoch {epoch}: {reason}. It is recorded as failed "
                "and the search goes on with the next trial."
            )
        logs[self.log_name] = float("nan") if reason else value


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
    _check_task_keys(baselines, task_names, arg_name)
    checked = {}
    for task, metrics in baselines.items():
        checked[task] = {}
        for metric, value in metrics.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value == 0:
                raise ValueError(
                    f"`{arg_name}['{task}']['{metric}']` must be a finite non-zero number: "
                    f"delta-m divides by it. Received: {arg_name}['{task}']['{metric}']={value!r}"
                )
            metric_direction(metric, task, higher_is_better)
            checked[task][metric] = float(value)
    return checked


def _check_task_keys(table, task_names, arg_name):
    unknown = [task for task in table if task_names is not None and task not in task_names]
    if unknown:
        raise ValueError(
            f"Unknown task name(s) {unknown} in `{arg_name}`. Tasks: {list(task_names)}. "
            f"Received: {arg_name} keys={list(table)}"
        )


# === HyperModel ===


class MultiTaskHyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` that searches how tasks are weighted.

    `build(hp)` declares, with keras-tuner's own `hp`:

    - `"weighting"`: a choice among `strategies` (registry names of
      `kerasmtl.weighting`);
    - each strategy's tunable arguments, `"{strategy}_{argument}"` (DWA's
      `"dwa_temperature"`, FAMO's `"famo_learning_rate"`, static per-task
      weights `"fixed_weights_{task}"`...; `STRATEGY_HYPERPARAMETERS`), each in
      a conditional scope active only when its strategy is chosen;
    - `"learning_rate"` of the optimizer (log-sampled in [1e-4, 1e-2]);
    - whatever `trunk(hp)` (and `tasks(hp)`) declare, e.g. trunk and head sizes.

    The model is `kerasmtl.hard_sharing(inputs, trunk(hp), tasks)`, compiled
    with the chosen strategy. Every trial gets fresh layers: `Task`s are
    immutable descriptions, and each build makes its own heads.

    To fix some values, or narrow a range, declare them at the top level of a
    `keras_tuner.HyperParameters` (`hp.Fixed("dwa_temperature", 1.5)`, no
    conditional scope) and give it to the tuner as `hyperparameters=`; with
    `tune_new_entries=False` every other hyper-parameter keeps its default
    (each strategy's own defaults; 1.0 for static weights). A value
    no searched strategy accepts, a `weighting` outside `strategies`, or an
    unknown `"{strategy}_..."` name stops the search with
    `keras_tuner.errors.FatalValueError` when the tuner is made (keras-tuner
    builds every conditional branch then).

    The objective (`hypermodel.objective`, `val_delta_m`, maximised) is fair
    across tasks of different scales: delta-m (Maninis et al., CVPR 2019), the
    mean over tasks of each task's mean relative change against a reference, in
    percent. The reference is `baselines`: single-task results
    (`kerasmtl.evaluation.train_single_task_baselines`) or, when only metric
    names are given, each trial's untrained model on the validation data. Each
    task counts once whatever the scale of its loss; a raw sum of losses would
    let the largest-scale task decide. A trial whose objective or loss turns
    NaN or infinite fails alone (`FailedTrialError`) and the search goes on.

    Works with `RandomSearch`, `BayesianOptimization`, `Hyperband` and
    `GridSearch`, resumes with `overwrite=False`, and runs distributed (a chief
    and workers set up with keras-tuner's `KERASTUNER_TUNER_ID`,
    `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` variables). Pass
    `validation_data` to `tuner.search`.

    Args:
        tasks: the `kerasmtl.Task`s, each with an unbuilt head; or a function
            `tasks(hp)` returning them (to size the heads from `hp`).
        inputs: the inputs, as `kerasmtl.hard_sharing` takes them: a dict of
            named shapes (`{"features": (8,)}`) or named `keras.Input`s.
        trunk: a function `trunk(hp)` returning a fresh shared trunk (a layer, a
            model, or a function of the inputs) sized from `hp`.
        strategies: the registry names of the weighting strategies to search,
            or a dict `{name: {argument: declare}}` giving the tunable arguments
            of each (as in `STRATEGY_HYPERPARAMETERS`, the default for a name
            given in a list).
        optimizer: an optimizer name or config dict, or a function
            `optimizer(learning_rate=...)` returning a fresh optimizer.
        baselines: the objective's reference: single-task results
            `{task: {metric: value}}` (finite, non-zero); or metric names (a
            list for every task, or `{task: [names]}`) to measure each trial's
            untrained model on; `None` for every task's loss against the
            untrained model.
        higher_is_better: metric directions, as in
            `kerasmtl.evaluation.metric_direction`.
        **kwargs: `name` and `tunable`, as in `keras_tuner.HyperModel`.

    Example:

    ```python
    hypermodel = kerasmtl.tuning.MultiTaskHyperModel(
        tasks=[Task("price", head=1, loss="mse"), Task("rating", head=1, loss="mse")],
        inputs={"features": (16,)},
        trunk=lambda hp: keras.layers.Dense(hp.Int("units", 16, 128, step=16), "relu"),
        strategies=["equal", "dwa", "uncertainty", "fixed"],
        baselines={"price": {"loss": 120.0}, "rating": {"loss": 0.8}},
    )
    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("learning_rate", 1e-3)
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective=hypermodel.objective, hyperparameters=fixed,
        max_trials=20, directory="search", project_name="mtl")
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=10, batch_size=64)
    best = tuner.get_best_hyperparameters()[0]
    ```
    """

    def __init__(
        self,
        *,
        tasks,
        inputs,
        trunk,
        strategies=DEFAULT_STRATEGIES,
        optimizer="adam",
        baselines=None,
        higher_is_better=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.task_names = None
        if not callable(tasks):
            self.task_names = check_tasks(tasks)
            _check_heads(tasks)
        if not callable(trunk) or isinstance(trunk, keras.layers.Layer):
            raise TypeError(
                "`trunk` must be a function `trunk(hp)` returning a fresh trunk (a layer, a "
                f"model or a function of the inputs), sized from `hp`. Received: trunk={trunk!r}"
            )
        make_inputs(inputs)  # a clear error now, not one invalid trial after another
        self.tasks, self.inputs, self.trunk = tasks, inputs, trunk
        self.strategies = _check_strategies(strategies)
        if isinstance(optimizer, keras.optimizers.Optimizer) or not (
            isinstance(optimizer, (str, dict)) or callable(optimizer)
        ):
            raise TypeError(
                "`optimizer` must be an optimizer name or config dict, or a function "
                "`optimizer(learning_rate=...)` returning a fresh optimizer: an instance "
                f"would be shared by every trial. Received: optimizer={optimizer!r}"
            )
        if not callable(optimizer):
            keras.optimizers.get(optimizer)  # a clear error for an unknown name
        self.optimizer = optimizer
        self.higher_is_better = higher_is_better
        self.baselines, self.reference_metrics = None, baselines
        if isinstance(baselines, dict) and all(isinstance(v, dict) for v in baselines.values()):
            self.baselines = _check_baselines(
                baselines, higher_is_better, self.task_names, "baselines"
            )
            self.reference_metrics = None
        elif baselines is not None:
            self.reference_metrics = _check_metric_names(baselines, higher_is_better)
        self._check_task_tables(self.task_names)

    @property
    def objective(self):
        """The `keras_tuner.Objective` to give the tuner: `val_delta_m`, maximised."""
        return objective()

    def build(self, hp):
        tasks = self.tasks(hp) if callable(self.tasks) else self.tasks
        task_names = self._check_built_tasks(tasks)
        learning_rate = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
        model = hard_sharing(self.inputs, self.trunk(hp), tasks, name="multi_task_hypermodel")
        model.compile(
            optimizer=self._make_optimizer(learning_rate),
            weighting=self._declare_weighting(hp, task_names),
        )
        # Built now so that keras-tuner's `load_weights` (Hyperband's continued trials,
        # `get_best_models`) restores the optimizer's state rather than skipping it.
        model.optimizer.build(model.trainable_variables)
        return model

    def _declare_weighting(self, hp, task_names):
        chosen = hp.Choice("weighting", list(self.strategies))
        if chosen not in self.strategies:  # a value given in `hyperparameters=`
            raise keras_tuner.errors.FatalValueError(
                f"The hyper-parameter 'weighting' must be one of the searched strategies "
                f"{list(self.strategies)}. Received: weighting={chosen!r}"
            )
        # keras-tuner keys a hyper-parameter by name and conditions: a value given at the
        # top level of `hyperparameters=` is used only if it is declared there too.
        given = [p.name for p in hp.space if not p.conditions]
        space = self.strategies[chosen]
        top_level = any(g.startswith(f"{chosen}_{argument}") for argument in space for g in given)
        arguments = {}
        # Every strategy's scope is entered: keras-tuner records the inactive ones and,
        # when the tuner is made, builds once with each, so their arguments join the
        # space from the start.
        for name in self.strategies:
            with hp.conditional_scope("weighting", [name]):
                if name == chosen and not top_level:
                    arguments = {a: d(hp, f"{name}_{a}", task_names) for a, d in space.items()}
        if top_level:
            arguments = {a: d(hp, f"{chosen}_{a}", task_names) for a, d in space.items()}
        self._check_strategy_names(hp, chosen, task_names)
        try:
            return weighting_module.ALL_OBJECTS_DICT[chosen](**arguments)
        except (TypeError, ValueError) as error:
            raise keras_tuner.errors.FatalValueError(
                f"The strategy '{chosen}' rejects its hyper-parameters: {error} "
                f"Received: {arguments}"
            ) from None

    def _check_strategy_names(self, hp, chosen, task_names):
        """Stops on a `{strategy}_...` value that the chosen strategy does not declare."""
        registry = [
            weighting_module.registry_name(c.__name__) for c in weighting_module.ALL_OBJECTS
        ]
        declared = {
            f"{chosen}_{argument}{suffix}"
            for argument in self.strategies[chosen]
            for suffix in ["", *(f"_{task}" for task in task_names)]
        }
        for name, value in hp.values.items():
            owners = [s for s in registry if name.startswith(f"{s}_")]
            owner = max(owners, key=len) if owners else None
            if owner is not None and owner not in self.strategies:
                raise keras_tuner.errors.FatalValueError(
                    f"The hyper-parameter '{name}' belongs to strategy '{owner}', which is not "
                    f"searched. Searched strategies: {list(self.strategies)}. "
                    f"Received: {name}={value!r}"
                )
            if owner == chosen and name not in declared:
                raise keras_tuner.errors.FatalValueError(
                    f"Unknown hyper-parameter '{name}'. Strategy '{chosen}' declares "
                    f"{sorted(declared)} (tasks: {task_names}). Received: {name}={value!r}"
                )

    def _check_built_tasks(self, tasks):
        if self.task_names is not None:
            return self.task_names
        try:
            names = check_tasks(tasks)
            _check_heads(tasks)
            self._check_task_tables(names)
        except (TypeError, ValueError) as error:
            raise keras_tuner.errors.FatalValueError(f"`tasks(hp)`: {error}") from None
        return names

    def _check_task_tables(self, task_names):
        if task_names is None:
            return
        for table in (self.baselines, self.reference_metrics):
            if isinstance(table, dict):
                _check_task_keys(table, task_names, "baselines")

    def _make_optimizer(self, learning_rate):
        if learning_rate is None or not 0 < learning_rate < math.inf:
            raise keras_tuner.errors.FatalValueError(
                f"The learning rate must be a positive number. Received: learning_rate="
                f"{learning_rate!r}"
            )
        if callable(self.optimizer):
            return self.optimizer(learning_rate=float(learning_rate))
        config = keras.optimizers.get(self.optimizer).get_config()
        config["learning_rate"] = float(learning_rate)
        return keras.optimizers.get(self.optimizer).__class__.from_config(config)

    def fit(self, hp, model, *args, **kwargs):
        """Trains one trial's model, with `val_delta_m` in its logs.

        Puts a `DeltaMObjective` in front of the callbacks keras-tuner passes
        (`MultiTaskModel.fit` adds the epoch update of strategies such as DWA
        itself). Without single-task `baselines`, the reference is the trial's
        untrained model on the validation data (for a Hyperband trial that goes
        on from an earlier one, a freshly built model with the same values).
        """
        validation_data = kwargs.get("validation_data")
        if validation_data is None and (
            self.baselines is None or not kwargs.get("validation_split")
        ):
            raise keras_tuner.errors.FatalValueError(
                "The objective `val_delta_m` is computed on validation data: pass "
                "`validation_data=(x_val, y_val)` (or a dataset) to `tuner.search`"
                + (
                    " (or `validation_split`, since `baselines` holds results)"
                    if self.baselines
                    else ""
                )
                + ". Received: validation_data=None"
            )
        baselines = self.baselines
        if baselines is None:
            # Hyperband loaded the weights of an earlier trial into `model`.
            reference = self.build(hp) if "tuner/trial_id" in hp.values else model
            baselines = self._reference_results(
                reference, validation_data, kwargs.get("batch_size")
            )
        callback = DeltaMObjective(baselines, higher_is_better=self.higher_is_better)
        callbacks = [callback, *(kwargs.pop("callbacks", None) or [])]
        history = model.fit(*args, callbacks=callbacks, **kwargs)
        if callback.log_name not in history.history:
            raise keras_tuner.errors.FatalValueError(
                f"The logs have no '{callback.log_name}': they lack entries "
                f"{[key for key in callback.keys if key not in history.history]} that the "
                f"objective compares. Log keys: {sorted(history.history)}. Check the task "
                "and metric names of `baselines` and the tasks' metrics."
            )
        return history

    def _reference_results(self, model, validation_data, batch_size):
        if isinstance(validation_data, (tuple, list)):
            logs = model.evaluate(
                *validation_data, batch_size=batch_size, verbose=0, return_dict=True
            )
        else:
            logs = model.evaluate(validation_data, verbose=0, return_dict=True)
        table = report_from_logs(logs, model.task_names)
        selection = self.reference_metrics
        if not isinstance(selection, dict):
            selection = {task: list(selection or ["loss"]) for task in model.task_names}
        reference = {}
        for task, metrics in selection.items():
            reference[task] = {}
            for metric in metrics:
                if metric not in table.get(task, {}):
                    raise keras_tuner.errors.FatalValueError(
                        f"`baselines` names '{task}_{metric}', which the model does not log. "
                        f"Task '{task}' logs: {sorted(table.get(task, {}))}. "
                        f"Received: baselines={self.reference_metrics!r}"
                    )
                value = table[task][metric]
                if not math.isfinite(value) or value == 0.0:
                    raise keras_tuner.errors.FailedTrialError(
                        f"The untrained model's '{task}_{metric}' is {value}: delta-m cannot "
                        "be measured against it. Give single-task results as `baselines`."
                    )
                reference[task][metric] = value
        return reference


def _check_heads(tasks):
    for task in tasks:
        if task.head is None or (isinstance(task.head, keras.layers.Layer) and task.head.built):
            raise ValueError(
                f"Task '{task.name}' needs an unbuilt head: every trial needs fresh weights. "
                "Pass an int (units of a Dense layer), an unbuilt layer or a factory. "
                f"Received: head={task.head!r}"
            )


def _check_strategies(strategies):
    if isinstance(strategies, str):
        strategies = [strategies]
    if not isinstance(strategies, (list, tuple, dict)) or not strategies:
        raise ValueError(
            "`strategies` must be a non-empty list of weighting strategy names, or a dict "
            f"{{name: {{argument: declare}}}}. Received: strategies={strategies!r}"
        )
    checked = {}
    for entry in strategies:
        if not isinstance(entry, str):
            raise TypeError(f"`strategies` holds strategy names. Received: {entry!r}")
        name = weighting_module.registry_name(weighting_module.get(entry).__class__.__name__)
        if name in checked:
            raise ValueError(
                f"The strategy '{name}' appears twice in `strategies`. "
                f"Received: strategies={list(strategies)}"
            )
        space = strategies[entry] if isinstance(strategies, dict) else None
        if space is None:
            space = STRATEGY_HYPERPARAMETERS.get(name, {})
        if not isinstance(space, dict) or not all(callable(v) for v in space.values()):
            raise TypeError(
                f"`strategies['{entry}']` must be a dict {{argument: declare(hp, name, "
                f"task_names)}}. Received: {space!r}"
            )
        checked[name] = space
    return checked


def _check_metric_names(metrics, higher_is_better):
    """Validates metric names measured against the untrained model: a list or `{task: [names]}`."""
    if isinstance(metrics, str):
        metrics = [metrics]
    table = metrics if isinstance(metrics, dict) else {None: metrics}
    checked = {}
    for task, names in table.items():
        names = [names] if isinstance(names, str) else names
        if (
            not isinstance(names, (list, tuple))
            or not names
            or not all(isinstance(n, str) for n in names)
        ):
            raise ValueError(
                "`baselines` must be single-task results {task: {metric: value}}, metric names "
                "for every task, or {task: [metric names]}. "
                f"Received: baselines={metrics!r}"
            )
        for name in names:
            metric_direction(name, task, higher_is_better)
        checked[task] = list(names)
    return checked if isinstance(metrics, dict) else checked[None]


__all__ = [
    "DEFAULT_STRATEGIES",
    "DeltaMObjective",
    "MultiTaskHyperModel",
    "OBJECTIVE_NAME",
    "STRATEGY_HYPERPARAMETERS",
    "delta_m_from_logs",
    "objective",
]
