"""The K task vector-Jacobian products of the JAX gradient step."""

import jax
import jax.numpy as jnp

METHODS = ("auto", "loop", "map", "vmap")

# The method `task_vjps` uses when none is passed; benchmarks set it to compare them.
method = "auto"


def task_vjps(vjp_function, cotangents, method=None):
    """`vjp_function` of each row of `cotangents`, stacked on a leading axis.

    Computes the K pullbacks of one forward pass inside the jitted step, by one of
    three exact routes (they agree to float32 rounding; tests/test_jax_task_gradients.py):

    - `"loop"`: K separate calls, unrolled: XLA compiles K copies of the backward
      pass and runs them as it likes.
    - `"map"`: `jax.lax.map` (a scan): the backward pass is compiled once and run
      K times in sequence.
    - `"vmap"`: `jax.vmap`: one batched backward pass.

    `"auto"` (the default) takes `"loop"` on the CPU and `"vmap"` on accelerators.
    Measured on the CPU (2 shared cores, JAX 0.10.2; benchmarks/README.md,
    section (f)), the loop is the fastest route both to compile and to run:

    - first epoch (trace, compile, 4 steps) of PCGrad / MGDA on a
      MobileNetV3Small trunk, in CPU seconds against plain Keras's: loop
      1.42-1.49x; `map` 2.51-2.55x, and its second epoch 30 s against plain
      Keras's 2.8 s (the scan compiles the pullback once, but XLA's CPU backend
      runs it ~10x slower); `vmap` 15x for PCGrad (216 CPU s, second epoch 389 s).
      Compilation is most of it: XLA compiled plain Keras's step in 15 s and
      PCGrad's, with a second copy of the backward pass, in 29 s.
    - forward + K pullbacks on the standard workload, against forward + one
      backward pass (CPU time): loop 1.36x (K=2) and 2.17x (K=5); `map` 9.9x and
      24x; `map` with `batch_size=2` 12x and 24x; `vmap` 2.35x and 5.5x.

    The accelerator choice is not measured yet.

    Args:
        vjp_function: a pullback, as returned by `jax.vjp`.
        cotangents: array of shape `(K, ...)`, one cotangent per row.
        method: `"auto"`, `"loop"`, `"map"` or `"vmap"`; `None` reads the module's
            `method` (`"auto"` unless a benchmark changed it).

    Returns:
        The pullback's outputs with a leading axis of size K.
    """
    method = globals()["method"] if method is None else method
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(map(repr, METHODS))}. Received: method={method!r}"
        )
    if method == "auto":
        method = "vmap" if jax.default_backend() != "cpu" else "loop"
    if method == "vmap":
        return jax.vmap(vjp_function)(cotangents)
    if method == "map":
        return jax.lax.map(vjp_function, cotangents)
    rows = [vjp_function(cotangents[k]) for k in range(cotangents.shape[0])]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *rows)
