"""Where the JAX parameter route's step time goes (issue 14, item 4).

On the standard workload (workload.py, batch 64), jits and times separately, in one
process, with `jax.block_until_ready`:

- `forward`: the forward pass and the K task losses;
- `forward + 1 backward`: the gradient of the sum of the losses (what equal
  weighting differentiates);
- `forward + K pullbacks (<method>)`: the K task gradients of one forward pass by
  each route of `kerasmtl.trainers.jax_task_gradients.task_vjps` (`loop`, `map`,
  `map/b` = `jax.lax.map(..., batch_size=b)`, `vmap`), and `split`: the forward
  pass in one jit that returns its `jax.vjp` pullback (residuals included), and
  the pullback in a second jit called K times (compiled once, where `loop`
  compiles K backward passes into one program);
- `gram + mgda + combination`: the Gram matrix of the (K, P) gradient matrix, MGDA's
  coefficients and the combined gradient;
- `adam update`: the optimizer's `stateless_apply`.

Each function's first call (trace + compile) is timed apart; then `--repeats` rounds
run every function `--calls` times in turn, and the table gives the median ms per call
and its ratio to `forward + 1 backward`, both in wall and in CPU time
(`time.process_time`, all threads). `--max-pooling reshape` replaces the trunk's
`MaxPooling2D` by the same pooling as a reshape and a max (same outputs, a cheaper
gradient on JAX's CPU backend) to see how much of the step the pooling gradient is.
`--trunk mobilenet` times instead the first-epoch case of `backend_step_time.py`
(`MobileNetV3Small(input_shape=(96, 96, 3), weights=None)` trunk, 2 tasks, batch 16;
`--tasks` is ignored): its "first call s" column is the compile time that case
pays on top of plain Keras's one backward pass.

    python jax_parameter_route_time.py --tasks 2 5
    python jax_parameter_route_time.py --tasks 5 --methods loop --max-pooling reshape
    python jax_parameter_route_time.py --trunk mobilenet --methods loop split
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _reshape_max_pooling(keras):
    """`MaxPooling2D` (strides = pool size, "valid") as a reshape and a max.

    The same outputs; JAX differentiates `max` over an axis without the
    `select_and_scatter_add` of `lax.reduce_window`'s gradient (the two differ only
    in how ties within a window share the gradient).
    """
    from keras import ops

    class ReshapeMaxPooling2D(keras.layers.MaxPooling2D):
        def call(self, inputs):
            _, height, width, channels = inputs.shape
            rows, columns = self.pool_size
            inputs = inputs[:, : height // rows * rows, : width // columns * columns]
            shape = (-1, height // rows, rows, width // columns, columns, channels)
            return ops.max(ops.reshape(inputs, shape), axis=(2, 4))

    return ReshapeMaxPooling2D


def _mobilenet_case():
    """The first-epoch case of `backend_step_time.py`: data, labels and the compiled model."""
    import keras
    import numpy as np

    from kerasmtl import Task, hard_sharing

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 96, 96, 3)).astype("float32")
    y = {"label": rng.integers(0, 10, size=16), "box": rng.normal(size=(16, 4)).astype("float32")}
    trunk = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), weights=None, include_top=False, pooling="avg"
    )
    label_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = hard_sharing(
        {"image": (96, 96, 3)},
        trunk,
        [Task("label", head=10, loss=label_loss), Task("box", head=4, loss="mse")],
    )
    return x, y, model


def _functions(num_tasks, methods, max_pooling="keras", trunk="standard"):
    import jax
    import jax.numpy as jnp
    import keras
    import workload

    if max_pooling == "reshape":
        keras.layers.MaxPooling2D = _reshape_max_pooling(keras)

    from kerasmtl.trainers import gradient_math as gm
    from kerasmtl.trainers.jax_task_gradients import task_vjps

    if trunk == "mobilenet":
        x, y, model = _mobilenet_case()
        num_tasks = len(y)
    else:
        x, y = workload.data(num_tasks, workload.BATCH_SIZE)
        model = workload.multi_task_model(num_tasks)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting="mgda")
    model.optimizer.build(model.trainable_variables)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    optimizer_variables = [v.value for v in model.optimizer.variables]
    x = jnp.asarray(x)
    y = {k: jnp.asarray(v) for k, v in y.items()}

    def loss_vector(values):
        y_pred, _ = model.stateless_call(values, non_trainable, x, training=True)
        losses, _ = model.compute_task_loss_list(y, y_pred)
        return jnp.stack(losses)

    def forward(values):
        return loss_vector(values)

    def one_backward(values):
        return jax.grad(lambda v: jnp.sum(loss_vector(v)))(values)

    def split_pullbacks():
        """The forward pass and the pullback in two jits; the pullback compiled once."""

        @jax.jit
        def forward_with_pullback(values):
            return jax.vjp(loss_vector, values)

        @jax.jit
        def pull(pullback, cotangent):
            return pullback(cotangent)[0]

        def run(values):
            _, pullback = forward_with_pullback(values)
            rows = [pull(pullback, cotangent) for cotangent in jnp.eye(num_tasks)]
            return [jnp.stack(blocks) for blocks in zip(*rows)]

        run.jitted = True  # already jitted in pieces: not wrapped in one more jit
        return run

    def k_pullbacks(method, batch_size=None):
        if method == "split":
            return split_pullbacks()

        def run(values):
            _, pullback = jax.vjp(loss_vector, values)
            cotangents = jnp.eye(num_tasks)
            if batch_size:
                (stacked,) = jax.lax.map(pullback, cotangents, batch_size=batch_size)
            else:
                (stacked,) = task_vjps(pullback, cotangents, method=method)
            return stacked

        return run

    shared = list(model.shared_variable_indices)
    stacked = jax.jit(k_pullbacks("loop"))(trainable)
    matrix = gm.flatten_blocks(list(stacked))
    width = sum(int(stacked[i][0].size) for i in shared)

    def gram_and_mgda():
        strategy = model.weighting

        def run(matrix):
            rows = matrix[:, :width]
            gram = rows @ rows.T
            present = jnp.ones((num_tasks,), bool)
            losses = jnp.ones((num_tasks,))
            with keras.StatelessScope():
                coefficients = gm.strategy_coefficients(strategy, gram, losses, present)
            return gm.weighted_sum_of_rows(coefficients, matrix)

        return run

    gradients = [g[0] for g in stacked]

    def adam(optimizer_variables, trainable):
        return model.optimizer.stateless_apply(optimizer_variables, gradients, trainable)

    table = {
        "forward": (forward, (trainable,)),
        "forward + 1 backward": (one_backward, (trainable,)),
    }
    for method in methods:
        name, _, batch = method.partition("/")
        table[f"forward + K pullbacks ({method})"] = (
            k_pullbacks(name, int(batch) if batch else None),
            (trainable,),
        )
    table["gram + mgda + combination"] = (gram_and_mgda(), (matrix,))
    table["adam update"] = (adam, (optimizer_variables, trainable))
    return table, num_tasks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--methods", nargs="+", default=["loop", "map", "map/2", "vmap"])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-pooling",
        choices=["keras", "reshape"],
        default="keras",
        help="the trunk's max pooling: Keras's layer, or the same as a reshape and a max",
    )
    parser.add_argument(
        "--trunk",
        choices=["standard", "mobilenet"],
        default="standard",
        help="the standard workload, or the first-epoch case's MobileNetV3Small (2 tasks)",
    )
    args = parser.parse_args()

    import jax

    with open("/proc/loadavg") as handle:
        print(f"load average before: {handle.read().split()[:3]}", file=sys.stderr)
    rows = []
    for num_tasks in args.tasks[:1] if args.trunk == "mobilenet" else args.tasks:
        table, num_tasks = _functions(num_tasks, args.methods, args.max_pooling, args.trunk)
        compiled, compile_s, compile_cpu_s = {}, {}, {}
        for name, (function, inputs) in table.items():
            wall, cpu = time.perf_counter(), time.process_time()
            compiled[name] = function if getattr(function, "jitted", False) else jax.jit(function)
            jax.block_until_ready(compiled[name](*inputs))
            compile_s[name] = time.perf_counter() - wall
            compile_cpu_s[name] = time.process_time() - cpu
        walls = {name: [] for name in table}
        cpus = {name: [] for name in table}
        for _ in range(args.repeats):
            for name, (_, inputs) in table.items():
                for _ in range(args.calls):
                    wall, cpu = time.perf_counter(), time.process_time()
                    jax.block_until_ready(compiled[name](*inputs))
                    walls[name].append(time.perf_counter() - wall)
                    cpus[name].append(time.process_time() - cpu)
        base = statistics.median(walls["forward + 1 backward"])
        base_cpu = statistics.median(cpus["forward + 1 backward"])
        for name in table:
            row = {
                "tasks": num_tasks,
                "function": name,
                "ms": 1000 * statistics.median(walls[name]),
                "x_backward": statistics.median(walls[name]) / base,
                "cpu_ms": 1000 * statistics.median(cpus[name]),
                "x_backward_cpu": statistics.median(cpus[name]) / base_cpu,
                "first_call_s": compile_s[name],
                "first_call_cpu_s": compile_cpu_s[name],
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    with open("/proc/loadavg") as handle:
        print(f"load average after: {handle.read().split()[:3]}", file=sys.stderr)
    print(
        "| K | function | ms | x (forward + 1 backward) | CPU ms | x (CPU) "
        "| first call s | first call CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['tasks']} | {row['function']} | {row['ms']:.1f} | {row['x_backward']:.2f} | "
            f"{row['cpu_ms']:.1f} | {row['x_backward_cpu']:.2f} | {row['first_call_s']:.2f} | "
            f"{row['first_call_cpu_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
