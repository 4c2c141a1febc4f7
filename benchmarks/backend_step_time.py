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
pooling="avg")` trunk with "equal", "pcgrad" and "mgda" against plain Keras.

`--backends tensorflow jax torch` runs itself once per backend in child processes
and prints one table with each backend's absolute times and its ratio to
TensorFlow's. The script needs no TensorFlow on a backend other than TensorFlow,
so it runs unchanged on a GPU machine with JAX or PyTorch only.

    python backend_step_time.py --backend jax
    python backend_step_time.py --backends tensorflow jax torch --tasks 2 5
    python backend_step_time.py --backends tensorflow jax torch --first-epoch
"""

import argparse
import json
import os
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
    def __init__(self):
        self.times = []

    def callback(self, keras):
        timer = self

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.times.append(time.perf_counter() - self.start)

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
            ratios, times = [], []
            for epoch in range(args.epochs + 1):
                epoch_times = []
                for candidate, cbs in ((plain, []), (model, extra)):
                    timer = _EpochTimer()
                    candidate.fit(
                        x, y, batch_size=workload.BATCH_SIZE, epochs=1, verbose=0,
                        shuffle=False, callbacks=[*cbs, timer.callback(keras)],
                    )
                    epoch_times.append(timer.times[0])
                if epoch:  # the first epoch of each traces and compiles
                    ratios.append(epoch_times[1] / epoch_times[0])
                    times.append(epoch_times[1])
            results.append(
                {
                    "tasks": num_tasks,
                    "variant": variant,
                    "ms_per_step": 1000.0 * float(np.median(times)) / steps,
                    "x_plain": float(np.median(ratios)),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return {"backend": keras.backend.backend(), "device": device, "rows": results}


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
    for variant, build in (
        ("plain keras", plain),
        ("equal", lambda: multi("equal")),
        ("pcgrad", lambda: multi("pcgrad")),
        ("mgda", lambda: multi("mgda")),
    ):
        keras.utils.set_random_seed(0)
        model = build()
        timer = _EpochTimer()
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[timer.callback(keras)])
        rows.append({"variant": variant, "first_s": timer.times[0], "second_s": timer.times[1]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for row in rows:
        row["x_plain"] = row["first_s"] / rows[0]["first_s"]
    return {"backend": keras.backend.backend(), "device": _device_name(keras), "rows": rows}


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
        print("| backend (device) | variant | first epoch s | x plain | second epoch s |")
        print("|---|---|---|---|---|")
        for result in results:
            for row in result["rows"]:
                print(
                    f"| {result['backend']} ({result['device']}) | {row['variant']} | "
                    f"{row['first_s']:.1f} | {row['x_plain']:.2f} | {row['second_s']:.1f} |"
                )
        return
    print("| backend (device) | K | variant | ms/step | x plain Keras | x TensorFlow |")
    print("|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            base = reference.get((row["tasks"], row["variant"]))
            versus = f"{row['ms_per_step'] / base['ms_per_step']:.2f}" if base else "-"
            print(
                f"| {result['backend']} ({result['device']}) | {row['tasks']} | "
                f"{row['variant']} | {row['ms_per_step']:.1f} | {row['x_plain']:.2f} | {versus} |"
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
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    if args.backends:
        results = []
        for backend in args.backends:
            with_json = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".{backend}.json")
            command = [sys.executable, os.path.abspath(__file__), "--backend", backend,
                       "--json", with_json]
            for flag in ("tasks", "strategies", "samples", "epochs", "steps"):
                value = getattr(args, flag)
                command += [f"--{flag}", *map(str, value if isinstance(value, list) else [value])]
            if args.first_epoch:
                command.append("--first-epoch")
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            with open(with_json) as handle:
                results.append(json.load(handle))
            os.remove(with_json)
        _print_table(results, args.first_epoch)
        return

    os.environ["KERAS_BACKEND"] = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    result = _first_epoch(args) if args.first_epoch else _measure(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle)
    _print_table([result], args.first_epoch)


if __name__ == "__main__":
    main()
