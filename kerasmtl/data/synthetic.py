"""Synthetic multi-task data with a controlled task correlation (Ma et al., KDD 2018)."""

import numpy as np


def mmoe_synthetic(
    num_samples,
    correlation,
    input_dim=100,
    c=1.0,
    alphas=None,
    betas=None,
    num_sin=10,
    noise_stddev=0.1,
    seed=None,
    task_names=("task_1", "task_2"),
):
    """Generates two regression tasks whose relatedness is set by `correlation`.

    The synthetic experiment of Ma et al., "Modeling Task Relationships in
    Multi-task Learning with Multi-gate Mixture-of-Experts" (KDD 2018),
    Sec. 3.2:

    1. Draw two orthogonal unit vectors `u1, u2` in `R^input_dim`.
    2. Set `w1 = c u1` and `w2 = c (p u1 + sqrt(1 - p^2) u2)`, so that
       `cos(w1, w2) = p`, the requested `correlation`.
    3. Draw the inputs `x ~ N(0, I)`.
    4. `y_i = w_i^T x + sum_{j=1}^{num_sin} sin(alpha_j w_i^T x + beta_j) + eps_i`,
       with `eps_i ~ N(0, noise_stddev^2)` (the paper's `N(0, 0.01)` is
       `noise_stddev=0.1`).

    The linear parts `w1^T x` and `w2^T x` have Pearson correlation exactly
    `p` in expectation (both have variance `c^2` and covariance `c^2 p`); the
    labels' correlation is lower because of the shared sinusoids and the
    noise, and it increases with `p` (for `p >= 0`; at `p = 1` the two tasks
    differ only by their noise). The same `alpha_j, beta_j` serve both tasks,
    as in the paper.

    Everything is drawn from one `numpy.random.default_rng(seed)`, in this
    order: `u1, u2`, then `alphas` and `betas` (if not given, from `N(0, 1)`),
    then `x`, then the noise. So with one `seed`, calls that differ only in
    `correlation` share `u1`, `u2`, the sinusoids and `x`: only `w2` changes.
    Split one call into training and test sets, so that they share the tasks.

    Args:
        num_samples: int, the number of samples.
        correlation: float in `[-1, 1]`, the cosine similarity `p` of the two
            tasks' weight vectors.
        input_dim: int >= 2, the input dimension `d`. Defaults to `100`.
        c: float, the scale of the weight vectors. Defaults to `1.0`.
        alphas: optional array of `num_sin` frequencies; drawn from `N(0, 1)`
            when `None`.
        betas: optional array of `num_sin` phases; drawn from `N(0, 1)` when
            `None`.
        num_sin: int >= 0, the number of sinusoids `m`. Defaults to `10`.
        noise_stddev: float >= 0, the standard deviation of the label noise.
        seed: optional int, the seed of the random generator.
        task_names: a pair of names, the keys of the label dict.

    Returns:
        A tuple `(x, y)`: `x` is a float32 array `(num_samples, input_dim)`;
        `y` is a dict `{task_names[0]: (num_samples, 1), task_names[1]:
        (num_samples, 1)}` of float32 labels.

    Example:

    >>> x, y = mmoe_synthetic(2000, correlation=0.5, input_dim=20, seed=0)
    >>> x.shape, y["task_1"].shape
    ((2000, 20), (2000, 1))
    >>> bool(0.0 < np.corrcoef(y["task_1"][:, 0], y["task_2"][:, 0])[0, 1] < 1.0)
    True
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or (
        num_samples < 1
    ):
        raise ValueError(
            f"`num_samples` must be a positive integer. Received: num_samples={num_samples!r}"
        )
    if not -1.0 <= float(correlation) <= 1.0:
        raise ValueError(
            f"`correlation` must be in [-1, 1]. Received: correlation={correlation!r}"
        )
    if isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer)) or (
        input_dim < 2
    ):
        raise ValueError(
            "`input_dim` must be an integer >= 2 (two orthogonal directions are needed). "
            f"Received: input_dim={input_dim!r}"
        )
    if isinstance(num_sin, bool) or not isinstance(num_sin, (int, np.integer)) or num_sin < 0:
        raise ValueError(f"`num_sin` must be an integer >= 0. Received: num_sin={num_sin!r}")
    if not float(noise_stddev) >= 0.0:
        raise ValueError(
            f"`noise_stddev` must be non-negative. Received: noise_stddev={noise_stddev!r}"
        )
    if not isinstance(task_names, (list, tuple)) or len(task_names) != 2:
        raise ValueError(
            f"`task_names` must be a pair of names. Received: task_names={task_names!r}"
        )
    p = float(correlation)
    rng = np.random.default_rng(seed)

    # Orthonormal u1, u2: the Q factor of a Gaussian (d, 2) matrix.
    basis, _ = np.linalg.qr(rng.standard_normal((input_dim, 2)))
    u1, u2 = basis[:, 0], basis[:, 1]
    alphas = _parameters(alphas, num_sin, rng, "alphas")
    betas = _parameters(betas, num_sin, rng, "betas")
    w1 = c * u1
    w2 = c * (p * u1 + np.sqrt(max(0.0, 1.0 - p * p)) * u2)

    x = rng.standard_normal((num_samples, input_dim))
    noise = rng.standard_normal((num_samples, 2)) * float(noise_stddev)
    labels = []
    for index, w in enumerate((w1, w2)):
        linear = x @ w
        sinusoids = np.sin(np.outer(linear, alphas) + betas).sum(axis=1)
        labels.append((linear + sinusoids + noise[:, index])[:, None].astype("float32"))
    return x.astype("float32"), {task_names[0]: labels[0], task_names[1]: labels[1]}


def _parameters(values, num_sin, rng, name):
    if values is None:
        return rng.standard_normal(num_sin)
    values = np.asarray(values, dtype="float64").reshape(-1)
    if values.shape != (num_sin,):
        raise ValueError(
            f"`{name}` must hold `num_sin`={num_sin} values. Received: {name} of shape "
            f"{values.shape}"
        )
    return values
