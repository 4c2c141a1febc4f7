"""GradDrop (Chen et al., NeurIPS 2020): the sign rule, its statistics and the trainers' hook."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import kerasmtl
from kerasmtl import Task
from kerasmtl.weighting import GradDrop

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

ATOL = 1e-5
RTOL = 1e-5


def reference(gradients, present, representation, uniform, leak):
    """Algorithm 1 of the paper in float64 NumPy (batch-separated, f = identity)."""
    gradients = np.asarray(gradients, np.float64)
    num_tasks = gradients.shape[0]
    keep = np.asarray(present, bool).reshape((num_tasks,) + (1,) * (gradients.ndim - 1))
    gradients = np.where(keep, gradients, 0.0)
    sums = np.sum(gradients * np.sign(np.asarray(representation, np.float64))[None], axis=1)
    total_abs = np.abs(sums).sum(axis=0)
    purity = np.where(
        total_abs > 0, 0.5 * (1 + sums.sum(axis=0) / np.maximum(total_abs, 1e-300)), 0.5
    )
    masks = (purity > uniform) * (sums > 0) + (purity < uniform) * (sums < 0)
    leak = np.broadcast_to(np.asarray(leak, np.float64), (num_tasks,))
    factors = leak[:, None] + (1 - leak[:, None]) * masks  # (K, features)
    return np.sum(factors[:, None] * gradients, axis=0), purity, masks


def _rule(strategy, gradients, present, representation, uniform):
    out = strategy._combine_with_uniform(
        ops.convert_to_tensor(np.asarray(gradients, "float32")),
        ops.convert_to_tensor(np.asarray(present, bool)),
        ops.convert_to_tensor(np.asarray(representation, "float32")),
        ops.convert_to_tensor(np.asarray(uniform, "float32")),
    )
    return ops.convert_to_numpy(out)


def _strategy(num_tasks, **kwargs):
    strategy = GradDrop(seed=0, **kwargs)
    strategy.build((num_tasks,))
    return strategy


def _check(gradients, present, representation, uniform, leak=0.0):
    strategy = _strategy(len(gradients), leak=leak)
    want, _, _ = reference(gradients, present, representation, uniform, leak)
    got = _rule(strategy, gradients, present, representation, uniform)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return got


def test_rule_matches_reference_on_conflicts_and_a_100x_norm_gap():
    rng = np.random.default_rng(0)
    gradients = rng.normal(size=(3, 5, 7))
    gradients[0] *= 100.0  # a 100x norm gap
    gradients[1] = -gradients[2] + 0.1 * rng.normal(size=(5, 7))  # near-opposite tasks
    representation = rng.normal(size=(5, 7))
    for uniform in (rng.uniform(size=7), np.full(7, 0.05), np.full(7, 0.95)):
        _check(gradients, [True] * 3, representation, uniform)
        _check(gradients, [True] * 3, representation, uniform, leak=[0.2, 0.0, 1.0])


def test_agreeing_signs_drop_nothing():
    rng = np.random.default_rng(1)
    magnitudes = rng.uniform(0.1, 2.0, size=(3, 4, 6))
    signs = np.where(rng.uniform(size=(1, 1, 6)) < 0.5, -1.0, 1.0)  # per feature, all tasks
    gradients = magnitudes * signs
    representation = np.abs(rng.normal(size=(4, 6))) + 0.1  # positive activations
    for uniform in (rng.uniform(size=6), np.full(6, 1e-3), np.full(6, 0.999)):
        got = _check(gradients, [True] * 3, representation, uniform)
        np.testing.assert_allclose(got, gradients.sum(axis=0), rtol=RTOL, atol=ATOL)


def test_exactly_conflicting_gradients_keep_one_sign():
    rng = np.random.default_rng(2)
    first = rng.normal(size=(1, 8))
    gradients = np.stack([first, -first])  # P = 1/2 on every feature
    representation = np.ones((1, 8))
    _, purity, _ = reference(gradients, [True, True], representation, np.zeros(8), 0.0)
    np.testing.assert_allclose(purity, 0.5)
    uniform = np.array([0.1, 0.9] * 4)
    got = _check(gradients, [True, True], representation, uniform)
    # U < P: the positive gradient survives; U > P: the negative one. Never both (sum = 0).
    expected = np.where(uniform < 0.5, np.abs(first[0]), -np.abs(first[0]))
    np.testing.assert_allclose(got[0], expected, rtol=RTOL, atol=ATOL)


def test_zero_gradient_and_absent_task_are_the_rule_on_the_others():
    rng = np.random.default_rng(3)
    others = rng.normal(size=(2, 3, 5))
    representation = rng.normal(size=(3, 5))
    uniform = rng.uniform(size=5)
    alone = _check(others, [True, True], representation, uniform)
    with_zero = _check(
        np.concatenate([others, np.zeros((1, 3, 5))]), [True] * 3, representation, uniform
    )
    np.testing.assert_allclose(with_zero, alone, rtol=RTOL, atol=ATOL)
    # An absent task's gradient (here NaN) is selected away, leak or not.
    absent = np.concatenate([others[:1], np.full((1, 3, 5), np.nan), others[1:]])
    for leak in (0.0, [0.0, 0.5, 0.0]):
        strategy = _strategy(3, leak=leak)
        got = _rule(strategy, absent, [True, False, True], representation, uniform)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, alone, rtol=RTOL, atol=ATOL)


def test_zero_activations_and_rank_deficient_gradients_stay_finite():
    # Every task's gradients are multiples of one vector (rank 1), and a dead feature
    # (activation 0 over the batch) has G = 0 for all tasks: P = 1/2, nothing passes there.
    base = np.array([[1.0, -2.0, 0.5, 3.0]])
    gradients = np.stack([base, -3.0 * base, 0.5 * base])
    representation = np.array([[1.0, 0.0, -1.0, 2.0]])
    got = _check(gradients, [True] * 3, representation, np.array([0.3, 0.3, 0.6, 0.9]))
    assert np.isfinite(got).all() and got[0, 1] == 0.0


def test_full_leak_is_plain_summation():
    rng = np.random.default_rng(4)
    gradients = rng.normal(size=(2, 3, 4))
    got = _check(gradients, [True, True], rng.normal(size=(3, 4)), rng.uniform(size=4), leak=1.0)
    np.testing.assert_allclose(got, gradients.sum(axis=0), rtol=RTOL, atol=ATOL)


def test_masks_keep_the_positive_sign_with_probability_p():
    # Two tasks, one sample: g_1 = p, g_2 = -(1 - p) gives P = p exactly.
    levels = np.array([0.1, 0.3, 0.5, 0.8])
    per_level = 2000
    p = np.repeat(levels, per_level)
    gradients = np.stack([p, -(1.0 - p)])[:, None, :].astype("float32")
    strategy = _strategy(2)
    present = ops.convert_to_tensor([True, True])
    draws = []
    for _ in range(3):
        combined = strategy.combine_representation_gradients(
            ops.convert_to_tensor(gradients), present, ops.ones((1, p.size))
        )
        combined = ops.convert_to_numpy(combined)[0]
        # Exactly one of the two survives on each feature.
        positive = np.isclose(combined, p, atol=1e-6)
        negative = np.isclose(combined, -(1.0 - p), atol=1e-6)
        assert np.all(positive ^ negative)
        draws.append(positive)
    frequencies = np.stack(draws).reshape(3, len(levels), per_level).mean(axis=(0, 2))
    # Binomial standard error <= sqrt(0.25 / 6000) = 0.0065; 4.5 of them.
    np.testing.assert_allclose(frequencies, levels, atol=0.03)
    # Successive draws differ (the generator advances).
    assert not np.array_equal(draws[0], draws[1])


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"leak.*\[0, 1\]. Received: leak=1.5"):
        GradDrop(leak=1.5)
    with pytest.raises(ValueError, match="Received: leak=-0.1"):
        GradDrop(leak=-0.1)
    with pytest.raises(ValueError, match=r"2 entries for 3 tasks.*Received: leak=\[0.1, 0.2\]"):
        GradDrop(leak=[0.1, 0.2]).build((3,))
    model = _model()
    with pytest.raises(ValueError, match="cannot use gradients with respect to the parameters"):
        model.compile(optimizer="sgd", weighting="grad_drop", gradients="parameters")
    assert kerasmtl.weighting.get("GradDrop").__class__ is GradDrop
    assert kerasmtl.weighting.get("grad_drop").preferred_gradients == "representation"


def _model(activation=None):
    keras.utils.set_random_seed(0)
    trunk = keras.layers.Dense(4, activation=activation, name="trunk")
    tasks = [
        Task("a", head=keras.layers.Dense(1, name="a"), loss="mse"),
        Task("b", head=keras.layers.Dense(1, name="b"), loss="mse"),
    ]
    return kerasmtl.hard_sharing({"features": (3,)}, trunk, tasks)


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": (-3.0 * x[:, :1] + 0.1 * rng.normal(size=(n, 1))).astype("float32"),
    }
    return x, y


def _numpy(variable):
    return ops.convert_to_numpy(ops.convert_to_tensor(variable)).astype(np.float64)


def test_one_step_of_the_trainer_applies_the_rule_at_the_representation():
    """SGD(0.1), linear trunk, MSE heads: the update from the rule written out in NumPy."""
    model = _model()
    strategy = GradDrop(seed=7, leak=[0.25, 0.0])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), weighting=strategy)
    assert model.gradient_source == "representation"
    x, y = _data()
    y["b"][2] = np.nan  # a missing label: task b's mean runs over 7 samples
    kernel, bias = _numpy(model.get_layer("trunk").kernel), _numpy(model.get_layer("trunk").bias)
    heads = [(_numpy(model.get_layer(t).kernel), _numpy(model.get_layer(t).bias)) for t in "ab"]
    # The same uniforms: a copy of the generator's state before the step.
    twin = GradDrop(seed=7)
    twin.build((2,))
    twin.seed_generator.state.assign(model.weighting.seed_generator.state.value)
    uniform = _numpy(keras.random.uniform((4,), seed=twin.seed_generator, dtype="float32"))

    model.train_on_batch(x, y)

    xs = x.astype(np.float64)
    features = xs @ kernel + bias
    gradients, head_updates = [], []
    for (w, c), name in zip(heads, "ab"):
        labels = y[name].astype(np.float64)
        labelled = np.isfinite(labels)
        residual = np.where(labelled, features @ w + c - np.nan_to_num(labels), 0.0)
        d_prediction = 2.0 * residual / labelled.sum()
        gradients.append(d_prediction @ w.T)
        head_updates.append((features.T @ d_prediction, d_prediction.sum(axis=0)))
    combined, _, masks = reference(
        np.stack(gradients), [True, True], features, uniform, [0.25, 0.0]
    )
    assert masks.min() == 0  # something was dropped: the test sees the rule
    np.testing.assert_allclose(
        _numpy(model.get_layer("trunk").kernel),
        kernel - 0.1 * xs.T @ combined,
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        _numpy(model.get_layer("trunk").bias),
        bias - 0.1 * combined.sum(axis=0),
        rtol=1e-4,
        atol=1e-6,
    )
    for (w, c), (dw, dc), name in zip(heads, head_updates, "ab"):
        np.testing.assert_allclose(
            _numpy(model.get_layer(name).kernel), w - 0.1 * dw, rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            _numpy(model.get_layer(name).bias), c - 0.1 * dc, rtol=1e-4, atol=1e-6
        )
    np.testing.assert_allclose(_numpy(model.weighting.last_coefficients), [1.0, 1.0])


def test_short_fit_trains_with_an_absent_task_and_round_trips(tmp_path):
    model = _model(activation="tanh")
    model.compile(optimizer=keras.optimizers.Adam(0.05), weighting=GradDrop(leak=0.1, seed=3))
    x, y = _data(n=32, seed=1)
    y["a"][:8] = np.nan  # task a absent from the first batch
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0).history
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    for variable in model.trainable_variables:
        assert np.isfinite(_numpy(variable)).all(), variable.path
    state = _numpy(model.weighting.seed_generator.state)
    path = os.path.join(tmp_path, "grad_drop.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.weighting, GradDrop)
    assert restored.weighting.leak == 0.1 and restored.weighting.seed == 3
    np.testing.assert_array_equal(_numpy(restored.weighting.seed_generator.state), state)
    draws = [
        _numpy(keras.random.uniform((5,), seed=strategy.weighting.seed_generator))
        for strategy in (model, restored)
    ]
    np.testing.assert_array_equal(draws[0], draws[1])
