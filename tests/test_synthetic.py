"""The MMoE synthetic data generator (Ma et al., KDD 2018, Sec. 3.2)."""


import numpy as np
import pytest

from kerasmtl.data.synthetic import mmoe_synthetic

NUM_SAMPLES = 20_000


def _pearson(y, names=("task_1", "task_2")):
    return np.corrcoef(y[names[0]][:, 0], y[names[1]][:, 0])[0, 1]


@pytest.mark.parametrize("correlation", [-0.5, 0.0, 0.5, 0.9, 1.0])
def test_linear_part_correlation_matches_the_requested_one(correlation):
    # Without sinusoids y_i = w_i^T x + eps_i: corr = p c^2 / (c^2 + sigma^2) = p / 1.01.
    # Standard error of a Pearson estimate at n=20000 is <= 1/sqrt(n) ~ 0.007; tolerance 0.03.
    _, y = mmoe_synthetic(NUM_SAMPLES, correlation, num_sin=0, seed=3)
    assert abs(_pearson(y) - correlation / 1.01) < 0.03


def test_weight_vectors_have_the_requested_cosine():
    # Noise-free and sinusoid-free labels are the linear parts: recover w by least squares.
    x, y = mmoe_synthetic(500, 0.3, input_dim=10, num_sin=0, noise_stddev=0.0, c=2.0, seed=1)
    w1 = np.linalg.lstsq(x, y["task_1"][:, 0], rcond=None)[0]
    w2 = np.linalg.lstsq(x, y["task_2"][:, 0], rcond=None)[0]
    np.testing.assert_allclose(np.linalg.norm(w1), 2.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(w2), 2.0, atol=1e-4)
    np.testing.assert_allclose(w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2)), 0.3, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_correlation_increases_with_the_requested_one(seed):
    # With the sinusoids the label correlation is below p but monotone in p >= 0
    # (same x, u1, u2 and sinusoids for every p at one seed).
    correlations = [0.0, 0.5, 0.9, 1.0]
    measured = [_pearson(mmoe_synthetic(NUM_SAMPLES, p, seed=seed)[1]) for p in correlations]
    assert all(b > a for a, b in zip(measured, measured[1:])), measured
    assert abs(measured[0]) < 0.05
    # At p = 1 the tasks differ only by the N(0, 0.01) noise.
    assert measured[-1] > 0.95


def test_same_seed_shares_inputs_and_sinusoids_across_correlations():
    x_a, y_a = mmoe_synthetic(100, 0.2, input_dim=8, seed=5)
    x_b, y_b = mmoe_synthetic(100, 0.8, input_dim=8, seed=5)
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(y_a["task_1"], y_b["task_1"])
    assert not np.array_equal(y_a["task_2"], y_b["task_2"])


def test_given_sinusoid_parameters_and_task_names():
    x, y = mmoe_synthetic(
        50, 1.0, input_dim=4, alphas=np.zeros(3), betas=np.full(3, np.pi / 2), num_sin=3,
        noise_stddev=0.0, seed=0, task_names=("click", "like"),
    )
    assert x.dtype == np.float32 and sorted(y) == ["click", "like"]
    # sin(0 * z + pi/2) = 1 for each of the 3 sinusoids; p = 1 makes the tasks equal.
    np.testing.assert_allclose(y["click"], y["like"], atol=1e-6)
    linear = np.linalg.lstsq(x, y["click"][:, 0] - 3.0, rcond=None)[0]
    np.testing.assert_allclose(x @ linear + 3.0, y["click"][:, 0], atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0, "correlation": 0.5}, "num_samples"),
        ({"num_samples": 10, "correlation": 1.5}, "correlation"),
        ({"num_samples": 10, "correlation": 0.5, "input_dim": 1}, "input_dim"),
        ({"num_samples": 10, "correlation": 0.5, "alphas": [1.0]}, "alphas"),
        ({"num_samples": 10, "correlation": 0.5, "task_names": ("a",)}, "task_names"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mmoe_synthetic(**kwargs)
