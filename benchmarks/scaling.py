"""Benchmark (h): step time and peak memory of each route as the tasks and the trunk grow.

Routes (issue 14): the loss route ("equal", "dwa": Keras's own step), the representation
route ("pcgrad+rep", "mgda+rep": gradients with respect to the shared representation) and
the parameter route ("pcgrad", "mgda": gradients with respect to the shared parameters).
Each variant is timed against a plain `keras.Model` of the same network
(`compile(loss=dict)`) in the same process, on the backend given by `--backend`:

- against K (`--tasks`, default 2 5 10 20 40) on a small trunk: 32 inputs,
  Dense(64)-ReLU-Dense(64)-ReLU, K one-unit MSE heads, batch 64;
- against the trunk (`--trunks`) at K=2: "mlp" (the small trunk), "standard" (the
  standard workload of workload.py: a conv trunk on 28x28x1, batch 64) and "mobilenet"
  (`keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None,
  include_top=False, pooling="avg")`, batch 16).

Each model first fits one epoch that traces and compiles; then `--epochs` epochs of each
model alternate (plain, variant, plain, ...), so the machine's drift cancels out of the
ratio. "ms/step" is the variant's median epoch time over its steps; "x plain" is the median
of the epoch-by-epoch ratios.

Peak memory (`--memory-tasks`, default K=5 on the standard workload): each route runs
alone in a fresh child process, which reads its resident-set high-water mark (Linux:
`VmHWM` in /proc/self/status, which starts afresh at `exec`; elsewhere
`resource.getrusage(RUSAGE_SELF).ru_maxrss`; the whole process, the framework's import
included) after building the model and again after `--memory-steps` steps of batch 64;
the table gives both and their difference.

`--backends tensorflow jax torch` runs the script once per backend in child processes and
prints one table. It needs no TensorFlow off TensorFlow, so it runs unchanged on a GPU
machine with JAX or PyTorch only. `--plot PATH` writes a PNG (matplotlib) of "x plain"
against K and against the trunk.

    python scaling.py                                   # TensorFlow, ~10 min on 2 cores
    python scaling.py --backends tensorflow jax torch --plot scaling.png
    python scaling.py --tasks 2 5 --trunks mlp --epochs 1 --memory-steps 5   # smoke run
    python scaling.py --from-json a.json b.json --plot scaling.png   # merge earlier --json runs
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ["equal", "dwa", "pcgrad+rep", "mgda+rep", "pcgrad", "mgda"]
ROUTES = {
    "equal": "losses",
    "dwa": "losses",
    "pcgrad+rep": "representation",
    "mgda+rep": "representation",
    "pcgrad": "parameters",
    "mgda": "parameters",
}
MEMORY_VARIANTS = ["plain keras", "equal", "pcgrad+rep", "pcgrad"]
TRUNKS = ["mlp", "standard", "mobilenet"]


def _workload(keras, trunk, num_tasks, samples):
    """`(build_plain, build_multi, x, y, batch_size)` for one trunk and K."""
    import numpy as np

    import kerasmtl

    rng = np.random.default_rng(0)
    if trunk == "standard":
        import workload

        x, y = workload.data(num_tasks, samples)
        return (
            lambda: workload.plain_keras_model(num_tasks),
            lambda: workload.multi_task_model(num_tasks),
            x,
            y,
            workload.BATCH_SIZE,
            workload.losses(num_tasks),
        )
    names = [f"t{k}" for k in range(num_tasks)]
    if trunk == "mlp":
        shape, batch_size = (32,), 64
        x = rng.normal(size=(samples, 32)).astype("float32")

        def make_trunk():
            return keras.Sequential(
                [
                    keras.layers.Dense(64, activation="relu"),
                    keras.layers.Dense(64, activation="relu"),
                ],
                name="trunk",
            )

    elif trunk == "mobilenet":
        shape, batch_size = (96, 96, 3), 16
        x = rng.uniform(size=(samples, 96, 96, 3)).astype("float32")

        def make_trunk():
            return keras.applications.MobileNetV3Small(
                input_shape=shape, weights=None, include_top=False, pooling="avg"
            )

    else:
        raise ValueError(f"`trunk` must be one of {TRUNKS}. Received: trunk={trunk!r}")
    y = {name: rng.normal(size=(samples, 1)).astype("float32") for name in names}
    losses = {name: keras.losses.MeanSquaredError() for name in names}

    def build_plain():
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape, name="features")
        features = make_trunk()(inputs)
        outputs = {name: keras.layers.Dense(1, name=name)(features) for name in names}
        return keras.Model(inputs, outputs)

    def build_multi():
        keras.utils.set_random_seed(0)
        tasks = [kerasmtl.Task(name, head=1, loss="mse") for name in names]
        return kerasmtl.hard_sharing({"features": shape}, make_trunk(), tasks)

    return build_plain, build_multi, x, y, batch_size, losses


def _compile(keras, model, variant):
    name, _, route = variant.partition("+")
    kwargs = {"gradients": "representation"} if route == "rep" else {}
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=name, **kwargs)
    from kerasmtl import callbacks

    return [callbacks.LossWeightScheduler()] if name == "dwa" else []


def _epoch_seconds(keras, model, x, y, batch_size, extra_callbacks):
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[*extra_callbacks, Timer()],
    )
    return times[0]


def _time_case(keras, args, trunk, num_tasks, samples):
    build_plain, build_multi, x, y, batch_size, losses = _workload(keras, trunk, num_tasks, samples)
    steps = samples // batch_size
    plain = build_plain()
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses)
    _epoch_seconds(keras, plain, x, y, batch_size, [])  # traces
    rows = []
    for variant in args.variants:
        model = build_multi()
        extra = _compile(keras, model, variant)
        _epoch_seconds(keras, model, x, y, batch_size, extra)  # traces
        ratios, times, plain_times = [], [], []
        for _ in range(args.epochs):
            base = _epoch_seconds(keras, plain, x, y, batch_size, [])
            seconds = _epoch_seconds(keras, model, x, y, batch_size, extra)
            ratios.append(seconds / base)
            times.append(seconds)
            plain_times.append(base)
        rows.append(
            {
                "trunk": trunk,
                "tasks": num_tasks,
                "variant": variant,
                "route": ROUTES.get(variant, "?"),
                "ms_per_step": 1000.0 * statistics.median(times) / steps,
                "plain_ms_per_step": 1000.0 * statistics.median(plain_times) / steps,
                "x_plain": statistics.median(ratios),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _max_rss_mib():
    """This process's resident-set high-water mark, in MiB.

    Linux: `VmHWM` of /proc/self/status, which starts afresh at `exec`
    (`getrusage`'s `ru_maxrss` keeps the forking parent's mark across `exec`, so a
    child of a big process would report the parent's). Elsewhere `ru_maxrss`.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _memory_child(args):
    """One route alone in this process: the RSS high-water mark before and after training."""
    import keras

    variant = args.variants[0]
    build_plain, build_multi, x, y, batch_size, losses = _workload(
        keras, "standard", args.memory_tasks, args.memory_steps * 64
    )
    if variant == "plain keras":
        model = build_plain()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses)
        extra = []
    else:
        model = build_multi()
        extra = _compile(keras, model, variant)
    built = _max_rss_mib()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=extra)
    return {
        "variant": variant,
        "route": ROUTES.get(variant, "plain"),
        "tasks": args.memory_tasks,
        "steps": args.memory_steps,
        "built_mib": built,
        "peak_mib": _max_rss_mib(),
    }


def _memory(args):
    rows = []
    for variant in MEMORY_VARIANTS:
        result = _child(args, ["--memory-child", "--variants", variant])
        rows.append(result["memory"][0])
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _child(args, extra_flags, backend=None):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".scaling_{os.getpid()}.json")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--backend",
        backend or args.backend,
        "--json",
        path,
        "--memory-tasks",
        str(args.memory_tasks),
        "--memory-steps",
        str(args.memory_steps),
        *extra_flags,
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(path) as handle:
        result = json.load(handle)
    os.remove(path)
    return result


def _measure(args):
    import keras

    rows = []
    for num_tasks in args.tasks:
        rows += _time_case(keras, args, "mlp", num_tasks, args.samples)
    for trunk in args.trunks:
        if trunk == "mlp" and 2 in args.tasks:
            continue  # measured above
        samples = args.samples if trunk != "mobilenet" else 16 * max(2, args.samples // 128)
        rows += _time_case(keras, args, trunk, 2, samples)
    memory = _memory(args) if args.memory_steps > 0 else []
    return {
        "backend": keras.backend.backend(),
        "device": _device(keras),
        "rows": rows,
        "memory": memory,
    }


def _device(keras):
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return str(jax.devices()[0].device_kind)
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    except Exception as error:  # a name is nice to have, never worth failing a run for
        return f"unknown ({type(error).__name__})"


def _print_tables(results):
    print("| backend (device) | trunk | K | route | variant | ms/step | plain ms/step | x plain |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            print(
                f"| {result['backend']} ({result['device']}) | {row['trunk']} | {row['tasks']} | "
                f"{row['route']} | {row['variant']} | {row['ms_per_step']:.1f} | "
                f"{row['plain_ms_per_step']:.1f} | {row['x_plain']:.2f} |"
            )
    if any(result["memory"] for result in results):
        print()
        print(
            "| backend (device) | route | variant | K | steps | RSS built MiB | RSS peak MiB "
            "| peak - built MiB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for result in results:
            for row in result["memory"]:
                print(
                    f"| {result['backend']} ({result['device']}) | {row['route']} | "
                    f"{row['variant']} | {row['tasks']} | {row['steps']} | "
                    f"{row['built_mib']:.0f} | {row['peak_mib']:.0f} | "
                    f"{row['peak_mib'] - row['built_mib']:.0f} |"
                )


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_tasks, by_trunk) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"tensorflow": "-", "jax": "--", "torch": ":"}
    for result in results:
        style = styles.get(result["backend"], "-.")
        for index, variant in enumerate(
            sorted({row["variant"] for row in result["rows"]}, key=VARIANTS.index)
        ):
            color = f"C{index}"
            label = f"{variant} ({result['backend']})"
            points = sorted(
                (row["tasks"], row["x_plain"])
                for row in result["rows"]
                if row["variant"] == variant and row["trunk"] == "mlp"
            )
            if points:
                by_tasks.plot(*zip(*points), style, marker="o", color=color, label=label)
            trunks = [
                (TRUNKS.index(row["trunk"]), row["x_plain"])
                for row in result["rows"]
                if row["variant"] == variant and row["tasks"] == 2
            ]
            if trunks:
                by_trunk.plot(*zip(*sorted(trunks)), style, marker="o", color=color, label=label)
    by_tasks.set(xscale="log", xlabel="tasks K (small MLP trunk)", ylabel="step time / plain Keras")
    by_tasks.set_xticks([2, 5, 10, 20, 40], labels=["2", "5", "10", "20", "40"])
    by_tasks.minorticks_off()
    by_trunk.set(xlabel="trunk (K=2)", ylabel="step time / plain Keras")
    by_trunk.set_xticks(range(len(TRUNKS)), labels=["MLP", "standard conv", "MobileNetV3Small"])
    for axis in (by_tasks, by_trunk):
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.grid(alpha=0.3)
    by_trunk.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle("kerasmtl: fit step time relative to plain Keras, per route")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _merge(paths):
    merged = {}
    for path in paths:
        with open(path) as handle:
            loaded = json.load(handle)
        # One backend's result (`--backend`), or a list of them (`--backends`).
        for result in loaded if isinstance(loaded, list) else [loaded]:
            into = merged.setdefault(result["backend"], {**result, "rows": [], "memory": []})
            keys = {(row["trunk"], row["tasks"], row["variant"]) for row in result["rows"]}
            into["rows"] = [
                row
                for row in into["rows"]
                if (row["trunk"], row["tasks"], row["variant"]) not in keys
            ] + result["rows"]
            into["memory"] = result.get("memory") or into["memory"]
    for result in merged.values():
        result["rows"].sort(key=lambda row: (TRUNKS.index(row["trunk"]), row["tasks"]))
    return list(merged.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="run in this process on this backend")
    parser.add_argument("--backends", nargs="*", default=None, help="one child per backend")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5, 10, 20, 40])
    parser.add_argument("--trunks", nargs="*", default=TRUNKS, choices=TRUNKS)
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--samples", type=int, default=512, help="samples per epoch (MLP, conv)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--memory-tasks", type=int, default=5)
    parser.add_argument("--memory-steps", type=int, default=50, help="0: no memory table")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plot", default=None, help="write a PNG plot here")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        help="print (and --plot) earlier --json results instead of measuring; rows of one "
        "backend in several files are merged, later files replacing equal (trunk, K, variant)",
    )
    args = parser.parse_args()
    if args.from_json:
        _print_tables(_merge(args.from_json))
        if args.plot:
            _plot(_merge(args.from_json), args.plot)
        return
    for variant in args.variants:
        if variant not in ROUTES and not (args.memory_child and variant == "plain keras"):
            raise ValueError(
                f"Each variant must be one of {VARIANTS}. Received: variants={args.variants}"
            )

    if args.backends:
        results = []
        for backend in args.backends:
            flags = [
                "--tasks",
                *map(str, args.tasks),
                "--trunks",
                *args.trunks,
                "--variants",
                *args.variants,
                "--samples",
                str(args.samples),
                "--epochs",
                str(args.epochs),
            ]
            results.append(_child(args, flags, backend=backend))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle)
        _print_tables(results)
        if args.plot:
            _plot(results, args.plot)
        return

    args.backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.memory_child:
        result = {"memory": [_memory_child(args)]}
    else:
        result = _measure(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle)
    if not args.memory_child:
        _print_tables([result])
        if args.plot:
            _plot([result], args.plot)


if __name__ == "__main__":
    main()
