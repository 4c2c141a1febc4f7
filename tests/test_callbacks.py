"""`kerasmtl.callbacks.LossWeightScheduler` with real multi-task models."""

import copy
import warnings

import keras
import numpy as np
import pytest

from kerasmtl.callbacks import LossWeightScheduler
from kerasmtl.testing.models import regression_data, small_model
from kerasmtl.testing.references import dwa_weights, softmax
from kerasmtl.weighting import DWA, FAMO, RLW, Equal, Fixed, GradNorm, LossRatio, NashMTL

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

RTOL = 1e-4


class _CountingDWA(DWA):
    """DWA that counts how often `combine` runs in Python: once per trace."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def combine(self, losses, **kwargs):
        self.traces += 1
        return super().combine(losses, **kwargs)


def _model(strategy, seed=0):
    model = small_model(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), weighting=strategy)
    return model


def _data(n=64, seed=0):
    return regression_data(n, scales=(1.0, 10.0), seed=seed)


def _state(strategy):
    return [keras.ops.convert_to_numpy(v) for v in strategy.variables]


def _fit_counting_dwa():
    """Fits DWA for 4 epochs; returns the history and `combine`'s traces after each epoch."""
    strategy = _CountingDWA()
    model = _model(strategy)
    x, y = _data()
    traces_per_epoch = []
    count = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: traces_per_epoch.append(strategy.traces)
    )
    history = model.fit(
        x, y, epochs=4, batch_size=16, verbose=0, callbacks=[LossWeightScheduler(), count]
    ).history
    return history, traces_per_epoch


def test_dwa_weights_change_across_epochs():
    history, _ = _fit_counting_dwa()
    weights = np.stack([history["a_weight"], history["b_weight"]], axis=1)
    losses = np.stack([history["a_loss"], history["b_loss"]], axis=1)
    np.testing.assert_allclose(weights, dwa_weights(losses)[:-1], rtol=RTOL)
    assert not np.allclose(weights[2], 1.0)  # the weights really changed
    assert not np.allclose(weights[2], weights[3])
    assert not [key for key in history if "next" in key]  # the logs are left alone


@pytest.mark.backend_only("tensorflow", "jax", reason="counts traces; torch runs eagerly")
def test_dwa_weights_change_across_epochs_without_retracing():
    _, traces_per_epoch = _fit_counting_dwa()
    # Keras traces its train function during the first epoch (twice on TF 2.21, a
    # plain `keras.Model` too); new weights in later epochs must not add a trace.
    assert traces_per_epoch[0] >= 1
    assert traces_per_epoch == [traces_per_epoch[0]] * 4


def test_val_loss_monitor_reads_validation_task_losses():
    strategy = LossRatio()
    model = _model(strategy)
    x, y = _data()
    x_val, y_val = _data(n=32, seed=1)
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        validation_data=(x_val, y_val),
        callbacks=[LossWeightScheduler(monitor="val_loss")],
    ).history
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(strategy.initial_losses),
        [history["val_a_loss"][0], history["val_b_loss"][0]],
        rtol=RTOL,
    )
    ratio = np.array(
        [history[f"val_{t}_loss"][1] / history[f"val_{t}_loss"][0] for t in ("a", "b")]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(strategy.loss_weights), 2 * ratio / ratio.sum(), rtol=RTOL
    )


def test_missing_log_key_warns_once_listing_available_keys():
    strategy = DWA()
    model = _model(strategy)
    x, y = _data()
    with pytest.warns(UserWarning, match="Available keys") as record:
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=32,
            verbose=0,
            callbacks=[LossWeightScheduler(monitor="val_loss")],
        )
    messages = [str(w.message) for w in record if "LossWeightScheduler" in str(w.message)]
    assert len(messages) == 1
    assert "['val_a_loss', 'val_b_loss']" in messages[0]
    for key in ("'a_loss'", "'b_loss'", "'loss'", "'a_weight'"):
        assert key in messages[0]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(strategy.loss_weights), [1, 1])


def test_non_finite_epoch_loss_warns_once_and_keeps_that_tasks_state():
    strategy = DWA()
    model = _model(strategy)
    scheduler = LossWeightScheduler()
    scheduler.set_model(model)
    scheduler.on_epoch_end(0, {"loss": 3.0, "a_loss": 1.0, "b_loss": 2.0})
    scheduler.on_epoch_end(1, {"loss": 2.0, "a_loss": 0.5, "b_loss": 1.5})
    expected = (
        r"\['b'\] had no labelled sample or a non-finite loss in epoch 2; "
        "those tasks keep their weights"
    )
    with pytest.warns(UserWarning, match=expected) as record:
        scheduler.on_epoch_end(2, {"loss": np.nan, "a_loss": 0.4, "b_loss": np.nan})
        scheduler.on_epoch_end(3, {"loss": np.inf, "a_loss": 0.2, "b_loss": np.inf})
    assert len(record) == 1
    # Task b keeps its history (ratio 1.5 / 2); task a moves on (0.2 / 0.4).
    np.testing.assert_allclose(keras.ops.convert_to_numpy(strategy.previous_losses), [0.2, 1.5])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(strategy.loss_weights),
        2 * softmax(np.array([0.5, 0.75]) / 2.0),
        rtol=RTOL,
    )


@pytest.mark.parametrize(
    "make", [Equal, lambda: Fixed([1.0, 0.5]), FAMO], ids=["equal", "fixed", "famo"]
)
def test_strategies_without_epoch_updates_are_left_alone(make):
    strategy = make()
    model = _model(strategy)
    before = _state(strategy)
    scheduler = LossWeightScheduler(monitor="val_loss")
    scheduler.set_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.on_epoch_end(0, {"loss": 1.0})  # keys missing: no warning, no error
        scheduler.on_epoch_end(1, {"loss": 1.0, "val_a_loss": 1.0, "val_b_loss": np.nan})
    for a, b in zip(before, _state(strategy)):
        np.testing.assert_array_equal(a, b)


def test_deepcopy_before_set_model():
    scheduler = LossWeightScheduler(monitor="loss")
    assert scheduler.model is None
    clone = copy.deepcopy(scheduler)
    assert clone.model is None and clone.monitor == "loss"
    strategy = DWA()
    model = _model(strategy)
    x, y = _data()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[clone])
    assert scheduler.model is None
    assert not np.allclose(keras.ops.convert_to_numpy(strategy.loss_weights), 1.0)


def test_bad_monitor_raises():
    with pytest.raises(ValueError, match="Received: monitor='accuracy'"):
        LossWeightScheduler(monitor="accuracy")


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "make",
    [DWA, FAMO, lambda: RLW(seed=4), lambda: GradNorm(alpha=0.5), lambda: NashMTL()],
    ids=["dwa", "famo", "rlw", "grad_norm", "nash_mtl"],
)
def test_backup_and_restore_resume_equals_uninterrupted_run(make, tmp_path):
    x, y = _data()
    fit_args = dict(epochs=4, batch_size=16, verbose=0, shuffle=False)

    reference_strategy = make()
    reference = _model(reference_strategy)
    reference.fit(x, y, callbacks=[LossWeightScheduler()], **fit_args)

    backup_dir = str(tmp_path / "backup")
    interrupted = _model(make())
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(
            x,
            y,
            **fit_args,
            callbacks=[
                LossWeightScheduler(),
                keras.callbacks.BackupAndRestore(backup_dir),
                _Interrupt(epoch=1),
            ],
        )
    resumed_strategy = make()
    resumed = _model(resumed_strategy, seed=1)  # other initial weights: all must come back
    history = resumed.fit(
        x,
        y,
        **fit_args,
        callbacks=[LossWeightScheduler(), keras.callbacks.BackupAndRestore(backup_dir)],
    ).history
    assert len(history["loss"]) == 2  # epochs 2 and 3 only
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            rtol=1e-6,
            atol=1e-7,
            err_msg=a.path,
        )
    for a, b in zip(_state(reference_strategy), _state(resumed_strategy)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fit_adds_the_scheduler_itself_and_never_twice():
    x, y = _data()
    # No callback given: DWA still changes its weights (it declares its epoch update).
    strategy = DWA()
    assert strategy.requires_epoch_update and not Equal.requires_epoch_update
    model = _model(strategy)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0).history
    weights = np.stack([history["a_weight"], history["b_weight"]], axis=1)
    losses = np.stack([history["a_loss"], history["b_loss"]], axis=1)
    np.testing.assert_allclose(weights, dwa_weights(losses)[:-1], rtol=RTOL)
    assert not np.allclose(weights[3], 1.0)

    # An explicit scheduler is the only one: the same weights, not two updates per epoch.
    updates = []

    class Counting(LossWeightScheduler):
        def on_epoch_end(self, epoch, logs=None):
            updates.append(epoch)
            super().on_epoch_end(epoch, logs)

    explicit = _model(DWA())
    history = explicit.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[Counting()])
    assert updates == [0, 1, 2, 3]
    explicit_weights = np.stack([history.history["a_weight"], history.history["b_weight"]], 1)
    np.testing.assert_allclose(explicit_weights, weights, rtol=1e-5)
