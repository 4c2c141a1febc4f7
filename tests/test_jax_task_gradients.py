"""The K task pullbacks of the JAX parameter route (`jax_task_gradients.task_vjps`).

Every route (`loop`, `map`, `vmap`, `auto`) against a float64 NumPy reference of the
per-task gradients of a two-layer network, on hard cases: conflicting tasks, a 100x
norm gap, a task whose gradient is zero and an absent task (a zero cotangent row);
then the routes against each other inside `jax.jit` on a convolutional Keras model
(max pooling included), and end to end in `fit`.
"""

import keras
import numpy as np
import pytest

# `.ci/run` repeats backend-neutral modules on JAX and torch: that is where this
# JAX-only module runs (it skips on the others).
pytestmark = [
    pytest.mark.backend_neutral,
    pytest.mark.backend_only("jax", reason="tests the JAX trainer's pullbacks (jax.vjp)"),
]

ROUTES = ["loop", "map", "vmap", "auto"]
NUM_TASKS = 4
# float32 against float64: ~100 ulps of the O(1) entries.
RTOL = 1e-5
ATOL = 1e-6


def _problem(seed=0):
    """Inputs, parameters and targets; tasks 0 and 1 conflict, task 2 is -100x task 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 5))
    params = {
        "w": rng.normal(size=(5, 6)) * 0.5,
        "b": rng.normal(size=(6,)) * 0.1,
        "v": rng.normal(size=(NUM_TASKS, 6, 3)) * 0.5,
        "c": rng.normal(size=(NUM_TASKS, 3)) * 0.1,
    }
    # Task 3 predicts its target exactly: zero head weights and bias, zero target.
    params["v"][3] = 0.0
    params["c"][3] = 0.0
    hidden = np.tanh(x @ params["w"] + params["b"])
    base = hidden @ params["v"][0] + params["c"][0]
    targets = np.stack(
        [
            base + 1.0,  # task 0 pulls its outputs down ...
            hidden @ params["v"][1] + params["c"][1] - 1.0,  # ... task 1 up
            base - 100.0,  # task 2: task 0's head (set below), residual -100x task 0's
            np.zeros((16, 3)),
        ]
    )
    params["v"][2] = params["v"][0]
    params["c"][2] = params["c"][0]
    return x, params, targets


def _losses(x, params, targets, np_or_jnp):
    hidden = np_or_jnp.tanh(x @ params["w"] + params["b"])
    losses = []
    for k in range(NUM_TASKS):
        outputs = hidden @ params["v"][k] + params["c"][k]
        losses.append(np_or_jnp.mean((outputs - targets[k]) ** 2))
    return np_or_jnp.stack(losses)


def _reference_gradients(x, params, targets, cotangents):
    """float64 gradients of `cotangents @ losses` for each row, by hand."""
    hidden = np.tanh(x @ params["w"] + params["b"])
    per_task = []
    for k in range(NUM_TASKS):
        outputs = hidden @ params["v"][k] + params["c"][k]
        d_outputs = 2.0 * (outputs - targets[k]) / outputs.size
        d_pre = (d_outputs @ params["v"][k].T) * (1.0 - hidden**2)
        grad = {name: np.zeros_like(value) for name, value in params.items()}
        grad["w"] = x.T @ d_pre
        grad["b"] = d_pre.sum(axis=0)
        grad["v"][k] = hidden.T @ d_outputs
        grad["c"][k] = d_outputs.sum(axis=0)
        per_task.append(grad)
    return {
        name: np.stack(
            [sum(row[k] * per_task[k][name] for k in range(NUM_TASKS)) for row in cotangents]
        )
        for name in params
    }


@pytest.mark.parametrize("route", ROUTES)
def test_routes_match_float64_reference_on_hard_cases(route):
    import jax
    import jax.numpy as jnp

    from kerasmtl.trainers.jax_task_gradients import task_vjps

    x, params, targets = _problem()
    # Rows: tasks 0-3, then an absent task (zero row) and the sum of tasks 0 and 1.
    cotangents = np.concatenate([np.eye(NUM_TASKS), np.zeros((1, NUM_TASKS))])
    cotangents = np.concatenate([cotangents, [[1.0, 1.0, 0.0, 0.0]]])
    expected = _reference_gradients(x, params, targets, cotangents)

    @jax.jit
    def gradients(params32):
        _, pullback = jax.vjp(lambda p: _losses(x32, p, targets32, jnp), params32)
        (result,) = task_vjps(pullback, jnp.asarray(cotangents, "float32"), method=route)
        return result

    x32, targets32 = jnp.asarray(x, "float32"), jnp.asarray(targets, "float32")
    result = gradients(jax.tree_util.tree_map(lambda a: jnp.asarray(a, "float32"), params))
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(result[name]), value, rtol=RTOL, atol=ATOL)

    flat = np.concatenate([expected[name].reshape(len(cotangents), -1) for name in params], 1)
    norms = np.linalg.norm(flat, axis=1)
    # The hard cases hold in the reference: tasks 0 and 1 conflict on the shared
    # parameters, task 2's gradient is -100x task 0's, task 3's and the absent row are 0.
    shared = np.concatenate([expected[name].reshape(len(cotangents), -1) for name in "wb"], 1)
    assert shared[0] @ shared[1] < 0
    np.testing.assert_allclose(shared[2], -100.0 * shared[0], rtol=1e-9, atol=1e-12)
    assert norms[0] > 0.1
    assert norms[3] == 0 and norms[4] == 0
    np.testing.assert_allclose(flat[5], flat[0] + flat[1], rtol=1e-12, atol=1e-12)


def _conv_model(num_tasks):
    inputs = keras.Input((12, 12, 2))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(6, 3, activation="relu")(hidden))
    hidden = keras.layers.Dense(8, activation="tanh")(hidden)
    outputs = [keras.layers.Dense(3)(hidden) for _ in range(num_tasks)]
    return keras.Model(inputs, outputs)


def test_routes_agree_on_a_convolutional_model_under_jit():
    import jax
    import jax.numpy as jnp

    from kerasmtl.trainers.jax_task_gradients import task_vjps

    keras.utils.set_random_seed(0)
    model = _conv_model(3)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 12, 12, 2)), "float32")
    targets = jnp.asarray(rng.normal(size=(3, 8, 3)), "float32")
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_vector(values):
        outputs, _ = model.stateless_call(values, non_trainable, x)
        return jnp.stack([jnp.mean((o - t) ** 2) for o, t in zip(outputs, targets)])

    def gradients(route):
        @jax.jit
        def run(values):
            _, pullback = jax.vjp(loss_vector, values)
            (result,) = task_vjps(pullback, jnp.eye(3), method=route)
            return result

        return [np.asarray(g, "float64") for g in run(trainable)]

    reference = gradients("loop")
    assert all(g.shape[0] == 3 for g in reference)
    assert min(np.abs(g).max() for g in reference) > 0
    for route in ["map", "vmap", "auto"]:
        for got, expected in zip(gradients(route), reference):
            # 1e-6 relative to the largest entry of the variable's gradients.
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_fit_is_the_same_with_every_route(monkeypatch):
    from kerasmtl import Task, hard_sharing
    from kerasmtl.trainers import jax_task_gradients

    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = {"a": rng.normal(size=(32, 2)).astype("float32"), "b": -x[:, :2] * 3.0}
    weights = {}
    for route in ["loop", "map", "vmap"]:
        monkeypatch.setattr(jax_task_gradients, "method", route)
        keras.utils.set_random_seed(0)
        model = hard_sharing(
            {"features": (6,)},
            lambda inputs: keras.layers.Dense(8, activation="tanh")(inputs),
            [Task("a", head=2, loss="mse"), Task("b", head=2, loss="mse")],
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1), weighting="mgda")
        initial = [np.asarray(w) for w in model.get_weights()]
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        weights[route] = [np.asarray(w) for w in model.get_weights()]
    # The shared layer's kernel moved (4 MGDA steps), the same way on every route.
    assert np.abs(weights["loop"][0] - initial[0]).max() > 1e-3
    for route in ["map", "vmap"]:
        for got, expected in zip(weights[route], weights["loop"]):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_unknown_route_is_refused():
    import jax.numpy as jnp

    from kerasmtl.trainers.jax_task_gradients import task_vjps

    with pytest.raises(ValueError, match=r"'loop', 'map', 'vmap'.*Received: method='scan'"):
        task_vjps(lambda c: c, jnp.eye(2), method="scan")
