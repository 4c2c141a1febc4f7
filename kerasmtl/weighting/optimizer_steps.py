"""The optimizer steps that strategies take on their own state (one home for Adam).

Some strategies learn a small vector of their own (FAMO's logits, GradNorm's
loss weights) with an update rule of their own, outside the model's optimizer.
Their state lives in the strategy's variables; the step here is a pure
function, tensors in and tensors out, so that it runs unchanged inside every
backend's compiled step (the caller `assign`s the results).
"""

from keras import ops

# PyTorch's `torch.optim.Adam` defaults, as in the official FAMO code.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-8


def add_step_counts(layer, num_entries, name="iterations"):
    """Adds to `layer` a non-trainable int32 step count per entry, starting at 0.

    Per entry, so that an entry left out of a step (an absent task) keeps its
    count and hence its bias correction; int32, since JAX warns on int64 (x64
    disabled).
    """
    return layer.add_weight(
        shape=(num_entries,), initializer="zeros", trainable=False, dtype="int32", name=name
    )


def masked_adam_direction(
    gradient,
    first_moment,
    second_moment,
    counts,
    mask,
    beta_1=ADAM_BETA_1,
    beta_2=ADAM_BETA_2,
    epsilon=ADAM_EPSILON,
):
    """One Adam step, entry by entry, on the entries where `mask` is true.

    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015
    (Algorithm 1), with the epsilon outside the bias-corrected square root as
    `torch.optim.Adam` writes it (Keras's `Adam` puts it inside):

        m <- beta_1 m + (1 - beta_1) g,    v <- beta_2 v + (1 - beta_2) g^2,
        direction = m_hat / (sqrt(v_hat) + epsilon),
        m_hat = m / (1 - beta_1^t),    v_hat = v / (1 - beta_2^t).

    The parameter update is `theta <- theta - learning_rate * direction`. The
    step count `t` is per entry, so an entry that is masked out (an absent
    task) keeps its moments, its count and hence its bias correction.

    Args:
        gradient: float32 tensor, the gradient of each entry.
        first_moment: float32 tensor (or variable) of the same shape, `m` before the step.
        second_moment: float32 tensor (or variable) of the same shape, `v` before the step.
        counts: int tensor of the same shape, the number of steps each entry
            has taken including this one (`t`; the caller adds the mask).
        mask: bool tensor of the same shape, the entries that take the step.
        beta_1: decay of the first moment.
        beta_2: decay of the second moment.
        epsilon: added to the square root of `v_hat`.

    Returns:
        `(direction, first_moment, second_moment)`: the direction (0 where
        `mask` is false) and the new moments (unchanged where `mask` is false).

    Example:

    >>> from keras import ops
    >>> direction, m, v = masked_adam_direction(
    ...     ops.convert_to_tensor([2.0, -3.0]), ops.zeros((2,)), ops.zeros((2,)),
    ...     ops.convert_to_tensor([1, 0]), ops.convert_to_tensor([True, False]))
    >>> [round(float(d), 4) for d in direction]  # the first step is sign(g)
    [1.0, 0.0]
    """
    # Variables as tensors first: `ops.where` on a raw variable fails under JAX tracing.
    first_moment = ops.convert_to_tensor(first_moment)
    second_moment = ops.convert_to_tensor(second_moment)
    gradient = ops.where(mask, gradient, 0.0)
    first = ops.where(mask, beta_1 * first_moment + (1.0 - beta_1) * gradient, first_moment)
    second = ops.where(
        mask, beta_2 * second_moment + (1.0 - beta_2) * ops.square(gradient), second_moment
    )
    step = ops.cast(ops.maximum(counts, 1), "float32")
    first_hat = first / (1.0 - ops.power(beta_1, step))
    second_hat = second / (1.0 - ops.power(beta_2, step))
    direction = ops.where(mask, first_hat / (ops.sqrt(second_hat) + epsilon), 0.0)
    return direction, first, second


def masked_step(gradient, mask, learning_rate, adam_state=None):
    """The update `learning_rate * direction` of a masked entry-wise step; Adam's state assigned.

    What FAMO's logits and IMTL-L's scales do each step: a plain gradient step
    (`adam_state=None`) or an Adam step (`masked_adam_direction`) on the entries
    where `mask` is true. For Adam, `adam_state` is the variables
    `(iterations, first_moment, second_moment)` (the step counts from
    `add_step_counts`); they are read and `assign`ed here, and an entry outside
    `mask` keeps all three.

    Args:
        gradient: float32 tensor.
        mask: bool tensor of the same shape, the entries that take the step.
        learning_rate: the step size.
        adam_state: `None` for a plain gradient step, else the Adam variables.

    Returns:
        The update to subtract from the parameters (0 where `mask` is false).
    """
    if adam_state is None:
        return learning_rate * ops.where(mask, gradient, 0.0)
    iterations, first_moment, second_moment = adam_state
    counts = ops.convert_to_tensor(iterations) + ops.cast(mask, "int32")
    direction, first, second = masked_adam_direction(
        gradient, first_moment, second_moment, counts, mask
    )
    iterations.assign(counts)
    first_moment.assign(first)
    second_moment.assign(second)
    return learning_rate * direction
