"""Benchmark (g): the cost of each gradient strategy's solver as the number of tasks K grows.

A small trunk (32 inputs, Dense(64)-ReLU-Dense(64)-ReLU) with K one-unit MSE heads, batch 64,
trained with `model.fit` on the backend given by `--backend` (default: KERAS_BACKEND or
tensorflow). For each K and strategy it prints:

- "step ms": the median epoch time (after the first, which traces) over the steps per epoch;
- "solver ms": `compute_weights_from_gram` alone on a random positive semi-definite K x K Gram
  matrix of rank min(K, 16), compiled the backend's way (`tf.function`, `jax.jit`; torch runs
  it eagerly), median of --calls calls;
- "solver share": solver ms / step ms.

    python many_tasks.py --tasks 2 5 10 20 40
    python many_tasks.py --backend jax --only mgda nash_mtl
"""

import argparse
import os
import sys
import time

GRADIENT_STRATEGIES = [
    "aligned_mtl",
    "cagrad",
    "dbmtl",
    "grad_norm",
    "grad_vac",
    "imtlg",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "upgrad",
]


def _model(keras, kerasmtl, num_tasks):
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential(
        [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(64, activation="relu")],
        name="trunk",
    )
    tasks = [kerasmtl.Task(f"t{k}", head=1, loss="mse") for k in range(num_tasks)]
    return kerasmtl.hard_sharing({"features": (32,)}, trunk, tasks)


def _step_ms(keras, kerasmtl, np, name, num_tasks, samples, epochs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 32)).astype("float32")
    y = {f"t{k}": rng.normal(size=(samples, 1)).astype("float32") for k in range(num_tasks)}
    model = _model(keras, kerasmtl, num_tasks)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=name)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=64, epochs=epochs + 1, verbose=0, shuffle=False,
              callbacks=[Timer()])
    return 1000.0 * float(np.median(times[1:])) / (samples // 64)


def _solver_ms(keras, kerasmtl, np, name, num_tasks, calls):
    from keras import ops

    strategy = kerasmtl.weighting.get(name)
    strategy.build((num_tasks,))
    rng = np.random.default_rng(1)
    rank = min(num_tasks, 16)
    rows = rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, 256))
    gram = ops.convert_to_tensor((rows @ rows.T).astype("float32"))
    losses = ops.convert_to_tensor(rng.uniform(0.5, 2.0, size=num_tasks).astype("float32"))
    present = ops.convert_to_tensor(np.ones(num_tasks, bool))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        function = tf.function(lambda g, loss, p: strategy.compute_weights_from_gram(g, loss, p))
    elif backend == "jax":
        import jax

        variables = strategy.variables

        def pure(values, g, loss, p):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return strategy.compute_weights_from_gram(g, loss, p)

        jitted = jax.jit(pure)
        values = [v.value for v in variables]

        def function(g, loss, p):
            return jitted(values, g, loss, p)
    else:

        def function(g, loss, p):
            return strategy.compute_weights_from_gram(g, loss, p)

    keras.ops.convert_to_numpy(function(gram, losses, present))  # trace / compile
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(function(gram, losses, present))
        samples.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(samples))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5, 10, 20, 40])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import kerasmtl

    names = args.only or GRADIENT_STRATEGIES
    print(f"backend: {keras.backend.backend()}")
    print("| K | strategy | step ms | solver ms | solver share |")
    print("|---|---|---|---|---|")
    for num_tasks in args.tasks:
        for name in names:
            step = _step_ms(keras, kerasmtl, np, name, num_tasks, args.samples, args.epochs)
            solver = _solver_ms(keras, kerasmtl, np, name, num_tasks, args.calls)
            print(f"| {num_tasks} | {name} | {step:.1f} | {solver:.2f} | {solver / step:.0%} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
