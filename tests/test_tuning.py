"""Tests of kerasmtl.tuning: search space, objective, tuners, resume, NaN trials, distribution."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl import Task

keras_tuner = pytest.importorskip("keras_tuner")
pytest.importorskip("tensorboard")
from kerasmtl import tuning  # noqa: E402
from kerasmtl.tuning import DeltaMObjective, delta_m_from_logs  # noqa: E402

# keras-tuner 1.4.8's oracle calls `threading.currentThread().getName()` (deprecated since
# Python 3.10) on every oracle call: two third-party warnings, named and ignored here only.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:currentThread\\(\\) is deprecated, use current_thread\\(\\) instead"
        ":DeprecationWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:getName\\(\\) is deprecated, get the name attribute instead:DeprecationWarning"
    ),
]


def _tasks(metrics=None):
    return [
        Task("a", head=1, loss="mse", metrics=metrics),
        Task("b", head=1, loss="mse"),
    ]


def _data(num_samples, seed, coupling=0.5):
    """Two regression tasks 100x apart in loss scale: `a = 10 x0`, `b = x1 + c x0`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 2)).astype("float32")
    labels = {"a": 10.0 * x[:, :1], "b": x[:, 1:2] + coupling * x[:, :1]}
    return x, labels


def _trunk(hp):
    units = hp.Choice("trunk_units", [4, 8])
    return keras.layers.Dense(units, activation="relu", name="trunk")


def _small_hypermodel(**kwargs):
    settings = dict(
        tasks=_tasks(),
        inputs={"features": (2,)},
        trunk=_trunk,
        strategies=["equal", "dwa", "uncertainty"],
    )
    settings.update(kwargs)
    return tuning.MultiTaskHyperModel(**settings)


def _hyperparameters(**values):
    """A `HyperParameters` holding fixed values (or ranges, given as `(kind, args)`)."""
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        if isinstance(value, tuple):
            getattr(hp, value[0])(name, *value[1:])
        else:
            hp.Fixed(name, value)
    return hp


def _statuses(tuner):
    return {trial.trial_id: trial.status for trial in tuner.oracle.trials.values()}


# === Optional dependency ===


def test_import_kerasmtl_does_not_import_keras_tuner():
    code = textwrap.dedent(
        """
        import inspect
        import sys
        import kerasmtl
        assert "keras_tuner" not in sys.modules, "imported with kerasmtl"
        assert "tuning" in dir(kerasmtl) and "tuning" not in kerasmtl.__all__
        cls = kerasmtl.tuning.MultiTaskHyperModel
        import keras_tuner
        assert issubclass(cls, keras_tuner.HyperModel)
        # A class statement of the module, not a class made at run time.
        assert cls.__module__ == "kerasmtl.tuning" and cls.__qualname__ == cls.__name__
        assert "class MultiTaskHyperModel(keras_tuner.HyperModel)" in inspect.getsource(cls)
        import kerasmtl.tuning
        assert kerasmtl.tuning.MultiTaskHyperModel is cls
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_missing_keras_tuner_gives_the_install_hint(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    monkeypatch.delitem(sys.modules, "kerasmtl.tuning")
    with pytest.raises(ImportError, match=r'pip install "kerasmtl\[tuner\]"') as info:
        importlib.import_module("kerasmtl.tuning")
    assert info.value.name == "keras_tuner"


def test_unknown_package_attribute():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        kerasmtl.NoSuchThing  # noqa: B018


# === Constructor validation ===


def _built_head():
    head = keras.layers.Dense(1, name="a")
    head.build((None, 4))
    return head


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(strategies=["equal", "dwaa"]),
            ValueError,
            r"Unknown weighting strategy 'dwaa'.*'cagrad'.*'dwa'.*'famo'",
        ),
        (dict(strategies=[]), ValueError, "non-empty list"),
        (dict(strategies=["dwa", "DWA"]), ValueError, "appears twice"),
        (dict(strategies={"dwa": {"temperature": 2.0}}), TypeError, r"declare\(hp"),
        (
            dict(baselines={"a": {"loss": 1.0}, "c": {"loss": 1.0}}),
            ValueError,
            r"Unknown task name\(s\) \['c'\] in `baselines`. Tasks: \['a', 'b'\]",
        ),
        (dict(baselines={"a": {"loss": 0.0}}), ValueError, "finite non-zero"),
        (dict(baselines={"a": {"loss": float("nan")}}), ValueError, "finite non-zero"),
        (dict(baselines={"a": {"wobble": 1.0}}), ValueError, "wobble"),
        (dict(baselines={"c": ["loss"]}), ValueError, r"Unknown task name\(s\) \['c'\]"),
        (dict(baselines=["wobble"]), ValueError, "higher 'wobble' is better"),
        (dict(baselines={"a": []}), ValueError, "metric names"),
        (dict(baselines={"a": {"loss": 1.0}}, higher_is_better="yes"), TypeError, "bool"),
        (dict(optimizer=keras.optimizers.Adam()), TypeError, "shared by every trial"),
        (dict(optimizer="adamm"), ValueError, "adamm"),
        (dict(inputs=[1, 2]), ValueError, "names"),
        (dict(trunk=keras.layers.Dense(4)), TypeError, r"trunk\(hp\)"),
        (dict(tasks=[Task("a", head=_built_head(), loss="mse")]), ValueError, "unbuilt head"),
        (dict(tasks=[Task("a", loss="mse")]), ValueError, "unbuilt head"),
        (dict(tasks=[]), ValueError, "task"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        _small_hypermodel(**kwargs)


def test_constructor_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        tuning.MultiTaskHyperModel(_tasks(), {"features": (2,)}, _trunk)


# Bad values given through keras-tuner's own `hyperparameters=` stop the search when the
# tuner is made (keras-tuner builds each conditional branch then), with a fatal error that
# keras-tuner does not swallow into invalid trials.
@pytest.mark.parametrize(
    "strategies, values, match",
    [
        (
            ["equal", "dwa"],
            dict(dwa_temprature=2.0),
            r"Unknown hyper-parameter 'dwa_temprature'.*'dwa_temperature'",
        ),
        (
            ["equal", "fixed"],
            dict(fixed_weights_c=1.0),
            r"Unknown hyper-parameter 'fixed_weights_c'.*tasks: \['a', 'b'\]",
        ),
        (["equal", "fixed"], dict(fixed_weights_a=-1.0), "'fixed' rejects"),
        (["equal", "dwa"], dict(weighting="mgda"), "one of the searched strategies"),
        (["equal", "dwa"], dict(dwa_temperature=-1.0), "'dwa' rejects"),
        (["cagrad"], dict(cagrad_c=("Float", -0.5, 0.5)), "'cagrad' rejects"),
        (["equal", "dwa"], dict(famo_learning_rate=0.01), "'famo', which is not searched"),
        (["equal"], dict(learning_rate=0.0), "learning rate must be a positive"),
    ],
)
def test_bad_hyperparameters_stop_the_search_when_the_tuner_is_made(
    tmp_path, strategies, values, match
):
    hypermodel = _small_hypermodel(strategies=strategies)
    with pytest.raises(keras_tuner.errors.FatalValueError, match=match):
        keras_tuner.RandomSearch(
            hypermodel,
            objective=hypermodel.objective,
            hyperparameters=_hyperparameters(**values),
            max_trials=1,
            directory=tmp_path,
        )


def test_task_factory_errors_surface_when_the_tuner_is_made(tmp_path):
    hypermodel = tuning.MultiTaskHyperModel(
        tasks=lambda hp: _tasks(),
        inputs={"features": (2,)},
        trunk=_trunk,
        strategies=["equal"],
        baselines={"c": {"loss": 1.0}},
    )
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"\['c'\].*\['a', 'b'\]"):
        keras_tuner.RandomSearch(
            hypermodel, objective=hypermodel.objective, max_trials=1, directory=tmp_path
        )
    built = tuning.MultiTaskHyperModel(
        tasks=lambda hp: [Task("a", head=_built_head(), loss="mse")],
        inputs={"features": (2,)},
        trunk=_trunk,
    )
    with pytest.raises(keras_tuner.errors.FatalValueError, match="unbuilt head"):
        keras_tuner.RandomSearch(
            built, objective=built.objective, max_trials=1, directory=tmp_path / "built"
        )


# === Search space ===


def _sized_tasks(hp):
    """Tasks whose heads are a hidden layer sized from `hp`, then the output."""
    units = hp.Int("head_units", 2, 4, step=2)

    def head(outputs):
        return lambda: keras.Sequential(
            [keras.layers.Dense(units, activation="relu"), keras.layers.Dense(outputs)]
        )

    return [Task("a", head=head(1), loss="mse"), Task("b", head=head(3), loss="mse")]


def test_search_space_is_conditional_and_builds_fresh_models(tmp_path):
    hypermodel = tuning.MultiTaskHyperModel(
        tasks=_sized_tasks,
        inputs={"features": (2,)},
        trunk=_trunk,
        strategies=["equal", "dwa", "famo", "cagrad", "fixed"],
    )
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=hypermodel.objective, max_trials=1, directory=tmp_path
    )
    # keras-tuner itself found every conditional branch when the tuner was made.
    space = {p.name: p for p in tuner.oracle.hyperparameters.space}
    assert sorted(space) == sorted(
        [
            "weighting",
            "head_units",
            "learning_rate",
            "trunk_units",
            "dwa_temperature",
            "famo_learning_rate",
            "famo_weight_decay",
            "cagrad_c",
            "fixed_weights_a",
            "fixed_weights_b",
        ]
    )
    assert space["weighting"].values == ["equal", "dwa", "famo", "cagrad", "fixed"]
    assert [c.values for c in space["cagrad_c"].conditions] == [["cagrad"]]
    assert [c.name for c in space["fixed_weights_b"].conditions] == ["weighting"]
    assert not space["learning_rate"].conditions
    # Defaults are the strategies' own (what `tune_new_entries=False` uses).
    assert space["dwa_temperature"].default == kerasmtl.weighting.DWA().temperature
    assert space["famo_learning_rate"].default == kerasmtl.weighting.FAMO().learning_rate
    assert space["cagrad_c"].default == kerasmtl.weighting.CAGrad().c

    hp = _hyperparameters(weighting="dwa", dwa_temperature=3.5, head_units=4)
    model = hypermodel.build(hp)
    assert isinstance(model, kerasmtl.MultiTaskModel)
    assert isinstance(model.weighting, kerasmtl.weighting.DWA)
    assert model.weighting.temperature == 3.5
    # Each strategy's own hyper-parameters are active only with that strategy.
    active = {p.name for p in hp.space if hp.is_active(p)}
    assert "dwa_temperature" in active
    assert not active & {"famo_learning_rate", "cagrad_c", "fixed_weights_a"}
    # The heads are a hidden layer sized from hp, then the output.
    assert model.get_layer("b").layers[-1].units == 3
    assert model.get_layer("b").layers[0].units == 4
    # Two builds share no layer.
    other = hypermodel.build(hp)
    assert not {id(w) for w in model.weights} & {id(w) for w in other.weights}

    hp = _hyperparameters(weighting="fixed", fixed_weights_a=0.25, fixed_weights_b=4.0)
    model = hypermodel.build(hp)
    weights = keras.ops.convert_to_numpy(model.weighting.loss_weights)
    np.testing.assert_allclose(weights, [0.25, 4.0])

    hp = _hyperparameters(weighting="famo", learning_rate=0.005)
    model = hypermodel.build(hp)
    assert isinstance(model.weighting, kerasmtl.weighting.FAMO)
    assert model.weighting.learning_rate == hp.get("famo_learning_rate") == 0.025
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)


@pytest.mark.parametrize("strategy", sorted(tuning.STRATEGY_HYPERPARAMETERS))
def test_every_tuned_argument_defaults_to_the_strategy_s_own_default(strategy):
    import inspect

    import keras_tuner

    hp = keras_tuner.HyperParameters()
    defaults = inspect.signature(type(kerasmtl.weighting.get(strategy)).__init__).parameters
    for argument, declare in tuning.STRATEGY_HYPERPARAMETERS[strategy].items():
        assert argument in defaults, f"{strategy} has no argument {argument!r}"
        value = declare(hp, f"{strategy}_{argument}", ["a", "b"])
        if defaults[argument].default is None:  # per-task weights: 1 each, like Fixed's
            assert value == [1.0, 1.0]
        else:
            assert value == pytest.approx(defaults[argument].default)


def test_a_strategy_space_given_in_the_constructor_and_a_fresh_optimizer_per_trial():
    made = []

    def sgd(learning_rate):
        made.append(keras.optimizers.SGD(learning_rate=learning_rate))
        return made[-1]

    hypermodel = _small_hypermodel(
        strategies={"dwa": {"temperature": lambda hp, name, tasks: hp.Choice(name, [0.7, 1.1])}},
        optimizer=sgd,
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.get("dwa_temperature") == model.weighting.temperature == 0.7
    assert model.optimizer is made[-1]
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    hypermodel.build(hp)
    assert made[0] is not made[1]


def test_fixed_values_come_through_keras_tuner_hyperparameters(tmp_path):
    x, y = _data(64, seed=0)
    validation = _data(32, seed=1)
    fixed = _hyperparameters(weighting="dwa", dwa_temperature=1.5)
    tuner = keras_tuner.RandomSearch(
        _small_hypermodel(),
        objective=tuning.objective(),
        hyperparameters=fixed,
        tune_new_entries=False,
        max_trials=2,
        directory=tmp_path,
        project_name="fixed",
    )
    # Only what was given is searched: everything else keeps its default.
    assert sorted(p.name for p in tuner.oracle.hyperparameters.space) == [
        "dwa_temperature",
        "weighting",
    ]
    tuner.search(x, y, validation_data=validation, epochs=1, batch_size=32, verbose=0)
    trial = next(iter(tuner.oracle.trials.values()))
    assert trial.status == "COMPLETED", trial.message
    # The rest hold their defaults.
    assert trial.hyperparameters.values == {
        "weighting": "dwa",
        "dwa_temperature": 1.5,
        "learning_rate": 1e-3,
        "trunk_units": 4,
    }
    model = tuner.get_best_models(1)[0]
    assert model.weighting.temperature == 1.5
    assert model.get_layer("trunk").units == 4

    # A narrowed range, declared the keras-tuner way, replaces the table's.
    narrowed = keras_tuner.HyperParameters()
    narrowed.Float("dwa_temperature", 1.0, 1.2)
    tuner = keras_tuner.RandomSearch(
        _small_hypermodel(),
        objective=tuning.objective(),
        hyperparameters=narrowed,
        max_trials=1,
        directory=tmp_path,
        project_name="narrowed",
    )
    space = {p.name: p for p in tuner.oracle.hyperparameters.space}
    assert (space["dwa_temperature"].min_value, space["dwa_temperature"].max_value) == (1.0, 1.2)
    assert {"weighting", "learning_rate", "trunk_units"} <= set(space)


def test_fit_measures_against_the_untrained_model_and_schedules_dwa():
    keras.utils.set_random_seed(0)
    x, y = _data(128, seed=0)
    validation = _data(64, seed=1)
    hypermodel = _small_hypermodel(
        tasks=_tasks(metrics=["mae"]), baselines={"a": ["mae"], "b": ["loss"]}
    )
    hp = _hyperparameters(weighting="dwa", dwa_temperature=0.5, trunk_units=8, learning_rate=0.01)
    model = hypermodel.build(hp)
    untrained = model.evaluate(*validation, batch_size=32, verbose=0, return_dict=True)
    history = hypermodel.fit(
        hp, model, x, y, validation_data=validation, epochs=3, batch_size=32, verbose=0
    ).history
    expected = [
        100.0
        * np.mean(
            [
                (untrained["a_mae"] - history["val_a_mae"][epoch]) / untrained["a_mae"],
                (untrained["b_loss"] - history["val_b_loss"][epoch]) / untrained["b_loss"],
            ]
        )
        for epoch in range(3)
    ]
    np.testing.assert_allclose(history["val_delta_m"], expected, rtol=1e-5)
    # DWA got its epoch update: the weights move from the third epoch on.
    assert history["a_weight"][:2] == pytest.approx([1.0, 1.0])
    assert history["a_weight"][2] != pytest.approx(1.0)


# === Objective ===


def _reference_delta_m(values, baselines, higher):
    per_task = []
    for task in baselines:
        rel = [
            (1.0 if higher[task][metric] else -1.0) * (values[task][metric] - base) / base
            for metric, base in baselines[task].items()
        ]
        per_task.append(np.mean(rel))
    return 100.0 * np.mean(per_task)


def test_objective_matches_numpy_and_weights_tasks_equally():
    # Task "big" has a loss 100x that of "small": a raw sum would ignore "small".
    baselines = {
        "big": {"loss": 250.0, "mae": 12.0},
        "small": {"loss": 2.5, "accuracy": 0.60},
    }
    logs = {
        "loss": 123.0,
        "val_big_loss": 200.0,
        "val_big_mae": 13.5,
        "val_big_weight": 1.0,
        "val_small_loss": 2.0,
        "val_small_accuracy": 0.75,
        "big_loss": 1.0,
    }
    values = {
        "big": {"loss": 200.0, "mae": 13.5},
        "small": {"loss": 2.0, "accuracy": 0.75},
    }
    higher = {"loss": False, "mae": False, "accuracy": True}
    higher = {task: dict(higher) for task in baselines}
    expected = _reference_delta_m(values, baselines, higher)
    assert delta_m_from_logs(logs, baselines) == pytest.approx(expected, rel=1e-12)

    callback = DeltaMObjective(baselines)
    callback.on_epoch_end(0, logs)
    assert logs["val_delta_m"] == pytest.approx(expected, rel=1e-12)

    # Scaling one task's values and baselines by 100 changes nothing.
    scaled = {"big": {k: v * 100 for k, v in baselines["big"].items()}, "small": baselines["small"]}
    scaled_logs = dict(logs, val_big_loss=20000.0, val_big_mae=1350.0)
    assert delta_m_from_logs(scaled_logs, scaled) == pytest.approx(expected, rel=1e-12)

    # An explicit direction (evaluation's one table of directions) overrides the name.
    flipped = delta_m_from_logs(logs, baselines, higher_is_better={"small_accuracy": False})
    higher["small"]["accuracy"] = False
    assert flipped == pytest.approx(_reference_delta_m(values, baselines, higher), rel=1e-12)

    # Training logs.
    train = DeltaMObjective({"big": {"loss": 4.0}}, prefix="")
    train_logs = {"big_loss": 1.0}
    train.on_epoch_end(0, train_logs)
    assert train_logs["delta_m"] == pytest.approx(75.0)
    assert train.log_name == "delta_m"


def test_objective_non_finite_and_missing_entries():
    baselines = {"a": {"loss": 1.0}, "b": {"loss": 1.0}}
    logs = {"val_a_loss": float("nan"), "val_b_loss": 0.5}
    assert np.isnan(delta_m_from_logs(logs, baselines))
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="diverged"):
        DeltaMObjective(baselines).on_epoch_end(0, dict(logs))
    lenient = DeltaMObjective(baselines, fail_on_non_finite=False)
    logs_copy = dict(logs)
    lenient.on_epoch_end(0, logs_copy)
    assert np.isnan(logs_copy["val_delta_m"])
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="training loss is inf"):
        DeltaMObjective(baselines).on_epoch_end(
            0, {"loss": float("inf"), "val_a_loss": 1.0, "val_b_loss": 1.0}
        )
    with pytest.raises(ValueError, match=r"\['val_b_loss'\].*Available keys: \['val_a_loss'\]"):
        delta_m_from_logs({"val_a_loss": 1.0}, baselines)
    with pytest.raises(ValueError, match="prefix"):
        DeltaMObjective(baselines, prefix="test_")
    callback = DeltaMObjective(baselines)
    partial = {"val_a_loss": 1.0}
    with pytest.warns(UserWarning, match=r"\['val_b_loss'\].*Available keys: \['val_a_loss'\]"):
        callback.on_epoch_end(0, partial)
    assert "val_delta_m" not in partial


def test_objective_directions():
    assert (tuning.objective().name, tuning.objective().direction) == ("val_delta_m", "max")
    assert tuning.objective("delta_m").direction == "max"
    assert _small_hypermodel().objective.name == "val_delta_m"
    # The kit's table (kerasmtl.evaluation) reads task-prefixed names.
    assert tuning.objective("val_depth_mae").direction == "min"
    assert tuning.objective("val_segment_accuracy").direction == "max"
    assert tuning.objective("val_loss").direction == "min"
    # Names the kit's table lacks fall back to keras-tuner's infer_metric_direction.
    assert tuning.objective("val_kl_divergence").direction == "min"
    with pytest.raises(ValueError, match="higher 'wobble' is better"):
        tuning.objective("val_wobble")


# === Tuners ===


def test_search_finds_the_weighting_that_balances_a_100x_scale_gap(tmp_path):
    # `a = 10 x0` (loss scale 100) and `b = x1 + 0.5 x0` (scale 1.25) share a trunk of
    # ONE linear unit. Equal weighting spends it on `a`: R2_a ~ 1, R2_b ~ 0.2 (delta-m
    # against the constant predictor ~ 60). Weights 1/scale balance the tasks: the
    # unit takes the top eigenvector of sum_k C_k / var_k, R2 mean ~ 0.72 (~ 72).
    keras.utils.set_random_seed(0)
    x, y = _data(1024, seed=0)
    x_val, y_val = _data(512, seed=1)
    constant_predictor = {task: {"loss": float(np.var(y_val[task]))} for task in y_val}
    hypermodel = tuning.MultiTaskHyperModel(
        tasks=_tasks(),
        inputs={"features": (2,)},
        trunk=lambda hp: keras.layers.Dense(1, name="bottleneck"),
        strategies=["equal", "fixed"],
        baselines=constant_predictor,
    )
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective=hypermodel.objective,
        hyperparameters=_hyperparameters(
            fixed_weights_a=0.01, fixed_weights_b=1.0, learning_rate=0.1
        ),
        max_trials=2,
        seed=3,
        directory=tmp_path,
        project_name="balance",
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=3, batch_size=32, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert sorted(t.hyperparameters.get("weighting") for t in trials) == ["equal", "fixed"]
    assert all(t.status == "COMPLETED" for t in trials), _statuses(tuner)
    scores = {t.hyperparameters.get("weighting"): t.score for t in trials}
    best = tuner.get_best_hyperparameters()[0]
    assert best.get("weighting") == "fixed", scores
    # The values given at the top level are the ones used, not sampled over again.
    assert (best.get("fixed_weights_a"), best.get("fixed_weights_b")) == (0.01, 1.0)
    names = [p.name for p in tuner.oracle.hyperparameters.space]
    assert names.count("fixed_weights_a") == 1, names
    assert scores["fixed"] > scores["equal"] + 5.0, scores
    assert 45.0 < scores["equal"] < 65.0, scores


@pytest.mark.parametrize(
    "tuner_name",
    [
        "RandomSearch",
        # Its Gaussian process (scikit-learn) fitted on two or three points may warn
        # that a length scale sits at its bound: third-party, named and ignored here.
        pytest.param(
            "BayesianOptimization",
            marks=pytest.mark.filterwarnings(
                "ignore:The optimal value found for dimension:sklearn.exceptions.ConvergenceWarning"
            ),
        ),
        "Hyperband",
    ],
)
def test_tuners_run_with_the_default_objective(tmp_path, tuner_name):
    keras.utils.set_random_seed(0)
    x, y = _data(128, seed=0)
    x_val, y_val = _data(64, seed=1)
    hypermodel = _small_hypermodel(tasks=_sized_tasks)
    common = dict(objective=hypermodel.objective, directory=tmp_path, project_name=tuner_name)
    if tuner_name == "RandomSearch":
        tuner = keras_tuner.RandomSearch(hypermodel, max_trials=2, seed=1, **common)
    elif tuner_name == "BayesianOptimization":
        tuner = keras_tuner.BayesianOptimization(
            hypermodel, max_trials=3, num_initial_points=2, seed=1, **common
        )
    else:
        tuner = keras_tuner.Hyperband(
            hypermodel, max_epochs=2, factor=2, hyperband_iterations=1, seed=1, **common
        )
    search_kwargs = dict(validation_data=(x_val, y_val), batch_size=32, verbose=0)
    if tuner_name != "Hyperband":
        search_kwargs["epochs"] = 2
    tuner.search(x, y, **search_kwargs)
    trials = list(tuner.oracle.trials.values())
    assert trials and all(t.status == "COMPLETED" for t in trials), _statuses(tuner)
    assert all(np.isfinite(t.score) for t in trials)
    assert all(t.metrics.exists("val_delta_m") for t in trials)
    best = tuner.get_best_hyperparameters()[0]
    assert best.get("weighting") in ("equal", "dwa", "uncertainty")
    if tuner_name == "Hyperband":
        # Some trial went on from an earlier one (its reference is a fresh model).
        assert any("tuner/trial_id" in t.hyperparameters.values for t in trials)
    model = tuner.get_best_models(1)[0]
    assert isinstance(model, kerasmtl.MultiTaskModel)


def test_resume_does_not_redo_finished_trials(tmp_path):
    fits = []

    class Counting(tuning.MultiTaskHyperModel):
        def fit(self, hp, model, *args, **kwargs):
            fits.append(dict(hp.values))
            return super().fit(hp, model, *args, **kwargs)

    keras.utils.set_random_seed(0)
    x, y = _data(128, seed=0)
    search = dict(validation_data=_data(64, seed=1), epochs=1, batch_size=32, verbose=0)

    def make_tuner(max_trials, overwrite):
        hypermodel = Counting(
            tasks=_tasks(),
            inputs={"features": (2,)},
            trunk=_trunk,
            strategies=["equal", "dwa", "uncertainty"],
        )
        return keras_tuner.RandomSearch(
            hypermodel,
            objective=hypermodel.objective,
            max_trials=max_trials,
            seed=7,
            directory=tmp_path,
            project_name="resume",
            overwrite=overwrite,
        )

    first = make_tuner(2, overwrite=True)
    first.search(x, y, **search)
    assert len(fits) == 2
    done = {t.trial_id: t.score for t in first.oracle.trials.values()}

    fits.clear()
    resumed = make_tuner(3, overwrite=False)
    resumed.search(x, y, **search)
    assert len(fits) == 1, fits
    trials = resumed.oracle.trials
    assert len(trials) == 3
    assert all(t.status == "COMPLETED" for t in trials.values())
    for trial_id, score in done.items():
        assert trials[trial_id].score == score


def test_a_nan_trial_fails_alone(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _data(128, seed=0)
    hypermodel = _small_hypermodel(strategies=["equal"])
    # The first grid point makes Adam's first step overflow the model.
    grid = keras_tuner.HyperParameters()
    grid.Choice("learning_rate", [1e30, 1e-2, 3e-3])
    tuner = keras_tuner.GridSearch(
        hypermodel,
        objective=hypermodel.objective,
        hyperparameters=grid,
        tune_new_entries=False,
        max_trials=3,
        directory=tmp_path,
        project_name="nan",
    )
    tuner.search(x, y, validation_data=_data(64, seed=1), epochs=2, batch_size=32, verbose=0)
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)
    assert [t.hyperparameters.get("learning_rate") for t in trials] == [1e30, 1e-2, 3e-3]
    assert [t.status for t in trials] == ["FAILED", "COMPLETED", "COMPLETED"]
    assert "FailedTrialError" in trials[0].message
    assert "NaN or infinite" in trials[0].message
    assert all(np.isfinite(t.score) for t in trials[1:])
    assert tuner.get_best_hyperparameters()[0].get("learning_rate") != 1e30


def test_search_without_validation_data_stops_with_a_clear_error(tmp_path):
    x, y = _data(64, seed=0)
    hypermodel = _small_hypermodel()
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=hypermodel.objective, max_trials=1, directory=tmp_path
    )
    with pytest.raises(keras_tuner.errors.FatalValueError, match="validation_data"):
        tuner.search(x, y, epochs=1, verbose=0)


# The callback's own warning (tested above) would otherwise fail the trial as an error.
@pytest.mark.filterwarnings("ignore:DeltaMObjective needs the log entries:UserWarning")
def test_baselines_naming_an_unlogged_metric_stop_the_search(tmp_path):
    x, y = _data(64, seed=0)
    hypermodel = _small_hypermodel(baselines={"a": {"mae": 1.0}, "b": {"loss": 1.0}})
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=hypermodel.objective, max_trials=2, directory=tmp_path
    )
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"\['val_a_mae'\]"):
        tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)
    unlogged = _small_hypermodel(baselines={"a": ["mae"]})
    tuner = keras_tuner.RandomSearch(
        unlogged, objective=unlogged.objective, max_trials=1, directory=tmp_path / "names"
    )
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"'a_mae'.*logs: \['loss'\]"):
        tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)


# === Distributed tuning ===

_DISTRIBUTED_SCRIPT = """
import os
import sys

import keras
import keras_tuner
import numpy as np

import kerasmtl
from kerasmtl import tuning

directory = sys.argv[1]
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 2)).astype("float32")
y = {"a": 10.0 * x[:, :1], "b": x[:, 1:2]}
runs = []


class Counting(tuning.MultiTaskHyperModel):
    def fit(self, hp, model, *args, **kwargs):
        runs.append(hp.values["weighting"])
        return super().fit(hp, model, *args, **kwargs)


hypermodel = Counting(
    tasks=[kerasmtl.Task("a", head=1, loss="mse"), kerasmtl.Task("b", head=1, loss="mse")],
    inputs={"features": (2,)},
    trunk=lambda hp: keras.layers.Dense(hp.Choice("trunk_units", [4, 8]), activation="relu"),
    strategies=["equal", "dwa", "uncertainty"],
)
tuner = keras_tuner.RandomSearch(
    hypermodel, objective=hypermodel.objective, max_trials=4, seed=1,
    directory=directory, project_name="distributed",
)
tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)
print("DONE", os.environ["KERASTUNER_TUNER_ID"], len(runs), flush=True)
"""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_distributed_search_with_a_chief_and_two_workers(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(_DISTRIBUTED_SCRIPT)
    directory = tmp_path / "search"
    port = _free_port()
    base_env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
    }
    deadline = time.monotonic() + 180
    processes = {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            processes[tuner_id] = subprocess.Popen(
                [sys.executable, str(script), str(directory)],
                env={**base_env, "KERASTUNER_TUNER_ID": tuner_id},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
        outputs = {}
        # The workers first: the chief only returns once every worker has stopped (and
        # waits forever if one dies, hence every wait is bounded).
        for tuner_id in ("tuner0", "tuner1", "chief"):
            remaining = max(deadline - time.monotonic(), 1.0)
            try:
                outputs[tuner_id] = processes[tuner_id].communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{tuner_id} did not finish within the time limit")
            stdout, stderr = outputs[tuner_id]
            assert processes[tuner_id].returncode == 0, (tuner_id, stderr[-3000:])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.communicate()

    runs = {}
    for tuner_id in ("tuner0", "tuner1"):
        done = [line for line in outputs[tuner_id][0].splitlines() if line.startswith("DONE")]
        assert done, outputs[tuner_id][0][-2000:]
        runs[tuner_id] = int(done[-1].split()[-1])
    # The chief ran no trial; the workers ran the four between them.
    assert "DONE chief 0" in outputs["chief"][0]
    assert sum(runs.values()) == 4, runs
    statuses = [
        json.loads(path.read_text())["status"]
        for path in sorted((directory / "distributed").glob("trial_*/trial.json"))
    ]
    assert statuses == ["COMPLETED"] * 4
