"""Why the parameter-gradient route costs what it does: ways to get K task gradients in TF.

On the standard workload (see workload.py), times the core of one step, without the
optimizer or metrics, each traced once in a `tf.function`:

- `one backward`: the plain-Keras step's gradient: one backward pass of the summed loss
  (the baseline of the ratios);
- `K backward passes`: what kerasmtl's parameter route does: one persistent tape, one
  backward pass per task loss, then the Gram matrix and the combined update;
- `pfor jacobian`: the K passes vectorised by `tape.jacobian` (TensorFlow's pfor);
- `K passes, XLA` and `one backward, XLA`: the first two compiled with `jit_compile=True`.

    python benchmarks/parameter_gradient_routes.py [--tasks 2 5] [--steps 50]
"""

import argparse
import time

import numpy as np
import tensorflow as tf
import workload


def routes(num_tasks):
    model = workload.multi_task_model(num_tasks)
    x, y = workload.data(num_tasks, workload.BATCH_SIZE)
    x = tf.constant(x)
    y = {name: tf.constant(value) for name, value in y.items()}
    losses = workload.losses(num_tasks)
    names = workload.task_names(num_tasks)
    model(x)
    variables = model.trainable_variables
    shared = [v for v in variables if v.path.startswith("trunk/")]

    def task_losses():
        predictions = model(x, training=True)
        return [losses[name](y[name], predictions[name]) for name in names]

    def combine(per_task):
        # The Gram matrix of the shared gradients, a stand-in for a strategy's
        # coefficients, and the combined update.
        rows = tf.stack([tf.concat([tf.reshape(g, [-1]) for g in grads], 0) for grads in per_task])
        coefficients = tf.nn.softmax(tf.reduce_sum(tf.matmul(rows, rows, transpose_b=True), 1))
        update = [
            tf.add_n([coefficients[k] * per_task[k][i] for k in range(num_tasks)])
            for i in range(len(shared))
        ]
        return tf.add_n([tf.reduce_sum(u) for u in update])

    def one_backward():
        with tf.GradientTape() as tape:
            total = tf.add_n(task_losses())
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(total, variables)])

    def k_passes():
        with tf.GradientTape(persistent=True) as tape:
            per_loss = task_losses()
        return combine([tape.gradient(loss, shared) for loss in per_loss])

    def pfor_jacobian():
        with tf.GradientTape(persistent=True) as tape:
            stacked = tf.stack(task_losses())
        jacobian = tape.jacobian(stacked, shared)
        return combine([[j[k] for j in jacobian] for k in range(num_tasks)])

    return {
        "one backward": tf.function(one_backward),
        "K backward passes": tf.function(k_passes),
        "pfor jacobian": tf.function(pfor_jacobian),
        "K passes, XLA": tf.function(k_passes, jit_compile=True),
        "one backward, XLA": tf.function(one_backward, jit_compile=True),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for num_tasks in args.tasks:
        functions = routes(num_tasks)
        for function in functions.values():
            for _ in range(10):
                function()
        times = {name: [] for name in functions}
        for _ in range(args.repeats):  # interleaved, so drift cancels out of the ratios
            for name, function in functions.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    out = function()
                float(out)
                times[name].append((time.perf_counter() - start) / args.steps * 1000.0)
        baseline = np.array(times["one backward"])
        print(f"\nK={num_tasks}: batch {workload.BATCH_SIZE}, median of {args.repeats} timings")
        print("| route | ms | x one backward |")
        print("|---|---|---|")
        for name, values in times.items():
            ratio = np.median(np.array(values) / baseline)
            print(f"| {name} | {np.median(values):.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
