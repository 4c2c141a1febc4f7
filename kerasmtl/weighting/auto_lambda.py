"""Auto-Lambda: task weights meta-learned by a one-step lookahead."""

import keras
from keras import ops

from kerasmtl.checks import check_number
from kerasmtl.weighting import optimizer_steps
from kerasmtl.weighting.base_weighting import Weighting


@keras.saving.register_keras_serializable(package="kerasmtl")
class AutoLambda(Weighting):
    """Auto-Lambda: task weights learned so that a training step helps the primary tasks.

    From Liu, Johns and Davison, "Auto-Lambda: Disentangling Dynamic Task
    Relationships", TMLR 2022, following the official implementation
    (github.com/lorenmt/auto-lambda, `auto_lambda.py`). The task weights
    `lambda` are meta-learned: each training step first asks how the primary
    tasks' loss on held-out data would change after one step on the weighted
    training loss, and moves `lambda` to lower it. With training data `tr` and
    held-out data `val`:

    1. a virtual step `theta' = theta - alpha * grad(sum_k lambda_k L_k(theta; tr))`
       (plus the model's own losses: regularisers, `add_loss` terms);
    2. `d = grad_theta' sum_{k primary} L_k(theta'; val)`;
    3. the paper's finite difference, with `eps = 0.01 / ||d||`:
       `h_k = (L_k(theta + eps d; tr) - L_k(theta - eps d; tr)) / (2 eps)`,
       which approximates `<d, grad L_k(theta; tr)>`; the meta-gradient of
       `lambda_k` is `-alpha * h_k`: a task whose gradient points along the
       primary tasks' held-out descent direction gains weight;
    4. an Adam step on `lambda` (learning rate `meta_learning_rate`);
    5. the ordinary training step on the whole batch with the total loss
       `sum_k lambda_k L_k`, with `lambda` already updated.

    Modes: `primary_tasks=None` makes every task primary (the paper's
    multi-task mode); a list of task names gives its auxiliary-learning mode,
    where the other tasks are auxiliary and their weights say how much they
    help the primary ones.

    Deviations from the paper:

    - Held-out data: the paper draws `val` from a second, differently shuffled
      loader over the training set. Here each training step splits its own
      batch into two disjoint halves: the first is `tr` (steps 1 and 3), the
      second `val` (step 2). So no second data pipeline is needed and any
      input `fit` takes works; the meta update sees half a batch each.
    - The virtual step is a plain gradient step `theta - alpha * g`, with
      `alpha` the model optimizer's current learning rate (as the paper's
      `scheduler.get_last_lr()`) or `lookahead_learning_rate`; the paper's
      virtual step adds SGD momentum and weight decay, which a Keras
      optimizer does not expose as one formula.
    - The lookahead forward passes run statelessly: batch-normalisation
      statistics and other state they would update are discarded.
    - A step whose first half-batch has no labelled task, whose second half
      has no labelled primary task (a batch of one sample has neither), or
      where `d = 0` (or anything in the meta update is not finite) makes no
      meta update: `lambda` and the Adam state stay as they are.
    - Absent tasks: a task with no labelled sample in `tr` gets `h_k = 0` and
      keeps its Adam moments and step count (the masked Adam of
      `optimizer_steps`); in the ordinary step it gets weight 0 as with every
      strategy.
    - The Adam step is PyTorch's (`torch.optim.Adam` defaults, as the
      official code), with a step count per task.
    - Distributed training: the meta update is that of the global batch.
      Under JAX's `keras.distribution.DataParallel` the batch's halves are the
      global batch's. Under `tf.distribute.MirroredStrategy` each replica
      splits its own slice of the global batch into halves, so `tr` / `val`
      are the unions of the replicas' halves; the task losses are the global
      ones, the gradients (of the virtual step and `d`) are all-reduced, and
      every replica computes the same `h` and holds the same `lambda` and
      Adam state. Other `tf.distribute` strategies with several replicas
      (`MultiWorkerMirroredStrategy`: untested) raise an error.
    - Mixed precision (`LossScaleOptimizer`) trains; the lookahead's own
      gradients are not loss-scaled and may underflow in float16 (a step
      whose `d` is 0 makes no meta update).

    The weights, the Adam moments and the per-task step counts are
    non-trainable variables changed by `assign`: saved in `.keras` files,
    restored by `BackupAndRestore`, never a recompile or retrace. The model's
    trainer runs the meta update inside the compiled train step on every
    backend (TensorFlow `tf.function`, JAX `jit`, torch eagerly), before the
    ordinary step; evaluation uses the current weights.

    Args:
        primary_tasks: `None` (every task is primary), or the names of the
            primary tasks (a list, or one name); resolved when the model
            compiles, which fails if a name is not one of its tasks.
        initial_weight: the starting weight of every task (the paper's 0.1).
        meta_learning_rate: the learning rate of the weights' Adam optimizer
            (the paper: 1e-4 on dense prediction, 3e-4 on CIFAR-100).
        lookahead_learning_rate: `alpha` of the virtual step; `None` (default)
            uses the model optimizer's current learning rate.
        **kwargs: base layer keyword arguments, such as `name`.

    Example:

    >>> strategy = AutoLambda(primary_tasks=["a"])
    >>> strategy.bind_tasks(["a", "b"])
    >>> strategy.build((2,))
    >>> total, weights = strategy.combine(keras.ops.convert_to_tensor([1.0, 3.0]))
    >>> [round(float(w), 3) for w in weights]
    [0.1, 0.1]
    """

    requires_lookahead = True

    def __init__(
        self,
        primary_tasks=None,
        initial_weight=0.1,
        meta_learning_rate=1e-4,
        lookahead_learning_rate=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        if isinstance(primary_tasks, str):
            primary_tasks = [primary_tasks]
        if primary_tasks is not None:
            if not isinstance(primary_tasks, (list, tuple)) or not primary_tasks:
                raise ValueError(
                    f"{owner}: `primary_tasks` must be None (every task is primary) or a "
                    f"non-empty list of task names. Received: primary_tasks={primary_tasks!r}"
                )
            for name in primary_tasks:
                if not isinstance(name, str) or not name:
                    raise ValueError(
                        f"{owner}: `primary_tasks` must hold task names (strings). "
                        f"Received: primary_tasks={primary_tasks!r}"
                    )
            if len(set(primary_tasks)) != len(primary_tasks):
                raise ValueError(
                    f"{owner}: `primary_tasks` names a task twice. "
                    f"Received: primary_tasks={primary_tasks!r}"
                )
            primary_tasks = list(primary_tasks)
        self.primary_tasks = primary_tasks
        self.initial_weight = check_number(initial_weight, "initial_weight", owner)
        self.meta_learning_rate = check_number(
            meta_learning_rate, "meta_learning_rate", owner, allow_minimum=False
        )
        if lookahead_learning_rate is not None:
            lookahead_learning_rate = check_number(
                lookahead_learning_rate, "lookahead_learning_rate", owner, allow_minimum=False
            )
        self.lookahead_learning_rate = lookahead_learning_rate
        self._task_names = None

    def bind_tasks(self, task_names):
        """Resolves `primary_tasks` against the model's task names (called by `compile`)."""
        task_names = list(task_names)
        unknown = [name for name in self.primary_tasks or [] if name not in task_names]
        if unknown:
            raise ValueError(
                f"AutoLambda: unknown primary task(s) {unknown}. The model's tasks: "
                f"{task_names}. Received: primary_tasks={self.primary_tasks!r}"
            )
        self._task_names = task_names

    @property
    def primary_mask(self):
        """The boolean `(num_tasks,)` list of primary tasks (all before `bind_tasks`)."""
        if self.primary_tasks is None or self._task_names is None:
            return [True] * self.num_tasks
        return [name in self.primary_tasks for name in self._task_names]

    def build(self, losses_shape):
        super().build(losses_shape)
        if self._task_names is not None and len(self._task_names) != self.num_tasks:
            raise ValueError(
                f"AutoLambda was bound to the tasks {self._task_names} but built for "
                f"{self.num_tasks} losses. Received: losses_shape={losses_shape}"
            )
        self.task_weights = self.add_weight(
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_weight),
            trainable=False,
            name="task_weights",
        )

        def moment(name):
            return self.add_weight(
                shape=(self.num_tasks,), initializer="zeros", trainable=False, name=name
            )

        self.first_moment = moment("first_moment")
        self.second_moment = moment("second_moment")
        self.iterations = optimizer_steps.add_step_counts(self, self.num_tasks)

    def compute_weights(self, losses, present=None):
        return ops.convert_to_tensor(self.task_weights)

    def lookahead_rate(self, optimizer):
        """`alpha` of the virtual step: `lookahead_learning_rate`, else the optimizer's rate."""
        if self.lookahead_learning_rate is not None:
            return ops.convert_to_tensor(self.lookahead_learning_rate, "float32")
        return ops.cast(optimizer.learning_rate, "float32")

    def meta_update(self, differences, mask, learning_rate):
        """One Adam step on the weights from the lookahead's finite differences.

        Args:
            differences: float32 `(num_tasks,)`, `h_k`, the central difference
                approximating `<d, grad L_k(theta; tr)>`.
            mask: boolean `(num_tasks,)`, the tasks that take the step (present
                in `tr`, and the step valid); the others keep their weight and
                Adam state.
            learning_rate: `alpha`, the virtual step's learning rate.

        Returns:
            The new weights (also `assign`ed, with the Adam state).
        """
        differences = ops.cast(differences, "float32")
        mask = ops.cast(mask, "bool")
        meta_gradient = -ops.cast(learning_rate, "float32") * differences
        update = optimizer_steps.masked_step(
            meta_gradient,
            mask,
            self.meta_learning_rate,
            adam_state=(self.iterations, self.first_moment, self.second_moment),
        )
        weights = ops.convert_to_tensor(self.task_weights) - update
        self.task_weights.assign(weights)
        return weights

    def get_config(self):
        return {
            **super().get_config(),
            "primary_tasks": self.primary_tasks,
            "initial_weight": self.initial_weight,
            "meta_learning_rate": self.meta_learning_rate,
            "lookahead_learning_rate": self.lookahead_learning_rate,
        }
