"""Many tasks (K = 20, 40): the iterative solvers against SciPy, every gradient strategy in `fit`.

Up to 10 tasks the solvers enumerate supports and the NumPy references in
test_weighting_solvers.py do too; beyond that both sides need an optimiser: the
reference here is SciPy's SLSQP in float64 with a tight tolerance.
"""

import keras
import numpy as np
import pytest
from scipy import optimize

import kerasmtl
from kerasmtl import Task
from kerasmtl.weighting import solvers

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

RTOL = 1e-4


def _compiled(fn):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _gram(num_tasks, rank, seed, gap):
    """Conflicting gradients, one `gap` times longer, rank-deficient when rank < K."""
    rng = np.random.default_rng(seed)
    jacobian = rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, 128))
    jacobian[0] *= gap
    return jacobian @ jacobian.T


def _simplex_minimum(objective, num_tasks):
    best = None
    for start in (np.full(num_tasks, 1.0 / num_tasks), np.eye(num_tasks)[1]):
        result = optimize.minimize(
            objective, start, method="SLSQP", bounds=[(0.0, 1.0)] * num_tasks,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
            options={"ftol": 1e-15, "maxiter": 2000},
        )
        if best is None or result.fun < best.fun:
            best = result
    return best.fun


# A 100x norm gap beyond 10 tasks is not in this list: there the iterative solvers stop
# short of the optimum (measured: MGDA at K=40 and CAGrad at K=20 miss SciPy's value
# severalfold), a known defect recorded on the many-tasks issue.
@pytest.mark.parametrize(
    "num_tasks,rank,gap", [(20, 20, 1.0), (20, 8, 1.0), (40, 40, 1.0), (20, 20, 3.0)]
)
def test_iterative_solvers_reach_the_optimum(num_tasks, rank, gap):
    gram = _gram(num_tasks, rank, seed=num_tasks + rank, gap=gap)
    scale = np.diag(gram).max()
    unit = gram / scale

    weights = keras.ops.convert_to_numpy(
        _compiled(solvers.min_norm_point)(gram.astype("float32"))).astype("float64")
    assert weights.min() >= 0.0 and abs(weights.sum() - 1.0) <= 1e-5
    reference = _simplex_minimum(lambda w: w @ unit @ w, num_tasks)
    assert weights @ unit @ weights <= reference * (1 + RTOL) + 1e-9

    radius_c = 0.4
    cagrad = _compiled(lambda g: solvers.conflict_averse_dual(g, radius_c)[0])
    weights = keras.ops.convert_to_numpy(cagrad(gram.astype("float32"))).astype("float64")
    mean = np.full(num_tasks, 1.0 / num_tasks)
    radius = radius_c * np.sqrt(mean @ unit @ mean)

    def dual(w):
        return w @ unit @ mean + radius * np.sqrt(max(w @ unit @ w, 0.0))

    assert weights.min() >= 0.0 and abs(weights.sum() - 1.0) <= 1e-5
    assert dual(weights) <= _simplex_minimum(dual, num_tasks) + RTOL * abs(dual(weights)) + 1e-7

    lower = (np.eye(num_tasks)[:3] / num_tasks).astype("float32")
    projections = keras.ops.convert_to_numpy(
        _compiled(solvers.lower_bounded_qp)(gram.astype("float32"), lower)).astype("float64")
    for row, bound in zip(projections, lower.astype("float64")):
        assert np.all(row >= bound - 1e-7)
        result = optimize.minimize(
            lambda v: v @ unit @ v, bound + 1e-3, jac=lambda v: 2.0 * unit @ v,
            method="L-BFGS-B", bounds=[(b, None) for b in bound],
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000},
        )
        assert row @ unit @ row <= result.fun * (1 + RTOL) + 1e-9


GRADIENT_STRATEGIES = sorted(
    kerasmtl.weighting.registry_name(cls.__name__)
    for cls in kerasmtl.weighting.ALL_OBJECTS
    if cls.requires_gradients
)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", GRADIENT_STRATEGIES)
def test_every_gradient_strategy_trains_twenty_tasks(strategy):
    num_tasks = 20
    keras.utils.set_random_seed(0)
    model = kerasmtl.hard_sharing(
        {"features": (8,)},
        keras.layers.Dense(16, activation="tanh", name="trunk"),
        [Task(f"t{k}", head=1, loss="mse") for k in range(num_tasks)],
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), weighting=strategy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    targets = np.tanh(x @ rng.normal(size=(8, num_tasks))).astype("float32")
    y = {f"t{k}": targets[:, [k]] for k in range(num_tasks)}
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    first = np.mean([history[f"t{k}_loss"][0] for k in range(num_tasks)])
    last = np.mean([history[f"t{k}_loss"][-1] for k in range(num_tasks)])
    assert last < first, (strategy, first, last)
    coefficients = keras.ops.convert_to_numpy(model.weighting.last_coefficients)
    assert coefficients.shape == (num_tasks,) and np.isfinite(coefficients).all()
    if strategy in ("mgda", "mgdaub"):
        assert coefficients.min() >= 0.0 and abs(coefficients.sum() - 1.0) <= 1e-4
