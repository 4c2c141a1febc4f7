"""Benchmark (a): per-epoch dynamic weights vs static `compile(loss_weights=...)` vs recompiling.

All three train the same network on the same data in this process:
- static: a plain `keras.Model` compiled once with float `loss_weights` (the plain-Keras baseline);
- dynamic: `kerasmtl` with DWA weights held in variables, updated each epoch by
  `LossWeightScheduler` through `assign` (no retrace);
- recompile: the plain model recompiled every epoch with new float weights (what users do today).
Prints the whole-fit wall time of each (median of --repeats runs) and the ratios to static.

    python benchmarks/dynamic_weights.py [--epochs 5] [--repeats 3] [--samples 4096]
"""

import argparse
import time

import keras
import numpy as np
import workload

from kerasmtl.callbacks import LossWeightScheduler


def run_static(x, y, epochs):
    model = workload.plain_keras_model(2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=workload.losses(2),
                  loss_weights={name: 1.0 for name in workload.task_names(2)})
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=workload.BATCH_SIZE, verbose=0)
    return time.perf_counter() - start


def run_dynamic(x, y, epochs):
    model = workload.multi_task_model(2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting="dwa")
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=workload.BATCH_SIZE, verbose=0,
              callbacks=[LossWeightScheduler()])
    return time.perf_counter() - start


def run_recompile(x, y, epochs):
    model = workload.plain_keras_model(2)
    optimizer = keras.optimizers.Adam(1e-3)
    start = time.perf_counter()
    for epoch in range(epochs):
        weights = {name: 1.0 + 0.1 * epoch for name in workload.task_names(2)}
        model.compile(optimizer=optimizer, loss=workload.losses(2), loss_weights=weights)
        model.fit(x, y, initial_epoch=epoch, epochs=epoch + 1, batch_size=workload.BATCH_SIZE,
                  verbose=0)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4096)
    args = parser.parse_args()
    x, y = workload.data(2, args.samples)
    runs = {"static": run_static, "dynamic": run_dynamic, "recompile": run_recompile}
    times = {name: [] for name in runs}
    run_static(x[:256], {k: v[:256] for k, v in y.items()}, 1)  # warm up TF
    for _ in range(args.repeats):
        for name, run in runs.items():  # interleaved, so drift hits all three alike
            times[name].append(run(x, y, args.epochs))
    medians = {name: float(np.median(values)) for name, values in times.items()}
    print(f"K=2, {args.samples} samples, batch {workload.BATCH_SIZE}, {args.epochs} epochs, "
          f"median of {args.repeats}")
    for name in runs:
        ratio = medians[name] / medians["static"]
        runs_text = [round(t, 2) for t in times[name]]
        print(f"{name:>10}: {medians[name]:7.2f} s  ratio to static {ratio:.3f}  runs {runs_text}")


if __name__ == "__main__":
    main()
