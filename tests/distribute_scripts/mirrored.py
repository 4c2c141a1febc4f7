"""MirroredStrategy on two logical CPUs vs one device, same global batches.

Usage: python mirrored.py OUTPUT.json [CASE ...]. Writes, per case, the final
weights, the strategy's variables and the history of both runs.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Before any op runs: two logical devices on the one CPU.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from common import (  # noqa: E402
    CASES,
    GLOBAL_BATCH,
    build_model,
    callbacks_for,
    make_data,
    result_of,
    write,
)

EPOCHS = 3


def run(case, strategy=None):
    x, y = make_data()
    if strategy is None:
        model = build_model(case)
    else:
        with strategy.scope():
            model = build_model(case)
    validation = None
    if case.get("validate"):
        # Validation runs `compute_loss` in Keras's test step, on every replica.
        validation = (x[::2], {key: value[::2] for key, value in y.items()})
    history = model.fit(
        x,
        y,
        batch_size=GLOBAL_BATCH,
        epochs=EPOCHS,
        shuffle=False,
        validation_data=validation,
        verbose=0,
        callbacks=callbacks_for(case),
    )
    return model, history.history


def main():
    output, names = sys.argv[1], sys.argv[2:] or list(CASES)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for name in names:
        case = CASES[name]
        single, single_history = run(case)
        mirrored, mirrored_history = run(case, strategy)
        results[name] = {
            "single": result_of(single, single_history),
            "mirrored": result_of(mirrored, mirrored_history),
        }
    write(output, results)


if __name__ == "__main__":
    main()
