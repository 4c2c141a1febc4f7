"""Tests of kerasmtl.evaluation: delta-m, task reports and single-task baselines."""

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl.evaluation import (
    delta_m,
    format_report,
    metric_direction,
    report_from_logs,
    task_deltas,
    task_report,
    train_single_task_baselines,
)
from kerasmtl.testing import references

# === delta-m ===


def test_delta_m_matches_numpy_with_mixed_directions():
    # Task "seg": accuracy up (better) and loss up (worse); "depth": mse down
    # (better) and mae up (worse): directions must be taken per metric.
    multi = {
        "seg": {"accuracy": 0.81, "loss": 0.52},
        "depth": {"mse": 0.034, "mae": 0.151},
        "cls": {"auc": 0.702},
    }
    single = {
        "seg": {"accuracy": 0.78, "loss": 0.47},
        "depth": {"mse": 0.041, "mae": 0.149},
        "cls": {"auc": 0.731},
    }
    expected = references.delta_m(
        [[0.81, 0.52], [0.034, 0.151], [0.702]],
        [[0.78, 0.47], [0.041, 0.149], [0.731]],
        [[True, False], [False, False], [True]],
    )
    np.testing.assert_allclose(delta_m(multi, single), expected, rtol=1e-12)
    # The same numbers as flat `{task}_{metric}` dicts (evaluate-log style).
    flat_multi = {f"{t}_{m}": v for t, ms in multi.items() for m, v in ms.items()}
    flat_single = {f"{t}_{m}": v for t, ms in single.items() for m, v in ms.items()}
    np.testing.assert_allclose(delta_m(flat_multi, flat_single), expected, rtol=1e-12)
    # Per-task breakdown: delta_m is its mean.
    deltas = task_deltas(multi, single)
    assert list(deltas) == ["seg", "depth", "cls"]
    np.testing.assert_allclose(np.mean(list(deltas.values())), expected, rtol=1e-12)


def test_delta_m_100x_scale_difference_and_sign():
    # Relative changes: a 100x larger metric scale must not dominate.
    multi = {"a": {"mse": 200.0}, "b": {"accuracy": 0.55}}
    single = {"a": {"mse": 100.0}, "b": {"accuracy": 0.5}}
    # a: -(200-100)/100 = -100%, b: +10%.
    np.testing.assert_allclose(delta_m(multi, single), (-100.0 + 10.0) / 2, rtol=1e-12)
    assert delta_m(single, single) == 0.0


def test_delta_m_metrics_filter_and_extra_multi_entries():
    logs = {"loss": 1.0, "a_loss": 0.3, "a_accuracy": 0.9, "a_weight": 0.5, "b_accuracy": 0.6}
    single = {"a": {"loss": 0.2, "accuracy": 0.8}, "b": {"accuracy": 0.5}}
    # Only accuracies: a +12.5%, b +20%.
    np.testing.assert_allclose(
        delta_m(logs, single, metrics=["accuracy"]), (12.5 + 20.0) / 2, rtol=1e-12
    )


def test_delta_m_task_keyed_results_need_directions():
    multi, single = {"left": 0.9, "right": 0.3}, {"left": 0.8, "right": 0.4}
    with pytest.raises(ValueError, match=r"task 'left'.*higher_is_better"):
        delta_m(multi, single)
    expected = references.delta_m([[0.9], [0.3]], [[0.8], [0.4]], [[True], [False]])
    got = delta_m(multi, single, higher_is_better={"left": True, "right": False})
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(
        delta_m({"left": 0.9}, {"left": 0.8}, higher_is_better=True), 12.5, rtol=1e-12
    )


def test_higher_is_better_overrides_inference():
    multi, single = {"a": {"score": 2.0}}, {"a": {"score": 1.0}}
    assert delta_m(multi, single, higher_is_better={"score": True}) == pytest.approx(100.0)
    assert delta_m(multi, single, higher_is_better={"a_score": False}) == pytest.approx(-100.0)
    # A key `{task}_{metric}` wins over the metric name.
    both = {"a_score": False, "score": True}
    assert delta_m(multi, single, higher_is_better=both) == pytest.approx(-100.0)


@pytest.mark.parametrize(
    "name, higher",
    [
        ("accuracy", True),
        ("sparse_categorical_accuracy", True),
        ("top_k_categorical_accuracy", True),
        ("auc", True),
        ("mean_iou", True),
        ("loss", False),
        ("val_loss", False),
        ("mse", False),
        ("mae", False),
        ("rmse", False),
        ("mean_squared_error", False),
        ("root_mean_squared_error", False),
    ],
)
def test_metric_direction_inference(name, higher):
    assert metric_direction(name) is higher


def test_unknown_metric_direction_names_it_and_the_accepted_ones():
    with pytest.raises(ValueError) as info:
        delta_m({"a": {"kappa": 0.5}}, {"a": {"kappa": 0.4}})
    message = str(info.value)
    assert "'kappa'" in message
    for accepted in ("accuracy", "auc", "iou", "loss", "mse", "mae", "rmse"):
        assert f"'{accepted}'" in message
    assert "higher_is_better" in message


def test_zero_baseline_names_the_task():
    with pytest.raises(ValueError, match=r"'depth_mse' is 0.*task 'depth'"):
        delta_m(
            {"seg": {"accuracy": 0.8}, "depth": {"mse": 0.1}},
            {"seg": {"accuracy": 0.7}, "depth": {"mse": 0.0}},
        )


def test_missing_and_bad_entries():
    with pytest.raises(ValueError, match=r"no result for 'b_accuracy'"):
        delta_m({"a": {"accuracy": 0.8}}, {"a": {"accuracy": 0.7}, "b": {"accuracy": 0.7}})
    with pytest.raises(ValueError, match="finite"):
        delta_m({"a": {"accuracy": float("nan")}}, {"a": {"accuracy": 0.7}})
    with pytest.raises(TypeError, match="non-empty dict"):
        delta_m([0.8], [0.7], [True])
    with pytest.raises(ValueError, match="Nothing to compare"):
        delta_m({"a": {"loss": 0.8}}, {"a": {"loss": 0.7}}, metrics=["accuracy"])


def test_flat_keys_split_with_task_names():
    # `a_b_loss`: task `a_b`, not task `a` with metric `b_loss`.
    multi = {"a_loss": 1.0, "a_b_loss": 3.0}
    single = {"a_loss": 2.0, "a_b_loss": 2.0}
    deltas = task_deltas(multi, single, task_names=["a", "a_b"])
    assert deltas == pytest.approx({"a": 50.0, "a_b": -50.0})


# === Reports ===


def test_report_from_logs_splits_by_task():
    logs = {
        "loss": 1.0,
        "a_loss": 0.5,
        "a_mae": 0.6,
        "a_weight": 1.0,
        "a_b_loss": 0.25,
        "val_a_loss": 9.0,
    }
    report = report_from_logs(logs, ["a", "a_b"])
    assert report == {"a": {"loss": 0.5, "mae": 0.6}, "a_b": {"loss": 0.25}}
    history = {"a_loss": [0.9, 0.5], "val_a_loss": [1.0, 0.7], "a_b_loss": [0.3, 0.2]}
    assert report_from_logs(history, ["a", "a_b"], prefix="val_") == {"a": {"loss": 0.7}, "a_b": {}}
    assert report_from_logs(logs, ["a"], include_weights=True)["a"]["weight"] == 1.0


def _tiny_model(task_names, compiled=True):
    inputs = keras.Input((4,), name="features")
    trunk = keras.layers.Dense(8, activation="relu", name="trunk")
    tasks = [kerasmtl.Task(name, head=1, loss="mse", metrics=["mae"]) for name in task_names]
    model = kerasmtl.hard_sharing(inputs, trunk, tasks, name="tiny")
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def _regression_data(num_samples=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 4)).astype("float32")
    y = {
        "a": x[:, :1] * 2.0,
        "b": (x[:, 1:2] - x[:, 2:3]).astype("float32"),
    }
    return x, y


def test_task_report_and_format_report():
    x, y = _regression_data()
    model = _tiny_model(["a", "b"])
    report = task_report(model, x, y, batch_size=16)
    assert list(report) == ["a", "b"]
    assert set(report["a"]) == {"loss", "mae"}
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert report["b"]["loss"] == pytest.approx(logs["b_loss"])
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0] == "| task | loss | mae |"
    assert lines[1] == "|---|---|---|"
    assert lines[2].startswith("| a | ")
    baseline = {
        task: {"loss": values["loss"] * 2, "mae": values["mae"]} for task, values in report.items()
    }
    text = format_report(report, baseline)
    assert "loss (single-task)" in text.splitlines()[0]
    assert text.splitlines()[2].endswith("| +25.00 |")
    assert text.splitlines()[-1] == "delta-m vs single-task: +25.00%"


def test_task_report_needs_a_multi_task_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(TypeError, match="MultiTaskModel"):
        task_report(model, np.zeros((2, 4)), np.zeros((2, 1)))


# === Single-task baselines ===


def test_train_single_task_baselines_returns_results_keyed_by_task():
    x, y = _regression_data()
    x_test, y_test = _regression_data(seed=1)
    built = []

    def build(names):
        built.append(list(names))
        return _tiny_model(names, compiled=False)

    results, models = train_single_task_baselines(
        build,
        x,
        y,
        epochs=2,
        batch_size=16,
        optimizer=lambda: keras.optimizers.SGD(0.01),
        evaluation_data=(x_test, y_test),
        seed=3,
        return_models=True,
    )
    assert built == [["a"], ["b"]]
    assert list(results) == ["a", "b"]
    assert set(results["a"]) == {"loss", "mae"}
    assert {name: model.task_names for name, model in models.items()} == {
        "a": ["a"],
        "b": ["b"],
    }
    assert models["a"].optimizer is not models["b"].optimizer
    expected = models["b"].evaluate(x_test, {"b": y_test["b"]}, verbose=0, return_dict=True)
    assert results["b"]["loss"] == pytest.approx(expected["b_loss"])
    # Same seed, same data, same budget: the result is reproducible.
    again = train_single_task_baselines(
        build,
        x,
        y,
        ["b"],
        epochs=2,
        batch_size=16,
        optimizer=keras.optimizers.SGD(0.01),
        evaluation_data=(x_test, y_test),
        seed=3,
    )
    assert again["b"]["loss"] == pytest.approx(results["b"]["loss"], rel=1e-5)
    # The results feed delta-m directly.
    assert np.isfinite(
        delta_m(task_report(models["a"], x_test, {"a": y_test["a"]}), {"a": results["a"]})
    )


def test_train_single_task_baselines_with_a_dataset_and_compiled_models():
    import tensorflow as tf

    x, y = _regression_data(32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    results = train_single_task_baselines(lambda names: _tiny_model(names), dataset, epochs=1)
    assert list(results) == ["a", "b"]


def test_train_single_task_baselines_errors():
    x, y = _regression_data(16)
    with pytest.raises(ValueError, match=r"No training labels for task\(s\) \['c'\]"):
        train_single_task_baselines(_tiny_model, x, y, ["c"])
    with pytest.raises(ValueError, match="one task 'a'"):
        train_single_task_baselines(lambda names: _tiny_model(["a", "b"]), x, y, ["a"])
