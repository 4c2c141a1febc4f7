"""One gradient call that works on every Keras backend (for tests of weighting formulas).

`keras.ops` has no gradient op: each backend differentiates its own way (a `tf.GradientTape`,
`jax.grad` of a pure function, `torch.autograd.grad`). Tests that compare a strategy's gradients
with a NumPy reference call `value_and_gradients` instead of writing a tape.
"""

import keras
import numpy as np


def _numpy(x):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, x)


def _or_zeros(gradient, like):
    if gradient is None:  # TensorFlow and torch: not connected (JAX gives zeros).
        return np.zeros(keras.ops.shape(like), dtype=keras.backend.standardize_dtype(like.dtype))
    return keras.ops.convert_to_numpy(gradient)


def value_and_gradients(fn, x, variables=(), state_variables=()):
    """Calls `fn(x) -> (total, aux)` once; returns `(total, aux, dtotal/dx, [dtotal/dv])` as NumPy.

    Args:
        fn: a function of one tensor returning a scalar and any structure of tensors.
        x: an array; it is converted to a float32 tensor of the backend.
        variables: trainable `keras.Variable`s to differentiate `total` by. A variable `total` does
            not depend on gets zeros (JAX's answer) on every backend.
        state_variables: other variables `fn` reads or assigns (a seed generator's state, a step
            counter). On JAX `fn` runs in a `keras.StatelessScope` and their new values are assigned
            afterwards, so the call changes them as it does on TensorFlow and torch.
    """
    x = np.asarray(x, dtype="float32")
    variables = list(variables)
    ids = {id(v) for v in variables}
    state_variables = [v for v in state_variables if id(v) not in ids]
    backend = keras.backend.backend()

    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            total, aux = fn(x)
        d_x = tape.gradient(total, x)
        d_variables = [tape.gradient(total, v.value) for v in variables]
        del tape
    elif backend == "torch":
        import torch

        x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        total, aux = fn(x)
        sources = [x] + [v.value for v in variables]
        gradients = torch.autograd.grad(total, sources, allow_unused=True)
        d_x, d_variables = gradients[0], list(gradients[1:])
    elif backend == "jax":
        import jax

        def pure(x, values, state):
            mapping = list(zip(variables, values)) + list(zip(state_variables, state))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                total, aux = fn(x)
            new_state = [scope.get_current_value(v) for v in state_variables]
            return total, (aux, new_state)

        (total, (aux, new_state)), (d_x, d_variables) = jax.value_and_grad(
            pure, argnums=(0, 1), has_aux=True
        )(x, [v.value for v in variables], [v.value for v in state_variables])
        for variable, value in zip(state_variables, new_state):
            variable.assign(value)
    else:
        raise NotImplementedError(f"value_and_gradients: no gradients on backend {backend!r}.")

    d_variables = [_or_zeros(d, v) for d, v in zip(d_variables, variables)]
    return _numpy(total), _numpy(aux), _or_zeros(d_x, x), d_variables
