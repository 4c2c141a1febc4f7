"""The one Adam of the strategies' own state (FAMO's logits, GradNorm's weights) against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

from kerasmtl.testing.references import adam_step, to_numpy
from kerasmtl.weighting.optimizer_steps import masked_adam_direction, masked_step

pytestmark = pytest.mark.backend_neutral

# float32: `1 - beta_2^t` loses about 4 of float32's 7 digits at t = 1 (0.999 is not exact).
RTOL = 5e-5


def _gradients(num_steps, seed=0):
    """Hard steps: a 100x norm gap, a sign flip (conflict), a zero and a tiny gradient."""
    rng = np.random.default_rng(seed)
    gradients = rng.normal(size=(num_steps, 4)) * np.array([100.0, 1.0, 1.0, 1e-6])
    gradients[1::2, 1] *= -1.0  # entry 1 flips sign every step
    gradients[:, 2] = 0.0  # entry 2 never gets a gradient
    return gradients


def _run(gradients, masks, **kwargs):
    """The kit's steps, with counts per entry as FAMO and GradNorm keep them."""
    num_entries = gradients.shape[1]
    first = ops.zeros((num_entries,))
    second = ops.zeros((num_entries,))
    counts = ops.zeros((num_entries,), dtype="int32")
    directions = []
    for gradient, mask in zip(gradients, masks):
        mask = ops.convert_to_tensor(mask)
        counts = counts + ops.cast(mask, "int32")
        direction, first, second = masked_adam_direction(
            ops.convert_to_tensor(gradient.astype("float32")), first, second, counts, mask, **kwargs
        )
        directions.append(ops.convert_to_numpy(direction))
    return np.array(directions), ops.convert_to_numpy(first), ops.convert_to_numpy(second)


def _reference(gradients, masks, **kwargs):
    """NumPy float64: each entry runs its own Adam on the steps where it is present."""
    num_entries = gradients.shape[1]
    first, second = np.zeros(num_entries), np.zeros(num_entries)
    counts = np.zeros(num_entries, dtype=int)
    directions = []
    for gradient, mask in zip(gradients, masks):
        counts = counts + mask
        direction, new_first, new_second = adam_step(
            gradient, first, second, np.maximum(counts, 1), **kwargs
        )
        first = np.where(mask, new_first, first)
        second = np.where(mask, new_second, second)
        directions.append(np.where(mask, direction, 0.0))
    return np.array(directions), first, second


@pytest.mark.parametrize(
    "kwargs", [{}, {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}], ids=["torch_defaults", "other"]
)
def test_masked_adam_matches_numpy_on_hard_gradients(kwargs):
    gradients = _gradients(6)
    masks = np.ones_like(gradients, dtype=bool)
    masks[2:4, 3] = False  # entry 3 absent for two steps
    masks[0, 0] = False  # entry 0 absent at the start
    expected = _reference(gradients, masks, **kwargs)
    actual = _run(gradients, masks, **kwargs)
    for name, want, got in zip(("direction", "first", "second"), expected, actual):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-7, err_msg=name)
    directions = actual[0]
    # Invariants: no step for a masked entry or a zero gradient; the first step of a
    # non-zero gradient is its sign, whatever its scale (up to epsilon against 1e-6).
    assert np.all(directions[~masks] == 0.0)
    assert np.all(directions[:, 2] == 0.0)
    if not kwargs:
        np.testing.assert_allclose(directions[0, 1:2], np.sign(gradients[0, 1:2]), rtol=1e-4)
        np.testing.assert_allclose(directions[1, 0], np.sign(gradients[1, 0]), rtol=1e-4)
        # Adam does not see the scale of a gradient far above epsilon: 100x, the same steps.
        scaled = _run(100.0 * gradients, masks)[0]
        np.testing.assert_allclose(scaled[:, :3], directions[:, :3], rtol=1e-4, atol=1e-6)


def test_a_masked_entry_keeps_its_moments_and_bias_correction():
    gradients = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    masks = np.array([[True, True], [True, False], [True, True]])
    directions, first, second = _run(gradients, masks)
    # Entry 1 took two steps (t = 1, 2): the same as two steps with no absence.
    _, first_2, second_2 = _run(gradients[:2], np.ones((2, 2), dtype=bool))
    np.testing.assert_allclose(first[1], first_2[1], rtol=RTOL)
    np.testing.assert_allclose(second[1], second_2[1], rtol=RTOL)
    # A constant gradient gives direction ~1 at every step (the bias correction is exact).
    np.testing.assert_allclose(directions[masks], 1.0, rtol=RTOL)


def test_runs_inside_a_compiled_step():
    backend = keras.backend.backend()
    gradient = np.array([3.0, -0.01, 0.0], dtype="float32")
    mask = np.array([True, True, False])

    def step(gradient, first, second, counts, mask):
        return masked_adam_direction(gradient, first, second, counts, mask)

    if backend == "tensorflow":
        import tensorflow as tf

        step = tf.function(step)
    elif backend == "jax":
        import jax

        step = jax.jit(step)
    arguments = (
        ops.convert_to_tensor(gradient),
        ops.zeros((3,)),
        ops.zeros((3,)),
        ops.convert_to_tensor(np.array([1, 1, 0], dtype="int32")),
        ops.convert_to_tensor(mask),
    )
    direction, _, _ = step(*arguments)
    np.testing.assert_allclose(ops.convert_to_numpy(direction), [1.0, -1.0, 0.0], rtol=1e-5)


def test_masked_step_assigns_adam_state_and_leaves_masked_entries():
    iterations = keras.Variable(np.zeros(3, dtype="int32"), dtype="int32", trainable=False)
    first = keras.Variable(np.zeros(3, dtype="float32"), trainable=False)
    second = keras.Variable(np.zeros(3, dtype="float32"), trainable=False)
    gradients = np.array([[1.0, -50.0, 2.0], [0.5, 10.0, 0.0]])
    masks = np.array([[True, True, False], [True, False, True]])
    expected_directions, expected_first, expected_second = _reference(gradients, masks)
    for step, (gradient, mask) in enumerate(zip(gradients, masks)):
        update = masked_step(
            ops.convert_to_tensor(gradient.astype("float32")),
            ops.convert_to_tensor(mask),
            0.1,
            (iterations, first, second),
        )
        np.testing.assert_allclose(
            ops.convert_to_numpy(update), 0.1 * expected_directions[step], rtol=RTOL, atol=1e-7
        )
    np.testing.assert_array_equal(to_numpy(iterations), masks.sum(axis=0))
    np.testing.assert_allclose(to_numpy(first), expected_first, rtol=RTOL)
    np.testing.assert_allclose(to_numpy(second), expected_second, rtol=RTOL)
    # Without Adam state: the plain gradient step, 0 where masked.
    update = masked_step(
        ops.convert_to_tensor([2.0, 3.0]), ops.convert_to_tensor([True, False]), 0.5
    )
    np.testing.assert_allclose(ops.convert_to_numpy(update), [1.0, 0.0])
