"""The GradNorm toy regression tasks (Chen et al., ICML 2018, Sec. 4)."""

import numpy as np


def gradnorm_toy(num_samples, sigmas, input_dim=250, output_dim=100, seed=0):
    """Returns `(x, {f"task{i}": y_i})` for the GradNorm paper's toy problem.

    Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in
    Deep Multitask Networks", ICML 2018, Sec. 4: task i regresses
    `f_i(x) = sigma_i * tanh((B + eps_i) x)`, with a shared matrix `B` of
    `N(0, 10)` entries (variance 10), task-specific `eps_i` of `N(0, 3.5)`
    entries, inputs `x` of `N(0, 1)` entries (the paper does not say; our
    choice), and task-specific scales `sigma_i`, which give the task losses
    very different magnitudes. The tasks share `B`, so they are related.

    Args:
        num_samples: number of examples.
        sigmas: the task scales `sigma_i`, one per task.
        input_dim: the size of `x` (250 in the paper).
        output_dim: the size of each target (100 in the paper).
        seed: the NumPy seed; the same seed gives the same data.

    Returns:
        `x` of shape `(num_samples, input_dim)` and a dict of targets of shape
        `(num_samples, output_dim)` keyed `task0`, `task1`, ..., all float32.

    Example:

    >>> x, y = gradnorm_toy(8, sigmas=[1.0, 10.0], input_dim=5, output_dim=3)
    >>> x.shape, sorted(y), y["task1"].shape
    ((8, 5), ['task0', 'task1'], (8, 3))
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, np.sqrt(10.0), size=(output_dim, input_dim))
    x = rng.normal(size=(num_samples, input_dim))
    targets = {}
    for index, sigma in enumerate(sigmas):
        epsilon = rng.normal(0.0, np.sqrt(3.5), size=(output_dim, input_dim))
        targets[f"task{index}"] = (sigma * np.tanh(x @ (base + epsilon).T)).astype("float32")
    return x.astype("float32"), targets
