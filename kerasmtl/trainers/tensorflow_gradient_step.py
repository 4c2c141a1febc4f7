"""The TensorFlow train step for gradient-based weighting strategies."""

import keras
import tensorflow as tf

from kerasmtl.trainers.distributed import all_reduce_sum, num_replicas_in_sync

REPRESENTATION = "representation"


def _rows(gradients):
    """The `(K, n)` float32 matrix whose row k is `gradients[k]` flattened."""
    return tf.stack([tf.reshape(tf.cast(g, "float32"), [-1]) for g in gradients])


def _gram(gradients):
    """The `(K, K)` Gram matrix of K same-shaped gradient tensors."""
    rows = _rows(gradients)
    return tf.matmul(rows, rows, transpose_b=True)


def gradient_train_step(model, data):
    """One step along `sum_k a_k g_k`, with `a` from the strategy and the task-gradient Gram matrix.

    With `gradients="parameters"`, g_k is the gradient of task k's loss with respect
    to the shared parameters (the variables that reach two or more task losses).
    The K task gradients come from K backward passes on one persistent tape; the
    update of every variable is `sum_k a_k dL_k/dv`, so no further pass is needed.

    With `gradients="representation"`, g_k is the gradient with respect to the
    shared representation (the trunk's output for the whole batch, flattened):
    K cheap passes through the heads only, then one backward pass of
    `sum_k a_k L_k` through the whole model.

    Mixed precision: the task losses are scaled by the optimizer's loss scale
    (`LossScaleOptimizer`) before differentiation and the Gram matrix is unscaled
    before the strategy sees it, so strategies always work on true float32
    gradients while the optimizer still unscales and skips overflowing steps. In
    a step whose scaled gradients overflow, the strategy is not called (its state
    is unchanged) and the last coefficients are used and logged.

    Non-finite losses: a task whose loss is NaN or infinite in a step is left out
    of that step: its gradient row and Gram entries are zero, the strategy sees its
    loss as 0, its coefficient is forced to 0, and the other tasks train as usual.
    The model counts such steps per task and warns once at the end of `fit`.

    Distribution strategies (`MirroredStrategy`, `MultiWorkerMirroredStrategy`):
    the losses, task gradients and Gram matrix are those of the GLOBAL batch, so
    training equals single-device training on that batch. Replica `r` holds
    `S_kr` (its sum of task k's per-element losses) and `C_kr` (its label count);
    the task loss is `L_k = sum_r S_kr / C_k` with `C_k = sum_r C_kr`, both
    all-reduced. Each replica differentiates its share `S_kr / C_k`, whose
    gradients sum over the replicas to `g_k`: for parameter gradients the `(K, P)`
    matrix of shares is all-reduced before the Gram matrix is formed; for
    representation gradients (rows of the global batch are disjoint) the
    replicas' Gram matrices are summed. Every replica then holds the same Gram
    matrix and losses, so computes the same coefficients (and the same strategy
    state), and hands the optimizer `sum_k a_k grad(S_kr / C_k)`, which it sums
    over the replicas as usual. Terms that every replica computes in full (the
    extra loss, regularisation) enter divided by the number of replicas.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    strategy = model.weighting
    optimizer = model.optimizer
    num_tasks = len(model.task_names)
    replicas = num_replicas_in_sync()
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    with tf.GradientTape(persistent=True) as tape:
        if model.gradient_source == REPRESENTATION:
            y_pred, representation = model.representation_model(x, training=True)
        else:
            y_pred = model(x, training=True)
        task_losses, task_counts = model.compute_task_loss_list(y, y_pred, sample_weight)
        if replicas > 1:
            task_losses, task_counts, global_losses = _replica_shares(task_losses, task_counts)
        else:
            global_losses = task_losses
        finite = [tf.math.is_finite(loss) for loss in global_losses]
        # Each task loss on its own (a slice of a stacked vector would connect every
        # task's variables to every loss), scaled for mixed precision.
        scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), "float32")
        scaled_losses = [
            tf.where(ok, loss, tf.zeros_like(loss)) * scale for ok, loss in zip(finite, task_losses)
        ]
        extra = model.extra_loss()
        if model.losses:
            extra = extra + tf.cast(tf.add_n(model.losses), "float32")
        # Every replica computes the whole extra loss; the optimizer sums their gradients.
        scaled_extra = extra * (scale / replicas)
    ok = tf.stack(finite)
    losses = tf.where(ok, tf.stack(global_losses), tf.zeros((num_tasks,)))
    counts = tf.stack(task_counts)
    variables = model.trainable_variables

    def coefficients_from(gram):
        # A left-out task's row and column are zero, whatever its gradient holds.
        gram = tf.where(ok[:, None] & ok[None, :], gram, tf.zeros_like(gram)) / tf.square(scale)
        if not loss_scaling:
            coefficients = tf.cast(strategy.compute_weights_from_gram(gram, losses), "float32")
        else:
            # An overflow of the scaled gradients (expected now and then with dynamic
            # loss scaling): the optimizer skips the step and lowers the scale; the
            # strategy is not called, so its state stays clean, and the step logs the
            # last coefficients.
            coefficients = tf.cond(
                tf.reduce_all(tf.math.is_finite(gram)),
                lambda: tf.cast(strategy.compute_weights_from_gram(gram, losses), "float32"),
                lambda: tf.convert_to_tensor(strategy.last_coefficients, "float32"),
            )
        return tf.stop_gradient(tf.where(ok, coefficients, tf.zeros_like(coefficients)))

    if model.gradient_source == REPRESENTATION:
        task_gradients = [
            tape.gradient(scaled_losses[k], representation, unconnected_gradients="zero")
            for k in range(num_tasks)
        ]
        # Rows of the global batch's representation are split over the replicas:
        # the global Gram matrix is the sum of the replicas' Gram matrices.
        coefficients = coefficients_from(all_reduce_sum(_gram(task_gradients)))
        with tape:
            scaled_total = tf.reduce_sum(coefficients * tf.stack(scaled_losses)) + scaled_extra
        gradients = tape.gradient(scaled_total, variables, unconnected_gradients="zero")
    else:
        per_task = [tape.gradient(scaled_losses[k], variables) for k in range(num_tasks)]
        # Shared: reached by two or more task losses, decided at trace time.
        shared = [
            index
            for index in range(len(variables))
            if sum(per_task[k][index] is not None for k in range(num_tasks)) >= 2
        ]
        if not shared:
            raise ValueError(
                "A gradient-based weighting strategy needs parameters shared by two or more "
                f"tasks, and this model has none. Tasks: {model.task_names}. "
                f"Received: weighting={strategy.name}"
            )
        blocks = [
            [
                tf.zeros_like(variables[i]) if per_task[k][i] is None else per_task[k][i]
                for k in range(num_tasks)
            ]
            for i in shared
        ]
        if replicas > 1:
            # Each replica holds its shares of the task gradients: sum the (K, P)
            # matrices over the replicas, then form the Gram matrix.
            matrix = all_reduce_sum(
                tf.concat([_rows(block) for block in blocks], axis=1)
            )
            gram = tf.matmul(matrix, matrix, transpose_b=True)
        else:
            # Block by block, so the (K, P) gradient matrix is never assembled.
            gram = tf.add_n([_gram(block) for block in blocks])
        coefficients = coefficients_from(gram)
        extra_gradients = tape.gradient(scaled_extra, variables)
        gradients = []
        for index, variable in enumerate(variables):
            # `multiply_no_nan`: a left-out task (coefficient 0) adds exact zeros, even
            # where its gradient is NaN or infinite.
            terms = [
                tf.math.multiply_no_nan(g, tf.cast(coefficients[k], g.dtype))
                for k, g in ((k, per_task[k][index]) for k in range(num_tasks))
                if g is not None
            ]
            if extra_gradients[index] is not None:
                terms.append(extra_gradients[index])
            gradients.append(tf.add_n(terms) if terms else tf.zeros_like(variable))
    del tape

    optimizer.apply_gradients(zip(gradients, variables))
    strategy.last_coefficients.assign(coefficients)
    total = tf.reduce_sum(coefficients * losses) + extra
    batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
    model._loss_tracker.update_state(total, sample_weight=batch_size)
    model.track_task_losses(losses, counts, coefficients, skipped=tf.logical_not(ok))
    return model.compute_metrics(x, y, y_pred, sample_weight)


def _replica_shares(task_losses, task_counts):
    """Splits the global batch's task losses into this replica's differentiable shares.

    Returns `(shares, counts, losses)`: this replica's `S_kr / C_k` (which sum over
    the replicas to the global loss `L_k`), the global label counts `C_k` and the
    global losses `L_k` (no gradient), each a list over the tasks.
    """
    counts = tf.cast(tf.stack(task_counts), "float32")
    sums = [loss * tf.maximum(count, 1.0) for loss, count in zip(task_losses, tf.unstack(counts))]
    reduced = all_reduce_sum(tf.stop_gradient(tf.stack([tf.stack(sums), counts])))
    global_counts = tf.maximum(reduced[1], 1.0)
    shares = [total / global_counts[k] for k, total in enumerate(sums)]
    losses = reduced[0] / global_counts
    return shares, tf.unstack(reduced[1]), tf.unstack(losses)
