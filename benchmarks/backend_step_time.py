"""Benchmark (f): ms per `fit` step of each strategy on one Keras backend, against plain Keras.

The standard workload (see workload.py) at K=2 and K=5, trained with `model.fit` on
in-memory arrays (batch 64) on the backend given by `--backend`; the plain-Keras model
(`keras.Model`, `compile(loss=dict)`) runs in the same process as the baseline. Each
variant runs one epoch that traces and compiles, then `--epochs` timed epochs; a
step's time is the median epoch time divided by the steps per epoch, and the ratio
to plain Keras is taken epoch by epoch, alternating the two models, so the
machine's drift cancels out of it.

`--first-epoch` times instead the first epoch (trace, compile and `--steps` steps)
of a `keras.applications.MobileNetV3Small(weights=None, include_top=False,
pooling="avg")` trunk with "equal", "pcgrad" and "mgda" against plain Keras, with the
number of times the train step was traced and (TensorFlow) the nodes of its graph.
`--repeats R` runs R rounds, each variant in a fresh process in turn, and reports the
median time and the per-round ratios to the first variant.

`--backends tensorflow jax torch` runs itself once per backend in child processes
and prints one table with each backend's absolute times and its ratio to
TensorFlow's. The script needs no TensorFlow on a backend other than TensorFlow,
so it runs unchanged on a GPU machine with JAX or PyTorch only.

    python backend_step_time.py --backend jax
    python backend_step_time.py --backends tensorflow jax torch --tasks 2 5
    python backend_step_time.py --backends tensorflow jax torch --first-epoch
    python backend_step_time.py --backend tensorflow --first-epoch --steps 4 --repeats 3
    python backend_step_time.py --backend jax --first-epoch --steps 4 --jax-task-vjps map

`--jax-task-vjps loop|map|vmap` overrides how the JAX parameter route takes its K task
pullbacks (`kerasmtl.trainers.jax_task_gradients.task_vjps`; "auto" by default).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_STRATEGIES = [
    "equal",
    "dwa",
    "uncertainty",
    "famo",
    "pcgrad",
    "pcgrad+rep",
    "mgda",
    "mgda+rep",
    "nash_mtl",
    "upgrad",
    "cagrad",
]


class _EpochTimer:
    """Wall-clock and CPU seconds (`time.process_time`: all threads) of each epoch."""

    def __init__(self):
        self.times = []
        self.cpu_times = []

    def callback(self, keras):
        timer = self

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()
                self.cpu_start = time.process_time()

            def on_epoch_end(self, epoch, logs=None):
                timer.times.append(time.perf_counter() - self.start)
                timer.cpu_times.append(time.process_time() - self.cpu_start)

        return Timer()


def _measure(args):
    import keras
    import numpy as np
    import workload

    from kerasmtl import callbacks

    results = []
    device = _device_name(keras)
    for num_tasks in args.tasks:
        x, y = workload.data(num_tasks, args.samples)
        steps = args.samples // workload.BATCH_SIZE
        plain = workload.plain_keras_model(num_tasks)
        plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss=workload.losses(num_tasks))
        for variant in args.strategies:
            name, _, route = variant.partition("+")
            model = workload.multi_task_model(num_tasks)
            kwargs = {"gradients": "representation"} if route == "rep" else {}
            model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=name, **kwargs)
            extra = [callbacks.LossWeightScheduler()] if name in ("dwa", "loss_ratio") else []
            ratios, times, cpu_ratios, cpu_times = [], [], [], []
            for epoch in range(args.epochs + 1):
                epoch_times, epoch_cpu_times = [], []
                for candidate, cbs in ((plain, []), (model, extra)):
                    timer = _EpochTimer()
                    candidate.fit(
                        x,
                        y,
                        batch_size=workload.BATCH_SIZE,
                        epochs=1,
                        verbose=0,
                        shuffle=False,
                        callbacks=[*cbs, timer.callback(keras)],
                    )
                    epoch_times.append(timer.times[0])
                    epoch_cpu_times.append(timer.cpu_times[0])
                if epoch:  # the first epoch of each traces and compiles
                    ratios.append(epoch_times[1] / epoch_times[0])
                    times.append(epoch_times[1])
                    cpu_ratios.append(epoch_cpu_times[1] / epoch_cpu_times[0])
                    cpu_times.append(epoch_cpu_times[1])
            results.append(
                {
                    "tasks": num_tasks,
                    "variant": variant,
                    "ms_per_step": 1000.0 * float(np.median(times)) / steps,
                    "x_plain": float(np.median(ratios)),
                    "cpu_ms_per_step": 1000.0 * float(np.median(cpu_times)) / steps,
                    "x_plain_cpu": float(np.median(cpu_ratios)),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return {"backend": keras.backend.backend(), "device": device, "rows": results}


FIRST_EPOCH_VARIANTS = ["plain keras", "equal", "pcgrad", "mgda"]


def _first_epoch(args):
    import keras
    import numpy as np

    from kerasmtl import Task, hard_sharing

    rng = np.random.default_rng(0)
    samples = args.steps * 16
    x = rng.uniform(size=(samples, 96, 96, 3)).astype("float32")
    y = {"label": rng.integers(0, 10, size=samples), "box": rng.normal(size=(samples, 4))}
    y["box"] = y["box"].astype("float32")
    losses = {
        "label": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "box": keras.losses.MeanSquaredError(),
    }

    def trunk():
        return keras.applications.MobileNetV3Small(
            input_shape=(96, 96, 3), weights=None, include_top=False, pooling="avg"
        )

    def plain():
        inputs = keras.Input((96, 96, 3), name="image")
        features = trunk()(inputs)
        outputs = {
            "label": keras.layers.Dense(10, name="label")(features),
            "box": keras.layers.Dense(4, name="box")(features),
        }
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss=losses)
        return model

    def multi(weighting):
        model = hard_sharing(
            {"image": (96, 96, 3)},
            trunk(),
            [Task("label", head=10, loss=losses["label"]), Task("box", head=4, loss="mse")],
        )
        model.compile(optimizer="adam", weighting=weighting)
        return model

    rows = []
    for variant in args.variants:
        keras.utils.set_random_seed(0)
        model = plain() if variant == "plain keras" else multi(variant)
        traces = _count_traces(model)
        timer = _EpochTimer()
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[timer.callback(keras)])
        row = {
            "variant": variant,
            "first_s": timer.times[0],
            "second_s": timer.times[1],
            "first_cpu_s": timer.cpu_times[0],
            "traces": traces[0],
        }
        if keras.backend.backend() == "tensorflow":
            row["graph_nodes"] = _graph_nodes(model, x[:16], {k: v[:16] for k, v in y.items()})
        rows.append(row)
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"backend": keras.backend.backend(), "device": _device_name(keras), "rows": rows}


def _count_traces(model):
    """Counts the Python calls of `model.train_step` (one per trace when it is traced)."""
    calls = [0]
    step = model.train_step

    def counting_step(*args):
        calls[0] += 1
        return step(*args)

    model.train_step = counting_step
    return calls


def _graph_nodes(model, x, y):
    """Nodes of one traced TensorFlow train step (function bodies included), traced apart."""
    import tensorflow as tf

    def spec(value):
        return tf.TensorSpec((None, *value.shape[1:]), tf.as_dtype(value.dtype))

    function = tf.function(lambda features, labels: model.train_step((features, labels)))
    concrete = function.get_concrete_function(spec(x), {k: spec(v) for k, v in y.items()})
    graph = concrete.graph.as_graph_def()
    return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)


def _first_epoch_rounds(args):
    """`--repeats` rounds; in each, every variant in a fresh process, in turn."""
    rounds = []
    for repeat in range(args.repeats):
        rows = {}
        for variant in args.variants:
            with_json = os.path.join(
                os.path.dirname(os.path.abspath(__file__)), f".first_epoch_{os.getpid()}.json"
            )
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--backend",
                args.backend,
                "--first-epoch",
                "--steps",
                str(args.steps),
                "--variants",
                variant,
                "--json",
                with_json,
            ]
            if args.jax_task_vjps:
                command += ["--jax-task-vjps", args.jax_task_vjps]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            with open(with_json) as handle:
                result = json.load(handle)
            os.remove(with_json)
            rows[variant] = result["rows"][0]
            print(f"round {repeat}: {json.dumps(rows[variant])}", file=sys.stderr, flush=True)
        rounds.append(rows)
    summary = []
    base = args.variants[0]
    for variant in args.variants:
        ratios = [r[variant]["first_s"] / r[base]["first_s"] for r in rounds]
        cpu_ratios = [r[variant]["first_cpu_s"] / r[base]["first_cpu_s"] for r in rounds]
        row = {
            "variant": variant,
            "first_cpu_s": float(statistics.median([r[variant]["first_cpu_s"] for r in rounds])),
            "x_plain_cpu": float(statistics.median(cpu_ratios)),
            "first_s": float(statistics.median([r[variant]["first_s"] for r in rounds])),
            "second_s": float(statistics.median([r[variant]["second_s"] for r in rounds])),
            "x_plain": float(statistics.median(ratios)),
            "x_plain_all": ratios,
            "traces": rounds[0][variant]["traces"],
        }
        if "graph_nodes" in rounds[0][variant]:
            row["graph_nodes"] = rounds[0][variant]["graph_nodes"]
        summary.append(row)
    return {"backend": result["backend"], "device": result["device"], "rows": summary}


def _device_name(keras):
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return str(jax.devices()[0].device_kind)
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    except Exception as error:  # a name is nice to have, never worth failing a run for
        return f"unknown ({type(error).__name__})"


def _print_table(results, first_epoch):
    reference = {}
    for result in results:
        if result["backend"] == "tensorflow":
            for row in result["rows"]:
                reference[(row.get("tasks"), row["variant"])] = row
    if first_epoch:
        print(
            "| backend (device) | variant | first epoch s | x plain | x plain per round "
            "| first epoch CPU s | x plain (CPU) | second epoch s | traces | graph nodes |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for result in results:
            base = result["rows"][0]
            for row in result["rows"]:
                ratios = row.get("x_plain_all", [row["first_s"] / base["first_s"]])
                cpu_ratio = row.get("x_plain_cpu", row["first_cpu_s"] / base["first_cpu_s"])
                print(
                    f"| {result['backend']} ({result['device']}) | {row['variant']} | "
                    f"{row['first_s']:.1f} | {row.get('x_plain', ratios[0]):.2f} | "
                    f"{' '.join(f'{r:.2f}' for r in ratios)} | {row['first_cpu_s']:.1f} | "
                    f"{cpu_ratio:.2f} | {row['second_s']:.1f} | "
                    f"{row['traces']} | {row.get('graph_nodes', '-')} |"
                )
        return
    print(
        "| backend (device) | K | variant | ms/step | x plain Keras | x TensorFlow "
        "| CPU ms/step | x plain Keras (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            base = reference.get((row["tasks"], row["variant"]))
            versus = f"{row['ms_per_step'] / base['ms_per_step']:.2f}" if base else "-"
            print(
                f"| {result['backend']} ({result['device']}) | {row['tasks']} | "
                f"{row['variant']} | {row['ms_per_step']:.1f} | {row['x_plain']:.2f} | {versus} | "
                f"{row.get('cpu_ms_per_step', float('nan')):.1f} | "
                f"{row.get('x_plain_cpu', float('nan')):.2f} |"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="run in this process on this backend")
    parser.add_argument("--backends", nargs="*", default=None, help="one child per backend")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps of the first-epoch run")
    parser.add_argument("--first-epoch", action="store_true")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=FIRST_EPOCH_VARIANTS,
        help="first-epoch variants; the first is the baseline",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="first-epoch rounds, each variant in a fresh process per round",
    )
    parser.add_argument(
        "--jax-task-vjps",
        default=None,
        choices=["auto", "loop", "map", "vmap"],
        help="JAX: how the parameter route takes its K pullbacks (jax_task_gradients.task_vjps)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    if args.backends:
        results = []
        for backend in args.backends:
            with_json = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".{backend}.json")
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--backend",
                backend,
                "--json",
                with_json,
            ]
            for flag in (
                "tasks",
                "strategies",
                "samples",
                "epochs",
                "steps",
                "variants",
                "repeats",
            ):
                value = getattr(args, flag)
                command += [f"--{flag}", *map(str, value if isinstance(value, list) else [value])]
            if args.first_epoch:
                command.append("--first-epoch")
            if args.jax_task_vjps:
                command += ["--jax-task-vjps", args.jax_task_vjps]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            with open(with_json) as handle:
                results.append(json.load(handle))
            os.remove(with_json)
        _print_table(results, args.first_epoch)
        return

    os.environ["KERAS_BACKEND"] = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.jax_task_vjps:
        from kerasmtl.trainers import jax_task_gradients

        jax_task_gradients.method = args.jax_task_vjps
    if args.first_epoch and args.repeats > 1:
        args.backend = os.environ["KERAS_BACKEND"]
        result = _first_epoch_rounds(args)
    elif args.first_epoch:
        result = _first_epoch(args)
    else:
        result = _measure(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle)
    _print_table([result], args.first_epoch)


if __name__ == "__main__":
    main()
