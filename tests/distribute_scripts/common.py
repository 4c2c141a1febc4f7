"""Shared pieces of the distributed-training scripts: data, model, one training run.

The data is made so that a per-replica mean of a masked task loss differs from
the global batch's: each global batch of 8 is split 4 + 4 over two replicas, and
the labels of each task are unevenly split over the halves (one half of a batch
has no label at all for task `a`).
"""

import json

import keras
import numpy as np

import kerasmtl
from kerasmtl import Task

GLOBAL_BATCH = 8
NUM_SAMPLES = 32


def make_data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(NUM_SAMPLES, 4)).astype("float32")
    y_a = rng.normal(size=(NUM_SAMPLES, 1)).astype("float32")
    y_b = rng.integers(0, 3, size=(NUM_SAMPLES,)).astype("int32")
    # Labelled positions per global batch: (first half, second half).
    a_labelled = [(1, 4), (3, 0), (4, 2), (0, 1)]
    b_labelled = [(4, 2), (1, 3), (2, 2), (4, 0)]
    for batch, ((a0, a1), (b0, b1)) in enumerate(zip(a_labelled, b_labelled)):
        start = batch * GLOBAL_BATCH
        half = GLOBAL_BATCH // 2
        for offset, (a_count, b_count) in enumerate(((a0, b0), (a1, b1))):
            first = start + offset * half
            y_a[first + a_count : first + half] = np.nan
            y_b[first + b_count : first + half] = -1
    return x, {"a": y_a, "b": y_b}


def make_weighting(name):
    if name == "pcgrad":
        return kerasmtl.weighting.PCGrad(seed=3)
    return kerasmtl.weighting.get(name)


def build_model(case, jit_compile=False):
    """Builds and compiles the model of a case (call inside the strategy's scope)."""
    keras.utils.set_random_seed(0)
    # A regulariser: a loss term every replica computes in full.
    trunk = keras.layers.Dense(
        5,
        activation="tanh",
        kernel_regularizer=keras.regularizers.L2(0.05),
        name="trunk",
    )
    tasks = [
        Task("a", head=keras.layers.Dense(1), loss="mse"),
        Task(
            "b",
            head=keras.layers.Dense(3, activation="softmax"),
            loss="sparse_categorical_crossentropy",
            mask_value=-1,
        ),
    ]
    model = kerasmtl.hard_sharing({"features": (4,)}, trunk, tasks)
    options = {}
    if case.get("gradients"):
        options["gradients"] = case["gradients"]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        weighting=make_weighting(case["weighting"]),
        jit_compile=jit_compile,
        **options,
    )
    return model


# "validate": also evaluate on validation data in `fit` (MirroredStrategy only).
CASES = {
    "dwa": {"weighting": "dwa", "scheduler": True, "validate": True},
    "uncertainty": {"weighting": "uncertainty"},
    "mgda": {"weighting": "mgda", "validate": True},
    "pcgrad": {"weighting": "pcgrad"},
    "mgda_representation": {"weighting": "mgda", "gradients": "representation"},
    # State assigned in every step, inside the replicas.
    "famo": {"weighting": "famo"},
    "nash_mtl": {"weighting": "nash_mtl"},
}


def callbacks_for(case):
    return [kerasmtl.callbacks.LossWeightScheduler()] if case.get("scheduler") else []


def result_of(model, history):
    return {
        "weights": [np.asarray(w).tolist() for w in model.get_weights()],
        "strategy": [np.asarray(v).tolist() for v in model.weighting.weights],
        "history": {key: [float(v) for v in values] for key, values in history.items()},
    }


def write(path, results):
    with open(path, "w") as handle:
        json.dump(results, handle)
