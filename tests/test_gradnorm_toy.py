"""The GradNorm toy experiment (Chen et al., ICML 2018, Sec. 4), scaled down."""

import keras
import numpy as np

import kerasmtl
from kerasmtl.data.gradnorm_toy import gradnorm_toy


def test_toy_data_is_deterministic_and_scaled_by_sigma():
    x, y = gradnorm_toy(64, sigmas=[1.0, 10.0], input_dim=20, output_dim=5, seed=3)
    x2, y2 = gradnorm_toy(64, sigmas=[1.0, 10.0], input_dim=20, output_dim=5, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y["task1"], y2["task1"])
    assert np.abs(y["task0"]).max() <= 1.0 and np.abs(y["task1"]).max() <= 10.0
    assert np.abs(y["task1"]).mean() > 5.0 * np.abs(y["task0"]).mean()


def test_gradnorm_weights_order_inversely_to_sigma():
    sigmas = [1.0, 3.0, 9.0]
    x, y = gradnorm_toy(1000, sigmas, input_dim=50, output_dim=20)
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential(
        [keras.layers.Dense(64, activation="relu") for _ in range(3)], name="trunk"
    )
    model = kerasmtl.hard_sharing(
        {"x": (50,)}, trunk, [kerasmtl.Task(name, head=20, loss="mse") for name in y]
    )
    strategy = kerasmtl.weighting.GradNorm(alpha=0.12, learning_rate=0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=strategy)
    model.fit(x, y, epochs=15, batch_size=100, verbose=0)
    weights = strategy.loss_weights.numpy()
    # The task with the largest scale gets the smallest weight, and so on.
    assert weights[0] > weights[1] > weights[2], weights
    np.testing.assert_allclose(weights.sum(), 3.0, rtol=1e-4)
