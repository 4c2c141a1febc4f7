"""The synthetic click/conversion funnel (`kerasmtl.data.funnel`) and its ESMM benchmark."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasmtl.data.funnel import make_funnel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _reference(num_samples, seed, num_users=500, num_items=200, num_numeric=4, latent_dim=4,
               click_bias=-3.0, click_scale=1.5, conversion_bias=-1.0, conversion_scale=1.0,
               selection_bias=1.0, item_skew=1.0, shared_factor=0.0, main_effect=0.0):
    """The documented truth, re-derived in float64 from the documented draw order."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(num_users, latent_dim))
    v = rng.normal(size=(num_items, latent_dim))
    b = rng.normal(size=num_users)
    d = rng.normal(size=num_items)
    half = num_numeric // 2
    w_c = rng.normal(scale=1.0 / np.sqrt(half), size=half)
    w_v = rng.normal(scale=1.0 / np.sqrt(num_numeric - half), size=num_numeric - half)
    users = rng.integers(0, num_users, size=num_samples)
    popularity = np.arange(1, num_items + 1, dtype="float64") ** -item_skew
    items = rng.choice(num_items, size=num_samples, p=popularity / popularity.sum())
    x = rng.normal(size=(num_samples, num_numeric))
    a = (np.sqrt(1 - main_effect**2) * np.einsum("nk,nk->n", u[users], v[items])
         / np.sqrt(latent_dim) + main_effect * (u[users, 0] + v[items, 0]) / np.sqrt(2.0))
    s_c = (a + x[:, :half] @ w_c) / np.sqrt(2.0)
    s_v = (np.sqrt(1 - shared_factor**2) * (b[users] + d[items])
           + shared_factor * np.sqrt(2.0) * a + x[:, half:] @ w_v) / np.sqrt(3.0)
    ctr = _sigmoid(click_bias + click_scale * s_c)
    cvr = _sigmoid(conversion_bias + conversion_scale * s_v + selection_bias * s_c)
    click = rng.random(num_samples) < ctr
    potential = rng.random(num_samples) < cvr
    return users, items, x, ctr, cvr, click, potential


@pytest.mark.parametrize(
    "knobs",
    [
        {"selection_bias": 0.0},
        {"selection_bias": 1.5},
        {"shared_factor": 0.6, "main_effect": 0.5},
        {"shared_factor": -1.0, "main_effect": 1.0, "selection_bias": 0.0},
    ],
)
def test_make_funnel_matches_the_documented_truth(knobs):
    data = make_funnel(3000, seed=7, **knobs)
    users, items, x, ctr, cvr, click, potential = _reference(3000, seed=7, **knobs)
    assert data["click_bias"] == -3.0
    np.testing.assert_array_equal(data["x"]["user"][:, 0], users)
    np.testing.assert_array_equal(data["x"]["item"][:, 0], items)
    np.testing.assert_allclose(data["x"]["numeric"], x, rtol=1e-6)
    np.testing.assert_allclose(data["ctr"][:, 0], ctr, rtol=1e-12)
    np.testing.assert_allclose(data["cvr"][:, 0], cvr, rtol=1e-12)
    np.testing.assert_allclose(data["ctcvr"][:, 0], ctr * cvr, rtol=1e-12)
    np.testing.assert_array_equal(data["click"][:, 0], click)
    np.testing.assert_array_equal(data["potential_conversion"][:, 0], potential)
    np.testing.assert_array_equal(data["conversion"][:, 0], click & potential)


def test_make_funnel_shapes_dtypes_and_funnel_order():
    data = make_funnel(500, num_users=40, num_items=9, num_numeric=5, seed=0)
    assert data["x"]["user"].dtype == np.int32 and data["x"]["user"].shape == (500, 1)
    assert data["x"]["item"].dtype == np.int32 and data["x"]["item"].max() < 9
    assert data["x"]["numeric"].shape == (500, 5) and data["x"]["numeric"].dtype == np.float32
    assert data["features"] == {
        "user": ("categorical", 40), "item": ("categorical", 9), "numeric": ("numeric", 5)
    }
    for key in ("click", "conversion", "potential_conversion"):
        assert data[key].shape == (500, 1) and data[key].dtype == np.float32
        assert set(np.unique(data[key])) <= {0.0, 1.0}
    # A conversion only after a click.
    assert np.all(data["conversion"] <= data["click"])
    assert np.all((data["ctr"] > 0) & (data["ctr"] < 1) & (data["cvr"] > 0) & (data["cvr"] < 1))


def test_make_funnel_is_seeded():
    a, b, c = (make_funnel(200, seed=s) for s in (3, 3, 4))
    for key in ("click", "conversion", "cvr"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["cvr"], c["cvr"])


def test_selection_bias_controls_the_gap_between_clicked_and_all_impressions():
    gaps = []
    for selection_bias in (0.0, 1.0, 2.0):
        data = make_funnel(200_000, selection_bias=selection_bias, seed=1)
        clicked = data["click"][:, 0] == 1
        gaps.append(data["cvr"][clicked].mean() - data["cvr"].mean())
    # No selection bias: clicks select on features independent of conversion; the gap
    # is sampling noise (cvr in (0, 1), about 1e4 clicks: std < 0.005).
    assert abs(gaps[0]) < 0.01, gaps
    assert 0.05 < gaps[1] < gaps[2], gaps
    # The labels follow the probabilities (4 standard errors).
    data = make_funnel(200_000, seed=2)
    for rate, probability in (("click", "ctr"), ("potential_conversion", "cvr")):
        p = data[probability]
        assert abs(data[rate].mean() - p.mean()) < 4 * np.sqrt(np.mean(p * (1 - p)) / len(p))


def test_click_rate_solves_the_click_intercept():
    data = make_funnel(50_000, click_rate=0.03, shared_factor=0.5, seed=3)
    # The mean true CTR is the requested rate (bisection to 1e-10 on the intercept).
    np.testing.assert_allclose(data["ctr"].mean(), 0.03, atol=1e-8)
    # ... and the world and impressions are the same draws as with that intercept given.
    given = make_funnel(50_000, click_bias=data["click_bias"], shared_factor=0.5, seed=3)
    for key in ("ctr", "cvr", "click", "potential_conversion"):
        np.testing.assert_array_equal(data[key], given[key])
    assert data["click_bias"] < -3.0  # sparser than the default (about 9.5%)
    assert abs(data["click"].mean() - 0.03) < 4 * np.sqrt(0.03 * 0.97 / 50_000)


def test_shared_factor_correlates_the_click_and_conversion_id_effects():
    # corr(s_v's user/item part, affinity) == rho: recover both from the logits (less
    # their numeric parts) and check the empirical correlation (a finite world of 500
    # users and 200 items: a sampling error of a few hundredths).
    for rho in (0.0, 0.5, 1.0):
        users, items, x, ctr, cvr, *_ = _reference(
            100_000, seed=5, shared_factor=rho, main_effect=0.5, selection_bias=0.0,
            item_skew=0.0)
        # Logits: click = -3 + 1.5 s_c, conversion = -1 + s_v (selection bias 0).
        s_c = (np.log(ctr / (1 - ctr)) + 3.0) / 1.5
        s_v = np.log(cvr / (1 - cvr)) + 1.0
        data = make_funnel(100_000, shared_factor=rho, main_effect=0.5, selection_bias=0.0,
                           item_skew=0.0, seed=5)
        np.testing.assert_allclose(data["cvr"][:, 0], cvr, rtol=1e-12)
        rng = np.random.default_rng(5)
        for size in ((500, 4), (200, 4), 500, 200):  # U, V, b, d
            rng.normal(size=size)
        w_c, w_v = rng.normal(scale=np.sqrt(0.5), size=2), rng.normal(scale=np.sqrt(0.5), size=2)
        affinity = np.sqrt(2.0) * s_c - x[:, :2] @ w_c
        id_part = np.sqrt(3.0) * s_v - x[:, 2:] @ w_v
        assert abs(np.corrcoef(affinity, id_part)[0, 1] - rho) < 0.05, rho
    # Shared factors make a clicked impression's conversion more predictable from clicks.
    rates = []
    for rho in (0.0, 1.0):
        data = make_funnel(100_000, shared_factor=rho, main_effect=1.0, selection_bias=0.0,
                           seed=6)
        clicked = data["click"][:, 0] == 1
        rates.append(data["cvr"][clicked].mean() - data["cvr"].mean())
    # rho = 0: only the finite world's chance correlation of U, V with b, d (500 users,
    # 200 items: about 1/sqrt(500)) links them; rho = 1: clicks select converters.
    assert abs(rates[0]) < 0.03 and rates[1] > 0.08, rates


def test_main_effect_gives_each_user_and_item_an_additive_effect():
    # At main_effect 1 the affinity is U[user, 0] + V[item, 0] over sqrt(2): the CTR
    # logit is additive in user and item (an interaction contrast is zero).
    data = make_funnel(20_000, num_users=3, num_items=3, main_effect=1.0, num_numeric=2,
                       seed=0)
    rng = np.random.default_rng(0)
    rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    rng.normal(size=3), rng.normal(size=3)
    w_c = rng.normal(size=1)
    users, items = data["x"]["user"][:, 0], data["x"]["item"][:, 0]
    logit = np.log(data["ctr"][:, 0] / (1 - data["ctr"][:, 0]))
    affinity = (logit + 3.0) / 1.5 * np.sqrt(2.0) - data["x"]["numeric"][:, 0] * w_c[0]
    cell = np.full((3, 3), np.nan)
    for i in range(3):
        for j in range(3):
            cell[i, j] = affinity[(users == i) & (items == j)].mean()
    contrast = cell[0, 0] - cell[0, 1] - cell[1, 0] + cell[1, 1]
    assert abs(contrast) < 1e-4, cell


def test_item_skew_makes_popular_items():
    skewed = make_funnel(20_000, num_items=50, item_skew=1.0, seed=0)["x"]["item"][:, 0]
    uniform = make_funnel(20_000, num_items=50, item_skew=0.0, seed=0)["x"]["item"][:, 0]
    counts = np.bincount(skewed, minlength=50)
    # Zipf with exponent 1 over 50 items: item 0 gets 1 / H_50 = 22.2% of impressions.
    harmonic = np.sum(1.0 / np.arange(1, 51))
    assert abs(counts[0] / 20_000 - 1.0 / harmonic) < 0.01
    assert abs(np.bincount(uniform, minlength=50)[0] / 20_000 - 0.02) < 0.005


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "`num_samples` must be a positive integer"),
        ({"num_numeric": 1}, "`num_numeric` must be at least 2"),
        ({"num_users": 2.5}, "`num_users` must be a positive integer"),
        ({"selection_bias": float("nan")}, "`selection_bias` must be a finite number"),
        ({"click_bias": "high"}, "`click_bias` must be a finite number"),
        ({"item_skew": -1.0}, "`item_skew` must be >= 0"),
        ({"click_rate": 1.0}, "`click_rate` must be in \\(0, 1\\)"),
        ({"click_rate": 0.02, "click_bias": -3.0}, "at most one of `click_bias` and `click_rate`"),
        ({"shared_factor": 1.5}, "`shared_factor` must be in \\[-1, 1\\]"),
        ({"main_effect": -0.1}, "`main_effect` must be in \\[0, 1\\]"),
    ],
)
def test_make_funnel_rejects_bad_arguments(kwargs, match):
    arguments = {"num_samples": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_funnel(**arguments)


def _benchmark_module():
    path = os.path.join(ROOT, "benchmarks", "funnel_esmm.py")
    spec = importlib.util.spec_from_file_location("funnel_esmm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_auc_matches_the_pairwise_definition():
    auc = _benchmark_module().auc
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300), 1)  # many ties
    positives, negatives = scores[labels], scores[~labels]
    pairs = positives[:, None] - negatives[None, :]
    expected = (np.sum(pairs > 0) + 0.5 * np.sum(pairs == 0)) / pairs.size
    np.testing.assert_allclose(auc(labels, scores), expected, rtol=1e-12)
    assert auc(labels, labels.astype(float)) == 1.0
    assert np.isnan(auc(np.zeros(5), np.arange(5)))


def test_benchmark_runs_with_a_tiny_budget():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "funnel_esmm.py"), "--seeds", "0", "1",
         "--num-train", "2000", "--num-test", "2000", "--epochs", "1",
         "--early-stopping", "naive", "--max-epochs", "2",
         "--click-rate", "0.1", "--shared-factor", "0.8", "--main-effect", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows]
    assert names[1:] == ["naive", "esmm", "aitm", "true CVR (ceiling)"], result.stdout
    for row in rows[1:4]:
        mean = float(row.split("|")[2].split("+-")[0])
        assert 0.0 <= mean <= 1.0, row
