"""Tests of kerasmtl.plots: loss-weight trajectories and learning curves as PNG files."""

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl.plots import load_history, plot_learning_curves, plot_loss_weights

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-task model trained 3 epochs with DWA, with a CSVLogger file."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = {"left": x[:, :1] * 2.0, "right": (x[:, 1:2] - x[:, 2:3]).astype("float32")}
    keras.utils.set_random_seed(0)
    model = kerasmtl.hard_sharing(
        keras.Input((4,), name="features"),
        keras.layers.Dense(8, activation="relu", name="trunk"),
        [kerasmtl.Task(name, head=1, loss="mse") for name in y],
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), weighting="dwa")
    csv_path = tmp_path_factory.mktemp("logs") / "training.csv"
    history = model.fit(
        x,
        y,
        validation_data=(x[:16], {k: v[:16] for k, v in y.items()}),
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(csv_path))],
    )
    return history, csv_path


@pytest.mark.parametrize("source", ["history", "dict", "csv", "csv_str"])
def test_plots_from_each_source(trained, tmp_path, source):
    history, csv_path = trained
    data = {
        "history": history,
        "dict": history.history,
        "csv": csv_path,
        "csv_str": str(csv_path),
    }[source]
    weights_path = tmp_path / "weights.png"
    curves_path = tmp_path / "curves.png"
    assert plot_loss_weights(data, weights_path) == weights_path
    assert plot_learning_curves(data, curves_path) == curves_path
    _assert_png(weights_path)
    _assert_png(curves_path)


def test_csv_and_history_hold_the_same_logs(trained):
    history, csv_path = trained
    from_csv = load_history(csv_path)
    assert from_csv["epoch"] == [0.0, 1.0, 2.0]
    for key in ("left_weight", "right_weight", "left_loss", "val_right_loss"):
        np.testing.assert_allclose(from_csv[key], history.history[key], rtol=1e-6)


def test_subset_of_tasks(trained, tmp_path):
    history, _ = trained
    path = tmp_path / "left.png"
    plot_learning_curves(history, path, tasks=["left"])
    plot_loss_weights(history, tmp_path / "left_weights.png", tasks="left")
    _assert_png(path)
    with pytest.raises(ValueError, match=r"task\(s\) \['middle'\].*\['left', 'right'\]"):
        plot_loss_weights(history, tmp_path / "x.png", tasks=["middle"])


def test_no_weight_keys_lists_the_available_keys(tmp_path):
    logs = {"loss": [1.0, 0.5], "accuracy": [0.4, 0.6]}
    with pytest.raises(ValueError) as info:
        plot_loss_weights(logs, tmp_path / "weights.png")
    message = str(info.value)
    assert "{task}_weight" in message
    assert "['accuracy', 'loss']" in message
    assert not (tmp_path / "weights.png").exists()
    with pytest.raises(ValueError, match=r"per-task.*\['accuracy', 'loss'\]"):
        plot_learning_curves(logs, tmp_path / "curves.png")


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="No CSV file"):
        plot_loss_weights(tmp_path / "missing.csv", tmp_path / "x.png")
    with pytest.raises(TypeError, match="History"):
        plot_loss_weights([1.0, 2.0], tmp_path / "x.png")
