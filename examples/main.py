"""The main job: a two-task model on `multi_digits`, against single-task baselines.

Trains a hard-sharing model (a shared conv trunk, a dense head per digit) with DWA loss
weighting on the offline `multi_digits` data set (two overlapping digits per
image, from scikit-learn's bundled 8x8 digits; nothing is downloaded), trains a
single-task model per task with the same trunk and budget, prints a per-task
table with delta-m, saves the loss-weight trajectory plot, and exports a
SavedModel for TF Serving under `<out>/serving/multi_digits/1/` (class
probabilities and class ids per task, a warm-up file), checked in a fresh process.

    python examples/main.py            # under a minute on 2 CPU cores
    python examples/main.py --epochs 3 --out /tmp/run
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl.callbacks import LossWeightScheduler  # noqa: E402
from kerasmtl.data import load_multi_digits_numpy  # noqa: E402
from kerasmtl.evaluation import (  # noqa: E402
    format_report,
    task_report,
    train_single_task_baselines,
)
from kerasmtl.export import export_for_serving, verify_export  # noqa: E402
from kerasmtl.plots import plot_loss_weights  # noqa: E402

TASKS = ("left", "right")


def make_trunk():
    return keras.Sequential(
        [
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
        ],
        name="trunk",
    )


def make_task(name):
    # The convolutions are shared; each task has its own hidden layer. (Sharing a
    # Dense layer too gives each digit less capacity and a lower delta-m: see
    # benchmarks/README.md.)
    head = keras.Sequential(
        [keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)], name=name
    )
    return kerasmtl.Task(
        name,
        head=head,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def build(task_names):
    return kerasmtl.hard_sharing(
        {"image": (12, 12, 1)},
        make_trunk(),
        [make_task(name) for name in task_names],
        name="multi_digits" if len(task_names) > 1 else f"single_{task_names[0]}",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="artifacts")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    x_train, y_train = load_multi_digits_numpy("train")
    x_test, y_test = load_multi_digits_numpy("test")
    print(
        f"multi_digits: {len(x_train)} train, {len(x_test)} test images of shape "
        f"{x_train.shape[1:]}; tasks {list(TASKS)}"
    )

    print("\n== Multi-task model (hard sharing, DWA weighting) ==")
    keras.utils.set_random_seed(args.seed)
    model = build(TASKS)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting="dwa")
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[LossWeightScheduler(monitor="loss")],
        verbose=2,
    )
    multi = task_report(model, x_test, y_test, batch_size=256)

    print("\n== Single-task baselines (same trunk, same budget) ==")
    single = train_single_task_baselines(
        build,
        x_train,
        y_train,
        list(TASKS),
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=lambda: keras.optimizers.Adam(1e-3),
        evaluation_data=(x_test, y_test),
        seed=args.seed,
        verbose=2,
    )

    print("\n== Test set ==")
    print(format_report(multi, single, metrics=["accuracy"]))
    final = {name: round(history.history[f"{name}_weight"][-1], 3) for name in TASKS}
    print(f"final DWA loss weights: {final}")
    plot = os.path.join(args.out, "loss_weights.png")
    try:
        plot_loss_weights(history, plot)
        print(f"loss-weight trajectory: {plot}")
    except ImportError as error:
        print(f"no plot: {error}")

    export_dir = export_for_serving(
        model,
        os.path.join(args.out, "serving"),
        name="multi_digits",
        version=1,
        overwrite=True,
        postprocess="auto",
        warmup_inputs=x_test[:8],
    )
    report = verify_export(export_dir, model, x_test[:64])
    errors = {name: f"{error:.1e}" for name, error in report["max_abs_error"].items()}
    print(f"SavedModel for TF Serving: {export_dir}")
    print(f"  checked in a fresh process without kerasmtl: max |served - keras| {errors}")


if __name__ == "__main__":
    main()
