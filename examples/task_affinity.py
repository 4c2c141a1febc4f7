"""Which tasks should train together? TAG inter-task affinity on `multi_digits`.

Trains one hard-sharing model on four tasks of the offline `multi_digits` data
set (two overlapping digits per image, made from scikit-learn's bundled 8x8
digits; nothing is downloaded): the class of the left digit, the class of the
right digit, and whether each digit is odd. While it trains, the `TaskAffinity`
callback measures the lookahead inter-task affinity of TAG (Fifty et al.,
"Efficiently Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021):
how much one SGD step on task i alone lowers task j's loss. The parity of a
digit is a function of its class, so the expected grouping is
`[left, left_odd]`, `[right, right_odd]`.

    python examples/task_affinity.py           # about 10 s on 2 CPU cores
    python examples/task_affinity.py --epochs 2 --num-groups 3 --out /tmp/run
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl.affinity import (  # noqa: E402
    TaskAffinity,
    affinity_heatmap,
    grouping_score,
    suggest_groups,
)
from kerasmtl.data import load_multi_digits_numpy  # noqa: E402

TASKS = ("left", "right", "left_odd", "right_odd")


def with_parity_tasks(labels):
    """Adds `{digit}_odd` labels (1 for an odd digit) next to the class labels."""
    labels = dict(labels)
    for digit in ("left", "right"):
        labels[f"{digit}_odd"] = labels[digit] % 2
    return labels


def build_model(input_shape):
    trunk = keras.Sequential(
        [
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
        ],
        name="trunk",
    )
    tasks = [
        kerasmtl.Task(
            name,
            head=2 if name.endswith("_odd") else 10,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        for name in TASKS
    ]
    return kerasmtl.hard_sharing({"image": input_shape}, trunk, tasks, name="four_tasks")


def format_matrix(matrix, task_names):
    lines = ["| i \\ j | " + " | ".join(task_names) + " |", "|" + "---|" * (len(task_names) + 1)]
    for name, row in zip(task_names, matrix):
        lines.append(f"| {name} | " + " | ".join(f"{value:+.4f}" for value in row) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lookahead-rate", type=float, default=0.01)
    parser.add_argument("--every-n-steps", type=int, default=5)
    parser.add_argument("--num-groups", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="artifacts")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    x_train, y_train = load_multi_digits_numpy("train")
    y_train = with_parity_tasks(y_train)
    print(
        f"multi_digits: {len(x_train)} train images of shape {x_train.shape[1:]}; "
        f"tasks {list(TASKS)}"
    )

    keras.utils.set_random_seed(args.seed)
    model = build_model(x_train.shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    affinity = TaskAffinity(
        (x_train, y_train),
        learning_rate=args.lookahead_rate,
        every_n_steps=args.every_n_steps,
        batch_size=args.batch_size,
    )
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[affinity],
        verbose=2,
    )

    matrix, names = affinity.affinity, affinity.task_names
    print(
        f"\nInter-task affinity Z_(i->j), mean of {affinity.num_measurements} lookahead "
        f"measurements (row i: the task of the step; column j: the loss measured):"
    )
    print(format_matrix(matrix, names))
    for epoch, epoch_matrix in enumerate(affinity.epoch_affinities, start=1):
        print(
            f"grouping from the affinity up to epoch {epoch}: "
            f"{suggest_groups(epoch_matrix, names, args.num_groups)}"
        )
    groups = suggest_groups(matrix, names, args.num_groups)
    print(
        f"\nSuggested grouping into {args.num_groups}: {groups} "
        f"(total affinity onto each task from its group: "
        f"{grouping_score(matrix, groups, names):.4f})"
    )
    expected = [["left", "left_odd"], ["right", "right_odd"]]
    if args.num_groups == 2:
        print("as expected" if groups == expected else f"expected {expected}")

    try:
        path = affinity_heatmap(matrix, names, os.path.join(args.out, "task_affinity.png"))
        print(f"heatmap: {path}")
    except ImportError:
        print('matplotlib is not installed: no heatmap (pip install "kerasmtl[plots]").')
    np.save(os.path.join(args.out, "task_affinity.npy"), matrix)


if __name__ == "__main__":
    main()
