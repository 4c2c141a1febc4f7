"""Benchmark (b): ms per train step of every weighting strategy, relative to equal weighting.

The standard workload (see workload.py) at K=2 and K=5 tasks. For each strategy the model's own
`train_step` (what `fit` runs each step) is traced once in a `tf.function`, warmed up for 10
steps, then timed over --steps steps on one fixed batch (the median of --repeats timings).
The plain-Keras model (`keras.Model`, compile(loss=dict)) is timed in the same process as the
baseline of `equal`. Gradient-based strategies run with parameter
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


def _batch(num_tasks):
    x, y = workload.data(num_tasks, workload.BATCH_SIZE)
    return tf.constant(x), {name: tf.constant(value) for name, value in y.items()}


def _step(model, batch):
    """The model's own train step, traced once in a `tf.function` and warmed up."""
    model.train_on_batch(*batch)  # builds the model, the optimizer and the metrics
    step = tf.function(model.train_step)
    for _ in range(10):
        logs = step(batch)
    float(logs["loss"])
    return step


def _ms(step, batch, steps):
    start = time.perf_counter()
    for _ in range(steps):
        logs = step(batch)
    float(logs["loss"])  # waits for the last step
    return (time.perf_counter() - start) / steps * 1000.0


def _compare(step, baseline, batch, steps, repeats):
    """Median ms/step of `step` and median ratio to `baseline`, timed alternately.

    Alternating the two in each repeat cancels the machine's drift out of the ratio.
    """
    times, ratios = [], []
    for _ in range(repeats):
        reference = _ms(baseline, batch, steps)
        measured = _ms(step, batch, steps)
        times.append(measured)
        ratios.append(measured / reference)
    return float(np.median(times)), float(np.median(ratios))


def strategy_names():
    names = sorted({cls.__name__ for cls in weighting.ALL_OBJECTS})
    return [name for name in names if name not in ("Equal",)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    for num_tasks in args.tasks:
        batch = _batch(num_tasks)
        equal = workload.multi_task_model(num_tasks)
        equal.compile(optimizer=keras.optimizers.Adam(1e-3), weighting="equal")
        equal_step = _step(equal, batch)
        plain = workload.plain_keras_model(num_tasks)
        plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss=workload.losses(num_tasks))
        plain_ms, plain_ratio = _compare(
            _step(plain, batch), equal_step, batch, args.steps, args.repeats
        )
        equal_ms = _ms(equal_step, batch, args.steps)
        print(
            f"\nK={num_tasks}: batch {workload.BATCH_SIZE}, {args.steps} steps per timing, "
            f"median of {args.repeats} alternating timings against equal"
        )
        print("| strategy | ms/step | x equal |")
        print("|---|---|---|")
        print(f"| equal | {equal_ms:.2f} | 1.00 |")
        print(f"| plain Keras (compile(loss=dict)) | {plain_ms:.2f} | {plain_ratio:.2f} |")
        for name in strategy_names():
            if args.only and name.lower() not in [n.lower() for n in args.only]:
                continue
            cls = weighting.get(name).__class__
            # `None` is the strategy's preferred source; time representation gradients too
            # where the strategy allows them and does not already prefer them.
            sources = [None]
            preferred = getattr(cls, "preferred_gradients", "parameters")
            if (
                cls.requires_gradients
                and cls.supports_representation_gradients
                and preferred != "representation"
            ):
                sources.append("representation")
            for source in sources:
                model = workload.multi_task_model(num_tasks)
                try:
                    model.compile(
                        optimizer=keras.optimizers.Adam(1e-3), weighting=cls(), gradients=source
                    )
                    ms, ratio = _compare(
                        _step(model, batch), equal_step, batch, args.steps, args.repeats
                    )
                except Exception as error:  # report and go on with the other strategies
                    print(f"| {name} | failed: {type(error).__name__}: {str(error)[:80]} | |")
                    continue
                label = name
                if cls.requires_gradients:
                    label += f" ({model.gradient_source})"
                print(f"| {label} | {ms:.2f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
