"""Benchmark (a): per-epoch dynamic weights vs static `compile(loss_weights=...)` vs recompiling.

The same network and data, in this process:
- plain static: a plain `keras.Model` compiled once with float `loss_weights` (plain Keras);
- static: `MultiTaskModel` compiled once with `loss_weights` (held in a `Fixed` variable);
- dynamic: `MultiTaskModel` with DWA weights in variables, updated every epoch by
  `LossWeightScheduler` through `assign` (no retrace);
- recompile: the plain model recompiled every epoch with new float weights (what users do today).
Prints, for each, the whole-`fit` wall time and the steady-state epoch time (median of the epochs
after the first, which traces), as medians over --repeats interleaved runs, and ratios to static.

    python benchmarks/dynamic_weights.py [--epochs 5] [--repeats 5] [--samples 4096]
"""

import argparse
import time

import keras
import numpy as np
import workload

from kerasmtl.callbacks import LossWeightScheduler


class EpochTimer(keras.callbacks.Callback):
    def __init__(self, times):
        super().__init__()
        self.times = times

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def _fit(model, x, y, epochs, callbacks=()):
    epoch_times = []
    start = time.perf_counter()
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=workload.BATCH_SIZE,
        verbose=0,
        callbacks=[*callbacks, EpochTimer(epoch_times)],
    )
    return time.perf_counter() - start, float(np.median(epoch_times[1:]))


def run_plain_static(x, y, epochs):
    model = workload.plain_keras_model(2)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=workload.losses(2),
        loss_weights={name: 1.0 for name in workload.task_names(2)},
    )
    return _fit(model, x, y, epochs)


def run_static(x, y, epochs):
    model = workload.multi_task_model(2)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss_weights={name: 1.0 for name in workload.task_names(2)},
    )
    return _fit(model, x, y, epochs)


def run_dynamic(x, y, epochs):
    model = workload.multi_task_model(2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting="dwa")
    return _fit(model, x, y, epochs, callbacks=[LossWeightScheduler()])


def run_recompile(x, y, epochs):
    model = workload.plain_keras_model(2)
    optimizer = keras.optimizers.Adam(1e-3)
    epoch_times = []
    start = time.perf_counter()
    for epoch in range(epochs):
        weights = {name: 1.0 + 0.1 * epoch for name in workload.task_names(2)}
        epoch_start = time.perf_counter()
        model.compile(optimizer=optimizer, loss=workload.losses(2), loss_weights=weights)
        model.fit(
            x, y, initial_epoch=epoch, epochs=epoch + 1, batch_size=workload.BATCH_SIZE, verbose=0
        )
        epoch_times.append(time.perf_counter() - epoch_start)
    return time.perf_counter() - start, float(np.median(epoch_times[1:]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=4096)
    args = parser.parse_args()
    x, y = workload.data(2, args.samples)
    runs = {
        "plain static": run_plain_static,
        "static": run_static,
        "dynamic": run_dynamic,
        "recompile": run_recompile,
    }
    results = {name: [] for name in runs}
    run_plain_static(x[:256], {k: v[:256] for k, v in y.items()}, 2)  # warm up TF
    for _ in range(args.repeats):
        for name, run in runs.items():  # interleaved, so drift hits all alike
            results[name].append(run(x, y, args.epochs))
    whole = {name: float(np.median([r[0] for r in values])) for name, values in results.items()}
    epoch = {name: float(np.median([r[1] for r in values])) for name, values in results.items()}
    print(
        f"K=2, {args.samples} samples, batch {workload.BATCH_SIZE}, {args.epochs} epochs, "
        f"median of {args.repeats} interleaved runs"
    )
    print("| variant | whole fit s | x static | epoch s (after the first) | x static |")
    print("|---|---|---|---|---|")
    for name in runs:
        print(
            f"| {name} | {whole[name]:.2f} | {whole[name] / whole['static']:.3f} | "
            f"{epoch[name]:.3f} | {epoch[name] / epoch['static']:.3f} |"
        )


if __name__ == "__main__":
    main()
