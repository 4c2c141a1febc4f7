"""ESMM and AITM: NumPy references of their losses and layers, `.keras` round trips, serving."""

import keras
import numpy as np
import pytest

from kerasmtl.data.funnel import make_funnel
from kerasmtl.export import export_for_serving, verify_export
from kerasmtl.models.aitm import (
    AITM,
    AdaptiveInformationTransfer,
    BehavioralExpectationCalibrator,
)
from kerasmtl.models.esmm import ESMM
from kerasmtl.testing import run_layer_test, run_model_test
from kerasmtl.testing.gradients import value_and_gradients

pytestmark = pytest.mark.backend_neutral

FEATURES = {
    "user": ("categorical", 30),
    "item": ("categorical", 12, 3),
    "numeric": ("numeric", 2),
}
# Keras clips probabilities to [eps, 1 - eps] in binary cross-entropy.
EPSILON = 1e-7


def _bce(labels, probabilities):
    p = np.clip(np.asarray(probabilities, "float64"), EPSILON, 1.0 - EPSILON)
    y = np.asarray(labels, "float64")
    return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def _funnel(num_samples=96, seed=0, no_click=False):
    rng = np.random.default_rng(seed)
    x = {
        "user": rng.integers(0, 30, (num_samples, 1)).astype("int32"),
        "item": rng.integers(0, 12, (num_samples, 1)).astype("int32"),
        "numeric": rng.normal(size=(num_samples, 2)).astype("float32"),
    }
    click = (rng.random((num_samples, 1)) < 0.4).astype("float32")
    if no_click:
        click[:] = 0.0
    conversion = click * (rng.random((num_samples, 1)) < 0.5)
    return x, click, conversion.astype("float32")


def _numpy(predictions):
    return {key: keras.ops.convert_to_numpy(value).astype("float64")
            for key, value in predictions.items()}


# === ESMM ===


def _esmm(**kwargs):
    keras.utils.set_random_seed(1)
    return ESMM(FEATURES, tower_units=(8, 4), embedding_dim=4, **kwargs)


def test_esmm_ctcvr_is_the_product_and_outputs_are_probabilities():
    model = _esmm()
    x, _, _ = _funnel()
    predictions = _numpy(model.predict(x, verbose=0))
    assert sorted(predictions) == ["ctcvr", "ctr", "cvr"]
    np.testing.assert_allclose(
        predictions["ctcvr"], predictions["ctr"] * predictions["cvr"], rtol=1e-6, atol=0
    )
    for value in predictions.values():
        assert value.shape == (96, 1) and np.all((value > 0) & (value < 1))
    assert [task.loss_weight for task in model.tasks] == [1.0, 0.0, 1.0]
    assert model.representation == "features"


@pytest.mark.parametrize("no_click", [False, True], ids=["clicks", "no_click_in_batch"])
def test_esmm_loss_is_ctr_plus_ctcvr_over_all_impressions(no_click):
    # The paper's objective: BCE(click, pCTR) + BCE(click * conversion, pCTCVR), both
    # means over every impression; `cvr` (weight 0) logs BCE on clicked impressions.
    model = _esmm()
    model.compile(optimizer="sgd")
    x, click, conversion = _funnel(no_click=no_click)
    y = model.funnel_labels(click, conversion)
    logs = model.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    p = _numpy(model.predict(x, verbose=0))
    ctr_loss = _bce(click, p["ctr"]).mean()
    ctcvr_loss = _bce(click * conversion, p["ctcvr"]).mean()
    np.testing.assert_allclose(logs["ctr_loss"], ctr_loss, rtol=2e-5)
    np.testing.assert_allclose(logs["ctcvr_loss"], ctcvr_loss, rtol=2e-5)
    np.testing.assert_allclose(logs["loss"], ctr_loss + ctcvr_loss, rtol=2e-5)
    clicked = click[:, 0] == 1
    if no_click:
        # The CVR task is absent from the batch: NaN in the logs, nothing in the loss.
        assert np.isnan(logs["cvr_loss"])
    else:
        expected = _bce(conversion[clicked], p["cvr"][clicked]).mean()
        np.testing.assert_allclose(logs["cvr_loss"], expected, rtol=2e-5)


def test_esmm_cvr_labels_do_not_change_training():
    # Weight 0: the masked CVR labels are logged, never trained on (the paper's loss).
    x, click, conversion = _funnel()
    weights = []
    for flip in (False, True):
        model = _esmm()
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        y = model.funnel_labels(click, conversion)
        if flip:
            clicked = y["cvr"] != -1.0
            y["cvr"] = np.where(clicked, 1.0 - y["cvr"], y["cvr"]).astype("float32")
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        weights.append([keras.ops.convert_to_numpy(w) for w in model.weights])
    changed = False
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    model = _esmm()
    for a, b in zip(weights[0], model.get_weights()):
        changed = changed or not np.array_equal(a, b)
    assert changed, "one epoch of SGD left every weight unchanged"


def test_esmm_funnel_labels():
    model = _esmm()
    click = np.array([1, 0, 1, 0], "float32")
    conversion = np.array([1, 1, 0, np.nan], "float32")  # ignored where not clicked
    y = model.funnel_labels(click, conversion)
    np.testing.assert_array_equal(y["ctr"][:, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(y["ctcvr"][:, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(y["cvr"][:, 0], [1, -1, 0, -1])
    with pytest.raises(ValueError, match="`click` must hold 0 or 1"):
        model.funnel_labels(np.array([2.0, 0.0]), np.zeros(2))
    with pytest.raises(ValueError, match="wherever `click` is 1"):
        model.funnel_labels(np.ones(2), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="same number of impressions"):
        model.funnel_labels(np.ones(2), np.ones(3))


def test_esmm_round_trips_through_keras_file(tmp_path):
    model = _esmm(dropout=0.1, task_names=("click", "conversion", "click_conversion"))
    model.compile(optimizer="adam", metrics={"click": [keras.metrics.AUC(name="auc")]})
    x, click, conversion = _funnel()
    y = model.funnel_labels(click, conversion)
    assert sorted(y) == ["click", "click_conversion", "conversion"]
    loaded = run_model_test(model, x, y, tmp_path=tmp_path)
    assert loaded.get_config() == model.get_config()
    assert loaded.get_config()["features"] == {
        "user": ["categorical", 30], "item": ["categorical", 12, 3], "numeric": ["numeric", 2]
    }
    assert [t.loss_weight for t in loaded.tasks] == [1.0, 0.0, 1.0]
    assert loaded.tasks[1].mask_value == -1.0
    # The compiled state comes back too: training continues.
    history = loaded.fit(x, y, batch_size=96, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"features": {"user": ("categorical", 0)}}, "Input 'user' has an unknown"),
        ({"features": {"user": ("embedding", 5)}}, "Input 'user' has an unknown"),
        ({"features": {}}, "non-empty dict"),
        ({"features": {"user": (3,)}}, "Input 'user' has an unknown"),
        ({"task_names": ("a", "b")}, "tuple of 3 strings"),
        ({"task_names": ("a", "a", "b")}, "distinct"),
        ({"mask_value": 0}, "cannot be a label value"),
        ({"tower_units": ()}, "non-empty tuple"),
    ],
)
def test_esmm_rejects_bad_arguments(kwargs, match):
    arguments = {"features": FEATURES, **kwargs}
    with pytest.raises(ValueError, match=match):
        ESMM(**arguments)


# === AITM layers ===


def _ait_reference(layer, previous, current):
    """AIT in float64 from the layer's weights (Xi et al., KDD 2021, Eq. 2-4)."""
    info_kernel, info_bias = (np.asarray(w, "float64") for w in layer.info.get_weights())
    transferred = np.maximum(previous @ info_kernel + info_bias, 0.0)
    candidates = np.stack([transferred, current], axis=1)
    value, query, key = (np.asarray(dense.get_weights()[0], "float64")
                         for dense in (layer.value, layer.query, layer.key))
    scores = np.sum((candidates @ query) * (candidates @ key), axis=-1)
    scores = scores / np.sqrt(current.shape[-1])
    scores = scores - scores.max(axis=1, keepdims=True)
    weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return np.sum(weights[..., None] * (candidates @ value), axis=1), weights


def test_adaptive_information_transfer_contract(tmp_path):
    rng = np.random.default_rng(0)
    run_layer_test(
        AdaptiveInformationTransfer,
        init_kwargs={"dropout": 0.2},
        input_data={
            "previous": rng.normal(size=(4, 6)).astype("float32"),
            "current": rng.normal(size=(4, 8)).astype("float32"),
        },
        expected_output_shape=(4, 8),
        expected_num_trainable_weights=5,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("case", ["random", "norm_gap_100x", "zero_current", "zero_previous"])
def test_adaptive_information_transfer_matches_numpy(case):
    rng = np.random.default_rng(3)
    previous = rng.normal(size=(16, 6))
    current = rng.normal(size=(16, 8))
    if case == "norm_gap_100x":
        previous = 100.0 * previous
    elif case == "zero_current":
        current = np.zeros_like(current)
    elif case == "zero_previous":
        previous = np.zeros_like(previous)
    keras.utils.set_random_seed(0)
    layer = AdaptiveInformationTransfer()
    outputs, weights = layer(
        previous.astype("float32"), current.astype("float32"), return_attention_scores=True
    )
    expected, expected_weights = _ait_reference(layer, previous, current)
    outputs = keras.ops.convert_to_numpy(outputs)
    weights = keras.ops.convert_to_numpy(weights)
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-4, atol=1e-5)
    # Invariant: the two attention weights are a distribution per sample.
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert np.all((weights >= 0) & (weights <= 1))


def test_calibrator_contract(tmp_path):
    rng = np.random.default_rng(0)
    run_layer_test(
        BehavioralExpectationCalibrator,
        init_kwargs={"alpha": 0.6},
        input_data={
            "previous": rng.random((4, 1)).astype("float32"),
            "current": rng.random((4, 1)).astype("float32"),
        },
        expected_output_shape=(4, 1),
        expected_num_trainable_weights=0,
        run_fit=False,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize(
    "case", ["all_violate", "none_violate", "equal", "mixed", "alpha_zero"]
)
def test_calibrator_penalty_and_gradient_match_numpy(case):
    rng = np.random.default_rng(1)
    previous = rng.random((10, 1))
    current = {
        "all_violate": previous + 0.1 + rng.random((10, 1)) * 0.1,
        "none_violate": previous * 0.5,
        "equal": previous.copy(),
        "mixed": rng.random((10, 1)),
        "alpha_zero": rng.random((10, 1)),
    }[case]
    alpha = 0.0 if case == "alpha_zero" else 0.6
    layer = BehavioralExpectationCalibrator(alpha=alpha)

    def penalty(stacked):
        # A loss-collecting scope, as Keras's JAX trainer uses (the gradient helper runs
        # `penalty` in a StatelessScope on JAX, where `layer.losses` would be empty).
        with keras.StatelessScope(collect_losses=True) as scope:
            returned = layer(stacked[:, :1], stacked[:, 1:])
        (loss,) = scope.losses
        return loss, returned

    stacked = np.concatenate([previous, current], axis=1)
    value, returned, gradient, _ = value_and_gradients(penalty, stacked)
    excess = current - previous
    np.testing.assert_allclose(value, alpha * np.maximum(excess, 0.0).mean(), rtol=1e-5,
                               atol=1e-7)
    # The layer returns the current step's probabilities unchanged.
    np.testing.assert_array_equal(returned, stacked[:, 1:].astype("float32"))
    # d/d current = alpha / N where current > previous, and the opposite for previous.
    violated = (excess > 0).astype("float64")
    np.testing.assert_allclose(gradient[:, 1:], alpha * violated / 10, atol=1e-7)
    np.testing.assert_allclose(gradient[:, :1], -alpha * violated / 10, atol=1e-7)
    if case in ("none_violate", "equal", "alpha_zero"):
        assert value == 0.0


def test_calibrator_rejects_a_bad_alpha():
    for alpha in (-0.1, float("nan"), "0.6", True):
        with pytest.raises(ValueError, match="`alpha` must be a finite number >= 0"):
            BehavioralExpectationCalibrator(alpha=alpha)


# === AITM ===


def _aitm(**kwargs):
    keras.utils.set_random_seed(2)
    arguments = {"task_names": ("click", "purchase"), "tower_units": (8, 4),
                 "embedding_dim": 4, **kwargs}
    return AITM(FEATURES, **arguments)


def _aitm_loss(y, p, names, alpha):
    ce = sum(_bce(y[name], p[name]).mean() for name in names)
    penalty = sum(
        np.maximum(p[names[t]] - p[names[t - 1]], 0.0).mean() for t in range(1, len(names))
    )
    return ce, alpha * penalty


@pytest.mark.parametrize("steps", [2, 3])
def test_aitm_loss_is_cross_entropy_over_all_impressions_plus_calibrator(steps):
    names = ("click", "purchase", "repurchase")[:steps]
    model = _aitm(task_names=names, alpha=5.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, click, conversion = _funnel()
    y = model.funnel_labels(click, *[conversion] * (steps - 1))
    # Labels over all impressions: 0 (not masked) where the previous step was missed.
    assert all(task.mask_value is None for task in model.tasks)
    np.testing.assert_array_equal(y[names[-1]], click * conversion)
    p = _numpy(model.predict(x, verbose=0))
    ce, penalty = _aitm_loss(y, p, names, alpha=5.0)
    assert penalty > 1e-3, "the untrained model should violate p_t <= p_(t-1) somewhere"
    logs = model.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], ce + penalty, rtol=2e-5)
    for name in names:
        np.testing.assert_allclose(logs[f"{name}_loss"], _bce(y[name], p[name]).mean(),
                                   rtol=2e-5)
    # The training step's loss (before its update) holds the penalty too, on every backend.
    history = model.fit(x, y, batch_size=96, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], ce + penalty, rtol=2e-5)


def test_aitm_calibrator_lowers_violations():
    x, click, conversion = _funnel(num_samples=256)
    violations = []
    for alpha in (0.0, 100.0):
        model = _aitm(alpha=alpha)
        # Start far from the funnel's order: p(purchase) > p(click) on every impression.
        model.get_layer("click").bias.assign(np.array([-3.0], "float32"))
        model.get_layer("purchase_head").bias.assign(np.array([3.0], "float32"))
        model.compile(optimizer=keras.optimizers.SGD(0.2))
        model.fit(x, model.funnel_labels(click, conversion), batch_size=64, epochs=1,
                  verbose=0, shuffle=False)
        p = _numpy(model.predict(x, verbose=0))
        violations.append(np.maximum(p["purchase"] - p["click"], 0.0).mean())
    # Same start, same data: only the calibrator's term differs.
    assert violations[0] > 0.1 and violations[1] < 0.5 * violations[0], violations


def test_aitm_funnel_labels():
    model = _aitm()
    click = np.array([1, 0, 1, 0], "float32")
    purchase = np.array([1, -1, 0, np.nan], "float32")
    y = model.funnel_labels(click, purchase)
    np.testing.assert_array_equal(y["purchase"][:, 0], [1, 0, 0, 0])
    with pytest.raises(ValueError, match="one label array per funnel step"):
        model.funnel_labels(click)
    with pytest.raises(ValueError, match="must be 0 or 1 wherever the previous"):
        model.funnel_labels(click, np.array([0.5, 0, 0, 0]))


def test_aitm_round_trips_through_keras_file(tmp_path):
    model = _aitm(task_names=("click", "cart", "purchase"), dropout=0.1, alpha=0.3)
    model.compile(optimizer="adam")
    x, click, conversion = _funnel()
    y = model.funnel_labels(click, conversion, conversion)
    loaded = run_model_test(model, x, y, tmp_path=tmp_path)
    assert loaded.get_config() == model.get_config()
    assert loaded.get_layer("cart_transfer").dropout == 0.1
    assert loaded.get_layer("purchase").alpha == 0.3
    history = loaded.fit(x, y, batch_size=96, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task_names": ("click",)}, "at least two steps"),
        ({"task_names": ("click", "click")}, "distinct"),
        ({"task_names": "click"}, "tuple of strings"),
        ({"alpha": -1.0}, "`alpha` must be a finite number"),
        ({"features": ["user"]}, "non-empty dict"),
    ],
)
def test_aitm_rejects_bad_arguments(kwargs, match):
    arguments = {"features": FEATURES, **kwargs}
    with pytest.raises(ValueError, match=match):
        AITM(**arguments)


def test_models_train_on_the_funnel_generator():
    data = make_funnel(2000, num_users=50, num_items=20, seed=0)
    for model in (ESMM(data["features"], tower_units=(8,)),
                  AITM(data["features"], tower_units=(8,))):
        model.compile(optimizer="adam")
        history = model.fit(
            data["x"], model.funnel_labels(data["click"], data["conversion"]),
            batch_size=256, epochs=2, verbose=0,
        )
        losses = history.history["loss"]
        assert np.all(np.isfinite(losses)) and losses[1] < losses[0]


@pytest.mark.parametrize("gradients", ["parameters", "representation"])
@pytest.mark.parametrize("name", ["esmm", "aitm"])
def test_trains_with_a_gradient_based_strategy(name, gradients):
    # The shared embeddings' concatenation ("features") is the representation.
    model = _esmm() if name == "esmm" else _aitm()
    assert model.representation == "features"
    model.compile(optimizer=keras.optimizers.SGD(0.1), weighting="pcgrad", gradients=gradients)
    x, click, conversion = _funnel()
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, model.funnel_labels(click, conversion), batch_size=32, epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    # Every tower, head and the embeddings move (the CVR tower through CTCVR's gradient).
    for weight, old, new in zip(model.trainable_weights, before, after):
        assert not np.array_equal(old, new), weight.path


# === Serving ===


@pytest.mark.backend_only(
    "tensorflow",
    reason="the export runs in a TensorFlow child process on the other backends; one backend "
    "is enough to check these graphs export and verify",
)
@pytest.mark.parametrize("name", ["esmm", "aitm"])
def test_exports_for_serving_and_verifies(name, tmp_path):
    x, click, conversion = _funnel()
    model = _esmm() if name == "esmm" else _aitm()
    model.compile(optimizer="adam")
    model.fit(x, model.funnel_labels(click, conversion), batch_size=32, epochs=1, verbose=0)
    path = export_for_serving(model, tmp_path, name=name)
    report = verify_export(path, model, x)
    assert report["passed"]
    assert report["outputs"] == sorted(model.task_names)
    assert report["python_ops"] == []
    assert set(report["inputs"]) == {"user", "item", "numeric"}
