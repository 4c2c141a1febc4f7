"""The main job: a two-task model on `multi_digits`, against single-task baselines.

Trains a hard-sharing model (one conv trunk, a head per digit) with DWA loss
weighting on the offline `multi_digits` data set (two overlapping digits per
image, from scikit-learn's bundled 8x8 digits; nothing is downloaded), trains a
single-task model per task with the same trunk and budget, prints a per-task
table with delta-m, saves the loss-weight trajectory plot, and exports a
SavedModel for TF Serving under `<out>/serving/multi_digits/1/`.

    python examples/main.py            # about a minute on 2 CPU cores
    python examples/main.py --epochs 3 --out /tmp/run
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from kerasmtl.callbacks import LossWeightScheduler  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl.data import load_multi_digits_numpy  # noqa: E402

TASKS = ("left", "right")


def make_trunk():
    return keras.Sequential(
        [
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
        ],
        name="trunk",
    )


def make_task(name):
    return kerasmtl.Task(
        name,
        head=10,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train(task_names, x, y, args, weighting=None, callbacks=()):
    keras.utils.set_random_seed(args.seed)
    model = kerasmtl.hard_sharing(
        {"image": x.shape[1:]},
        make_trunk(),
        [make_task(name) for name in task_names],
        name="multi_digits" if len(task_names) > 1 else f"single_{task_names[0]}",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=weighting)
    history = model.fit(
        x,
        {name: y[name] for name in task_names},
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=list(callbacks),
        verbose=2,
    )
    return model, history


def delta_m(multi, single, higher_is_better):
    """Maninis et al., CVPR 2019: mean signed relative change against single-task, in %."""
    changes = [
        (1.0 if better else -1.0) * (multi[k] - single[k]) / single[k]
        for k, better in zip(range(len(multi)), higher_is_better)
    ]
    return 100.0 * float(np.mean(changes))


def save_weight_plot(history, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'kerasmtl[plots]').")
        return None
    figure, axis = plt.subplots(figsize=(5, 3))
    for name in TASKS:
        axis.plot(range(1, len(history[f"{name}_weight"]) + 1), history[f"{name}_weight"],
                  marker="o", label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss weight (DWA)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="artifacts")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    x_train, y_train = load_multi_digits_numpy("train")
    x_test, y_test = load_multi_digits_numpy("test")
    print(f"multi_digits: {len(x_train)} train, {len(x_test)} test images of shape "
          f"{x_train.shape[1:]}; tasks {list(TASKS)}")

    print("\n== Multi-task model (hard sharing, DWA weighting) ==")
    model, history = train(TASKS, x_train, y_train, args, weighting="dwa",
                           callbacks=[LossWeightScheduler(monitor="loss")])
    results = model.evaluate(x_test, y_test, verbose=0, return_dict=True)

    single = {}
    for name in TASKS:
        print(f"\n== Single-task baseline: {name} (same trunk, same budget) ==")
        baseline, _ = train((name,), x_train, y_train, args)
        single[name] = baseline.evaluate(
            x_test, {name: y_test[name]}, verbose=0, return_dict=True
        )[f"{name}_accuracy"]

    multi = [results[f"{name}_accuracy"] for name in TASKS]
    base = [single[name] for name in TASKS]
    print("\n| task | single-task accuracy | multi-task accuracy | test loss | final weight |")
    print("|---|---|---|---|---|")
    for name, b, m in zip(TASKS, base, multi):
        print(f"| {name} | {b:.4f} | {m:.4f} | {results[f'{name}_loss']:.4f} | "
              f"{history.history[f'{name}_weight'][-1]:.3f} |")
    print(f"delta-m (accuracy, vs single-task): {delta_m(multi, base, [True, True]):+.2f}%")

    plot = save_weight_plot(history.history, os.path.join(args.out, "loss_weights.png"))
    if plot:
        print(f"loss-weight trajectory: {plot}")

    export_dir = os.path.join(args.out, "serving", "multi_digits", "1")
    model.export(export_dir, format="tf_saved_model", verbose=False)
    import tensorflow as tf

    serving = tf.saved_model.load(export_dir).signatures["serving_default"]
    served = serving(image=tf.constant(x_test[:8]))
    expected = model.predict(x_test[:8], verbose=0)
    error = max(float(np.max(np.abs(served[name].numpy() - expected[name]))) for name in TASKS)
    print(f"SavedModel for TF Serving: {export_dir} (serving_default outputs "
          f"{sorted(served)}, max |served - keras| = {error:.2e})")


if __name__ == "__main__":
    main()
