"""Multi-task training under `tf.distribute`: global-batch task losses, multi-worker `fit`.

Under a distribution strategy each replica sees a slice of the global batch. A
masked task loss is a mean over the labelled elements, so the mean of the
replicas' means is not the global batch's loss when labels are unevenly split
(one replica may hold every label of a task). The helpers here all-reduce the
numerators (sum of the per-element losses) and the label counts, so that every
replica works with the loss of the global batch, exactly as a single device would.

`fit_multi_worker` is a small custom loop standing in for `model.fit` under
`tf.distribute.MultiWorkerMirroredStrategy`, where Keras 3's `fit` fails
(keras-team/keras#20585).
"""

import keras
import numpy as np
import tensorflow as tf

from kerasmtl.trainers.non_finite_monitor import NonFiniteMonitor


def num_replicas_in_sync():
    """The number of replicas running this step together.

    That of the current strategy in a replica context (inside `strategy.run`,
    as in `fit`); 1 outside any strategy and in a cross-replica context.
    """
    if tf.distribute.get_replica_context() is None:
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


def all_reduce_sum(value):
    """Sums `value` over the replicas (no-op with one replica). Differentiable.

    The gradient of an all-reduce sum is the all-reduce sum of the upstream
    gradients (see `tf.distribute.ReplicaContext.all_reduce`).
    """
    if num_replicas_in_sync() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_task_losses(losses, counts):
    """Returns the `(K,)` task losses and label counts of the global batch.

    Args:
        losses: `(K,)` masked-mean task losses of this replica's batch.
        counts: `(K,)` labelled-element counts of this replica's batch.

    Returns:
        `(losses, counts)`: `sum_r S_kr / sum_r C_kr` and `sum_r C_kr` over the
        replicas, where `S_kr = losses_kr * max(C_kr, 1)` is the replica's sum of
        per-element losses (0 when it has no label for task k). The losses are
        differentiable: the gradient reaches each replica's own `S_kr`. With one
        replica the inputs come back unchanged.
    """
    if num_replicas_in_sync() == 1:
        return losses, counts
    losses = tf.cast(losses, "float32")
    counts = tf.cast(counts, "float32")
    sums = losses * tf.maximum(counts, 1.0)
    # One collective for both: the counts carry no gradient.
    reduced = all_reduce_sum(tf.stack([sums, tf.stop_gradient(counts)]))
    global_counts = tf.stop_gradient(reduced[1])
    return reduced[0] / tf.maximum(global_counts, 1.0), global_counts


def fit_multi_worker(model, dataset, epochs=1, steps_per_epoch=None, callbacks=None, verbose=0):
    """Trains `model` under `MultiWorkerMirroredStrategy`, where Keras's `fit` fails.

    A workaround for keras-team/keras#20585: Keras 3's `fit` under
    `tf.distribute.MultiWorkerMirroredStrategy` fails in
    `TensorFlowTrainer._maybe_symbolic_build` (`strategy.reduce` of a batch of
    per-replica values) and then in `reduce_per_replica`. The train step itself
    works on that strategy, so this loop runs the model's own `train_step`
    (Keras's with our `compute_loss`, or the gradient step of gradient-based
    strategies) under `strategy.run`, one global batch per step, and drives the
    callbacks (`LossWeightScheduler`, `History`, ...) as `fit` does.
    `MultiTaskModel.fit` calls it by itself under that strategy. The test
    `tests/test_distribute.py` fails once Keras's own `fit` stops failing there:
    then drop this function and the routing in `MultiTaskModel.fit`.

    Build and compile the model inside `strategy.scope()`. Every worker runs
    the same call with the same dataset. The dataset yields `(x, y)` or
    `(x, y, sample_weight)` batches of the GLOBAL batch size: it is split as
    Keras splits it (`strategy.experimental_distribute_dataset`), each worker
    taking its replicas' share of each global batch.

    Args:
        model: a compiled `MultiTaskModel` (or any compiled Keras model) built
            under the strategy's scope.
        dataset: a batched `tf.data.Dataset` of finite length, or pass
            `steps_per_epoch`.
        epochs: the number of epochs.
        steps_per_epoch: steps per epoch; defaults to the dataset's length.
        callbacks: a list of `keras.callbacks.Callback`.
        verbose: 0 (silent) or 1 (progress bar).

    Returns:
        The `keras.callbacks.History` of the run.
    """
    strategy = model.distribute_strategy
    if steps_per_epoch is None:
        cardinality = int(dataset.cardinality())
        if cardinality < 1:
            raise ValueError(
                "`fit_multi_worker` needs a dataset of known, finite length, or "
                "`steps_per_epoch`: every worker must run the same number of steps. "
                f"Received: dataset.cardinality()={cardinality}"
            )
        steps_per_epoch = cardinality
    if hasattr(model, "_check_data"):
        model._check_data(dataset, None)
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    distributed = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def train_function(iterator):
        outputs = strategy.run(model.train_step, args=(next(iterator),))
        # Metric variables are aggregated over all replicas: any replica's result is the result.
        return tf.nest.map_structure(
            lambda value: strategy.experimental_local_results(value)[0], outputs
        )

    # What `MultiTaskModel.fit` adds: the count of steps with a non-finite task loss.
    given = [c for c in callbacks or [] if isinstance(c, NonFiniteMonitor)]
    monitors = (
        [] if given or not hasattr(model, "non_finite_step_counts") else [NonFiniteMonitor(model)]
    )
    callback_list = keras.callbacks.CallbackList(
        [*(callbacks or []), *monitors],
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        iterator = iter(distributed)
        logs = {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = _to_python(train_function(iterator))
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        logs = _to_python(model.get_metrics_result()) or logs
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    for monitor in monitors:
        monitor.warn()
    return model.history


def _to_python(logs):
    logs = {key: np.asarray(value) for key, value in logs.items()}
    return {key: float(value) if value.ndim == 0 else value for key, value in logs.items()}


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` (where Keras's `fit` fails)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


_FIT_ARGUMENTS_SUPPORTED = ("epochs", "steps_per_epoch", "callbacks", "verbose", "shuffle")


def fit_multi_worker_from_fit_arguments(model, x, y, args, kwargs):
    """`MultiTaskModel.fit` under `MultiWorkerMirroredStrategy`: checks, then `fit_multi_worker`."""
    if y is not None or args or not isinstance(x, tf.data.Dataset):
        raise ValueError(
            "Under MultiWorkerMirroredStrategy, MultiTaskModel.fit trains through "
            "`kerasmtl.trainers.distributed.fit_multi_worker` (Keras's own fit fails there, "
            "keras-team/keras#20585), which takes a batched tf.data.Dataset of (x, y) global "
            "batches as `x` and keyword arguments only. "
            f"Received: x of type {type(x).__name__}, y={'given' if y is not None else None}, "
            f"{len(args)} positional argument(s) after y"
        )
    unsupported = sorted(key for key in kwargs if key not in _FIT_ARGUMENTS_SUPPORTED)
    if unsupported:
        raise ValueError(
            f"Under MultiWorkerMirroredStrategy, MultiTaskModel.fit supports only "
            f"{list(_FIT_ARGUMENTS_SUPPORTED)} (keras-team/keras#20585 workaround). "
            f"Received unsupported argument(s): {unsupported}"
        )
    kwargs = dict(kwargs)
    kwargs.pop("shuffle", None)  # the dataset is used in its own order
    verbose = kwargs.pop("verbose", 0)
    return fit_multi_worker(model, x, verbose=1 if verbose == "auto" else verbose, **kwargs)
