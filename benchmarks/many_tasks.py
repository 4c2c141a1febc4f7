"""Benchmark (g): the cost of each gradient strategy's solver as the number of tasks K grows.

A small trunk (32 inputs, Dense(64)-ReLU-Dense(64)-ReLU) with K one-unit MSE heads, batch 64,
trained with `model.fit` on the backend given by `--backend` (default: KERAS_BACKEND or
tensorflow). For each K and strategy it prints:

- "step ms": the median epoch time (after the first, which traces) over the steps per epoch;
- "solver ms, fixed": `compute_weights_from_gram` alone on a random positive semi-definite K x K
  Gram matrix of rank min(K, 16), compiled the backend's way (`tf.function`, `jax.jit`; torch
  runs it eagerly), median of --calls calls, and its share of the step;
- "solver ms, training": the same call on the Gram matrices training produces: after the timed
  epochs, --gram-steps further training steps (`train_on_batch` on consecutive batches) each
  record the Gram matrix of the shared variables' task gradients and the task losses just
  before the step, as the trainer forms them; the solver then runs on those matrices in turn
  (median of --calls calls), and its share of the step. Consecutive training Gram matrices
  differ by mini-batch noise and are better conditioned than the fixed one, so this is the
  figure that a training step pays; the fixed column is the harder case.

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
    return 1000.0 * float(np.median(times[1:])) / (samples // 64), model, x, y


def _fixed_gram(np, num_tasks):
    rng = np.random.default_rng(1)
    rank = min(num_tasks, 16)
    rows = rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, 256))
    losses = rng.uniform(0.5, 2.0, size=num_tasks)
    return [((rows @ rows.T).astype("float32"), losses.astype("float32"))]


def _training_grams(np, model, x, y, steps, batch_size=64):
    """Gram matrices and losses of `steps` consecutive training steps (before each step)."""
    shared = model.shared_variable_indices
    names = model.task_names
    if _is_jax():
        task_gradients = _jax_task_gradients(np, model, shared)
    else:
        task_gradients = _eager_task_gradients(np, model, shared)
    recorded = []
    for step in range(steps):
        start = (step * batch_size) % (len(x) - batch_size + 1)
        x_batch = x[start : start + batch_size]
        y_batch = {name: y[name][start : start + batch_size] for name in names}
        rows, losses = task_gradients(x_batch, y_batch)
        rows = rows.astype("float64")
        recorded.append(((rows @ rows.T).astype("float32"), losses.astype("float32")))
        model.train_on_batch(x_batch, y_batch)
    return recorded


def _eager_task_gradients(np, model, shared):
    """`(x, y) -> ((K, P) shared-variable gradients, (K,) losses)`: K gradient calls."""
    from kerasmtl.testing.gradients import value_and_gradients

    variables = [model.trainable_variables[i] for i in shared]

    def call(x, y):
        rows, losses = [], []
        for k in range(len(model.task_names)):

            def task_loss(inputs, k=k):
                values, _ = model.compute_task_loss_list(y, model(inputs, training=True))
                return values[k], ()

            loss, _, _, gradients = value_and_gradients(task_loss, x, variables)
            rows.append(np.concatenate([g.ravel() for g in gradients]))
            losses.append(float(loss))
        return np.stack(rows), np.asarray(losses)

    return call


def _is_jax():
    import keras

    return keras.backend.backend() == "jax"


def _jax_task_gradients(np, model, shared):
    """The same as `_eager_task_gradients`, from one jitted `jax.jacrev` (JAX)."""
    import jax
    import jax.numpy as jnp

    num_tasks = len(model.task_names)

    def losses_of(trainable, non_trainable, x, y):
        y_pred, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        losses = jnp.stack(model.compute_task_loss_list(y, y_pred)[0])
        return losses, losses  # differentiated, and returned as it is

    @jax.jit
    def jacobian(trainable, non_trainable, x, y):
        blocks, losses = jax.jacrev(losses_of, has_aux=True)(trainable, non_trainable, x, y)
        rows = [jnp.reshape(blocks[i], (num_tasks, -1)) for i in shared]
        return jnp.concatenate(rows, axis=1), losses

    def call(x, y):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        rows, losses = jacobian(trainable, non_trainable, x, y)
        return np.asarray(rows), np.asarray(losses)

    return call


def _solver_ms(keras, kerasmtl, np, name, grams, calls):
    from keras import ops

    num_tasks = grams[0][0].shape[0]
    strategy = kerasmtl.weighting.get(name)
    strategy.build((num_tasks,))
    inputs = [(ops.convert_to_tensor(g), ops.convert_to_tensor(loss)) for g, loss in grams]
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

    keras.ops.convert_to_numpy(function(*inputs[0], present))  # trace / compile
    samples = []
    for call in range(calls):
        gram, losses = inputs[call % len(inputs)]
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
    parser.add_argument("--gram-steps", type=int, default=10)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import kerasmtl

    names = args.only or GRADIENT_STRATEGIES
    print(f"backend: {keras.backend.backend()}")
    print(
        "| K | strategy | step ms | solver ms, fixed | share, fixed "
        "| solver ms, training | share, training |"
    )
    print("|---|---|---|---|---|---|---|")
    for num_tasks in args.tasks:
        for name in names:
            step, model, x, y = _step_ms(
                keras, kerasmtl, np, name, num_tasks, args.samples, args.epochs
            )
            fixed = _solver_ms(keras, kerasmtl, np, name, _fixed_gram(np, num_tasks), args.calls)
            grams = _training_grams(np, model, x, y, args.gram_steps)
            trained = _solver_ms(keras, kerasmtl, np, name, grams, args.calls)
            print(
                f"| {num_tasks} | {name} | {step:.1f} | {fixed:.2f} | {fixed / step:.0%} "
                f"| {trained:.2f} | {trained / step:.0%} |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
