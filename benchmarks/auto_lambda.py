"""Auto-Lambda on Palmer penguins (`penguins_mtl`): what the meta-learned weights do, over seeds.

Three tasks share one trunk: species (3 classes), sex (2 classes, 9 of 273
training labels missing) and body mass (regression on the z-scored mass). Four
configurations, each trained from the same seeds:

- `single`: the primary task alone (`Fixed` weights 1 on it, 0 on the others);
- `equal`: every task with weight 1 (`Equal`);
- `autol_aux`: `AutoLambda(primary_tasks=[primary])`, the paper's auxiliary-learning mode;
- `autol_all`: `AutoLambda()`, every task primary (multi-task mode).

Reported per configuration: the test metrics of every task (species and sex
accuracy, body-mass MSE in z-units) as mean and 95% Student-t half-width over
the seeds, the fit time relative to `equal` in this process, and for Auto-Lambda
the weight of each task after the first epoch, halfway and at the end (mean and
95% half-width). The data is read offline from the CSV bundled in
`palmerpenguins` (273 train / 69 test penguins; nothing is downloaded).

    KERAS_BACKEND=jax python benchmarks/auto_lambda.py [--seeds 10] [--epochs 60]
"""

import argparse
import os
import sys
import tempfile
import time

import keras
import numpy as np

import kerasmtl
from kerasmtl import Task
from kerasmtl.weighting import AutoLambda, Equal, Fixed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from intervals import interval_cell  # noqa: E402

TASKS = ("species", "sex", "body_mass")
CONFIGS = ("single", "equal", "autol_aux", "autol_all")


def load(data_dir):
    """`(x_train, y_train, x_test, y_test)`: 6 features (3 measurements + one-hot island)."""
    from kerasmtl import data

    def arrays(split):
        features, labels = data.load_penguins_numpy(split, data_dir=data_dir)
        island = np.eye(3, dtype="float32")[features["island"]]
        numeric = np.stack(
            [features[name] for name in ("bill_length", "bill_depth", "flipper_length")], axis=1
        )
        x = np.concatenate([numeric.astype("float32"), island], axis=1)
        y = {
            "species": labels["species"].astype("int32"),
            "sex": labels["sex"].astype("int32"),
            "body_mass": labels["body_mass"].astype("float32")[:, None],
        }
        return x, y

    return (*arrays("train"), *arrays("test"))


def build_model(seed, units):
    keras.utils.set_random_seed(seed)
    tasks = [
        Task(
            "species",
            head=3,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        ),
        Task(
            "sex",
            head=2,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            mask_value=-1,
        ),
        Task("body_mass", head=1, loss="mse"),
    ]
    trunk = keras.Sequential(
        [
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(units, activation="relu"),
        ],
        name="trunk",
    )
    return kerasmtl.hard_sharing({"features": (6,)}, trunk, tasks)


def make_weighting(config, primary, meta_learning_rate):
    if config == "single":
        return Fixed([1.0 if name == primary else 0.0 for name in TASKS])
    if config == "equal":
        return Equal()
    primary_tasks = [primary] if config == "autol_aux" else None
    return AutoLambda(primary_tasks=primary_tasks, meta_learning_rate=meta_learning_rate)


class WeightRecorder(keras.callbacks.Callback):
    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy
        self.trajectory = []

    def on_epoch_end(self, epoch, logs=None):
        weights = keras.ops.convert_to_numpy(
            keras.ops.convert_to_tensor(self.strategy.task_weights)
        )
        self.trajectory.append(weights.copy())


def run(config, seed, data, args):
    x_train, y_train, x_test, y_test = data
    model = build_model(seed, args.units)
    strategy = make_weighting(config, args.primary, args.meta_learning_rate)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), weighting=strategy)
    callbacks = [WeightRecorder(strategy)] if isinstance(strategy, AutoLambda) else []
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    logs = model.evaluate(x_test, y_test, batch_size=len(x_test), verbose=0, return_dict=True)
    result = {
        "species_accuracy": float(logs["species_accuracy"]),
        "sex_accuracy": float(logs["sex_accuracy"]),
        "body_mass_mse": float(logs["body_mass_loss"]),
        "seconds": seconds,
    }
    if callbacks:
        result["trajectory"] = np.stack(callbacks[0].trajectory)
    return result


def cell(values, digits=3):
    return interval_cell(values, digits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--meta-learning-rate", type=float, default=1e-3)
    parser.add_argument("--primary", default="body_mass", choices=TASKS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--data-dir", default=None, help="TFDS directory (default: a temp dir)")
    args = parser.parse_args()

    data = load(args.data_dir or tempfile.mkdtemp(prefix="penguins_"))
    results = {config: [] for config in args.configs}
    total = time.perf_counter()
    # Seeds outermost, configurations interleaved: machine load affects all alike.
    for seed in range(args.seeds):
        for config in args.configs:
            results[config].append(run(config, seed, data, args))
    total = time.perf_counter() - total

    print(
        f"backend={keras.backend.backend()} seeds={args.seeds} epochs={args.epochs} "
        f"batch={args.batch_size} lr={args.learning_rate} meta_lr={args.meta_learning_rate} "
        f"primary={args.primary} total={total:.0f}s"
    )
    reference = None
    if "equal" in results:
        reference = np.mean([r["seconds"] for r in results["equal"]])
    print()
    print(
        "| config | species acc | sex acc | body_mass MSE (z) | fit time vs equal |\n"
        "|---|---|---|---|---|"
    )
    for config, runs in results.items():
        seconds = np.mean([r["seconds"] for r in runs])
        ratio = f"{seconds / reference:.2f}x" if reference else f"{seconds:.1f}s"
        print(
            f"| {config} | {cell([r['species_accuracy'] for r in runs])} "
            f"| {cell([r['sex_accuracy'] for r in runs])} "
            f"| {cell([r['body_mass_mse'] for r in runs])} | {ratio} |"
        )
    for config in ("autol_aux", "autol_all"):
        if config not in results:
            continue
        trajectories = np.stack([r["trajectory"] for r in results[config]])  # (seeds, E, K)
        epochs = sorted({0, max(trajectories.shape[1] // 2 - 1, 0), trajectories.shape[1] - 1})
        print(f"\n{config}: task weights (init 0.1) after epoch, mean ± 95% CI over seeds")
        print("| epoch | " + " | ".join(TASKS) + " |\n|---|" + "---|" * len(TASKS))
        for epoch in epochs:
            cells = [cell(trajectories[:, epoch, k], 4) for k in range(len(TASKS))]
            print(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    key = "body_mass_mse" if args.primary == "body_mass" else f"{args.primary}_accuracy"
    if "equal" in results:
        print(f"\npaired differences to equal, primary metric {key} (mean ± 95% CI):")
        for config in args.configs:
            if config != "equal":
                difference = [r[key] - e[key] for r, e in zip(results[config], results["equal"])]
                print(f"- {config} - equal: {cell(difference, 4)}")


if __name__ == "__main__":
    main()
