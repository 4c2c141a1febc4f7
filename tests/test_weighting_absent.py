"""Absent tasks in every weighting strategy (issue 11), backend-neutral.

A task is absent from a step when it has no labelled sample (its loss is then 0
by design) or a non-finite loss. Every strategy must compute its weights over
the present tasks only: a 3-task step with task 1 absent (loss 0, Gram row and
column zeroed, `present=[True, False, True]`) gives the same weights as the same
strategy built on tasks 0 and 2 alone, and leaves task 1's state unchanged. The
few strategies whose definition makes them differ assert their documented
relation instead.
"""

import keras
import numpy as np
import pytest
from keras import ops

from kerasmtl import weighting
from kerasmtl.weighting import (
    DBMTL,
    DWA,
    FAMO,
    GLS,
    IMTLG,
    MGDA,
    MGDAUB,
    RLW,
    AlignedMTL,
    CAGrad,
    Equal,
    Fixed,
    GradNorm,
    GradVac,
    LearnedSoftmax,
    LossRatio,
    NashMTL,
    PCGrad,
    Uncertainty,
    UPGrad,
)

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

RTOL = 1e-5
PRESENT = np.array([True, False, True])
KEPT = [0, 2]
ABSENT = 1

GRADIENT_FACTORIES = {
    "mgda": lambda k: MGDA(),
    "mgda_l2": lambda k: MGDA(normalization="l2"),
    "mgda_loss": lambda k: MGDA(normalization="loss"),
    "mgda_loss_plus": lambda k: MGDA(normalization="loss+"),
    "mgdaub": lambda k: MGDAUB(),
    "cagrad": lambda k: CAGrad(),
    "nash_mtl": lambda k: NashMTL(),
    "upgrad": lambda k: UPGrad(),
    "upgrad_pref": lambda k: UPGrad(pref_vector=[0.2, 0.5, 0.3][: k] if k == 3 else [0.2, 0.3]),
    "imtlg": lambda k: IMTLG(),
    "aligned_mtl": lambda k: AlignedMTL(),
    "aligned_mtl_pref": lambda k: AlignedMTL(
        preference_vector=[1.0, 3.0, 2.0] if k == 3 else [1.0, 2.0]
    ),
    "pcgrad": lambda k: PCGrad(seed=3),
    "pcgrad_mean": lambda k: PCGrad(reduction="mean", seed=3),
    "grad_vac": lambda k: GradVac(beta=0.5, seed=3),
    "grad_norm": lambda k: GradNorm(),
    "grad_norm_sgd": lambda k: GradNorm(optimizer="sgd", learning_rate=0.05),
    "dbmtl": lambda k: DBMTL(beta_sigma=0.5),
}
LOSS_FACTORIES = {
    "equal": lambda k: Equal(),
    "fixed": lambda k: Fixed([1.0, 0.5, 2.0] if k == 3 else [1.0, 2.0]),
    "uncertainty": lambda k: Uncertainty(initial_log_variance=0.3),
    "learned_softmax": lambda k: LearnedSoftmax(entropy_weight=0.1, seed=3),
    "gls": lambda k: GLS(),
    "famo_adam": lambda k: FAMO(learning_rate=0.1),
    "famo_sgd": lambda k: FAMO(learning_rate=0.1, logits_optimizer="sgd"),
}
EPOCH_FACTORIES = {
    "dwa": lambda k: DWA(temperature=0.5),
    "loss_ratio": lambda k: LossRatio(temperature=0.5),
}
# Strategies whose present tasks share "K minus the absent tasks' kept weights":
# equal to the 2-task strategy only while the absent task kept weight 1.
SHARE_OF_K = {"grad_norm", "grad_norm_sgd", "dwa", "loss_ratio"}


def _value(x):
    """A tensor for `x`; variables through `.value` (NumPy's __array__ on a JAX
    variable warns)."""
    return x.value if isinstance(x, keras.Variable) else x


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(_value(x)), dtype="float64")


def _jacobians(num_steps, seed):
    """3-task gradient matrices: one gradient 30x the others, two in conflict."""
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(num_steps):
        jacobian = rng.normal(size=(3, 6))
        jacobian[0] *= 30.0
        jacobian[2] -= 0.05 * jacobian[0]
        losses = rng.uniform(0.2, 3.0, size=3)
        result.append((jacobian, losses))
    return result


def _restrict(source, target):
    """Copies `source`'s (3-task) state into `target` (2-task), keeping tasks 0 and 2."""
    for variable, other in zip(source.variables, target.variables):
        value = ops.convert_to_numpy(variable.value)
        if "seed_generator" in variable.path or value.ndim == 0:
            other.assign(value)
        elif value.ndim == 1:
            other.assign(value[KEPT])
        else:
            other.assign(value[np.ix_(KEPT, KEPT)])


def _state(strategy):
    return {v.path.split("/")[-1]: ops.convert_to_numpy(v.value).copy() for v in strategy.weights}


def _assert_absent_state_unchanged(before, after):
    for name, value in before.items():
        if value.ndim == 1 and value.shape[0] == 3:
            assert after[name][ABSENT] == value[ABSENT], name
        elif value.ndim == 2:
            np.testing.assert_array_equal(after[name][ABSENT], value[ABSENT], err_msg=name)
            np.testing.assert_array_equal(after[name][:, ABSENT], value[:, ABSENT], err_msg=name)


def _assert_present_state_matches(three, two):
    for name, value in _state(three).items():
        other = _state(two)[name]
        if value.ndim == 0:
            np.testing.assert_allclose(value, other, rtol=RTOL, err_msg=name)
        elif value.ndim == 1:
            np.testing.assert_allclose(value[KEPT], other, rtol=RTOL, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_allclose(
                value[np.ix_(KEPT, KEPT)], other, rtol=RTOL, atol=1e-7, err_msg=name
            )


def _gram_step(strategy, jacobian, losses, present=None):
    gram = jacobian @ jacobian.T
    if present is not None:
        gram = np.where(present[:, None] & present[None, :], gram, 0.0)
        losses = np.where(present, losses, 0.0)
    mask = None if present is None else ops.convert_to_tensor(present)
    out = strategy.compute_weights_from_gram(
        ops.convert_to_tensor(gram.astype("float32")),
        ops.convert_to_tensor(np.asarray(losses, dtype="float32")),
        mask,
    )
    return _numpy(out)


def _pair(factory):
    three, two = factory(3), factory(2)
    three.build((3,))
    two.build((2,))
    return three, two


@pytest.mark.parametrize("warm_up", [0, 2], ids=["absent_from_start", "absent_later"])
@pytest.mark.parametrize("name", sorted(GRADIENT_FACTORIES))
def test_gradient_strategy_with_an_absent_task_is_the_strategy_on_the_present_ones(
    name, warm_up
):
    three, two = _pair(GRADIENT_FACTORIES[name])
    steps = _jacobians(warm_up + 4, seed=11)
    for jacobian, losses in steps[:warm_up]:
        _gram_step(three, jacobian, losses)
    _restrict(three, two)
    for jacobian, losses in steps[warm_up:]:
        before = _state(three)
        coefficients = _gram_step(three, jacobian, losses, PRESENT)
        expected = _gram_step(two, jacobian[KEPT], losses[KEPT])
        assert np.all(np.isfinite(coefficients))
        assert coefficients[ABSENT] == 0.0
        _assert_absent_state_unchanged(before, _state(three))
        if name in SHARE_OF_K and warm_up:
            # The present tasks share K minus the absent task's kept weight:
            # the weights (and the sum K) are kept, not those of a fresh 2-task run.
            weights = _numpy(three.loss_weights)
            np.testing.assert_allclose(weights.sum(), 3.0, rtol=RTOL)
            continue
        # The update direction J^T a, relative to the largest gradient.
        direction = jacobian[KEPT].T @ coefficients[KEPT]
        reference = jacobian[KEPT].T @ expected
        scale = max(np.linalg.norm(reference), np.max(np.linalg.norm(jacobian[KEPT], axis=1)))
        assert np.linalg.norm(direction - reference) <= RTOL * scale * np.max(
            np.abs(expected) + 1.0
        ), (coefficients, expected)
        np.testing.assert_allclose(coefficients[KEPT], expected, rtol=1e-4, atol=1e-7)
        _assert_present_state_matches(three, two)
    if name.startswith("mgda"):
        # Never the zero vector because a task is absent.
        assert np.all(coefficients[KEPT] > 0.0)


@pytest.mark.parametrize("name", sorted(LOSS_FACTORIES))
def test_loss_strategy_with_an_absent_task_is_the_strategy_on_the_present_ones(name):
    three, two = _pair(LOSS_FACTORIES[name])
    _restrict(three, two)  # same starting logits / variances
    rng = np.random.default_rng(5)
    for step in range(5):
        losses = rng.uniform(0.2, 3.0, size=3)
        losses[ABSENT] = 0.0  # a masked mean with no labels
        before = _state(three)
        total, weights = three.combine(
            ops.convert_to_tensor(losses.astype("float32")),
            present=ops.convert_to_tensor(PRESENT),
        )
        expected_total, expected = two.combine(
            ops.convert_to_tensor(losses[KEPT].astype("float32"))
        )
        weights = _numpy(weights)
        assert weights[ABSENT] == 0.0, step
        np.testing.assert_allclose(weights[KEPT], _numpy(expected), rtol=RTOL)
        np.testing.assert_allclose(_numpy(total), _numpy(expected_total), rtol=RTOL)
        _assert_absent_state_unchanged(before, _state(three))
        _assert_present_state_matches(three, two)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", sorted(LOSS_FACTORIES))
def test_non_finite_loss_is_an_absent_task(name, bad):
    three, two = _pair(LOSS_FACTORIES[name])
    _restrict(three, two)
    for step in range(3):
        losses = np.array([1.0 - 0.1 * step, bad, 0.5 + 0.2 * step], dtype="float32")
        _, weights = three.combine(ops.convert_to_tensor(losses))
        _, expected = two.combine(ops.convert_to_tensor(losses[KEPT]))
        weights = _numpy(weights)
        assert weights[ABSENT] == 0.0
        np.testing.assert_allclose(weights[KEPT], _numpy(expected), rtol=RTOL)


def test_rlw_with_an_absent_task_is_rlw_on_the_present_entries_of_the_same_draw():
    # RLW draws one sample for all K tasks (so the random sequence does not depend
    # on which tasks are present); the present tasks get K_p * softmax of theirs.
    strategy, twin = RLW(seed=7), RLW(seed=7)
    strategy.build((3,))
    twin.build((3,))
    for _ in range(4):
        _, weights = strategy.combine(
            ops.convert_to_tensor([1.0, 0.0, 2.0]), present=ops.convert_to_tensor(PRESENT)
        )
        sample = _numpy(keras.random.normal((3,), seed=twin.seed_generator))
        expected = np.exp(sample[KEPT]) / np.exp(sample[KEPT]).sum() * 2.0
        weights = _numpy(weights)
        assert weights[ABSENT] == 0.0
        np.testing.assert_allclose(weights[KEPT], expected, rtol=RTOL)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(strategy.seed_generator.state.value),
        ops.convert_to_numpy(twin.seed_generator.state.value),
    )


@pytest.mark.parametrize("name", sorted(EPOCH_FACTORIES))
def test_epoch_strategy_with_a_task_absent_for_whole_epochs(name):
    three, two = _pair(EPOCH_FACTORIES[name])
    rng = np.random.default_rng(2)
    # Absent from the first epoch on (the model logs NaN): the 2-task strategy.
    for _ in range(4):
        losses = rng.uniform(0.2, 3.0, size=3).astype("float32")
        losses[ABSENT] = np.nan
        before = _state(three)
        three.update(losses)
        two.update(losses[KEPT])
        weights = _numpy(three.loss_weights)
        assert weights[ABSENT] == 1.0
        np.testing.assert_allclose(weights[KEPT], _numpy(two.loss_weights), rtol=RTOL)
        _assert_absent_state_unchanged(before, _state(three))
    # Present again for two epochs, then absent: it keeps the weight it had, and
    # the present tasks share the rest of K in the 2-task proportions.
    three.update(np.array([0.5, 2.0, 0.4], dtype="float32"))
    three.update(np.array([0.3, 1.0, 0.35], dtype="float32"))
    kept = _numpy(three.loss_weights)[ABSENT]
    assert kept != pytest.approx(1.0)
    _restrict(three, two)
    losses = np.array([0.2, np.nan, 0.33], dtype="float32")
    three.update(losses)
    two.update(losses[KEPT])
    weights = _numpy(three.loss_weights)
    assert weights[ABSENT] == kept
    np.testing.assert_allclose(
        weights[KEPT], (3.0 - kept) / 2.0 * _numpy(two.loss_weights), rtol=RTOL
    )


# --- MGDA never stops training because a task is absent ---


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
@pytest.mark.parametrize("cls", [MGDA, MGDAUB])
def test_mgda_is_not_zero_when_a_task_is_absent(cls, normalization):
    strategy = cls(normalization=normalization)
    strategy.build((3,))
    jacobian = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 2.0, 0.0]])
    coefficients = _gram_step(strategy, jacobian, np.array([1.0, 0.0, 2.0]), PRESENT)
    assert coefficients[ABSENT] == 0.0
    assert np.all(coefficients[KEPT] > 0.0)
    assert np.linalg.norm(jacobian.T @ coefficients) > 0.1
    # Every task absent: nothing to do, and nothing non-finite.
    nothing = _gram_step(strategy, jacobian, np.zeros(3), np.zeros(3, dtype=bool))
    np.testing.assert_array_equal(nothing, np.zeros(3))


@pytest.mark.parametrize("num_tasks", [12])
def test_masked_iterative_solvers_for_many_tasks(num_tasks):
    # Beyond 10 tasks the simplex problems use FISTA: it must stay on the present tasks.
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(num_tasks, 30))
    present = np.ones(num_tasks, dtype=bool)
    present[[1, 4]] = False
    kept = np.flatnonzero(present)
    losses = rng.uniform(0.5, 2.0, size=num_tasks)
    for make in (lambda: MGDA(num_iterations=3000), lambda: CAGrad(num_iterations=3000)):
        many, few = make(), make()
        many.build((num_tasks,))
        few.build((len(kept),))
        coefficients = _gram_step(many, jacobian, losses, present)
        expected = _gram_step(few, jacobian[kept], losses[kept])
        np.testing.assert_array_equal(coefficients[~present], 0.0)
        direction = jacobian[kept].T @ coefficients[kept]
        reference = jacobian[kept].T @ expected
        assert np.linalg.norm(direction - reference) <= 1e-3 * np.linalg.norm(reference)


# --- Nash-MTL: the paper's direction at every gradient scale ---


@pytest.mark.parametrize("max_norm", [0.0, 1.0])
def test_nash_mtl_update_does_not_depend_on_the_gradient_scale(max_norm):
    rng = np.random.default_rng(3)
    jacobian = rng.normal(size=(3, 8))
    jacobian[1] *= 5.0
    updates = []
    for scale in (1.0, 0.1, 0.01):  # Gram matrices G, 0.01 G and 1e-4 G
        strategy = NashMTL(max_norm=max_norm)
        strategy.build((3,))
        scaled = scale * jacobian
        coefficients = _gram_step(strategy, scaled, np.ones(3))
        gram = scaled @ scaled.T
        if max_norm == 0.0:
            # (G G^T) a = 1 / a for the true Gram matrix, up to the relative ridge.
            np.testing.assert_allclose(gram @ coefficients, 1.0 / coefficients, rtol=1e-3)
            assert np.sqrt(coefficients @ gram @ coefficients) == pytest.approx(np.sqrt(3.0), 1e-3)
        updates.append(coefficients @ scaled)
    for update in updates[1:]:
        atol = 1e-4 * np.abs(updates[0]).max()
        np.testing.assert_allclose(update, updates[0], rtol=1e-4, atol=atol)


# --- Static arguments ---


BAD_ARGUMENTS = [
    (Fixed, "weights", lambda v: {"weights": [1.0, v]}, "weights[1]", True),
    (Uncertainty, "initial_log_variance", None, None, False),
    (LearnedSoftmax, "initial_stddev", None, None, True),
    (LearnedSoftmax, "entropy_weight", None, None, True),
    (DWA, "temperature", None, None, True),
    (DWA, "epsilon", None, None, True),
    (LossRatio, "temperature", None, None, True),
    (LossRatio, "epsilon", None, None, True),
    (GLS, "epsilon", None, None, True),
    (FAMO, "learning_rate", None, None, True),
    (FAMO, "weight_decay", None, None, True),
    (FAMO, "epsilon", None, None, True),
    (MGDA, "num_iterations", None, None, True),
    (MGDAUB, "num_iterations", None, None, True),
    (CAGrad, "c", None, None, True),
    (CAGrad, "rescale", None, None, True),
    (CAGrad, "num_iterations", None, None, True),
    (NashMTL, "update_weights_every", None, None, True),
    (NashMTL, "max_norm", None, None, True),
    (NashMTL, "reg_eps", None, None, True),
    (NashMTL, "num_iterations", None, None, True),
    (UPGrad, "pref_vector", lambda v: {"pref_vector": [0.5, v]}, "pref_vector[1]", True),
    (UPGrad, "norm_eps", None, None, True),
    (UPGrad, "reg_eps", None, None, True),
    (UPGrad, "num_iterations", None, None, True),
    (IMTLG, "rcond", None, None, True),
    (AlignedMTL, "preference_vector", lambda v: {"preference_vector": [v]}, None, True),
    (AlignedMTL, "rtol", None, None, True),
    (GradVac, "beta", None, None, True),
    (GradNorm, "alpha", None, None, True),
    (GradNorm, "learning_rate", None, None, True),
    (GradNorm, "min_weight", None, None, True),
    (DBMTL, "beta", None, None, True),
    (DBMTL, "beta_sigma", None, None, True),
    (DBMTL, "epsilon", None, None, True),
]
_SEEDED = [RLW, LearnedSoftmax, PCGrad, GradVac]


def _bad_cases():
    for cls, argument, make, shown, negative_invalid in BAD_ARGUMENTS:
        values = [float("nan"), float("inf"), "0.5", None]
        if negative_invalid:
            values.append(-1.0)
        for value in values:
            if value is None and (make is not None or argument == "rtol"):
                continue  # None means "default" for these arguments
            case_id = f"{cls.__name__}-{argument}-{value}"
            yield pytest.param(cls, argument, make, shown or argument, value, id=case_id)
    for cls in _SEEDED:
        for value in (float("nan"), "1", 1.5):
            yield pytest.param(cls, "seed", None, "seed", value, id=f"{cls.__name__}-seed-{value}")


@pytest.mark.parametrize("cls, argument, make, shown, value", list(_bad_cases()))
def test_bad_static_argument_raises_naming_strategy_argument_and_value(
    cls, argument, make, shown, value
):
    kwargs = make(value) if make is not None else {argument: value}
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert cls.__name__ in message
    assert shown in message
    assert repr(value) in message or str(value) in message


def test_good_static_arguments_are_accepted():
    Fixed([0.0, 2])
    Uncertainty(initial_log_variance=-1.5)
    RLW(seed=np.int64(3))
    CAGrad(c=0.0, rescale=0)
    NashMTL(max_norm=0.0, update_weights_every=2.0)
    assert NashMTL(update_weights_every=2.0).update_weights_every == 2


# --- One task: no softmax over an axis of size 1 (Keras warns; warnings are errors) ---


@pytest.mark.parametrize("name", ["dwa", "famo", "rlw", "learned_softmax", "loss_ratio", "gls"])
def test_one_task_loss_based_strategy_gives_weight_one_without_warnings(name):
    strategy = weighting.get(name)
    strategy.build((1,))
    for loss in (2.0, 1.0, 0.5):
        _, weights = strategy.combine(ops.convert_to_tensor([loss]))
        strategy.update(np.array([loss], dtype="float32"))
    if name == "gls":
        np.testing.assert_allclose(_numpy(weights), [1.0], rtol=1e-5)
    else:
        np.testing.assert_array_equal(_numpy(weights), [1.0])
