"""Representation gradients with the trunks users bring: applications, nested, unpooled."""

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl import Task
from kerasmtl.trainers import gradient_math

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral


def _applications_trunk():
    # The smallest keras.applications network: still a nested functional model.
    return keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, include_top=False, pooling="avg"
    )


def _nested_functional_trunk():
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    hidden = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(hidden)
    return keras.Model(inputs, hidden, name="feature_map_trunk")  # no pooling: (7, 7, 4)


def _sequential_trunk():
    return keras.Sequential(
        [keras.layers.Conv2D(4, 3, strides=2, activation="relu"), keras.layers.Flatten()],
        name="sequential_trunk",
    )


def _head(units, pooled):
    if pooled:
        return units
    return keras.Sequential(
        [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(units)], name=None
    )


TRUNKS = {
    "applications": (_applications_trunk, True),
    "nested_functional_unpooled": (_nested_functional_trunk, False),
    "sequential": (_sequential_trunk, True),
}


@pytest.mark.parametrize("trunk_name", sorted(TRUNKS))
def test_representation_gradients_train_with_any_trunk(trunk_name, tmp_path):
    make_trunk, pooled = TRUNKS[trunk_name]
    keras.utils.set_random_seed(0)
    model = kerasmtl.hard_sharing(
        {"image": (32, 32, 3)},
        make_trunk(),
        [
            Task("label", head=_head(3, pooled),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
            Task("box", head=_head(2, pooled), loss="mse"),
        ],
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), weighting="pcgrad",
                  gradients="representation")
    views = model.representation_views
    features = gradient_math.representation_tensor(model, model.representation)
    # The representation is the trunk's output in this model's graph, not the nested one's.
    assert views.full.outputs[-1] is features
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 32, 32, 3)).astype("float32")
    y = {"label": rng.integers(0, 3, size=8), "box": rng.normal(size=(8, 2)).astype("float32")}
    trunk_layer = model.get_layer(model.representation)
    before = [w.numpy().copy() for w in trunk_layer.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = [w.numpy() for w in trunk_layer.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), "the trunk did not train"
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.gradient_source == "representation"
    for task in ("label", "box"):
        np.testing.assert_allclose(
            restored.predict(x, verbose=0)[task], expected[task], rtol=1e-5, atol=1e-5
        )
