"""delta-m of multi-task weightings on `multi_digits` against single-task baselines, over seeds.

For each seed: one single-task model per task (same trunk, same epochs, batch size and
optimizer), then one two-task hard-sharing model per weighting strategy; delta-m
(Maninis et al., CVPR 2019) on test accuracy against that seed's baselines. Prints a
table of mean and standard deviation over seeds, and each strategy's per-seed values.

    python benchmarks/multi_digits_delta_m.py [--seeds 0 1 2] [--epochs 20]
        [--dense-units 0] [--head-units 128]
        [--strategies equal dwa uncertainty famo mgda pcgrad nash_mtl]

The default network is the usual MultiMNIST hard sharing: the convolutions are shared
(`--dense-units 0`: no Dense layer in the trunk) and each task has its own hidden layer
(`--head-units 128`). `--dense-units 128 --head-units 0` shares the Dense layer too, with
linear heads.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl.callbacks import LossWeightScheduler  # noqa: E402
from kerasmtl.data import load_multi_digits_numpy  # noqa: E402
from kerasmtl.evaluation import delta_m, task_report, train_single_task_baselines  # noqa: E402

TASKS = ("left", "right")


def network(dense_units, head_units):
    """Returns `build(task_names)` for the network with these sizes.

    `dense_units`: units of the trunk's last Dense layer (0: none, the trunk ends at the
    flattened convolution features); `head_units`: units of each head's hidden layer (0:
    the head is one linear Dense layer).
    """

    def head(name):
        if not head_units:
            return 10
        return keras.Sequential(
            [keras.layers.Dense(head_units, activation="relu"), keras.layers.Dense(10)],
            name=name,
        )

    def build(task_names):
        layers = [
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
        ]
        if dense_units:
            layers.append(keras.layers.Dense(dense_units, activation="relu"))
        trunk = keras.Sequential(layers, name="trunk")
        tasks = [
            kerasmtl.Task(
                name,
                head=head(name),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            for name in task_names
        ]
        return kerasmtl.hard_sharing({"image": (12, 12, 1)}, trunk, tasks)

    return build


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dense-units", type=int, default=0)
    parser.add_argument("--head-units", type=int, default=128)
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["equal", "dwa", "uncertainty", "famo", "mgda", "pcgrad", "nash_mtl"],
    )
    args = parser.parse_args()
    build = network(args.dense_units, args.head_units)
    x_train, y_train = load_multi_digits_numpy("train")
    x_test, y_test = load_multi_digits_numpy("test")
    deltas = {name: [] for name in args.strategies}
    accuracies = {name: [] for name in ["single"] + args.strategies}
    start = time.perf_counter()
    for seed in args.seeds:
        single = train_single_task_baselines(
            build,
            x_train,
            y_train,
            list(TASKS),
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=lambda: keras.optimizers.Adam(1e-3),
            evaluation_data=(x_test, y_test),
            seed=seed,
        )
        accuracies["single"].append([single[t]["accuracy"] for t in TASKS])
        for name in args.strategies:
            keras.utils.set_random_seed(seed)
            model = build(TASKS)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=name)
            model.fit(
                x_train,
                y_train,
                epochs=args.epochs,
                batch_size=args.batch_size,
                verbose=0,
                callbacks=[LossWeightScheduler()],
            )
            report = task_report(model, x_test, y_test, batch_size=256)
            deltas[name].append(delta_m(report, single, metrics=["accuracy"]))
            accuracies[name].append([report[t]["accuracy"] for t in TASKS])
            print(f"seed {seed} {name}: delta-m {deltas[name][-1]:+.2f}%", flush=True)
    print(
        f"\n{len(args.seeds)} seeds, {args.epochs} epochs, batch {args.batch_size}, "
        f"{time.perf_counter() - start:.0f} s"
    )
    print("| model | left acc | right acc | delta-m % (mean ± std) | per seed |")
    print("|---|---|---|---|---|")
    mean = np.mean(accuracies["single"], axis=0)
    print(f"| single-task | {mean[0]:.4f} | {mean[1]:.4f} | 0 (reference) | |")
    for name in args.strategies:
        mean = np.mean(accuracies[name], axis=0)
        values = ", ".join(f"{v:+.2f}" for v in deltas[name])
        print(
            f"| {name} | {mean[0]:.4f} | {mean[1]:.4f} | "
            f"{np.mean(deltas[name]):+.2f} ± {np.std(deltas[name]):.2f} | {values} |"
        )


if __name__ == "__main__":
    main()
