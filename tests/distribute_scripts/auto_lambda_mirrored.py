"""AutoLambda under MirroredStrategy on two logical CPUs: a clear error, not diverging replicas.

Usage: python auto_lambda_mirrored.py. Prints the error message and exits 0 when
`fit` raises the expected `ValueError`; exits 1 otherwise.
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

import kerasmtl  # noqa: E402
from kerasmtl import Task  # noqa: E402


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = {name: rng.normal(size=(16, 1)).astype("float32") for name in ("a", "b")}
    with strategy.scope():
        model = kerasmtl.hard_sharing(
            {"features": (4,)},
            keras.layers.Dense(4, name="trunk"),
            [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
        )
        model.compile(optimizer="sgd", weighting=kerasmtl.weighting.AutoLambda())
    try:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    except ValueError as error:
        print(error)
        return 0 if "num_replicas_in_sync=2" in str(error) else 1
    print("fit did not raise")
    return 1


if __name__ == "__main__":
    sys.exit(main())
