"""NumPy (float64) references that several test files compare the kit with.

Written once here from the papers' formulas, so that two test files cannot
drift apart in what they call the reference. They use NumPy only (no Keras
tensors in, no Keras tensors out); `to_numpy` brings a tensor or a variable of
any backend to NumPy for the comparison.
"""

import keras
import numpy as np


def to_numpy(x):
    """A tensor or a `keras.Variable` of any backend as a NumPy array.

    A variable goes through its value: a Keras variable's own `__array__` warns
    under NumPy 2 on JAX, and torch will not convert a tensor that requires grad.

    Example:

    >>> to_numpy(keras.Variable([1.0, 2.0])).tolist()
    [1.0, 2.0]
    """
    return keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(x))


def softmax(x, axis=-1):
    """The softmax of `x` along `axis`, shifted by the maximum for stability.

    Example:

    >>> softmax(np.array([0.0, np.log(3.0)])).round(3).tolist()
    [0.25, 0.75]
    """
    x = np.asarray(x, dtype="float64")
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """The log of the softmax of `x` along `axis`, computed without overflow.

    Example:

    >>> np.exp(log_softmax(np.array([0.0, 1000.0]))).round(3).tolist()
    [0.0, 1.0]
    """
    x = np.asarray(x, dtype="float64")
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def adam_step(gradient, first_moment, second_moment, step, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """One step of Adam as `torch.optim.Adam` takes it (epsilon outside the root).

    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015
    (Algorithm 1). The update of the parameters is
    `theta <- theta - learning_rate * direction`.

    Args:
        gradient: array, the gradient.
        first_moment: array, `m` before the step.
        second_moment: array, `v` before the step.
        step: int or array of ints, the step count `t` including this step.
        beta_1: decay of the first moment.
        beta_2: decay of the second moment.
        epsilon: added to the square root of the bias-corrected `v`.

    Returns:
        `(direction, first_moment, second_moment)` in float64.

    Example:

    >>> direction, m, v = adam_step(np.array([2.0, -0.5]), np.zeros(2), np.zeros(2), 1)
    >>> direction.round(6).tolist()  # the first step is the sign of the gradient
    [1.0, -1.0]
    """
    gradient = np.asarray(gradient, dtype="float64")
    first = beta_1 * np.asarray(first_moment, dtype="float64") + (1.0 - beta_1) * gradient
    second = beta_2 * np.asarray(second_moment, dtype="float64") + (1.0 - beta_2) * gradient**2
    first_hat = first / (1.0 - beta_1**step)
    second_hat = second / (1.0 - beta_2**step)
    return first_hat / (np.sqrt(second_hat) + epsilon), first, second


def dwa_weights(epoch_losses, temperature=2.0):
    """Dynamic Weight Average: the weights of every epoch and of the one after the last.

    Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019
    (eq. 7), in LibMTL's `train_loss_buffer` form: epochs 0 and 1 use weight 1;
    epoch `t > 1` uses `K softmax(w / T)` with `w_k = L_k(t - 1) / L_k(t - 2)`.

    Args:
        epoch_losses: `(num_epochs, K)` mean task losses of each epoch.
        temperature: `T`, the softness of the softmax.

    Returns:
        `(num_epochs + 1, K)` float64 weights: row `t` is the weights epoch `t`
        trains with (the last row is for the epoch after the last one given).

    Example:

    >>> dwa_weights([[1.0, 1.0], [1.0, 1.0], [1.0, 2.0]]).round(3).tolist()
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.755, 1.245]]
    """
    epoch_losses = np.asarray(epoch_losses, dtype="float64")
    num_tasks = epoch_losses.shape[1]
    weights = []
    for epoch in range(len(epoch_losses) + 1):
        if epoch > 1:
            ratio = epoch_losses[epoch - 1] / epoch_losses[epoch - 2]
            weights.append(num_tasks * softmax(ratio / temperature))
        else:
            weights.append(np.ones(num_tasks))
    return np.array(weights)


def delta_m(multi, single, higher):
    """The multi-task performance change delta-m, in percent.

    Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019
    (as Vandenhende et al., TPAMI 2021, average it): the mean over tasks of the
    mean over each task's metrics of `(-1)^{l_j} (M_j - B_j) / B_j`, with
    `l_j = 0` when higher is better.

    Args:
        multi: per task, the list of the multi-task model's metric values.
        single: per task, the list of the single-task baselines' values.
        higher: per task, the list of booleans, whether higher is better.

    Example:

    >>> round(delta_m([[0.9], [0.3]], [[0.8], [0.4]], [[True], [False]]), 3)
    18.75
    """
    per_task = []
    for task_multi, task_single, task_higher in zip(multi, single, higher):
        m = np.asarray(task_multi, dtype="float64")
        b = np.asarray(task_single, dtype="float64")
        sign = np.where(np.asarray(task_higher), 1.0, -1.0)
        per_task.append(np.mean(sign * (m - b) / b))
    return float(100.0 * np.mean(per_task))
