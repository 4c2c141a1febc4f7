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

    `"auto"` (the default) takes `"vmap"` on accelerators and `"loop"` on the CPU,
    where XLA runs the batched convolution gradients slowly: on the standard
    workload (2 cores) PCGrad and MGDA steps cost 2.95-3.2x (K=2) and 5.3-6.0x
    (K=5) plain Keras's with `vmap`, against 1.65-1.7x and 2.3-2.5x with the loop
    (benchmarks/README.md, section (f)). The accelerator choice is not measured
    yet.

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
