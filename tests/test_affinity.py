"""Tests of kerasmtl.affinity: TAG lookahead affinity and task grouping."""

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl.affinity import (
    TaskAffinity,
    _set_partitions,
    affinity_heatmap,
    grouping_score,
    suggest_groups,
    task_affinity,
)

TASKS = ("a", "b", "c")


def _linear_model(kernel=None, heads=None, num_units=3):
    """x -> shared linear layer (no bias) -> one linear head per task (no bias)."""
    inputs = keras.Input((4,), name="features")
    shared = keras.layers.Dense(
        num_units,
        use_bias=False,
        kernel_initializer="zeros" if kernel is None else keras.initializers.Constant(kernel),
        name="shared",
    )(inputs)
    outputs = {
        name: keras.layers.Dense(
            1,
            use_bias=False,
            kernel_initializer="ones"
            if heads is None
            else keras.initializers.Constant(heads[index]),
            name=name,
        )(shared)
        for index, name in enumerate(TASKS)
    }
    model = kerasmtl.MultiTaskModel(
        inputs, outputs, [kerasmtl.Task(name, loss="mse") for name in TASKS]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def _helps_and_hurts_data(num_samples=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 4)).astype("float32")
    target = (x @ rng.normal(size=(4, 1))).astype("float32")
    # b's target equals a's (a helps b); c's is its negation (a hurts c).
    return x, {"a": target, "b": target.copy(), "c": -target}


def _reference_affinity(x, y, kernel, heads, learning_rate):
    """NumPy reference of Z_{i->j} on one batch for the linear model above."""
    x = x.astype("float64")
    kernel = kernel.astype("float64")
    heads = [head.astype("float64").reshape(-1, 1) for head in heads]
    targets = [y[name].astype("float64") for name in TASKS]

    def loss(w, j):
        return np.mean((x @ w @ heads[j] - targets[j]) ** 2)

    def gradient(w, i):
        residual = x @ w @ heads[i] - targets[i]
        return 2.0 / len(x) * x.T @ residual @ heads[i].T

    matrix = np.zeros((3, 3))
    for i in range(3):
        stepped = kernel - learning_rate * gradient(kernel, i)
        for j in range(3):
            matrix[i, j] = 1.0 - loss(stepped, j) / loss(kernel, j)
    return matrix


def test_affinity_matches_numpy_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype("float32")
    # Conflicting targets with a 100x scale difference between tasks.
    y = {
        "a": rng.normal(size=(32, 1)).astype("float32"),
        "b": (100.0 * rng.normal(size=(32, 1))).astype("float32"),
        "c": rng.normal(size=(32, 1)).astype("float32"),
    }
    kernel = rng.normal(size=(4, 3)).astype("float32")
    heads = [rng.normal(size=(3, 1)).astype("float32") for _ in TASKS]
    model = _linear_model(kernel, heads)
    learning_rate = 1e-3
    matrix, names = task_affinity(model, (x, y), learning_rate=learning_rate, batch_size=32)
    assert names == list(TASKS)
    expected = _reference_affinity(x, y, kernel, heads, learning_rate)
    np.testing.assert_allclose(matrix, expected, rtol=2e-3, atol=1e-5)
    # Averaging over batches: the mean of the per-batch matrices.
    halves = [
        _reference_affinity(x[s], {k: v[s] for k, v in y.items()}, kernel, heads, learning_rate)
        for s in (slice(0, 16), slice(16, 32))
    ]
    matrix, _ = task_affinity(model, (x, y), learning_rate=learning_rate, batch_size=16)
    np.testing.assert_allclose(matrix, np.mean(halves, axis=0), rtol=2e-3, atol=1e-5)


def test_affinity_signs_helping_and_hurting_tasks():
    x, y = _helps_and_hurts_data()
    model = _linear_model()
    matrix, names = task_affinity(model, (x, y), learning_rate=0.01, batch_size=32)
    index = {name: position for position, name in enumerate(names)}
    assert matrix[index["a"], index["b"]] > 0  # a helps b
    assert matrix[index["a"], index["c"]] < 0  # a hurts c
    assert matrix[index["c"], index["a"]] < 0
    assert np.all(np.diag(matrix) > 0)
    assert suggest_groups(matrix, names, num_groups=2) == [["a", "b"], ["c"]]


def test_weights_restored_exactly():
    # Dropout and batch normalization: inference mode, and no state is written.
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="tanh", name="shared")(inputs)
    hidden = keras.layers.BatchNormalization(name="norm")(hidden)
    hidden = keras.layers.Dropout(0.5)(hidden)
    outputs = {name: keras.layers.Dense(1, name=name)(hidden) for name in TASKS}
    model = kerasmtl.MultiTaskModel(
        inputs, outputs, [kerasmtl.Task(name, loss="mse") for name in TASKS]
    )
    model.compile(optimizer="sgd")
    x, y = _helps_and_hurts_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # non-default batch-norm statistics
    before = [np.array(weight) for weight in model.get_weights()]
    iterations = int(model.optimizer.iterations.numpy())
    matrix, _ = task_affinity(model, (x, y), learning_rate=0.5, batch_size=16)
    assert np.all(np.isfinite(matrix))
    after = model.get_weights()
    assert len(after) == len(before)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)
    assert int(model.optimizer.iterations.numpy()) == iterations


def test_callback_measures_during_fit():
    x, y = _helps_and_hurts_data()
    model = _linear_model()
    callback = TaskAffinity((x, y), learning_rate=0.01, every_n_steps=2, batch_size=16)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    # 4 steps per epoch, every 2nd step measured.
    assert callback.num_measurements == 4
    assert callback.task_names == list(TASKS)
    assert len(callback.epoch_affinities) == 2
    matrix = callback.affinity
    assert matrix.shape == (3, 3)
    assert matrix[0, 1] > 0 and matrix[0, 2] < 0
    # With the optimizer's learning rate and a tf.data source.
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    callback = TaskAffinity(dataset, every_n_steps=1)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    assert callback.num_measurements == 2
    assert np.all(np.isfinite(callback.affinity))


def test_task_without_labels_gives_nan_column_and_warns():
    x, y = _helps_and_hurts_data(16)
    y["c"] = np.full_like(y["c"], np.nan)
    model = _linear_model()
    with pytest.warns(UserWarning, match=r"task\(s\) \['c'\]"):
        matrix, _ = task_affinity(model, (x, y), learning_rate=0.01)
    assert np.all(np.isnan(matrix[:, 2]))
    assert np.all(np.isfinite(matrix[:, :2]))


def test_no_shared_parameters_is_an_error():
    inputs = keras.Input((4,), name="features")
    outputs = {name: keras.layers.Dense(1, name=name)(inputs) for name in TASKS}
    model = kerasmtl.MultiTaskModel(
        inputs, outputs, [kerasmtl.Task(name, loss="mse") for name in TASKS]
    )
    model.compile(optimizer="sgd")
    x, y = _helps_and_hurts_data(8)
    with pytest.raises(ValueError, match="shared by two or more tasks"):
        task_affinity(model, (x, y), learning_rate=0.01)


def test_uncompiled_model_is_an_error():
    model = _linear_model()
    fresh = kerasmtl.MultiTaskModel.from_config(model.get_config())
    x, y = _helps_and_hurts_data(8)
    with pytest.raises(ValueError, match="Compile the model"):
        task_affinity(fresh, (x, y), learning_rate=0.01)


# === Grouping ===


def test_suggest_groups_on_a_hand_made_matrix():
    names = ["a", "b", "c", "d"]
    # a and c help each other, b and d help each other, across the pairs they hurt.
    matrix = np.array(
        [
            [1.0, -0.2, 0.5, -0.1],
            [-0.3, 1.0, -0.2, 0.4],
            [0.6, -0.1, 1.0, -0.3],
            [-0.2, 0.3, -0.4, 1.0],
        ]
    )
    assert suggest_groups(matrix, names, 2) == [["a", "c"], ["b", "d"]]
    assert suggest_groups(matrix, names, 1) == [names]
    assert suggest_groups(matrix, names, 4) == [[name] for name in names]
    # Score of the best grouping: (0.6 + 0.5) + (0.3 + 0.4).
    assert grouping_score(matrix, [["a", "c"], ["b", "d"]], names) == pytest.approx(1.8)
    # The diagonal plays no part.
    assert suggest_groups(matrix - 10 * np.eye(4), names, 2) == [["a", "c"], ["b", "d"]]
    # Three groups: the pair that helps most stays together.
    assert suggest_groups(matrix, names, 3) == [["a", "c"], ["b"], ["d"]]


def test_suggest_groups_averages_affinity_onto_each_task():
    # In a 3-group, affinity onto a task is the mean over the other two members.
    names = ["a", "b", "c"]
    matrix = np.array([[0.0, 0.9, 0.1], [0.9, 0.0, 0.1], [0.1, 0.1, 0.0]])
    assert grouping_score(matrix, [names], names) == pytest.approx(
        (0.9 + 0.1) / 2 + (0.9 + 0.1) / 2 + (0.1 + 0.1) / 2
    )
    assert suggest_groups(matrix, names, 2) == [["a", "b"], ["c"]]


@pytest.mark.parametrize("num_items, num_groups, stirling", [(5, 2, 15), (6, 3, 90), (4, 4, 1)])
def test_set_partitions_are_all_the_partitions(num_items, num_groups, stirling):
    partitions = [tuple(labels) for labels in _set_partitions(num_items, num_groups)]
    assert len(partitions) == len(set(partitions)) == stirling
    assert all(len(set(labels)) == num_groups for labels in partitions)


def test_suggest_groups_errors():
    names = ["a", "b"]
    with pytest.raises(ValueError, match="num_groups"):
        suggest_groups(np.zeros((2, 2)), names, 3)
    with pytest.raises(ValueError, match=r"square.*Received: matrix.shape=\(3, 3\)"):
        suggest_groups(np.zeros((3, 3)), names, 1)
    with pytest.raises(ValueError, match=r"a->b"):
        suggest_groups(np.array([[0.0, np.nan], [0.0, 0.0]]), names, 1)


def test_affinity_heatmap_writes_a_png(tmp_path):
    path = tmp_path / "affinity.png"
    matrix = np.array([[0.2, 0.1, -0.3], [0.05, 0.2, np.nan], [-0.1, 0.0, 0.3]])
    assert affinity_heatmap(matrix, list(TASKS), path) == path
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
