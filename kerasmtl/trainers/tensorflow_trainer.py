"""The TensorFlow trainer: Keras's own step for loss-based strategies, ours for gradient ones."""

import contextlib

import keras
import tensorflow as tf

from kerasmtl.trainers import distributed, lookahead
from kerasmtl.trainers import gradient_math as gm


class TensorFlowMultiTaskTrainer:
    """Mixed into `MultiTaskModel` on the TensorFlow backend (before `keras.Model`)."""

    def train_step(self, data):
        if lookahead.uses_lookahead(self):
            lookahead_meta_step(self, data)
        if not self._uses_gradient_step():
            return super().train_step(data)
        return gradient_train_step(self, data)

    def make_train_function(self, force=False):
        if lookahead.uses_lookahead(self):
            _check_lookahead_strategy(self, self.distribute_strategy)
        if self._uses_gradient_step() and self.optimizer is not None:
            # Without a distribution strategy Keras builds the optimizer inside the
            # first trace of the step, and a `tf.function` that creates variables is
            # traced a second time. Built here, the gradient step is traced once.
            if not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
        return super().make_train_function(force=force)

    def _global_task_losses(self, losses, counts):
        return distributed.global_task_losses(losses, counts)

    def _num_replicas(self):
        return distributed.num_replicas_in_sync()

    def _fit_override(self, x, y, args, kwargs):
        if distributed.is_multi_worker(self.distribute_strategy):
            # Keras's fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
            return distributed.fit_multi_worker_from_fit_arguments(self, x, y, args, kwargs)
        return None


def _value_and_grad(function, values):
    values = [tf.convert_to_tensor(value) for value in values]
    with tf.GradientTape() as tape:
        tape.watch(values)
        value, aux = function(values)
    return aux, tape.gradient(value, values, unconnected_gradients="zero")


def _check_lookahead_strategy(model, strategy):
    # Only MirroredStrategy is tested: its meta update is all-reduced like the gradient step's.
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and not isinstance(strategy, tf.distribute.MirroredStrategy):
        raise ValueError(
            f"{model.weighting.__class__.__name__} trains under tf.distribute.MirroredStrategy "
            "or on one device; its all-reduced lookahead meta update is not tested under "
            f"other strategies with several replicas. Received: strategy="
            f"{type(strategy).__name__} with num_replicas_in_sync={replicas}"
        )


def lookahead_meta_step(model, data):
    """The lookahead meta update of the strategy (Auto-Lambda), inside the traced step.

    With several replicas, the meta update is the global batch's (see
    `lookahead.task_loss_differences`): the task losses are split into this
    replica's shares as in `gradient_train_step` and the lookahead's gradients
    are all-reduced, so every replica takes the same step on the same weights.
    """
    replicas = distributed.num_replicas_in_sync()
    if replicas > 1:
        _check_lookahead_strategy(model, tf.distribute.get_strategy())
        reductions = dict(
            global_losses=_replica_shares,
            reduce_sum=distributed.all_reduce_sum,
            replicas=replicas,
        )
    else:
        reductions = {}
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    lookahead.meta_step(
        model,
        x,
        y,
        sample_weight,
        [tf.convert_to_tensor(v) for v in model.trainable_variables],
        [tf.convert_to_tensor(v) for v in model.non_trainable_variables],
        _value_and_grad,
        **reductions,
    )


def _rows(gradients):
    """The `(K, n)` float32 matrix whose row k is `gradients[k]` flattened."""
    return tf.stack([tf.reshape(tf.cast(g, "float32"), [-1]) for g in gradients])


def gradient_train_step(model, data):
    """One step along `sum_k a_k g_k`, with `a` from the strategy and the task-gradient Gram matrix.

    With `gradients="parameters"`, g_k is the gradient of task k's loss with respect
    to the shared parameters (the variables that two or more task outputs depend
    on, read from the graph once). The K task gradients come from K backward
    passes on one persistent tape; the update of every variable is
    `sum_k a_k dL_k/dv`, so no further pass is needed.

    With `gradients="representation"`, g_k is the gradient with respect to the
    shared representation (the trunk's output for the whole batch, flattened):
    K cheap passes through the heads only, then one backward pass of
    `sum_k a_k L_k` through the whole model. A strategy that declares
    `combines_representation_gradients` (GradDrop) sets what the trunk receives
    instead, from the K representation gradients
    (`gm.representation_correction`); the heads still get `sum_k a_k dL_k`.

    Mixed precision: the task losses are scaled by the optimizer's loss scale
    (`LossScaleOptimizer`) before differentiation and the Gram matrix is unscaled
    before the strategy sees it, so strategies always work on true float32
    gradients while the optimizer still unscales and skips overflowing steps. In
    a step whose scaled gradients overflow, the strategy is not called (its state
    is unchanged) and the last coefficients are used and logged.

    Absent tasks: a task with no labelled sample in the (global) batch, or whose
    loss is NaN or infinite, is left out of the step: its Gram row and column
    are zero, the strategy is told it is absent, its coefficient is exactly 0
    (its gradient, even a NaN one, is selected away), and the other tasks train
    as usual. The model counts the non-finite steps per task and warns once at
    the end of `fit`.

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
    replicas = distributed.num_replicas_in_sync()
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    representation_route = model.gradient_source == gm.REPRESENTATION
    # The representation route records the heads on a tape of their own: a backward
    # pass walks every recorded op that leads back from its target, so the task
    # gradients with respect to the representation, taken on the tape of the whole
    # model, would each trace (and then prune) a backward pass through the trunk.
    head_tape = tf.GradientTape(persistent=True)
    with tf.GradientTape(persistent=True) as tape:
        if representation_route:
            views = model.representation_views
            representation = views.trunk(x, training=True)
        with head_tape if representation_route else contextlib.nullcontext():
            if representation_route:
                head_tape.watch(representation)
                y_pred = views.heads(gm.head_inputs(model, representation, x), training=True)
            else:
                y_pred = model(x, training=True)
            task_losses, task_counts = model.compute_task_loss_list(y, y_pred, sample_weight)
            if replicas > 1:
                task_losses, task_counts, global_losses = _replica_shares(task_losses, task_counts)
            else:
                global_losses = task_losses
            present = gm.present_tasks(tf.stack(global_losses), tf.stack(task_counts))
            # Each task loss on its own (a slice of a stacked vector would connect every
            # task's variables to every loss), scaled for mixed precision.
            scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), "float32")
            scaled_losses = [
                tf.where(present[k], loss, tf.zeros_like(loss)) * scale
                for k, loss in enumerate(task_losses)
            ]
        extra = model.extra_loss_total()
        # Every replica computes the whole extra loss; the optimizer sums their gradients.
        scaled_extra = extra * (scale / replicas)
    losses = tf.where(present, tf.stack(global_losses), tf.zeros((len(task_losses),)))
    counts = tf.stack(task_counts)
    variables = model.trainable_variables

    def coefficients_from(gram):
        gram = gram / tf.square(scale)
        if not loss_scaling:
            return gm.strategy_coefficients(strategy, gram, losses, present)
        # An overflow of the scaled gradients (expected now and then with dynamic
        # loss scaling): the optimizer skips the step and lowers the scale; the
        # strategy is not called, so its state stays clean, and the step logs the
        # last coefficients.
        return tf.cond(
            tf.reduce_all(tf.math.is_finite(gm.mask_gram(gram, present))),
            lambda: gm.strategy_coefficients(strategy, gram, losses, present),
            lambda: tf.convert_to_tensor(strategy.last_coefficients, "float32"),
        )

    if representation_route:
        task_gradients = [
            head_tape.gradient(scaled_losses[k], representation, unconnected_gradients="zero")
            for k in range(len(task_losses))
        ]
        # Rows of the global batch's representation are split over the replicas:
        # the global Gram matrix is the sum of the replicas' Gram matrices.
        rows = gm.zero_absent(_rows(task_gradients), present)
        gram = distributed.all_reduce_sum(tf.matmul(rows, rows, transpose_b=True))
        coefficients = coefficients_from(gram)
        # A strategy with a per-coordinate rule (its second hook) changes what the
        # trunk receives: the difference enters as an output gradient of the
        # representation, added to the one `sum_k a_k L_k` sends back.
        correction = gm.representation_correction(
            strategy, tf.stack(task_gradients), representation, coefficients, present
        )
        with tape:
            scaled_total = tf.reduce_sum(coefficients * tf.stack(scaled_losses)) + scaled_extra
        if correction is None:
            gradients = tape.gradient(scaled_total, variables, unconnected_gradients="zero")
        else:
            gradients = tape.gradient(
                [scaled_total, representation],
                variables,
                output_gradients=[tf.ones_like(scaled_total), correction],
                unconnected_gradients="zero",
            )
    else:
        per_task = [tape.gradient(scaled_losses[k], variables) for k in range(len(task_losses))]
        shared = model.shared_variable_indices
        shapes = [tuple(variable.shape) for variable in variables]
        # The shared variables' K gradients as one (K, P) matrix: one concatenation per
        # task, one product for the Gram matrix, one for the combination.
        matrix = gm.task_gradient_matrix(
            [[gradients[i] for i in shared] for gradients in per_task], [shapes[i] for i in shared]
        )
        # With replicas, each holds its shares of the task gradients: the Gram matrix
        # is that of their sum.
        reduced = distributed.all_reduce_sum(matrix) if replicas > 1 else matrix
        gram = tf.matmul(reduced, reduced, transpose_b=True)
        coefficients = coefficients_from(gm.mask_gram(gram, present))
        extra_gradients = tape.gradient(scaled_extra, variables)
        gradients = gm.combine_task_gradient_lists(
            per_task, matrix, shared, shapes, coefficients, present, extra_gradients
        )
        gradients = [
            tf.zeros_like(variable) if g is None else tf.cast(g, variable.dtype)
            for g, variable in zip(gradients, variables)
        ]
    del tape, head_tape

    optimizer.apply_gradients(zip(gradients, variables))
    strategy.last_coefficients.assign(coefficients)
    total = tf.reduce_sum(coefficients * losses) + extra
    batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
    # Keras's train steps log `loss` through this tracker; it has no public setter.
    model._loss_tracker.update_state(total, sample_weight=batch_size)
    model.track_task_losses(tf.stack(global_losses), counts, coefficients, present)
    return model.compute_metrics(x, y, y_pred, sample_weight)


def _replica_shares(task_losses, task_counts):
    """Splits the global batch's task losses into this replica's differentiable shares.

    Returns `(shares, counts, losses)`: this replica's `S_kr / C_k` (which sum over
    the replicas to the global loss `L_k`), the global label counts `C_k` and the
    global losses `L_k` (no gradient), each a list over the tasks.
    """
    counts = tf.cast(tf.stack(task_counts), "float32")
    sums = [loss * tf.maximum(count, 1.0) for loss, count in zip(task_losses, tf.unstack(counts))]
    reduced = distributed.all_reduce_sum(tf.stop_gradient(tf.stack([tf.stack(sums), counts])))
    global_counts = tf.maximum(reduced[1], 1.0)
    shares = [total / global_counts[k] for k, total in enumerate(sums)]
    losses = reduced[0] / global_counts
    return shares, tf.unstack(reduced[1]), tf.unstack(losses)
