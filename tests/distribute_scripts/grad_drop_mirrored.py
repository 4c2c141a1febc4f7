"""GradDrop under MirroredStrategy on two logical CPUs vs one device, same global batches.

Usage: python grad_drop_mirrored.py OUTPUT.json. GradDrop's purity `P` must be
that of the global batch (the batch-summed `G_k` summed over the replicas) and
its uniform draw `U` the same on every replica, so both runs take the same
steps. Writes the final weights, the strategy's variables (the seed
generator's state included), the history, and GradDrop's per-replica draws and
representation gradients of one mirrored step.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import GLOBAL_BATCH, make_data, result_of, write  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl import Task  # noqa: E402

EPOCHS = 3
SEED = 5


def build_model():
    keras.utils.set_random_seed(0)
    # Eight features, so that GradDrop has signs to drop (the tasks conflict on some).
    trunk = keras.layers.Dense(8, activation="tanh", name="trunk")
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
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        weighting=kerasmtl.weighting.GradDrop(seed=SEED),
        gradients="representation",
    )
    return model


def run(strategy=None):
    x, y = make_data()
    if strategy is None:
        model = build_model()
    else:
        with strategy.scope():
            model = build_model()
    history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    return model, history.history


def replica_draws(strategy):
    """`U` and the combined gradient that each replica computes in one step (same inputs)."""
    with strategy.scope():
        grad_drop = kerasmtl.weighting.GradDrop(seed=SEED)
        grad_drop.build((2,))
    rng = np.random.default_rng(3)
    # Per replica: (K=2, batch 4, 8 features), with the tasks' signs conflicting.
    gradients = tf.constant(rng.normal(size=(2, 2, 4, 8)).astype("float32"))
    representation = tf.constant(rng.normal(size=(2, 4, 8)).astype("float32"))
    present = tf.constant([True, True])

    @tf.function
    def step():
        def replica_fn():
            index = tf.distribute.get_replica_context().replica_id_in_sync_group
            combined = grad_drop.combine_representation_gradients(
                gradients[index], present, representation[index]
            )
            return grad_drop.seed_generator.state.value * 1, combined

        return strategy.run(replica_fn)

    states, combined = step()
    merged = np.concatenate(
        [np.asarray(value) for value in strategy.experimental_local_results(combined)], axis=0
    )
    # One device on the global batch, from the same seed.
    single = kerasmtl.weighting.GradDrop(seed=SEED)
    single.build((2,))
    expected = single.combine_representation_gradients(
        tf.concat([gradients[0], gradients[1]], axis=1),
        present,
        tf.concat([representation[0], representation[1]], axis=0),
    )
    return {
        "states": [np.asarray(s).tolist() for s in strategy.experimental_local_results(states)],
        "after": [
            np.asarray(v).tolist()
            for v in strategy.experimental_local_results(grad_drop.seed_generator.state.value)
        ],
        "single_after": np.asarray(single.seed_generator.state.value).tolist(),
        "mirrored": merged.tolist(),
        "single": np.asarray(expected).tolist(),
        # Plain summation of the task gradients: GradDrop must differ from it somewhere.
        "summed": np.asarray(tf.reduce_sum(tf.concat([gradients[0], gradients[1]], 1), 0)).tolist(),
    }


def _result(model, history, strategy=None):
    result = result_of(model, history)
    state = model.weighting.seed_generator.state.value
    values = [state] if strategy is None else strategy.experimental_local_results(state)
    result["seed_states"] = [np.asarray(value).tolist() for value in values]
    return result


def main():
    output = sys.argv[1]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single, single_history = run()
    mirrored, mirrored_history = run(strategy)
    write(
        output,
        {
            "single": _result(single, single_history),
            "mirrored": _result(mirrored, mirrored_history, strategy),
            "step": replica_draws(strategy),
        },
    )


if __name__ == "__main__":
    main()
