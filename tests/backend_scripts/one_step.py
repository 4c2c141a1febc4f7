"""One SGD(1.0) step of every weighting strategy on a fixed model and batch, on one backend.

Usage: KERAS_BACKEND=<backend> python one_step.py OUTPUT.npz

Writes, for each strategy and gradient source, the trainable weights after the
step (keyed `<strategy>/<source>/<variable path>`) and the logged weights.
`tests/test_backends.py` runs it on each backend and compares the files.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasmtl  # noqa: E402
from kerasmtl import Task  # noqa: E402

# RLW draws random weights, LearnedSoftmax starts from random logits and GradDrop draws a
# uniform per representation feature: the draws differ between backends by design.
RANDOM_STRATEGIES = ("rlw", "learned_softmax", "grad_drop")


def build_model():
    trunk = keras.Sequential(
        [keras.layers.Dense(8, activation="tanh", name="trunk_dense")], name="trunk"
    )
    tasks = [
        Task("a", head=keras.layers.Dense(1, name="a"), loss="mse"),
        Task(
            "b",
            head=keras.layers.Dense(3, name="b"),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            mask_value=-1,
        ),
    ]
    model = kerasmtl.hard_sharing({"features": (6,)}, trunk, tasks)
    rng = np.random.default_rng(0)
    for variable in sorted(model.trainable_variables, key=lambda v: v.path):
        variable.assign(0.5 * rng.normal(size=variable.shape).astype("float32"))
    return model


def batch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = {
        "a": 10.0 * rng.normal(size=(16, 1)).astype("float32"),  # a 10x loss-scale gap
        "b": rng.integers(0, 3, size=(16,)).astype("int32"),
    }
    y["b"][:3] = -1  # missing labels
    return x, y


def cases():
    names = sorted({kerasmtl.weighting.registry_name(c.__name__)
                    for c in kerasmtl.weighting.ALL_OBJECTS})
    for name in names:
        if name in RANDOM_STRATEGIES:
            continue
        strategy = kerasmtl.weighting.get(name)
        if not strategy.requires_gradients:
            yield name, None
            continue
        yield name, "parameters"
        if strategy.supports_representation_gradients:
            yield name, "representation"


def main(output):
    x, y = batch()
    results = {}
    for name, source in cases():
        model = build_model()
        kwargs = {} if source is None else {"gradients": source}
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), weighting=name, **kwargs)
        logs = model.train_on_batch(x, y, return_dict=True)
        prefix = f"{name}/{source or 'losses'}"
        for variable in model.trainable_variables:
            if variable.path.startswith("trunk") or variable.path.split("/")[0] in ("a", "b"):
                results[f"{prefix}/{variable.path}"] = keras.ops.convert_to_numpy(
                    keras.ops.convert_to_tensor(variable)
                )
        results[f"{prefix}/logged_weights"] = np.array([logs["a_weight"], logs["b_weight"]])
    np.savez(output, **results)


if __name__ == "__main__":
    main(sys.argv[1])
