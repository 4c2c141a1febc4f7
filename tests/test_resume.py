"""Strategies with random state resume bit-exactly: `BackupAndRestore` and `.keras`, 3 tasks."""

import keras
import numpy as np
import pytest

from kerasmtl.testing.models import regression_data, small_model
from kerasmtl.testing.references import to_numpy
from kerasmtl.weighting import RLW, GradVac, PCGrad

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

STRATEGIES = {
    "pcgrad": lambda: PCGrad(seed=3),
    "grad_vac": lambda: GradVac(seed=3),
    "rlw": lambda: RLW(seed=3),
}
FIT = dict(batch_size=16, shuffle=False, verbose=0)


def _model(strategy, seed=0):
    model = small_model(("a", "b", "c"), num_features=5, activation="tanh", seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=strategy)
    return model


def _data():
    return regression_data(64, num_features=5, names=("a", "b", "c"))


def _assert_bit_exact(reference, resumed):
    # Every weight, the strategy's state (seed state, coefficients) included, in order:
    # the strategy's automatic layer name differs between the two models.
    assert len(reference.weights) == len(resumed.weights)
    for expected, actual in zip(reference.weights, resumed.weights):
        assert expected.shape == actual.shape
        np.testing.assert_array_equal(to_numpy(actual), to_numpy(expected), err_msg=expected.path)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_backup_and_restore_resumes_bit_exactly(name, tmp_path):
    x, y = _data()
    reference = _model(STRATEGIES[name]())
    reference.fit(x, y, epochs=4, **FIT)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = _model(STRATEGIES[name]())
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, y, epochs=4, callbacks=[backup, _Interrupt()], **FIT)
    resumed = _model(STRATEGIES[name](), seed=1)  # other starting weights: all must come back
    history = resumed.fit(
        x,
        y,
        epochs=4,
        callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))],
        **FIT,
    )
    assert len(history.history["loss"]) == 2  # epochs 2 and 3 only
    _assert_bit_exact(reference, resumed)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_keras_round_trip_continues_bit_exactly(name, tmp_path):
    x, y = _data()
    reference = _model(STRATEGIES[name]())
    reference.fit(x, y, epochs=4, **FIT)

    first = _model(STRATEGIES[name]())
    first.fit(x, y, epochs=2, **FIT)
    first.save(tmp_path / "half.keras")
    second = keras.saving.load_model(tmp_path / "half.keras")
    second.fit(x, y, epochs=2, **FIT)
    _assert_bit_exact(reference, second)
