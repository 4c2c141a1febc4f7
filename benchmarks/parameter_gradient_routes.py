"""Why the parameter-gradient route costs what it does: ways to get K task gradients in TF.

On the standard workload (see workload.py), times the core of one step, without the
optimizer or metrics, each traced once in a `tf.function`:

- `one backward`: the plain-Keras step's gradient: one backward pass of the summed loss
  (the baseline of the ratios);
- `K backward passes`: what kerasmtl's parameter route does: one persistent tape, one
  backward pass per task loss, then the Gram matrix and the combined update;
- `pfor jacobian`: the K passes vectorised by `tape.jacobian` (TensorFlow's pfor);
- `layer-wise`: hand-written for this trunk (TorchJD's autogram idea): the trunk run layer by
  layer, K backward passes to each Conv2D/Dense pre-activation only (no weight gradients),
  then the convolution filter gradients of all K tasks in one folded Conv2DBackpropFilter and
  the Dense kernel's Gram block from (inputs inputs^T) * (deltas_i deltas_j^T), without the K
  Dense kernel gradients;
- `K passes, XLA` and `one backward, XLA`: the first two compiled with `jit_compile=True`.

    python benchmarks/parameter_gradient_routes.py [--tasks 2 5] [--steps 50]
"""

import argparse
import time

import keras
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

    trunk = model.get_layer("trunk")
    heads = [model.get_layer(name) for name in names]

    def layer_wise():
        records = []
        with tf.GradientTape(persistent=True) as tape:
            h = x
            for layer in trunk.layers:
                if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                    if isinstance(layer, keras.layers.Conv2D):
                        pre = layer.convolution_op(h, layer.kernel) + layer.bias
                    else:
                        pre = tf.matmul(h, layer.kernel) + layer.bias
                    records.append((layer, h, pre))
                    h = layer.activation(pre)
                else:
                    h = layer(h, training=True)
            per_loss = [losses[name](y[name], head(h)) for name, head in zip(names, heads)]
        per_task = [tape.gradient(loss, [pre for _, _, pre in records]) for loss in per_loss]
        gram, blocks = tf.zeros((num_tasks, num_tasks)), []
        for index, (layer, inputs, pre) in enumerate(records):
            deltas = tf.stack([per_task[k][index] for k in range(num_tasks)])
            biases = tf.reduce_sum(deltas, axis=list(range(1, len(deltas.shape) - 1)))
            gram += tf.matmul(biases, biases, transpose_b=True)
            if isinstance(layer, keras.layers.Conv2D):
                batch, height, width, channels = pre.shape
                folded = tf.transpose(deltas, [1, 2, 3, 0, 4])
                folded = tf.reshape(folded, [batch, height, width, num_tasks * channels])
                size = layer.kernel.shape[:3]
                kernels = tf.compat.v1.nn.conv2d_backprop_filter(
                    inputs, [*size, num_tasks * channels], folded, [1, 1, 1, 1], "VALID"
                )
                kernels = tf.reshape(kernels, [-1, num_tasks, channels])
                kernels = tf.reshape(tf.transpose(kernels, [1, 0, 2]), [num_tasks, -1])
                gram += tf.matmul(kernels, kernels, transpose_b=True)
            else:
                products = tf.matmul(inputs, inputs, transpose_b=True)
                pairs = tf.einsum("ibo,jco->ijbc", deltas, deltas)
                gram += tf.einsum("bc,ijbc->ij", products, pairs)
                kernels = deltas
            blocks.append((layer, inputs, kernels, biases))
        coefficients = tf.nn.softmax(tf.reduce_sum(gram, 1))
        update = []
        for layer, inputs, kernels, biases in blocks:
            combined = tf.tensordot(coefficients, kernels, 1)
            if isinstance(layer, keras.layers.Dense):
                combined = tf.matmul(inputs, combined, transpose_a=True)
            update += [combined, tf.tensordot(coefficients, biases, 1)]
        return tf.add_n([tf.reduce_sum(u) for u in update])

    return {
        "one backward": tf.function(one_backward),
        "K backward passes": tf.function(k_passes),
        "pfor jacobian": tf.function(pfor_jacobian),
        "layer-wise": tf.function(layer_wise),
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
