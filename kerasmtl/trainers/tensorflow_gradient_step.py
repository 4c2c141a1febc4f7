"""The TensorFlow train step for gradient-based weighting strategies."""

import keras
import tensorflow as tf

REPRESENTATION = "representation"


def _flatten(gradients):
    return tf.concat([tf.reshape(tf.cast(g, "float32"), [-1]) for g in gradients], axis=0)


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
    gradients while the optimizer still unscales and skips overflowing steps.

    Non-finite losses: a task whose loss is NaN or infinite in a step is left out
    of that step: its gradient row and Gram entries are zero, the strategy sees its
    loss as 0, its coefficient is forced to 0, and the other tasks train as usual.
    The model counts such steps per task and warns once at the end of `fit`.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    strategy = model.weighting
    optimizer = model.optimizer
    num_tasks = len(model.task_names)
    with tf.GradientTape(persistent=True) as tape:
        if model.gradient_source == REPRESENTATION:
            y_pred, representation = model.representation_model(x, training=True)
        else:
            y_pred = model(x, training=True)
        task_losses, task_counts = model.compute_task_loss_list(y, y_pred, sample_weight)
        finite = [tf.math.is_finite(loss) for loss in task_losses]
        # Each task loss on its own (a slice of a stacked vector would connect every
        # task's variables to every loss), scaled for mixed precision.
        scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), "float32")
        scaled_losses = [
            tf.where(ok, loss, tf.zeros_like(loss)) * scale for ok, loss in zip(finite, task_losses)
        ]
        extra = model.extra_loss()
        if model.losses:
            extra = extra + tf.cast(tf.add_n(model.losses), "float32")
        scaled_extra = extra * scale
    ok = tf.stack(finite)
    losses = tf.where(ok, tf.stack(task_losses), tf.zeros((num_tasks,)))
    counts = tf.stack(task_counts)
    variables = model.trainable_variables

    def coefficients_from(matrix):
        matrix = tf.where(ok[:, None], matrix, tf.zeros_like(matrix))
        gram = tf.matmul(matrix, matrix, transpose_b=True) / tf.square(scale)
        coefficients = tf.cast(strategy.compute_weights_from_gram(gram, losses), "float32")
        return tf.stop_gradient(tf.where(ok, coefficients, tf.zeros_like(coefficients)))

    if model.gradient_source == REPRESENTATION:
        task_gradients = [
            tape.gradient(scaled_losses[k], representation, unconnected_gradients="zero")
            for k in range(num_tasks)
        ]
        coefficients = coefficients_from(tf.stack([_flatten([g]) for g in task_gradients]))
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
        matrix = tf.stack(
            [
                _flatten(
                    [
                        tf.zeros_like(variables[i]) if per_task[k][i] is None else per_task[k][i]
                        for i in shared
                    ]
                )
                for k in range(num_tasks)
            ]
        )
        coefficients = coefficients_from(matrix)
        extra_gradients = tape.gradient(scaled_extra, variables)
        gradients = []
        for index, variable in enumerate(variables):
            terms = [
                tf.where(ok[k], tf.cast(coefficients[k], g.dtype) * g, tf.zeros_like(g))
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
