"""Small seeded models and data for tests: one place instead of a copy per test file.

A test that needs "some multi-task model" builds it here, from a seeded RNG and
nothing downloaded: a hard-sharing model with a one-layer `Dense` trunk named
`"trunk"` over one input named `"features"`, and data whose labels are keyed by
task name. Tests of a particular architecture build their own model.
"""

import keras
import numpy as np

from kerasmtl.hard_sharing import hard_sharing
from kerasmtl.task import Task


def regression_tasks(names=("a", "b")):
    """One scalar mean-squared-error regression `Task` per name.

    Example:

    >>> [task.name for task in regression_tasks(("x", "y"))]
    ['x', 'y']
    """
    return [Task(name, head=1, loss="mse") for name in names]


def classification_and_regression_tasks(mask_value=None):
    """Task `"a"`: 3 classes from logits (accuracy, `mask_value`); `"b"`: 2 outputs, MSE (MAE).

    The pair a test needs to see a sparse integer label beside a float vector
    label, with metrics of both kinds and, with `mask_value`, missing labels.

    Example:

    >>> [task.name for task in classification_and_regression_tasks(mask_value=-1)]
    ['a', 'b']
    """
    return [
        Task(
            "a",
            head=3,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            mask_value=mask_value,
        ),
        Task("b", head=2, loss="mse", metrics=["mae"]),
    ]


def small_model(tasks=("a", "b"), num_features=4, units=8, activation="relu", seed=0):
    """A seeded hard-sharing model: input `"features"` -> `Dense(units)` `"trunk"` -> heads.

    Args:
        tasks: `Task`s, or task names for `regression_tasks`.
        num_features: the size of the `"features"` input vector.
        units: the trunk's width.
        activation: the trunk's activation (`None` for a linear trunk).
        seed: the seed set with `keras.utils.set_random_seed` before the weights are made.

    Returns:
        An uncompiled `kerasmtl.MultiTaskModel`.

    Example:

    >>> model = small_model(("a", "b", "c"), num_features=6)
    >>> model.task_names
    ['a', 'b', 'c']
    """
    keras.utils.set_random_seed(seed)
    if all(isinstance(task, str) for task in tasks):
        tasks = regression_tasks(tasks)
    trunk = keras.layers.Dense(units, activation=activation, name="trunk")
    return hard_sharing({"features": (num_features,)}, trunk, list(tasks))


def regression_data(num_samples=64, num_features=4, names=("a", "b"), scales=None, seed=0):
    """Seeded standard-normal features and one `(num_samples, 1)` target per task.

    Args:
        num_samples: the number of rows.
        num_features: the width of `x`.
        names: the task names (the keys of `y`).
        scales: optional factor per task, e.g. `(1.0, 10.0)` for losses 100x apart.
        seed: the NumPy RNG seed; `x` is drawn first, then each target in order.

    Returns:
        `(x, y)`: float32 `(num_samples, num_features)` and a dict of float32 targets.

    Example:

    >>> x, y = regression_data(8, scales=(1.0, 10.0))
    >>> x.shape, sorted(y), y["b"].shape
    ((8, 4), ['a', 'b'], (8, 1))
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features)).astype("float32")
    scales = (1.0,) * len(names) if scales is None else scales
    y = {}
    for name, scale in zip(names, scales):
        target = rng.normal(size=(num_samples, 1)).astype("float32")
        y[name] = target if scale == 1.0 else scale * target
    return x, y


def classification_and_regression_data(num_samples=64, num_features=4, seed=0):
    """Seeded data for `classification_and_regression_tasks`: int64 classes, float vectors.

    Example:

    >>> x, y = classification_and_regression_data(8)
    >>> x.shape, y["a"].dtype.name, y["b"].shape
    ((8, 4), 'int64', (8, 2))
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features)).astype("float32")
    return x, {
        "a": rng.integers(0, 3, size=(num_samples,)).astype("int64"),
        "b": rng.normal(size=(num_samples, 2)).astype("float32"),
    }
