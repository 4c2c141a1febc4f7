"""GradDrop: gradient sign dropout at the shared representation."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.base_weighting import (
    Weighting,
    check_number_list,
    check_seed,
    gram_inputs,
)


@keras.saving.register_keras_serializable(package="kerasmtl")
class GradDrop(Weighting):
    """GradDrop: per coordinate of the representation, keep one gradient sign.

    From Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with
    Gradient Sign Dropout", NeurIPS 2020 (Algorithm 1). With `A` the shared
    representation (the activations every head reads) and `dL_k/dA` task k's
    gradient with respect to it, the paper's batch-separated rule is:

        G_k = sum_batch sign(A) * dL_k/dA                       (one value per feature)
        P   = 1/2 (1 + sum_k G_k / sum_k |G_k|)                 (positive-sign purity)
        U   ~ Uniform(0, 1), one draw per feature
        M_k = [P > U] * [G_k > 0] + [P < U] * [G_k < 0]
        dA  = sum_k (l_k + (1 - l_k) M_k) * dL_k/dA             (M_k broadcast over the batch)

    and `dA` is what the trunk receives in its backward pass. The heads get
    their own task gradients as usual (every present task has coefficient 1,
    the coefficient logged and used by evaluation steps). In expectation, a
    feature keeps the positive gradients with probability `P`: where every
    task agrees on the sign nothing is dropped.

    A per-coordinate sign rule is not a function of the Gram matrix: GradDrop
    works through the strategy contract's second hook,
    `combine_representation_gradients`, which the trainers (TensorFlow, JAX,
    torch) call on the representation route. It needs `gradients=
    "representation"` (the default it declares) and refuses
    `gradients="parameters"`.

    Details and deviations:

    - `f` (the paper's monotonic function of `P`) is the identity, the paper's
      default.
    - Where every `G_k` of a feature is 0 (`sum_k |G_k| = 0`, e.g. a dead ReLU
      unit over the whole batch), `P = 1/2` instead of `0/0`; the masks are 0
      there anyway.
    - LibMTL computes `sign(A)` summed over the batch times the summed
      gradient (a product of sums); we follow Algorithm 1 (the sum of the
      products). TorchJD's `GradDrop` works on parameter Jacobians without the
      `sign(A)` factor; the kit follows the paper's placement at the
      representation.
    - Absent tasks (no labelled sample, or a non-finite loss): their gradients
      are zeroed before the rule, so they take no part in `P` and get nothing,
      which is GradDrop on the present tasks alone.
    - The uniform draw comes from `keras.random.uniform` with a seeded
      `keras.random.SeedGenerator` whose state is saved with the strategy
      (see `Weighting`), so a restored strategy continues the same sequence.
      The draws differ between backends for the same seed.
    - Under a `tf.distribute` strategy (TensorFlow), `G_k` is summed over the
      replicas, so `P` is that of the global batch, and every replica draws
      the same `U` (the generator's state is a mirrored variable that every
      replica advances alike): each replica applies one device's rule to its
      share of the global batch.
    - Under mixed precision with a dynamic loss scale, the rule runs (and the
      generator advances) also in a step the optimizer skips for overflow.

    Args:
        leak: `l_k`, how much of each task's gradient always passes (0, the
            paper's default, to 1, which is plain summation): one number for
            every task or a list with one per task in task order.
        seed: seed of the generator of `U`, for reproducible runs.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = GradDrop(seed=0)
    >>> strategy.build((2,))
    >>> gradients = keras.ops.convert_to_tensor([[[1.0, -2.0]], [[3.0, -1.0]]])
    >>> combined = strategy.combine_representation_gradients(
    ...     gradients, keras.ops.convert_to_tensor([True, True]),
    ...     representation=keras.ops.ones((1, 2)))
    >>> [float(v) for v in combined[0]]  # same signs on each feature: nothing dropped
    [4.0, -3.0]
    """

    requires_gradients = True
    supports_representation_gradients = True
    preferred_gradients = "representation"
    combines_representation_gradients = True

    def __init__(self, leak=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(leak, (list, tuple)):
            self.leak = check_number_list(leak, "leak", "GradDrop")
            bad = [value for value in self.leak if value > 1.0]
        else:
            self.leak = _check_leak(leak)
            bad = []
        if bad:
            raise ValueError(f"GradDrop: every `leak` must be in [0, 1]. Received: leak={leak!r}")
        self.seed = check_seed(seed, "GradDrop")
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, losses_shape):
        super().build(losses_shape)
        if isinstance(self.leak, list) and len(self.leak) != self.num_tasks:
            raise ValueError(
                f"GradDrop: `leak` has {len(self.leak)} entries for {self.num_tasks} tasks; "
                f"give one per task, in task order, or one number. Received: leak={self.leak!r}"
            )

    def compute_weights_from_gram(self, gram, losses, present=None):
        """Coefficient 1 for every present task (the heads' gradients), 0 for absent ones."""
        _, _, present = gram_inputs(gram, losses, present)
        return ops.cast(present, "float32")

    def combine_representation_gradients(self, task_gradients, present, representation=None):
        """Returns `dA`, the gradient the trunk receives, shaped like the representation.

        Args:
            task_gradients: `(K, batch, ...)`: `dL_k/dA` stacked over the tasks.
            present: boolean `(K,)`: the absent tasks' gradients are zeroed first.
            representation: `A`, `(batch, ...)`; `None` reads `sign(A)` as 1.
        """
        uniform = keras.random.uniform(
            tuple(task_gradients.shape[2:]), seed=self.seed_generator, dtype="float32"
        )
        return self._combine_with_uniform(task_gradients, present, representation, uniform)

    def _combine_with_uniform(self, task_gradients, present, representation, uniform):
        """The rule with a given `U` (`(...)`, the representation's shape without the batch)."""
        gradients = ops.cast(task_gradients, "float32")
        num_tasks = gradients.shape[0]
        ones = (1,) * (len(gradients.shape) - 1)
        present = ops.reshape(ops.cast(present, "bool"), (num_tasks,) + ones)
        gradients = ops.where(present, gradients, ops.zeros_like(gradients))
        signed = gradients
        if representation is not None:
            signed = gradients * ops.sign(ops.cast(representation, "float32"))[None]
        # (K, ...): the paper's batch-separated G_k, over the global batch.
        sums = _sum_over_replicas(ops.sum(signed, axis=1))
        total_abs = ops.sum(ops.abs(sums), axis=0)
        safe = ops.where(total_abs > 0.0, total_abs, ops.ones_like(total_abs))
        purity = 0.5 * (1.0 + ops.sum(sums, axis=0) / safe)
        purity = ops.where(total_abs > 0.0, purity, 0.5 * ops.ones_like(purity))
        uniform = ops.cast(uniform, "float32")
        keep_positive = ops.cast(purity > uniform, "float32")[None]
        keep_negative = ops.cast(purity < uniform, "float32")[None]
        masks = keep_positive * ops.cast(sums > 0.0, "float32") + keep_negative * ops.cast(
            sums < 0.0, "float32"
        )
        leak = self._leak_vector(num_tasks)
        leak = ops.reshape(leak, (num_tasks,) + (1,) * (len(masks.shape) - 1))
        factors = leak + (1.0 - leak) * masks  # (K, ...)
        return ops.sum(factors[:, None] * gradients, axis=0)

    def _leak_vector(self, num_tasks):
        if isinstance(self.leak, list):
            return ops.convert_to_tensor(self.leak, "float32")
        return ops.full((num_tasks,), self.leak, "float32")

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}


def _sum_over_replicas(value):
    """`value` summed over the replicas of a `tf.distribute` strategy (unchanged with one).

    TensorFlow is imported only on its backend: JAX and torch steps run on one
    replica here.
    """
    if keras.backend.backend() != "tensorflow":
        return value
    from kerasmtl.trainers.distributed import all_reduce_sum

    return all_reduce_sum(value)


def _check_leak(value):
    number = check_number(value, "leak", "GradDrop", minimum=0.0)
    if number > 1.0:
        raise ValueError(f"GradDrop: `leak` must be in [0, 1]. Received: leak={value!r}")
    return number
