"""The TensorFlow train step for gradient-based weighting strategies."""

import keras
import tensorflow as tf

PARAMETERS = "parameters"
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
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    strategy = model.weighting
    source = model.gradient_source
    with tf.GradientTape(persistent=True) as tape:
        if source == REPRESENTATION:
            y_pred, representation = model.representation_model(x, training=True)
        else:
            y_pred = model(x, training=True)
        task_losses, task_counts = model.compute_task_loss_list(y, y_pred, sample_weight)
        losses, counts = tf.stack(task_losses), tf.stack(task_counts)
        extra = model.extra_loss()
        if model.losses:
            extra = extra + tf.cast(tf.add_n(model.losses), "float32")
    variables = model.trainable_variables
    num_tasks = len(model.task_names)

    if source == REPRESENTATION:
        task_gradients = [
            tape.gradient(task_losses[k], representation, unconnected_gradients="zero")
            for k in range(num_tasks)
        ]
        matrix = tf.stack([tf.reshape(tf.cast(g, "float32"), [-1]) for g in task_gradients])
        gram = tf.matmul(matrix, matrix, transpose_b=True)
        coefficients = tf.stop_gradient(strategy.compute_weights_from_gram(gram, losses))
        with tape:
            total = tf.reduce_sum(coefficients * losses) + extra
        gradients = tape.gradient(total, variables, unconnected_gradients="zero")
    else:
        per_task = [tape.gradient(task_losses[k], variables) for k in range(num_tasks)]
        # Shared: reached by two or more task losses. This is decided at trace time.
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
                        per_task[k][index]
                        if per_task[k][index] is not None
                        else tf.zeros_like(variables[index])
                        for index in shared
                    ]
                )
                for k in range(num_tasks)
            ]
        )
        gram = tf.matmul(matrix, matrix, transpose_b=True)
        coefficients = tf.stop_gradient(strategy.compute_weights_from_gram(gram, losses))
        extra_gradients = tape.gradient(extra, variables)
        gradients = []
        for index, variable in enumerate(variables):
            combined = None
            for k in range(num_tasks):
                g = per_task[k][index]
                if g is not None:
                    term = tf.cast(coefficients[k], g.dtype) * g
                    combined = term if combined is None else combined + term
            if extra_gradients[index] is not None:
                e = extra_gradients[index]
                combined = e if combined is None else combined + e
            gradients.append(tf.zeros_like(variable) if combined is None else combined)
        total = tf.reduce_sum(coefficients * losses) + extra
    del tape

    model.optimizer.apply_gradients(zip(gradients, variables))
    batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
    model._loss_tracker.update_state(total, sample_weight=batch_size)
    model.track_task_losses(losses, counts, coefficients)
    return model.compute_metrics(x, y, y_pred, sample_weight)
