"""The standard benchmark workload of the weighting issue, shared by the benchmark scripts.

28x28x1 input; trunk Conv(32,3)-ReLU-MaxPool-Conv(64,3)-ReLU-MaxPool-Flatten-Dense(256)-ReLU;
a 10-class cross-entropy head and 4-d MSE heads (K=5: three more 4-d MSE heads);
batch 64; Adam 1e-3.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402

BATCH_SIZE = 64


def task_names(num_tasks):
    return ["digit"] + [f"box{index}" for index in range(1, num_tasks)]


def trunk():
    return keras.Sequential(
        [
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
        ],
        name="trunk",
    )


def losses(num_tasks):
    names = task_names(num_tasks)
    result = {names[0]: keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
    result.update({name: keras.losses.MeanSquaredError() for name in names[1:]})
    return result


def multi_task_model(num_tasks, seed=0):
    keras.utils.set_random_seed(seed)
    names = task_names(num_tasks)
    tasks = [kerasmtl.Task(names[0], head=10, loss=losses(num_tasks)[names[0]])]
    tasks += [kerasmtl.Task(name, head=4, loss="mse") for name in names[1:]]
    return kerasmtl.hard_sharing({"image": (28, 28, 1)}, trunk(), tasks)


def plain_keras_model(num_tasks, seed=0):
    """The same network as a plain functional Keras model with dict outputs."""
    keras.utils.set_random_seed(seed)
    names = task_names(num_tasks)
    inputs = keras.Input((28, 28, 1), name="image")
    features = trunk()(inputs)
    outputs = {names[0]: keras.layers.Dense(10, name=names[0])(features)}
    outputs.update({name: keras.layers.Dense(4, name=name)(features) for name in names[1:]})
    return keras.Model(inputs, outputs)


def data(num_tasks, num_samples, seed=0):
    rng = np.random.default_rng(seed)
    names = task_names(num_tasks)
    x = rng.uniform(size=(num_samples, 28, 28, 1)).astype("float32")
    y = {names[0]: rng.integers(0, 10, size=num_samples)}
    y.update({name: rng.normal(size=(num_samples, 4)).astype("float32") for name in names[1:]})
    return x, y
