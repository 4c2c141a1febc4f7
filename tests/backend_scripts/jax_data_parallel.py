"""Training under `keras.distribution.DataParallel` on 2 virtual CPU devices equals one device.

Usage: python jax_data_parallel.py  (sets its own XLA_FLAGS and KERAS_BACKEND=jax)

Task `b` is labelled only in the first half of each batch, so each device sees an
uneven share of its labels: the losses and the Gram matrix must be the global
batch's for the two runs to agree. Prints one line per strategy and exits non-zero
on a mismatch.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl import Task  # noqa: E402

CASES = [
    ("mgda", None),
    ("pcgrad", "representation"),
    ("upgrad", None),
    ("dwa", None),
    ("auto_lambda", None),
]


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = {
        "a": rng.normal(size=(64, 1)).astype("float32"),
        "b": rng.normal(size=(64, 1)).astype("float32"),
    }
    y["b"][np.arange(64) % 16 >= 8] = np.nan  # missing: b only in each batch's first half
    return x, y


def run(distributed, weighting, gradients):
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices) if distributed else None
    )
    keras.utils.set_random_seed(0)
    model = kerasmtl.hard_sharing(
        {"features": (6,)},
        keras.layers.Dense(8, activation="tanh", name="trunk"),
        [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    )
    kwargs = {} if gradients is None else {"gradients": gradients}
    model.compile(optimizer=keras.optimizers.SGD(0.1), weighting=weighting, **kwargs)
    x, y = data()
    callbacks = [kerasmtl.callbacks.LossWeightScheduler()] if weighting == "dwa" else []
    history = model.fit(
        x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=callbacks
    )
    sharding = model.trainable_variables[0].value.sharding
    return [v.numpy() for v in model.trainable_variables], history.history, sharding


def main():
    assert len(jax.devices()) == 2, jax.devices()
    failures = 0
    for weighting, gradients in CASES:
        single, single_history, _ = run(False, weighting, gradients)
        parallel, parallel_history, sharding = run(True, weighting, gradients)
        assert len(sharding.device_set) == 2, sharding  # really on both devices
        error = max(float(np.max(np.abs(a - b))) for a, b in zip(single, parallel))
        weights_error = max(
            abs(single_history[key][-1] - parallel_history[key][-1])
            for key in ("a_weight", "b_weight", "loss")
        )
        ok = error <= 1e-5 and weights_error <= 1e-5
        failures += not ok
        print(f"{weighting} {gradients or ''}: max |delta w| {error:.2e}, "
              f"logs {weights_error:.2e}, {'ok' if ok else 'MISMATCH'}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
