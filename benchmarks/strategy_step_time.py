"""Benchmark (b): ms per train step of every weighting strategy, relative to equal weighting.

The standard workload (see workload.py) at K=2 and K=5 tasks. For each strategy the model is
compiled once, warmed up, then timed over --steps steps of `fit` on an in-memory dataset (the
median of --repeats timings). The plain-Keras model (`keras.Model`, compile(loss=dict)) is timed
in the same process as the baseline of `equal`. Gradient-based strategies run with parameter
gradients and, where the strategy allows it, with representation gradients ("+rep").

    python benchmarks/strategy_step_time.py [--tasks 2 5] [--steps 60] [--only mgda pcgrad]
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf
import workload

from kerasmtl import weighting


def _dataset(num_tasks, steps):
    x, y = workload.data(num_tasks, workload.BATCH_SIZE * 8)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(workload.BATCH_SIZE)
    return dataset.cache().repeat()


def _time(model, dataset, steps, repeats):
    model.fit(dataset, steps_per_epoch=10, epochs=1, verbose=0, shuffle=False)  # trace and warm up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        timings.append((time.perf_counter() - start) / steps * 1000.0)
    return float(np.median(timings))


def strategy_names():
    names = sorted({cls.__name__ for cls in weighting.ALL_OBJECTS})
    return [name for name in names if name not in ("Equal",)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    for num_tasks in args.tasks:
        dataset = _dataset(num_tasks, args.steps)
        plain = workload.plain_keras_model(num_tasks)
        plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss=workload.losses(num_tasks))
        plain_ms = _time(plain, dataset, args.steps, args.repeats)
        equal = workload.multi_task_model(num_tasks)
        equal.compile(optimizer=keras.optimizers.Adam(1e-3), weighting="equal")
        equal_ms = _time(equal, dataset, args.steps, args.repeats)
        print(f"\nK={num_tasks}: batch {workload.BATCH_SIZE}, median of {args.repeats} x "
              f"{args.steps} steps")
        print("| strategy | ms/step | x equal |")
        print("|---|---|---|")
        print(f"| plain Keras (compile(loss=dict)) | {plain_ms:.2f} | {plain_ms / equal_ms:.2f} |")
        print(f"| equal | {equal_ms:.2f} | 1.00 |")
        for name in strategy_names():
            if args.only and name.lower() not in [n.lower() for n in args.only]:
                continue
            cls = weighting.get(name).__class__
            sources = [None]
            if cls.requires_gradients and cls.supports_representation_gradients:
                sources.append("representation")
            for source in sources:
                model = workload.multi_task_model(num_tasks)
                try:
                    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=cls(),
                                  gradients=source)
                    ms = _time(model, dataset, args.steps, args.repeats)
                except Exception as error:  # report and go on with the other strategies
                    print(f"| {name} | failed: {type(error).__name__}: {str(error)[:80]} | |")
                    continue
                label = name + (" +rep" if source == "representation" else "")
                if source is None and cls.requires_gradients:
                    label += f" ({model.gradient_source})"
                print(f"| {label} | {ms:.2f} | {ms / equal_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
