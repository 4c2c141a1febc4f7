"""The interface every task-weighting strategy implements."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting.gram_utils import mask_gram


@keras.saving.register_keras_serializable(package="kerasmtl")
class Weighting(keras.layers.Layer):
    """Base class of task-weighting strategies: per-task losses -> one total loss.

    A strategy is a small Keras layer so that its state (loss weights, running
    statistics, learnable parameters) lives in Keras variables: it is trained with
    the model when trainable, saved in `.keras` files, restored by
    `BackupAndRestore`, and changed during `fit` only by `assign`, so the traced
    train function never has to be rebuilt.

    `MultiTaskModel.compile(weighting=...)` builds the strategy with the shape
    `(num_tasks,)` of the per-task loss vector, in the task order of the model.

    Loss-based strategies implement `compute_weights(losses)`; the total loss is
    `sum_k w_k L_k`. Gradient-based strategies set `requires_gradients = True` and
    implement `compute_weights_from_gram(gram, losses)`: the model's trainer gives
    them the Gram matrix `G[i, j] = <g_i, g_j>` of the per-task gradients and takes
    one step along `sum_k a_k g_k`. Strategies that change once per epoch
    implement `update(epoch_losses)`, called by
    `kerasmtl.callbacks.LossWeightScheduler` with the epoch's mean task losses.

    Absent tasks. In a step, a task is absent when it has no labelled sample in
    the (global) batch or its loss is not finite; `present` is the boolean
    `(num_tasks,)` vector of the others. Every strategy computes its weights
    over the present tasks only, as its paper defines them for those tasks (the
    same weights as the strategy built on the present tasks alone, except where
    a strategy's docstring says otherwise), keeps the absent tasks' state
    unchanged (no loss stored, no moment, logit or counter update), and gives
    them weight 0. An absent task's loss is 0 (a masked mean with no labels):
    no strategy reads that 0 as a loss. Gradient-based strategies get the Gram
    matrix with the absent tasks' rows and columns zeroed; they never read them.

    Random state. A strategy that draws random numbers holds a
    `keras.random.SeedGenerator` as an attribute; its state is saved with the
    strategy's variables (Keras layers do not save it), so a restored strategy
    continues the same sequence.

    All strategy math runs in float32, whatever the model's dtype policy.

    Args:
        **kwargs: base layer keyword arguments, such as `name`.
    """

    #: Whether the strategy needs the per-task gradients (Gram matrix) each step.
    requires_gradients = False
    #: Whether the strategy changes once per epoch through `update(epoch_losses)`;
    #: `MultiTaskModel.fit` then adds a `LossWeightScheduler` unless one is given.
    requires_epoch_update = False
    #: Whether the strategy may work on gradients with respect to the shared
    #: representation instead of the shared parameters ("rep-grad").
    supports_representation_gradients = True
    #: Whether the strategy combines the task gradients with respect to the shared
    #: representation itself, coordinate by coordinate
    #: (`combine_representation_gradients`), instead of the trunk receiving
    #: `sum_k a_k g_k`. Such a strategy needs `gradients="representation"`.
    combines_representation_gradients = False
    #: Whether the strategy updates itself each training step from a one-step
    #: lookahead (Auto-Lambda): the model's trainer then runs
    #: `kerasmtl.trainers.lookahead` inside the train step, before the ordinary
    #: loss-based step.
    requires_lookahead = False

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_tasks = None

    def build(self, losses_shape):
        num_tasks = losses_shape[-1]
        if num_tasks is None or num_tasks < 1:
            raise ValueError(
                "A weighting strategy needs at least one task. "
                f"Received: losses_shape={losses_shape}"
            )
        self.num_tasks = int(num_tasks)
        if self.requires_gradients:
            # The coefficients of the last training step: evaluation steps have no
            # gradients, so they weight the task losses with these.
            self.last_coefficients = self.add_weight(
                shape=(self.num_tasks,),
                initializer="ones",
                trainable=False,
                name="last_coefficients",
            )

    def bind_tasks(self, task_names):
        """Tells the strategy the model's task names, in task order (default: ignored).

        `MultiTaskModel.compile` calls it before `build`, so a strategy that takes
        task names as arguments can resolve them (and fail at compile, listing the
        model's tasks).
        """
        del task_names

    def compute_weights(self, losses, present=None):
        """Returns the `(num_tasks,)` weight vector for the losses of this step.

        `present` (boolean `(num_tasks,)`, `None` for every task with a finite
        loss) says which tasks take part; `combine` passes it with the absent
        tasks' losses replaced by 0.

        Gradient-based strategies return the coefficients of the last training
        step here (used by evaluation steps, which compute no gradients).
        """
        if self.requires_gradients:
            return ops.convert_to_tensor(self.last_coefficients)
        raise NotImplementedError(
            f"{self.__class__.__name__} must implement `compute_weights(losses)`."
        )

    def compute_weights_from_gram(self, gram, losses, present=None):
        """Returns the `(num_tasks,)` coefficients from the task-gradient Gram matrix."""
        raise NotImplementedError(f"{self.__class__.__name__} is not a gradient-based strategy.")

    def combine_representation_gradients(self, task_gradients, present, representation=None):
        """Returns the gradient the trunk receives from the `(K, batch, ...)` task gradients.

        The second, optional hook of the gradient step, called on the
        representation route when `combines_representation_gradients` is
        `True` (the Gram contract stays the default): `task_gradients[k]` is
        task k's gradient with respect to the shared representation
        `representation` (`(batch, ...)`), the absent tasks' rows are zero, and
        the result (shaped like the representation) replaces `sum_k a_k g_k`
        in the trunk's backward pass. The heads still get `a_k` times their
        task gradients, with `a` from `compute_weights_from_gram`. keras.ops
        only; random draws through a `keras.random.SeedGenerator` attribute.
        """
        raise NotImplementedError(
            f"{self.__class__.__name__} does not combine representation gradients "
            "(combines_representation_gradients is False)."
        )

    def update(self, epoch_losses):
        """Epoch-level update from the epoch's mean per-task losses (default: none)."""
        del epoch_losses

    def combine(self, losses, training=True, present=None):
        """Returns `(total_loss, weights)` for a `(num_tasks,)` loss vector.

        Args:
            losses: the `(num_tasks,)` task losses of this step.
            training: `False` in evaluation and validation steps, where a
                strategy must not change its state.
            present: an optional boolean `(num_tasks,)` vector: which tasks are
                present in this step (they have a labelled sample in the
                batch). `None` means every task. A task whose loss is NaN or
                infinite is absent too, whatever `present` says.

        Absent tasks get weight 0 and add nothing to the total; strategies keep
        them out of their state.
        """
        losses = ops.cast(losses, "float32")
        present = present_tasks(losses, present)
        # A strategy never sees an absent task's loss (0, NaN or Inf).
        clean = ops.where(present, losses, ops.zeros_like(losses))
        weights = ops.cast(self.compute_weights(clean, present), "float32")
        weights = ops.where(present, weights, ops.zeros_like(weights))
        terms = ops.where(present, weights * clean, ops.zeros_like(clean))
        return ops.sum(terms), weights

    # Keras does not save a layer's seed generators (`save_own_variables` writes
    # the layer's weights only): their states are written after the weights, so
    # a restored strategy continues the same random sequence.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        for index, generator in enumerate(self._seed_generators):
            # The value, not the variable: NumPy's __array__ on a JAX variable warns.
            store[f"seed_generator_{index}"] = ops.convert_to_numpy(generator.state.value)

    def load_own_variables(self, store):
        keys = list(store.keys())
        seed_keys = {key for key in keys if str(key).startswith("seed_generator")}
        if seed_keys:
            super().load_own_variables({key: store[key] for key in keys if key not in seed_keys})
        else:
            super().load_own_variables(store)
        for index, generator in enumerate(self._seed_generators):
            key = f"seed_generator_{index}"
            if key not in seed_keys and index == 0:
                key = "seed_generator_state"  # RLW's key in files saved before
            if key in seed_keys:
                value = ops.convert_to_tensor(store[key])
                generator.state.assign(ops.cast(value, generator.state.dtype))

    def compute_output_shape(self, losses_shape):
        return ()


def present_tasks(losses, present=None):
    """The boolean `(K,)` vector of present tasks: `present` (default all) and a finite loss."""
    finite = ops.isfinite(ops.cast(losses, "float32"))
    if present is None:
        return finite
    return ops.logical_and(ops.cast(present, "bool"), finite)


def present_or_all(present, num_tasks):
    """`present` as a boolean `(num_tasks,)` tensor; `None` means every task."""
    if present is None:
        return ops.ones((num_tasks,), dtype="bool")
    return ops.cast(ops.reshape(present, (num_tasks,)), "bool")


def num_present(present):
    """The number of present tasks, a float32 scalar."""
    return ops.sum(ops.cast(present, "float32"))


def masked_softmax(logits, mask):
    """Softmax of `logits` over the entries where `mask` is true; 0 elsewhere.

    A task outside `mask` gets neither weight nor gradient. With one task the
    result is `mask` itself: no softmax over an axis of size 1 (Keras warns).
    """
    logits = ops.cast(logits, "float32")
    mask = ops.cast(mask, "bool")
    if logits.shape[-1] == 1:
        return ops.cast(mask, "float32")
    largest = ops.max(ops.where(mask, logits, float("-inf")))
    largest = ops.stop_gradient(ops.where(ops.isfinite(largest), largest, 0.0))
    exponentials = ops.exp(ops.where(mask, logits - largest, float("-inf")))
    total = ops.sum(exponentials)
    return exponentials / ops.where(total > 0.0, total, 1.0)


def check_seed(seed, owner):
    """Returns `seed` as an `int` (or `None`), or raises a `ValueError` naming it."""
    if seed is None:
        return None
    return check_number(seed, "seed", owner, minimum=None, integer=True)


def gram_inputs(gram, losses, present):
    """The float32 `(gram, losses, present)` of a gradient-based step, absent tasks cleared.

    `present=None` means every task. The absent tasks' Gram rows and columns and
    their losses are set to 0 (the trainers already do so), so nothing a
    strategy computes can read them.
    """
    gram = ops.cast(gram, "float32")
    num_tasks = gram.shape[-1]
    present = present_or_all(present, num_tasks)
    losses = ops.reshape(ops.cast(losses, "float32"), (num_tasks,))
    return mask_gram(gram, present), ops.where(present, losses, 0.0), present


def check_number_list(values, name, owner, minimum=0.0):
    """Returns `values` as a list of floats (or `None`), each checked by `check_number`."""
    if values is None:
        return None
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise ValueError(
            f"{owner}: `{name}` must be a list of numbers, one per task in task order, "
            f"or None. Received: {name}={values!r}"
        )
    return [
        check_number(value, f"{name}[{index}]", owner, minimum=minimum)
        for index, value in enumerate(values)
    ]
