"""The K task vector-Jacobian products of the JAX gradient step."""

import jax
import jax.numpy as jnp


def task_vjps(vjp_function, cotangents):
    """`vjp_function` of each row of `cotangents`, stacked on a leading axis.

    One batched pass (`jax.vmap`) on accelerators; on the CPU a loop of separate
    passes, which XLA's CPU backend runs faster: on the standard workload (2
    cores) PCGrad and MGDA steps cost 2.95-3.2x (K=2) and 5.3-6.0x (K=5) plain
    Keras's with `vmap`, against 1.65-1.7x and 2.3-2.5x with separate passes
    (benchmarks/README.md, section (f)). The accelerator choice is not measured
    yet.
    """
    if jax.default_backend() != "cpu":
        return jax.vmap(vjp_function)(cotangents)
    rows = [vjp_function(cotangents[k]) for k in range(cotangents.shape[0])]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *rows)
