"""Inter-task affinity and task grouping (TAG).

Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task Learning",
NeurIPS 2021. The lookahead inter-task affinity of task i onto task j at step t is

    Z_{i->j} = 1 - L_j(x, theta_s - lr * grad_{theta_s} L_i(x), theta_j) / L_j(x, theta_s, theta_j)

where theta_s are the shared parameters: a positive value means that a gradient
step on task i alone lowers task j's loss (i helps j), a negative value that it
raises it. TAG averages Z over training steps and then picks the task grouping
with the largest total affinity onto each task from its group.

- `task_affinity` computes the matrix on batches of a dataset, for a model as it
  is now; `TaskAffinity` is a callback that computes it during `fit`, every
  `every_n_steps` training steps, as in the paper.
- `suggest_groups` searches the groupings exhaustively; `affinity_heatmap`
  plots the matrix (matplotlib, `pip install "kerasmtl[plots]"`).

The lookahead needs per-task gradients, so it runs on the TensorFlow backend.
"""

import itertools
import warnings

import keras
import numpy as np

from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.plots import _pyplot
from kerasmtl.trainers import gradient_math

MAX_EXHAUSTIVE_TASKS = 10


class _Lookahead:
    """Traces one function returning a batch's task losses before and after each lookahead."""

    def __init__(self, model):
        if not isinstance(model, MultiTaskModel):
            raise TypeError(
                "Task affinity needs a `kerasmtl.MultiTaskModel`. "
                f"Received: model of type {type(model).__name__}"
            )
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "Task affinity needs the TensorFlow backend for its per-task gradients. "
                f"Received: backend={keras.backend.backend()!r}"
            )
        if not model.compiled or getattr(model, "_task_loss_fns", None) is None:
            raise ValueError(
                "Compile the model before computing task affinity: the task losses come "
                "from `compile` (or the tasks' own losses)."
            )
        import tensorflow as tf

        self.model = model
        self.task_names = model.task_names
        try:
            # Decided once from the functional graph, as for the gradient-based strategies.
            self.shared_indices = gradient_math.shared_variable_indices(model)
        except ValueError:
            raise ValueError(
                "Task affinity is defined on parameters shared by two or more tasks, and "
                f"this model has none. Tasks: {self.task_names}. "
                f"Received: model={model.name}"
            ) from None
        self.shared_variables = [
            model.trainable_variables[index].path for index in self.shared_indices
        ]
        self._function = tf.function(self._losses, reduce_retracing=True)

    def __call__(self, x, y, sample_weight, learning_rate):
        import tensorflow as tf

        before, counts, after = self._function(
            x, y, sample_weight, tf.constant(learning_rate, "float32")
        )
        return before.numpy(), counts.numpy(), after.numpy()

    def _losses(self, x, y, sample_weight, learning_rate):
        import tensorflow as tf

        model = self.model
        num_tasks = len(self.task_names)
        variables = model.trainable_variables
        # Inference mode: dropout off and no batch-norm statistics updated, so
        # the two losses of a ratio see the same function of the parameters.
        with tf.GradientTape(persistent=True) as tape:
            y_pred = model(x, training=False)
            losses, counts = model.compute_task_loss_list(y, y_pred, sample_weight)
        per_task = [tape.gradient(losses[k], variables) for k in range(num_tasks)]
        del tape
        shared = self.shared_indices
        values = [variable.value for variable in variables]
        non_trainable = [variable.value for variable in model.non_trainable_variables]
        after = []
        for source in range(num_tasks):
            stepped = list(values)
            for index in shared:
                gradient = per_task[source][index]
                if gradient is not None:
                    gradient = tf.cast(tf.convert_to_tensor(gradient), values[index].dtype)
                    stepped[index] = (
                        values[index] - tf.cast(learning_rate, values[index].dtype) * gradient
                    )
            # A stateless call reads the stepped values in place of the variables:
            # the model's variables are never written, so they stay exactly as they were.
            outputs, _ = model.stateless_call(stepped, non_trainable, x, training=False)
            lookahead, _ = model.compute_task_loss_list(y, outputs, sample_weight)
            after.append(tf.stack(lookahead))
        return tf.stack(losses), tf.stack(counts), tf.stack(after)


class _AffinityAccumulator:
    """Running mean of the per-step affinity matrices, entry by entry."""

    def __init__(self, num_tasks):
        self.total = np.zeros((num_tasks, num_tasks))
        self.count = np.zeros((num_tasks, num_tasks))

    def add(self, before, counts, after):
        # A task with no label in the batch (loss 0) has no ratio: skip its column.
        valid_target = (counts > 0) & (before > 0) & np.isfinite(before)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = 1.0 - after / before[None, :]
        valid = valid_target[None, :] & np.isfinite(step)
        self.total += np.where(valid, step, 0.0)
        self.count += valid

    def mean(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


def _learning_rate(model, learning_rate):
    if learning_rate is not None:
        return float(learning_rate)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "Pass `learning_rate`: the model has no optimizer to read it from. "
            "Received: learning_rate=None"
        )
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _batches(data, batch_size):
    """Yields `(x, y, sample_weight)` batches from `(x, y[, sample_weight])` or batches."""
    if isinstance(data, tuple) and len(data) in (2, 3) and isinstance(data[1], dict):
        x, y = data[0], data[1]
        sample_weight = data[2] if len(data) == 3 else None
        num_samples = len(keras.tree.flatten(x)[0])
        for start in range(0, num_samples, batch_size):
            window = slice(start, start + batch_size)
            yield (
                keras.tree.map_structure(lambda array: array[window], x),
                keras.tree.map_structure(lambda array: array[window], y),
                None
                if sample_weight is None
                else keras.tree.map_structure(lambda array: array[window], sample_weight),
            )
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            "`data` must be a tuple `(x, y)` of arrays with a label dict, or an iterable of "
            "batches `(x, y)` such as a batched `tf.data.Dataset`. "
            f"Received: data of type {type(data).__name__}"
        ) from None
    for batch in iterator:
        yield keras.utils.unpack_x_y_sample_weight(tuple(batch))


def task_affinity(model, data, learning_rate=None, steps=None, batch_size=32):
    """Computes the TAG inter-task affinity matrix of a model on batches of data.

    Lookahead inter-task affinity (Fifty et al., "Efficiently Identifying Task
    Groupings for Multi-Task Learning", NeurIPS 2021): for each batch and each
    task i, one SGD step of the shared parameters on task i's loss alone, with
    `learning_rate`, then `Z_{i->j} = 1 - L_j(after) / L_j(before)` for every
    task j on the same batch, averaged over the batches. The shared parameters
    are the trainable variables that reach two or more task losses; each task's
    gradient comes from `tf.GradientTape`. The lookahead losses are computed
    with a stateless call on the stepped values, so the model's variables are
    never written and stay bit-for-bit as they were. Losses are computed in
    inference mode (`training=False`: no dropout, no batch-norm updates).

    A batch where task j has no label (or a zero loss) adds nothing to column j.
    TAG computes the affinity during training (see the `TaskAffinity`
    callback); this function measures it at the model's current weights.

    Args:
        model: a compiled `MultiTaskModel`.
        data: a tuple `(x, y)` or `(x, y, sample_weight)` of arrays with `y` a
            label dict keyed by task name (split into batches of `batch_size`),
            or an iterable of such batches, e.g. a batched `tf.data.Dataset`.
        learning_rate: the lookahead step size; defaults to the current
            learning rate of the model's optimizer.
        steps: the number of batches to use; `None` for all of `data`.
        batch_size: the batch size for array data.

    Returns:
        A tuple `(matrix, task_names)`: `matrix[i, j]` is Z_{i->j}, the affinity
        of task `task_names[i]` (the lookahead step) onto task `task_names[j]`
        (the loss measured), as a float64 NumPy array of shape `(K, K)`.

    Example:

    ```python
    matrix, names = task_affinity(model, (x_train[:512], y_train), learning_rate=0.01)
    groups = suggest_groups(matrix, names, num_groups=2)
    ```
    """
    lookahead = _Lookahead(model)
    rate = _learning_rate(model, learning_rate)
    accumulator = _AffinityAccumulator(len(lookahead.task_names))
    used = 0
    for x, y, sample_weight in _batches(data, batch_size):
        if steps is not None and used >= steps:
            break
        accumulator.add(*lookahead(x, y, sample_weight, rate))
        used += 1
    if used == 0:
        raise ValueError(
            f"`data` gave no batch to compute the affinity on. Received: steps={steps}"
        )
    matrix = accumulator.mean()
    _warn_missing(matrix, lookahead.task_names)
    return matrix, lookahead.task_names


def _warn_missing(matrix, task_names):
    missing = [name for j, name in enumerate(task_names) if np.all(np.isnan(matrix[:, j]))]
    if missing:
        warnings.warn(
            f"No batch had labels (and a non-zero loss) for task(s) {missing}: their "
            "affinity columns are NaN.",
            stacklevel=3,
        )


class TaskAffinity(keras.callbacks.Callback):
    """Computes the TAG inter-task affinity during training.

    Lookahead inter-task affinity (Fifty et al., "Efficiently Identifying Task
    Groupings for Multi-Task Learning", NeurIPS 2021), as in `task_affinity`,
    measured every `every_n_steps` training steps (after the optimizer update of
    that step) on the next batch of `data`, and averaged over all of training,
    as the paper does. Keras callbacks do not see the training batch, so the
    batches come from `data`, which is cycled; pass the training data (shuffled)
    to follow the paper. The model's weights are never written by the
    lookahead. The measurements start afresh at each `fit`.

    Args:
        data: a tuple `(x, y)` of arrays with a label dict (split into batches
            of `batch_size`), or a batched `tf.data.Dataset` of `(x, y)`.
        learning_rate: the lookahead step size; `None` to use the optimizer's
            learning rate at each measurement.
        every_n_steps: measure every this many training steps.
        batch_size: the batch size for array data.

    Attributes:
        affinity: the `(K, K)` mean affinity so far, `affinity[i, j]` = Z_{i->j}
            (NaN before the first measurement).
        task_names: the task order of `affinity`.
        epoch_affinities: the mean affinity at the end of each epoch.
        num_measurements: how many batches were measured.

    Example:

    ```python
    affinity = TaskAffinity((x_train, y_train), learning_rate=1e-3, every_n_steps=10)
    model.fit(x_train, y_train, epochs=3, callbacks=[affinity])
    groups = suggest_groups(affinity.affinity, affinity.task_names, num_groups=2)
    ```
    """

    def __init__(self, data, learning_rate=None, every_n_steps=1, batch_size=32):
        super().__init__()
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(
                f"`every_n_steps` must be a positive int. Received: every_n_steps={every_n_steps!r}"
            )
        self.data = data
        self.learning_rate = learning_rate
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.task_names = None
        self.epoch_affinities = []
        self.num_measurements = 0
        self._lookahead = None
        self._accumulator = None
        self._iterator = None
        self._step = 0

    @property
    def affinity(self):
        if self._accumulator is None:
            return None
        return self._accumulator.mean()

    def on_train_begin(self, logs=None):
        self._lookahead = _Lookahead(self.model)
        self.task_names = self._lookahead.task_names
        self._accumulator = _AffinityAccumulator(len(self.task_names))
        self.epoch_affinities = []
        self.num_measurements = 0
        self._iterator = None
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every_n_steps:
            return
        x, y, sample_weight = self._next_batch()
        rate = _learning_rate(self.model, self.learning_rate)
        self._accumulator.add(*self._lookahead(x, y, sample_weight, rate))
        self.num_measurements += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_affinities.append(self.affinity)

    def _next_batch(self):
        for _ in range(2):
            if self._iterator is None:
                self._iterator = _batches(self.data, self.batch_size)
            try:
                return next(self._iterator)
            except StopIteration:
                self._iterator = None
        raise ValueError(
            "`data` of TaskAffinity gave no batch. Received: data of type "
            f"{type(self.data).__name__}"
        )


def _check_matrix(matrix, task_names):
    matrix = np.asarray(matrix, dtype="float64")
    task_names = list(task_names)
    size = len(task_names)
    if matrix.shape != (size, size):
        raise ValueError(
            f"The affinity matrix must be square with one row and column per task "
            f"({size} tasks: {task_names}). Received: matrix.shape={matrix.shape}"
        )
    if len(set(task_names)) != size:
        raise ValueError(f"Task names must be unique. Received: task_names={task_names}")
    return matrix, task_names


def _set_partitions(num_items, num_groups):
    """Yields each partition of `range(num_items)` into `num_groups` non-empty blocks.

    As restricted growth strings: item 0 in block 0, each later item in an
    existing block or the next new one, so every partition comes exactly once.
    """
    labels = [0] * num_items

    def extend(item, used):
        if num_items - item < num_groups - used:
            return
        if item == num_items:
            if used == num_groups:
                yield list(labels)
            return
        for block in range(min(used + 1, num_groups)):
            labels[item] = block
            yield from extend(item + 1, max(used, block + 1))

    if num_items:
        yield from extend(1, 1)


def grouping_score(matrix, groups, task_names):
    """The TAG objective of a grouping: the total affinity onto each task from its group.

    For a task j in group G, the affinity onto j is the mean of Z_{i->j} over the
    other tasks i of G (0 for a task alone in its group); the score is the sum
    over tasks (Fifty et al., NeurIPS 2021, Section 3.2).

    Args:
        matrix: the `(K, K)` affinity matrix, `matrix[i, j]` = Z_{i->j}.
        groups: a list of groups, each a list of task names.
        task_names: the task order of `matrix`.

    Returns:
        The score as a Python float.
    """
    matrix, task_names = _check_matrix(matrix, task_names)
    index = {name: position for position, name in enumerate(task_names)}
    score = 0.0
    for group in groups:
        members = [index[name] for name in group]
        if len(members) < 2:
            continue
        for target in members:
            sources = [source for source in members if source != target]
            score += float(np.mean(matrix[sources, target]))
    return score


def suggest_groups(matrix, task_names, num_groups):
    """Suggests a task grouping from an affinity matrix, as TAG does.

    TAG (Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task
    Learning", NeurIPS 2021) picks the groups that maximise the total
    inter-task affinity onto each task from its group (see `grouping_score`),
    by exhaustive search for small numbers of tasks as in the paper. In the
    paper a task may belong to several groups and is served by the best one;
    here each task is in exactly one group: the search is over the partitions
    of the tasks into exactly `num_groups` non-empty groups. The diagonal
    (self-affinity) is not used. Ties go to the first partition found.

    Args:
        matrix: the `(K, K)` affinity matrix, `matrix[i, j]` = Z_{i->j}, e.g.
            from `task_affinity` or `TaskAffinity`.
        task_names: the task order of `matrix`.
        num_groups: the number of groups, from 1 to K.

    Returns:
        A list of `num_groups` groups, each a list of task names in task order,
        the groups ordered by their first task.

    Example:

    >>> matrix = np.array([[1.0, 0.5, -0.2], [0.4, 1.0, -0.1], [-0.3, -0.2, 1.0]])
    >>> suggest_groups(matrix, ["a", "b", "c"], num_groups=2)
    [['a', 'b'], ['c']]
    """
    matrix, task_names = _check_matrix(matrix, task_names)
    size = len(task_names)
    if not isinstance(num_groups, (int, np.integer)) or not 1 <= num_groups <= size:
        raise ValueError(
            f"`num_groups` must be an int from 1 to the number of tasks ({size}). "
            f"Received: num_groups={num_groups!r}"
        )
    if size > MAX_EXHAUSTIVE_TASKS:
        raise ValueError(
            f"The exhaustive search over groupings is limited to {MAX_EXHAUSTIVE_TASKS} "
            "tasks (the number of partitions grows faster than exponentially). Group a "
            f"subset of the tasks. Received: {size} tasks"
        )
    off_diagonal = ~np.eye(size, dtype=bool)
    if not np.all(np.isfinite(matrix[off_diagonal])):
        bad = [
            f"{task_names[i]}->{task_names[j]}"
            for i, j in itertools.product(range(size), repeat=2)
            if i != j and not np.isfinite(matrix[i, j])
        ]
        raise ValueError(
            "The affinity matrix has non-finite entries (a task with no labelled batch "
            f"gives NaN): {bad}. Received: matrix with {len(bad)} non-finite entries"
        )
    # Mean affinity onto each target from the other members, per partition.
    best, best_score = None, -np.inf
    for labels in _set_partitions(size, int(num_groups)):
        labels = np.asarray(labels)
        same = (labels[:, None] == labels[None, :]) & off_diagonal
        others = same.sum(axis=0)
        onto = np.where(same, matrix, 0.0).sum(axis=0)
        score = float(np.sum(np.where(others > 0, onto / np.maximum(others, 1), 0.0)))
        if score > best_score:
            best, best_score = labels, score
    return [[task_names[i] for i in range(size) if best[i] == group] for group in range(num_groups)]


def affinity_heatmap(matrix, task_names, path, title="Inter-task affinity (TAG)"):
    """Plots an affinity matrix as an annotated heatmap and writes it as a PNG.

    Rows are the task of the lookahead step (i), columns the task whose loss is
    measured (j); the colour scale is centred at 0 (red: i helps j, blue: i
    hurts j) and fits the off-diagonal entries, with each value printed in its
    cell.

    Args:
        matrix: the `(K, K)` affinity matrix, `matrix[i, j]` = Z_{i->j}.
        task_names: the task order of `matrix`.
        path: the PNG file to write.
        title: the figure title.

    Returns:
        `path`.
    """
    matrix, task_names = _check_matrix(matrix, task_names)
    plt = _pyplot()
    size = len(task_names)
    # The colour scale fits the off-diagonal entries, which decide the grouping;
    # self-affinities are often larger and saturate (their values are printed).
    off_diagonal = matrix[~np.eye(size, dtype=bool)] if size > 1 else matrix.ravel()
    finite = off_diagonal[np.isfinite(off_diagonal)]
    limit = float(np.max(np.abs(finite))) if finite.size else 1.0
    limit = limit or 1.0
    figure, axis = plt.subplots(figsize=(1.2 * size + 2.5, 1.1 * size + 1.5))
    image = axis.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axis.set_xticks(range(size), labels=task_names, rotation=45, ha="right")
    axis.set_yticks(range(size), labels=task_names)
    axis.set_xlabel("task j (loss measured)")
    axis.set_ylabel("task i (lookahead step)")
    for i, j in itertools.product(range(size), repeat=2):
        value = matrix[i, j]
        axis.text(
            j,
            i,
            "nan" if not np.isfinite(value) else f"{value:.3g}",
            ha="center",
            va="center",
            color="white" if np.isfinite(value) and abs(value) > 0.6 * limit else "black",
            fontsize=9,
        )
    figure.colorbar(image, ax=axis, label="Z(i -> j)")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
