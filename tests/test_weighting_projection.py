"""PCGrad, GradVac, IMTL-G, Aligned-MTL, DB-MTL and GradNorm against NumPy references.

Every reference below works in float64 on explicit gradient vectors (the rows of
a `(K, D)` matrix `J`), written from the papers, never from the Gram-matrix
code it checks. A strategy only sees the float32 Gram matrix `J J^T` and returns
coefficients `a`; we compare the update direction `J^T a` (in float64) with the
reference direction. Errors are measured relative to the gradient scale:
`||d - d_ref|| <= rtol * max(||d_ref||, max_k ||g_k||)`.
"""

import itertools
import os

import keras
import numpy as np
import pytest

try:  # tf.function where the backend is TensorFlow
    import tensorflow as tf
except ImportError:
    tf = None

from kerasmtl import weighting
from kerasmtl.weighting import (
    DBMTL,
    IMTLG,
    AlignedMTL,
    GradNorm,
    GradVac,
    PCGrad,
)

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral

CLOSED_FORM_RTOL = 1e-4
STATEFUL_RTOL = 2e-3
FLOAT32_EPS = float(np.finfo(np.float32).eps)
# Set KERASMTL_REPORT_ERRORS=1 (with `pytest -s`) to print every measured error.
_REPORT = bool(os.environ.get("KERASMTL_REPORT_ERRORS"))


# --------------------------------------------------------------------------- #
# Hard gradient matrices.
# --------------------------------------------------------------------------- #


def _unit(rng, dim):
    vector = rng.normal(size=dim)
    return vector / np.linalg.norm(vector)


def _hard_cases():
    """`name -> J` (K x D, float64): the inputs every strategy is checked on."""
    rng = np.random.default_rng(20240611)
    cases = {}
    g = rng.normal(size=12)
    cases["conflicting_k2"] = np.stack([g, -0.7 * g + 1e-2 * rng.normal(size=12)])
    base = rng.normal(size=10)
    cases["conflicting_k3"] = np.stack(
        [base, -1.3 * base + 2e-2 * rng.normal(size=10), rng.normal(size=10)]
    )
    cases["conflicting_k5"] = np.stack(
        [
            base,
            -base + 1e-2 * rng.normal(size=10),
            0.5 * base + rng.normal(size=10),
            -0.8 * base + 0.3 * rng.normal(size=10),
            rng.normal(size=10),
        ]
    )
    scaled = rng.normal(size=(3, 9))
    scaled[0] *= 100.0
    cases["scale_100x_k3"] = scaled
    scaled5 = rng.normal(size=(5, 9))
    scaled5[2] *= 100.0
    cases["scale_100x_k5"] = scaled5
    zero = rng.normal(size=(3, 8))
    zero[1] = 0.0
    cases["zero_k3"] = zero
    cases["rank_deficient_k3_in_2d"] = rng.normal(size=(3, 2))
    duplicated = rng.normal(size=(3, 7))
    duplicated[2] = duplicated[1]
    cases["duplicates_k3"] = duplicated
    aligned = _unit(rng, 10)
    cases["nearly_aligned_k5"] = np.stack(
        [(1.0 + 0.2 * k) * (aligned + 0.05 * _unit(rng, 10)) for k in range(5)]
    )
    cases["random_k2"] = rng.normal(size=(2, 6))
    cases["random_k5"] = rng.normal(size=(5, 8))
    return cases


HARD_CASES = _hard_cases()
CASE_NAMES = sorted(HARD_CASES)


def _gram(jacobian):
    return (jacobian @ jacobian.T).astype("float32")


def _weights(strategy, jacobian, losses=None):
    """Builds if needed, returns the float64 coefficients for `J`."""
    num_tasks = jacobian.shape[0]
    if not strategy.built:
        strategy.build((num_tasks,))
    if losses is None:
        losses = np.ones(num_tasks)
    result = strategy.compute_weights_from_gram(
        keras.ops.convert_to_tensor(_gram(jacobian)),
        keras.ops.convert_to_tensor(np.asarray(losses, dtype="float32")),
    )
    result = keras.ops.convert_to_numpy(result).astype("float64")
    assert result.shape == (num_tasks,)
    assert np.all(np.isfinite(result)), result
    return result


def _direction_error(direction, reference, jacobian):
    scale = max(np.linalg.norm(reference), np.linalg.norm(jacobian, axis=1).max(), 1e-300)
    return np.linalg.norm(direction - reference) / scale


def _assert_direction(weights, reference, jacobian, rtol, label=""):
    error = _direction_error(jacobian.T @ weights, reference, jacobian)
    if _REPORT:
        print(f"\n[error] {label}: {error:.3e}")
    assert error <= rtol, f"{label}: relative direction error {error:.3e} > {rtol:.1e}"
    return error


# --------------------------------------------------------------------------- #
# NumPy references (float64, on the gradient vectors).
# --------------------------------------------------------------------------- #


def _index_orders(num_tasks):
    return [[j for j in range(num_tasks) if j != i] for i in range(num_tasks)]


def pcgrad_reference(jacobian, orders, reduction="sum"):
    """Yu et al. 2020, Algorithm 1: project each g_i on the normal plane of conflicting g_j."""
    projected = jacobian.copy()
    for i, order in enumerate(orders):
        for j in order:
            inner = projected[i] @ jacobian[j]
            squared = jacobian[j] @ jacobian[j]
            if inner < 0.0 and squared > 0.0:
                projected[i] = projected[i] - inner / squared * jacobian[j]
    total = projected.sum(axis=0)
    return (total / len(orders) if reduction == "mean" else total), projected


def gradvac_reference(jacobian, targets, beta, orders, max_target=1.0 - 1e-4):
    """Wang et al. 2021, Algorithm 1 (one group: the whole vector)."""
    targets = targets.copy()
    projected = jacobian.copy()
    norms = np.linalg.norm(jacobian, axis=1)
    for i, order in enumerate(orders):
        for j in order:
            current = np.linalg.norm(projected[i])
            if current == 0.0 or norms[j] == 0.0:
                continue
            cosine = np.clip(projected[i] @ jacobian[j] / (current * norms[j]), -1.0, 1.0)
            target = np.clip(targets[i, j], -max_target, max_target)
            if cosine < target:
                target_sine = np.sqrt(1.0 - target**2)
                step = (
                    current
                    * (target * np.sqrt(1.0 - cosine**2) - cosine * target_sine)
                    / (norms[j] * target_sine)
                )
                projected[i] = projected[i] + step * jacobian[j]
            targets[i, j] = (1.0 - beta) * targets[i, j] + beta * cosine
    return projected.sum(axis=0), targets


def imtlg_reference(jacobian):
    """Liu et al. 2021, IMTL-G: `a_{2:K} = g_1 U^T (D U^T)^+`, zero gradients left out."""
    num_tasks = jacobian.shape[0]
    norms = np.linalg.norm(jacobian, axis=1)
    present = norms > 0.0
    weights = np.zeros(num_tasks)
    if not present.any():
        return np.zeros(jacobian.shape[1]), np.full(num_tasks, 1.0 / num_tasks)
    grads = jacobian[present]
    units = grads / norms[present, None]
    if len(grads) == 1:
        alpha = np.ones(1)
    else:
        differences = grads[0] - grads[1:]
        unit_differences = units[0] - units[1:]
        rest = grads[0] @ unit_differences.T @ np.linalg.pinv(differences @ unit_differences.T)
        alpha = np.concatenate([[1.0 - rest.sum()], rest])
    weights[present] = alpha
    return jacobian.T @ weights, weights


def aligned_mtl_reference(jacobian, rtol=None, scale_mode="min", preferences=None):
    """Senushkin et al. 2023 from the SVD `J = U S W^T`: `d = sqrt(scale) W_r U_r^T w`."""
    num_tasks = jacobian.shape[0]
    left, singular_values, right_t = np.linalg.svd(jacobian, full_matrices=False)
    eigenvalues = singular_values**2
    tolerance = (num_tasks * FLOAT32_EPS if rtol is None else rtol) * eigenvalues.max()
    keep = eigenvalues > tolerance
    if not keep.any():
        return np.zeros(jacobian.shape[1])
    kept = np.sort(eigenvalues[keep])
    if scale_mode == "min":
        scale = kept[0]
    elif scale_mode == "median":
        scale = kept[(len(kept) - 1) // 2]
    else:
        scale = kept.mean()
    preferences = np.ones(num_tasks) if preferences is None else np.asarray(preferences)
    return np.sqrt(scale) * right_t[keep].T @ (left[:, keep].T @ preferences)


def dbmtl_libmtl_reference(jacobians, losses, beta, beta_sigma, epsilon=1e-8):
    """LibMTL's DB_MTL on vectors: EMA of the log-loss gradient vectors, scaled to the max norm."""
    buffer = np.zeros_like(jacobians[0])
    directions = []
    for step, (jacobian, loss) in enumerate(zip(jacobians, losses), start=1):
        log_grads = jacobian / (loss + epsilon)[:, None]
        decay = beta / step**beta_sigma
        buffer = log_grads + decay * (buffer - log_grads)
        norms = np.linalg.norm(buffer, axis=1)
        directions.append(((norms.max() / norms)[:, None] * buffer).sum(axis=0))
    return directions


def dbmtl_norm_reference(jacobians, losses, beta, beta_sigma, epsilon=1e-8):
    """Our documented variant: EMA of the norms, current directions rescaled to the max EMA norm."""
    averages = np.zeros(jacobians[0].shape[0])
    directions = []
    for step, (jacobian, loss) in enumerate(zip(jacobians, losses), start=1):
        log_grads = jacobian / (np.abs(loss) + epsilon)[:, None]
        norms = np.linalg.norm(log_grads, axis=1)
        decay = beta / step**beta_sigma
        averages = decay * averages + (1.0 - decay) * norms
        present = norms > 0.0
        factors = np.where(present, averages.max() / np.where(present, norms, 1.0), 0.0)
        directions.append(factors[:, None] * log_grads)
    return [d.sum(axis=0) for d in directions], averages


def gradnorm_reference(jacobians, losses, alpha, learning_rate, min_weight=1e-4):
    """Chen et al. 2018, Algorithm 1, with the analytic gradient of the L1 GradNorm loss."""
    num_tasks = jacobians[0].shape[0]
    weights = np.ones(num_tasks)
    initial = None
    used = []
    for jacobian, loss in zip(jacobians, losses):
        if initial is None:
            initial = loss.copy()
        norms = np.linalg.norm(jacobian, axis=1)
        weighted = weights * norms
        ratios = loss / initial
        target = weighted.mean() * (ratios / ratios.mean()) ** alpha
        used.append(weights.copy())
        weights = np.maximum(
            weights - learning_rate * np.sign(weighted - target) * norms, min_weight
        )
        weights = num_tasks * weights / weights.sum()
    return used, weights


# --------------------------------------------------------------------------- #
# PCGrad.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_pcgrad_matches_reference(case, reduction):
    jacobian = HARD_CASES[case]
    weights = _weights(PCGrad(shuffle=False, reduction=reduction), jacobian)
    reference, _ = pcgrad_reference(jacobian, _index_orders(len(jacobian)), reduction)
    _assert_direction(weights, reference, jacobian, CLOSED_FORM_RTOL, f"pcgrad {case}")


@pytest.mark.parametrize("case", [n for n in CASE_NAMES if n.endswith("k2")])
def test_pcgrad_two_tasks_no_conflict_left(case):
    # With K = 2 the diagonal of C stays 1, so a = (1 + C[1, 0], 1 + C[0, 1]) gives back
    # g'_1 = g_1 + (a_2 - 1) g_2 and g'_2 = g_2 + (a_1 - 1) g_1.
    jacobian = HARD_CASES[case]
    weights = _weights(PCGrad(seed=3), jacobian)
    first = jacobian[0] + (weights[1] - 1.0) * jacobian[1]
    second = jacobian[1] + (weights[0] - 1.0) * jacobian[0]
    scale = np.linalg.norm(jacobian, axis=1).prod()
    assert first @ jacobian[1] >= -1e-6 * scale
    assert second @ jacobian[0] >= -1e-6 * scale
    if jacobian[0] @ jacobian[1] < 0.0:  # both were projected: exactly orthogonal
        assert abs(first @ jacobian[1]) <= 1e-5 * scale
        assert abs(second @ jacobian[0]) <= 1e-5 * scale


@pytest.mark.parametrize("case", ["conflicting_k3", "scale_100x_k3", "random_k2"])
def test_pcgrad_shuffle_is_one_of_the_orders(case):
    jacobian = HARD_CASES[case]
    num_tasks = len(jacobian)
    candidates = [
        pcgrad_reference(jacobian, list(orders))[0]
        for orders in itertools.product(
            *(itertools.permutations(o) for o in _index_orders(num_tasks))
        )
    ]
    strategy = PCGrad(seed=7)
    seen = set()
    for _ in range(12):
        direction = jacobian.T @ _weights(strategy, jacobian)
        errors = [_direction_error(direction, c, jacobian) for c in candidates]
        assert min(errors) <= CLOSED_FORM_RTOL
        seen.add(int(np.argmin(errors)))
    distinct = {tuple(np.round(c, 6)) for c in candidates}
    if len(distinct) > 1:  # the order matters here, so several orders must show up
        assert len(seen) > 1


def test_pcgrad_seed_reproducible():
    jacobian = HARD_CASES["conflicting_k5"]
    first, second = PCGrad(seed=11), PCGrad(seed=11)
    for _ in range(4):
        np.testing.assert_array_equal(_weights(first, jacobian), _weights(second, jacobian))


# --------------------------------------------------------------------------- #
# GradVac.
# --------------------------------------------------------------------------- #


def _drifting_jacobians(jacobian, num_steps, seed, noise=0.3):
    rng = np.random.default_rng(seed)
    return [
        jacobian + noise * rng.normal(size=jacobian.shape) * (jacobian != 0)
        for _ in range(num_steps)
    ]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_gradvac_matches_reference_over_steps(case):
    jacobian = HARD_CASES[case]
    num_tasks = len(jacobian)
    beta = 0.3  # large, so that the targets move far from 0 in a few steps
    strategy = GradVac(beta=beta, shuffle=False)
    targets = np.zeros((num_tasks, num_tasks))
    orders = _index_orders(num_tasks)
    for step, current in enumerate(_drifting_jacobians(jacobian, 6, seed=len(case))):
        weights = _weights(strategy, current)
        reference, targets = gradvac_reference(current, targets, beta, orders)
        _assert_direction(weights, reference, current, STATEFUL_RTOL, f"gradvac {case} step {step}")
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(strategy.similarity_targets), targets, atol=STATEFUL_RTOL
        )


def test_gradvac_reaches_the_target_similarity():
    rng = np.random.default_rng(5)
    jacobian = np.stack([rng.normal(size=6), rng.normal(size=6)])
    jacobian[1] -= 1.5 * (jacobian[1] @ jacobian[0]) / (jacobian[0] @ jacobian[0]) * jacobian[0]
    strategy = GradVac(beta=0.0, shuffle=False)
    strategy.build((2,))
    strategy.similarity_targets.assign(np.array([[0.0, 0.6], [0.6, 0.0]], dtype="float32"))
    weights = _weights(strategy, jacobian)
    first = jacobian[0] + (weights[1] - 1.0) * jacobian[1]
    second = jacobian[1] + (weights[0] - 1.0) * jacobian[0]
    cosine = lambda u, v: u @ v / (np.linalg.norm(u) * np.linalg.norm(v))  # noqa: E731
    assert cosine(jacobian[0], jacobian[1]) < 0.0
    np.testing.assert_allclose(cosine(first, jacobian[1]), 0.6, atol=1e-5)
    np.testing.assert_allclose(cosine(second, jacobian[0]), 0.6, atol=1e-5)


def test_gradvac_shuffle_is_one_of_the_orders():
    jacobian = HARD_CASES["conflicting_k3"]
    candidates = [
        gradvac_reference(jacobian, np.zeros((3, 3)), 0.5, list(orders))[0]
        for orders in itertools.product(*(itertools.permutations(o) for o in _index_orders(3)))
    ]
    direction = jacobian.T @ _weights(GradVac(beta=0.5, seed=2), jacobian)
    assert min(_direction_error(direction, c, jacobian) for c in candidates) <= CLOSED_FORM_RTOL


# --------------------------------------------------------------------------- #
# IMTL-G.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", CASE_NAMES)
def test_imtlg_matches_closed_form(case):
    jacobian = HARD_CASES[case]
    weights = _weights(IMTLG(), jacobian)
    reference, reference_weights = imtlg_reference(jacobian)
    _assert_direction(weights, reference, jacobian, CLOSED_FORM_RTOL, f"imtlg {case}")
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-4)
    norms = np.linalg.norm(jacobian, axis=1)
    present = norms > 0.0
    assert np.all(weights[~present] == 0.0)
    # Equal projections of d on every unit gradient (the defining property).
    direction = jacobian.T @ weights
    projections = (jacobian[present] @ direction) / norms[present]
    scale = max(np.linalg.norm(direction), norms.max())
    np.testing.assert_allclose(projections, projections.mean(), atol=CLOSED_FORM_RTOL * scale)
    if "rank" not in case and "duplicates" not in case:
        np.testing.assert_allclose(weights, reference_weights, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- #
# Aligned-MTL.
# --------------------------------------------------------------------------- #


def _kept_condition_number(jacobian, rtol):
    """`lambda_max / lambda_min` over the eigenvalues of `G` that Aligned-MTL keeps."""
    eigenvalues = np.linalg.eigvalsh(jacobian @ jacobian.T)
    tolerance = (len(jacobian) * FLOAT32_EPS if rtol is None else rtol) * eigenvalues.max()
    kept = eigenvalues[eigenvalues > tolerance]
    return kept.max() / kept.min() if kept.size else 1.0


def _aligned_rtol(jacobian, rtol):
    # A float32 Gram matrix knows its smallest kept eigenpair only to a relative
    # accuracy ~ eps * kappa (kappa over the kept eigenvalues), whatever the algorithm:
    # the rounding of G alone moves it that much. "median" and "rmse" amplify that
    # direction by sqrt(lambda_scale / lambda_min), so the tolerance has to follow.
    # The constant 2: LAPACK's float32 eigh (JAX, torch) was measured 1.24x over eps*kappa.
    return CLOSED_FORM_RTOL + 2.0 * FLOAT32_EPS * _kept_condition_number(jacobian, rtol)


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_aligned_mtl_matches_svd(case, scale_mode):
    jacobian = HARD_CASES[case]
    # Exactly rank-deficient inputs: the float32 round-off of the zero eigenvalue is of
    # the order of the official tolerance K * eps, so compare at a safe tolerance there.
    exact_rank_loss = case in ("rank_deficient_k3_in_2d", "duplicates_k3")
    rtol = 1e-5 if exact_rank_loss else None
    weights = _weights(AlignedMTL(scale_mode=scale_mode, rtol=rtol), jacobian)
    reference = aligned_mtl_reference(jacobian, rtol=rtol, scale_mode=scale_mode)
    # "min" shrinks every direction to the smallest one: no amplification, strict rtol.
    tolerance = CLOSED_FORM_RTOL if scale_mode == "min" else _aligned_rtol(jacobian, rtol)
    _assert_direction(weights, reference, jacobian, tolerance, f"aligned {case} {scale_mode}")


@pytest.mark.parametrize("case", CASE_NAMES)
def test_aligned_mtl_aligned_gradients_are_orthonormal_up_to_scale(case):
    # The preference vector e_j gives column j of B; the aligned gradients J^T B then
    # have the Gram matrix B^T G B = lambda_min P (P the projector on the kept
    # eigenvectors; the identity at full rank), checked in float64 on the vectors.
    jacobian = HARD_CASES[case]
    num_tasks = len(jacobian)
    rtol = 1e-5 if case in ("rank_deficient_k3_in_2d", "duplicates_k3") else None
    columns = [
        _weights(AlignedMTL(preference_vector=np.eye(num_tasks)[j], rtol=rtol), jacobian)
        for j in range(num_tasks)
    ]
    balance = np.stack(columns, axis=1)
    np.testing.assert_allclose(
        _weights(AlignedMTL(rtol=rtol), jacobian), balance.sum(axis=1), rtol=1e-5, atol=1e-6
    )
    gram = jacobian @ jacobian.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    tolerance = (num_tasks * FLOAT32_EPS if rtol is None else rtol) * eigenvalues.max()
    kept = eigenvalues > tolerance
    projector = eigenvectors[:, kept] @ eigenvectors[:, kept].T
    smallest = eigenvalues[kept].min()
    aligned_gram = balance.T @ gram @ balance
    np.testing.assert_allclose(
        aligned_gram, smallest * projector, atol=_aligned_rtol(jacobian, rtol) * smallest
    )


# --------------------------------------------------------------------------- #
# DB-MTL.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("beta_sigma", [0.0, 0.5])
@pytest.mark.parametrize(
    "case", ["conflicting_k3", "scale_100x_k5", "random_k2", "nearly_aligned_k5"]
)
def test_dbmtl_equals_libmtl_when_directions_are_constant(case, beta_sigma):
    # h_k(t) = c_k(t) u_k: the EMA of the vectors is parallel to u_k with the EMA norm,
    # so LibMTL's vector EMA and our norm EMA give the same direction.
    jacobian = HARD_CASES[case]
    rng = np.random.default_rng(1)
    jacobians = [jacobian * rng.uniform(0.2, 3.0, size=(len(jacobian), 1)) for _ in range(6)]
    losses = [rng.uniform(0.05, 5.0, size=len(jacobian)) for _ in range(6)]
    strategy = DBMTL(beta_sigma=beta_sigma)
    references = dbmtl_libmtl_reference(jacobians, losses, 0.9, beta_sigma)
    for step, (current, loss, reference) in enumerate(zip(jacobians, losses, references)):
        weights = _weights(strategy, current, loss)
        _assert_direction(weights, reference, current, STATEFUL_RTOL, f"dbmtl-libmtl {case} {step}")


@pytest.mark.parametrize("case", CASE_NAMES)
def test_dbmtl_matches_norm_reference(case):
    jacobian = HARD_CASES[case]
    rng = np.random.default_rng(2)
    jacobians = _drifting_jacobians(jacobian, 5, seed=3)
    losses = [rng.uniform(1e-3, 10.0, size=len(jacobian)) for _ in range(5)]
    strategy = DBMTL(beta=0.8, beta_sigma=0.5)
    references, averages = dbmtl_norm_reference(jacobians, losses, 0.8, 0.5)
    for step, (current, loss, reference) in enumerate(zip(jacobians, losses, references)):
        weights = _weights(strategy, current, loss)
        present = np.linalg.norm(current, axis=1) > 0.0
        # Zero gradients add nothing to d; their coefficient is the plain 1 / (|L| + eps).
        if not present.all():
            np.testing.assert_allclose(weights[~present], 1.0 / (loss[~present] + 1e-8), rtol=1e-5)
        _assert_direction(weights, reference, current, STATEFUL_RTOL, f"dbmtl {case} {step}")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(strategy.norm_averages), averages, rtol=STATEFUL_RTOL
    )
    assert int(strategy.iterations.numpy()) == 5


def test_dbmtl_losses_zero_negative_tiny():
    jacobian = HARD_CASES["random_k5"]
    strategy = DBMTL()
    for losses in ([0.0, 1.0, 2.0, 3.0, 4.0], [-1.0, 1e-12, 2.0, -3.0, 1e-30], [0.0] * 5):
        weights = _weights(strategy, jacobian, losses)
        assert np.all(weights > 0.0)


# --------------------------------------------------------------------------- #
# GradNorm.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", CASE_NAMES)
def test_gradnorm_matches_reference_loop(case):
    jacobian = HARD_CASES[case]
    num_tasks = len(jacobian)
    rng = np.random.default_rng(4)
    jacobians = _drifting_jacobians(jacobian, 8, seed=5)
    start = rng.uniform(0.5, 5.0, size=num_tasks)
    losses = [start * np.exp(-rng.uniform(0.0, 0.3, size=num_tasks) * t) for t in range(8)]
    # A learning rate of the order of 1 / ||g|| so the weights really move.
    learning_rate = 0.1 / np.linalg.norm(jacobian, axis=1).max()
    strategy = GradNorm(alpha=1.5, learning_rate=learning_rate, optimizer="sgd")
    used, final = gradnorm_reference(jacobians, losses, 1.5, learning_rate)
    for step, (current, loss) in enumerate(zip(jacobians, losses)):
        weights = _weights(strategy, current, loss)
        np.testing.assert_allclose(weights, used[step], rtol=STATEFUL_RTOL, err_msg=f"step {step}")
        if _REPORT:
            error = np.abs(weights / used[step] - 1.0).max()
            print(f"\n[error] gradnorm {case} step {step}: {error:.3e}")
    np.testing.assert_allclose(strategy.loss_weights.numpy(), final, rtol=STATEFUL_RTOL)
    np.testing.assert_allclose(strategy.initial_losses.numpy(), losses[0], rtol=1e-6)
    np.testing.assert_allclose(final.sum(), num_tasks, rtol=1e-6)
    assert np.all(strategy.loss_weights.numpy() > 0.0)


def test_gradnorm_returns_pre_update_weights():
    jacobian = HARD_CASES["scale_100x_k3"]
    strategy = GradNorm(learning_rate=1e-3, optimizer="sgd")
    first = _weights(strategy, jacobian, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(first, np.ones(3))
    updated = strategy.loss_weights.numpy()
    assert not np.allclose(updated, 1.0)
    np.testing.assert_allclose(_weights(strategy, jacobian, [1.0, 2.0, 3.0]), updated, rtol=1e-6)


def test_gradnorm_keeps_weights_positive_with_a_large_step():
    jacobian = HARD_CASES["scale_100x_k3"]
    strategy = GradNorm(learning_rate=10.0, optimizer="sgd")
    for losses in ([1.0, 2.0, 3.0], [0.0, -1.0, 3.0], [0.0, 0.0, 0.0]):
        _weights(strategy, jacobian, losses)
        weights = strategy.loss_weights.numpy()
        assert np.all(weights > 0.0) and np.all(np.isfinite(weights))
        np.testing.assert_allclose(weights.sum(), 3.0, rtol=1e-5)


# --------------------------------------------------------------------------- #
# Every strategy: finiteness, tracing, XLA, state, registry.
# --------------------------------------------------------------------------- #

FACTORIES = {
    "pcgrad": lambda: PCGrad(seed=1),
    "grad_vac": lambda: GradVac(beta=0.5, seed=1),
    "imtlg": lambda: IMTLG(),
    "aligned_mtl": lambda: AlignedMTL(),
    "dbmtl": lambda: DBMTL(beta_sigma=0.5),
    "grad_norm": lambda: GradNorm(),
}
DETERMINISTIC_FACTORIES = {
    **FACTORIES,
    "pcgrad": lambda: PCGrad(shuffle=False),
    "grad_vac": lambda: GradVac(beta=0.5, shuffle=False),
}


def _inputs(num_tasks, num_steps, seed):
    """`(jacobian, gram, losses)` per step: one gradient 30x, the last one conflicting."""
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(num_steps):
        jacobian = rng.normal(size=(num_tasks, 6))
        jacobian[0] *= 30.0
        jacobian[-1] -= 0.05 * jacobian[0]
        losses = rng.uniform(0.1, 3.0, size=num_tasks).astype("float32")
        result.append((jacobian, _gram(jacobian), losses))
    return result


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_finite_on_degenerate_inputs(name):
    degenerate = {
        "all_zero": np.zeros((3, 4)),
        "single_task": np.array([[1.0, 2.0]]),
        "tiny_scale": 1e-18 * HARD_CASES["conflicting_k3"],
        "huge_scale": 1e15 * HARD_CASES["conflicting_k3"],
    }
    for label, jacobian in degenerate.items():
        strategy = FACTORIES[name]()
        for losses in (np.ones(len(jacobian)), np.zeros(len(jacobian))):
            _weights(strategy, jacobian, losses)
        if label in ("tiny_scale", "huge_scale") and name not in ("dbmtl", "grad_norm"):
            # Scale-free methods: the same coefficients as at scale 1.
            plain = _weights(DETERMINISTIC_FACTORIES[name](), HARD_CASES["conflicting_k3"])
            scaled = _weights(DETERMINISTIC_FACTORIES[name](), jacobian)
            # AlignedMTL goes through a float32 eigendecomposition, accurate to ~eps*kappa
            # only (kappa ~2.5e4 here): its two runs may differ by that much (LAPACK's
            # solvers on JAX and torch do; TF's happens to land closer).
            rtol = 1e-4
            if name == "aligned_mtl":
                rtol = max(rtol, _aligned_rtol(HARD_CASES["conflicting_k3"], None))
            np.testing.assert_allclose(scaled, plain, rtol=rtol, atol=1e-5, err_msg=label)


# The tf.function test below: JAX's counterpart is
# test_weighting_jax_and_resume.py::test_every_strategy_runs_inside_jax_jit; torch runs eagerly.
TF_FUNCTION_ONLY = pytest.mark.backend_only(
    "tensorflow",
    reason="tf.function (and XLA) tracing; on JAX test_every_strategy_runs_inside_jax_jit "
    "checks every strategy under jax.jit; torch runs eagerly",
)


@TF_FUNCTION_ONLY
@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_traced_matches_eager(name, jit_compile):
    eager, traced = DETERMINISTIC_FACTORIES[name](), DETERMINISTIC_FACTORIES[name]()
    eager.build((4,))
    traced.build((4,))
    step = tf.function(traced.compute_weights_from_gram, jit_compile=jit_compile)
    for jacobian, gram, losses in _inputs(4, 3, seed=9):
        expected = keras.ops.convert_to_numpy(eager.compute_weights_from_gram(gram, losses))
        actual = step(tf.constant(gram), tf.constant(losses)).numpy()
        assert np.all(np.isfinite(actual))
        reference = jacobian.T @ expected.astype("float64")
        error = _direction_error(jacobian.T @ actual.astype("float64"), reference, jacobian)
        assert error <= CLOSED_FORM_RTOL, error
    # State (seed states aside: `seed=None` draws a different one per instance).
    for eager_variable, traced_variable in zip(eager.weights, traced.weights):
        np.testing.assert_allclose(
            np.asarray(traced_variable.numpy(), dtype="float64"),
            np.asarray(eager_variable.numpy(), dtype="float64"),
            rtol=1e-4,
            atol=1e-6,
        )


def _compiled_step(strategy):
    """`compute_weights_from_gram` compiled as each backend compiles a training step.

    TensorFlow: a `tf.function` with XLA. JAX: `jax.jit` of a pure function, the strategy's
    variables mapped in a `keras.StatelessScope` and their new values assigned back, as the JAX
    trainer does. torch runs eagerly.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return tf.function(strategy.compute_weights_from_gram, jit_compile=True)
    if backend != "jax":
        return strategy.compute_weights_from_gram
    import jax

    variables = strategy.variables

    @jax.jit
    def pure(values, gram, losses):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            weights = strategy.compute_weights_from_gram(gram, losses)
        return weights, [scope.get_current_value(v) for v in variables]

    def step(gram, losses):
        weights, values = pure([v.value for v in variables], gram, losses)
        for variable, value in zip(variables, values):
            variable.assign(value)
        return weights

    return step


@pytest.mark.parametrize("name", ["pcgrad", "grad_vac"])
def test_shuffle_traces_and_advances_the_seed(name):
    strategy = FACTORIES[name]()
    strategy.build((5,))
    step = _compiled_step(strategy)
    before = keras.ops.convert_to_numpy(strategy.seed_generator.state.value).copy()
    outputs = [keras.ops.convert_to_numpy(step(g, v)) for _, g, v in _inputs(5, 3, seed=4)]
    assert all(np.all(np.isfinite(o)) for o in outputs)
    after = keras.ops.convert_to_numpy(strategy.seed_generator.state.value)
    assert not np.array_equal(after, before)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_restored_from_variables(name):
    inputs = _inputs(3, 6, seed=12)
    original = FACTORIES[name]()
    original.build((3,))
    for _, gram, losses in inputs[:3]:
        original.compute_weights_from_gram(gram, losses)
    # A fresh strategy from the config, with every variable (seed state included) copied.
    restored = weighting.deserialize(weighting.serialize(original))
    assert type(restored) is type(original)
    if not restored.built:  # the serialized config carries a build config
        restored.build((3,))
    assert len(restored.variables) == len(original.variables)
    for source, target in zip(original.variables, restored.variables):
        target.assign(source.numpy())
    # The `.keras` path: `save_own_variables` / `load_own_variables` (all but seed states).
    reloaded = weighting.deserialize(weighting.serialize(original))
    if not reloaded.built:
        reloaded.build((3,))
    store = {}
    original.save_own_variables(store)
    reloaded.load_own_variables(store)
    for source, target in zip(original.weights, reloaded.weights):
        np.testing.assert_array_equal(target.numpy(), source.numpy())
    for _, gram, losses in inputs[3:]:
        expected = keras.ops.convert_to_numpy(original.compute_weights_from_gram(gram, losses))
        actual = keras.ops.convert_to_numpy(restored.compute_weights_from_gram(gram, losses))
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["grad_vac", "dbmtl", "grad_norm"])
def test_non_finite_step_leaves_state_unchanged(name):
    strategy = FACTORIES[name]()
    strategy.build((3,))
    for _, gram, losses in _inputs(3, 2, seed=6):
        strategy.compute_weights_from_gram(gram, losses)
    before = [v.numpy().copy() for v in strategy.weights]
    gram = _inputs(3, 1, seed=7)[0][1]
    bad_inputs = [(np.full((3, 3), np.nan, dtype="float32"), np.ones(3, dtype="float32"))]
    if name != "grad_vac":  # GradVac does not read the losses
        bad_inputs.append((gram, np.array([1.0, np.inf, 1.0], dtype="float32")))
    for bad_gram, bad_losses in bad_inputs:
        strategy.compute_weights_from_gram(bad_gram, bad_losses)
        for old, variable in zip(before, strategy.weights):
            np.testing.assert_array_equal(variable.numpy(), old)


def test_registry_and_config():
    names = {
        "pcgrad": PCGrad,
        "PCGrad": PCGrad,
        "grad_vac": GradVac,
        "gradvac": GradVac,
        "imtlg": IMTLG,
        "IMTLG": IMTLG,
        "aligned_mtl": AlignedMTL,
        "alignedmtl": AlignedMTL,
        "dbmtl": DBMTL,
        "grad_norm": GradNorm,
        "gradnorm": GradNorm,
    }
    for name, cls in names.items():
        strategy = weighting.get(name)
        assert type(strategy) is cls
        assert strategy.requires_gradients
    custom = [
        PCGrad(shuffle=False, reduction="mean", seed=4),
        GradVac(beta=0.2, shuffle=False, seed=3),
        IMTLG(rcond=1e-4),
        AlignedMTL(scale_mode="median", preference_vector=[1.0, 2.0], rtol=1e-6),
        DBMTL(beta=0.5, beta_sigma=0.25, epsilon=1e-6),
        GradNorm(alpha=0.5, learning_rate=0.1, min_weight=1e-3),
    ]
    for strategy in custom:
        config = strategy.get_config()
        clone = weighting.deserialize(weighting.serialize(strategy))
        assert type(clone) is type(strategy)
        assert clone.get_config() == config


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: PCGrad(reduction="max"), "reduction"),
        (lambda: GradVac(beta=2.0), "beta"),
        (lambda: IMTLG(rcond=-1.0), "rcond"),
        (lambda: AlignedMTL(scale_mode="max"), "scale_mode"),
        (lambda: DBMTL(beta=1.0), "beta"),
        (lambda: GradNorm(learning_rate=0.0), "learning_rate"),
    ],
)
def test_invalid_arguments(factory, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        factory()


def test_aligned_mtl_preference_length_checked():
    with pytest.raises(ValueError, match="preference_vector"):
        AlignedMTL(preference_vector=[1.0, 2.0]).build((3,))
