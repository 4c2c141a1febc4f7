"""AutoLambda under MirroredStrategy on two logical CPUs equals one device on the global batch.

Usage: python auto_lambda_mirrored_global_batch.py. Prints one JSON line of
measured differences (the test asserts on them); fails with an AssertionError if
the replicas do not receive contiguous slices of the global batch.

MirroredStrategy gives replica r the r-th contiguous slice of each global batch
(checked below on the same pipeline `fit` builds: a batched `tf.data` dataset
distributed by the strategy). Each replica splits its slice into halves, tr
(first) and val (second), so the global tr / val are the unions of the
replicas' halves. The single-device run trains on the same global batches with
the rows reordered as [tr of replica 0, tr of replica 1, val of replica 0, val
of replica 1]: its halves are those unions. Task `b` is labelled unevenly over
the replicas (replica 1 holds no `b` label in most batches, and one batch has no
`b` label in tr at all), so per-replica losses differ from the global ones.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl import Task  # noqa: E402

REPLICAS = 2
GLOBAL_BATCH = 16
NUM_BATCHES = 3
EPOCHS = 2
# Rows of each global batch where task b is labelled (replica 0: rows 0-7, replica 1: 8-15;
# tr: rows 0-3 and 8-11). Batch 2 has no b label in tr.
B_LABELLED = [(0, 1, 2, 5, 6), (1, 3, 4, 7, 9), (5, 6, 13)]


def make_data():
    rng = np.random.default_rng(3)
    n = GLOBAL_BATCH * NUM_BATCHES
    x = rng.normal(size=(n, 6)).astype("float32")
    y_a = rng.normal(size=(n, 1)).astype("float32")
    y_b = (2.0 * x[:, :1] + rng.normal(size=(n, 1))).astype("float32")
    labelled = np.zeros(n, bool)
    for batch, rows in enumerate(B_LABELLED):
        labelled[batch * GLOBAL_BATCH + np.array(rows)] = True
    y_b[~labelled] = np.nan
    return x, {"a": y_a, "b": y_b}


def halves_order():
    """The row order of a global batch whose halves are the unions of the replicas' halves."""
    share = GLOBAL_BATCH // REPLICAS
    half = share // 2
    train = [r * share + i for r in range(REPLICAS) for i in range(half)]
    held_out = [r * share + half + i for r in range(REPLICAS) for i in range(half)]
    return np.array(train + held_out)


def check_replica_slices(strategy, x):
    """Replica r receives rows [r * share, (r + 1) * share) of each global batch."""
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(GLOBAL_BATCH)
    share = GLOBAL_BATCH // REPLICAS
    for batch, per_replica in enumerate(strategy.experimental_distribute_dataset(dataset)):
        parts = strategy.experimental_local_results(per_replica)
        assert len(parts) == REPLICAS, parts
        for r, part in enumerate(parts):
            start = batch * GLOBAL_BATCH + r * share
            np.testing.assert_array_equal(part.numpy(), x[start : start + share])


def build_model():
    keras.utils.set_random_seed(0)
    trunk = keras.layers.Dense(
        8, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.01), name="trunk"
    )
    model = kerasmtl.hard_sharing(
        {"features": (6,)}, trunk, [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        weighting=kerasmtl.weighting.AutoLambda(meta_learning_rate=0.05),
    )
    return model


def state(model):
    """Trainable weights, then lambda and its Adam state, as float64 arrays."""
    strategy = model.weighting
    extra = [strategy.task_weights, strategy.first_moment, strategy.second_moment]
    return [np.asarray(v.numpy(), "float64") for v in [*model.trainable_variables, *extra]]


def train(model, x, y):
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    return model


def max_difference(first, second):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second))


def main():
    x, y = make_data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == REPLICAS
    check_replica_slices(strategy, x)
    with strategy.scope():
        mirrored = train(build_model(), x, y)
    # Every replica holds the same lambda and Adam state.
    replica_gap = 0.0
    for variable in (mirrored.weighting.task_weights, mirrored.weighting.first_moment):
        copies = [np.asarray(c) for c in strategy.experimental_local_results(variable.value)]
        assert len(copies) == REPLICAS, copies
        replica_gap = max(replica_gap, float(np.max(np.abs(copies[0] - copies[1]))))

    order = np.concatenate([b * GLOBAL_BATCH + halves_order() for b in range(NUM_BATCHES)])
    reordered = train(build_model(), x[order], {k: v[order] for k, v in y.items()})
    # Control: one device on the batches in their own order (other halves).
    plain = train(build_model(), x, y)

    parallel, single, control = state(mirrored), state(reordered), state(plain)
    initial = kerasmtl.weighting.AutoLambda().initial_weight
    result = {
        "weights": max_difference(parallel[:-3], single[:-3]),
        "lambda": max_difference(parallel[-3:-2], single[-3:-2]),
        # Relative: the second moment is of the order of (alpha h)^2.
        "adam_relative": max(
            float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
            for a, b in zip(parallel[-2:], single[-2:])
        ),
        "replica_gap": replica_gap,
        "lambda_moved": float(np.max(np.abs(parallel[-3] - initial))),
        "lambda_vs_other_halves": max_difference(control[-3:-2], single[-3:-2]),
        "task_weights": parallel[-3].tolist(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
