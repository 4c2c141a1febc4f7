"""The JAX trainer: a pure gradient step for gradient-based strategies.

Keras's JAX trainer jits `train_step(state, data) -> (logs, state)` with
`state = (trainable, non_trainable, optimizer_variables, metrics_variables)`.
Loss-based strategies go through Keras's own step (the weighting happens in
`compute_loss`). Gradient-based ones take the step below, which is pure: the
strategy's variables (part of the model's non-trainable state) are read and
written through a `keras.StatelessScope`, as Keras does for metrics.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import ops

from kerasmtl.trainers import gradient_math as gm
from kerasmtl.trainers import lookahead
from kerasmtl.trainers.base_trainer import BaseMultiTaskTrainer
from kerasmtl.trainers.jax_task_gradients import task_vjps


class JAXMultiTaskTrainer(BaseMultiTaskTrainer):
    """Mixed into `MultiTaskModel` on the JAX backend (before `keras.Model`)."""

    def train_step(self, state, data):
        if lookahead.uses_lookahead(self):
            state = lookahead_meta_step(self, state, data)
        if not self._uses_gradient_step():
            return super().train_step(state, data)
        return gradient_train_step(self, state, data)


def _value_and_grad(function, values):
    (_, aux), gradients = jax.value_and_grad(function, has_aux=True)(values)
    return aux, gradients


def lookahead_meta_step(model, state, data):
    """The strategy's lookahead meta update (Auto-Lambda), pure: returns the new state."""
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    mapping += list(zip(model.optimizer.variables, optimizer_variables))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        lookahead.meta_step(
            model, x, y, sample_weight, list(trainable), list(non_trainable), _value_and_grad
        )
    non_trainable = _read_back(scope, model.non_trainable_variables, non_trainable)
    return trainable, non_trainable, optimizer_variables, metrics_variables


def _scope(model, trainable, non_trainable, metrics=None, collect_losses=False):
    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    if metrics is not None:
        mapping += list(zip(model.metrics_variables, metrics))
    return keras.StatelessScope(state_mapping=mapping, collect_losses=collect_losses)


def _read_back(scope, variables, defaults):
    values = []
    for variable, default in zip(variables, defaults):
        value = scope.get_current_value(variable)
        values.append(default if value is None else value)
    return values


def gradient_train_step(model, state, data):
    """The pure JAX step along `sum_k a_k g_k` (see the TensorFlow step for the method).

    Parameter gradients: one forward pass of the whole model, `jax.vjp` of the
    vector of the K task losses and the extra loss (regularisers, `add_loss`,
    soft sharing's penalty), then the K task gradients and, when the model has
    extra loss terms, the extra loss's from its pullback (`task_vjps`: batched
    with `jax.vmap` on accelerators, separate passes on the CPU) over rows of the
    identity as cotangents. They form one matrix: the Gram matrix is one product
    over the shared variables' columns; the update `sum_k a_k g_k + g_extra` is
    another, split back into variables.

    Representation gradients: the trunk and the heads are differentiated
    separately: the heads' vector-Jacobian products give the K gradients with
    respect to the representation (one batched pass through the heads), and
    one backward pass of `sum_k a_k L_k + extra` gives the update.
    """
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    strategy = model.weighting
    num_tasks = len(model.task_names)
    mapping = list(zip(model.optimizer.variables, optimizer_variables))
    with keras.StatelessScope(state_mapping=mapping):
        scale = ops.cast(model.optimizer.scale_loss(ops.convert_to_tensor(1.0)), "float32")

    def losses_and_extra(trainable_values, y_pred, new_non_trainable, forward_losses):
        task_losses, counts = model.compute_task_loss_list(y, y_pred, sample_weight)
        with _scope(model, trainable_values, new_non_trainable, metrics_variables) as scope:
            extra = model.extra_loss_total(forward_losses)
        new_metrics = _read_back(scope, model.metrics_variables, metrics_variables)
        vector = jnp.stack([*[ops.cast(v, "float32") for v in task_losses], extra])
        return vector, jnp.stack(counts), new_metrics

    if model.gradient_source == gm.REPRESENTATION:
        views = model.representation_views

        def trunk_function(trainable_values):
            with _scope(model, trainable_values, non_trainable, collect_losses=True) as scope:
                features = views.trunk(x, training=True)
                trunk_losses = list(scope.losses)
            new_non_trainable = _read_back(scope, model.non_trainable_variables, non_trainable)
            return features, (new_non_trainable, trunk_losses)

        features, trunk_vjp, (after_trunk, trunk_losses) = jax.vjp(
            trunk_function, trainable, has_aux=True
        )

        def heads_function(trainable_values, features):
            with _scope(model, trainable_values, after_trunk, collect_losses=True) as scope:
                y_pred = views.heads(gm.head_inputs(model, features, x), training=True)
                head_losses = list(scope.losses)
                regularization = model._get_regularization_losses()
            new_non_trainable = _read_back(scope, model.non_trainable_variables, after_trunk)
            vector, counts, new_metrics = losses_and_extra(
                trainable_values,
                y_pred,
                new_non_trainable,
                [*trunk_losses, *head_losses, *regularization],
            )
            return vector * scale, (y_pred, new_non_trainable, counts, new_metrics, vector)

        _, heads_vjp, aux = jax.vjp(heads_function, trainable, features, has_aux=True)
        y_pred, new_non_trainable, counts, new_metrics, vector = aux
        present = gm.present_tasks(vector[:num_tasks], counts)
        cotangents = jnp.eye(num_tasks + 1, dtype=vector.dtype)[:num_tasks]
        feature_gradients = task_vjps(lambda c: heads_vjp(c)[1], cotangents)
        rows = gm.zero_absent(jnp.reshape(feature_gradients, (num_tasks, -1)), present)
        gram = rows @ rows.T / scale**2
        losses = jnp.where(present, vector[:num_tasks], 0.0)
        coefficients, new_non_trainable = _coefficients(
            model, strategy, gram, losses, present, trainable, new_non_trainable
        )
        cotangent = jnp.concatenate([coefficients, jnp.ones((1,), coefficients.dtype)])
        head_gradients, feature_cotangent = heads_vjp(cotangent)
        if strategy.combines_representation_gradients:
            # The strategy's per-coordinate rule (its second hook) sets what the trunk
            # receives: its difference from `sum_k a_k g_k` is added to the cotangent.
            with _scope(model, trainable, new_non_trainable) as scope:
                correction = gm.representation_correction(
                    strategy, feature_gradients, features, coefficients, present
                )
            new_non_trainable = _read_back(scope, model.non_trainable_variables, new_non_trainable)
            feature_cotangent = feature_cotangent + correction.astype(feature_cotangent.dtype)
        (trunk_gradients,) = trunk_vjp(feature_cotangent)
        gradients = [h + t for h, t in zip(head_gradients, trunk_gradients)]
    else:
        extra_terms = []

        def forward(trainable_values):
            y_pred, new_non_trainable, forward_losses = model.stateless_call(
                trainable_values, non_trainable, x, training=True, return_losses=True
            )
            extra_terms.append(len(forward_losses))
            vector, counts, new_metrics = losses_and_extra(
                trainable_values, y_pred, new_non_trainable, forward_losses
            )
            return vector * scale, (y_pred, new_non_trainable, counts, new_metrics, vector)

        _, vjp_function, aux = jax.vjp(forward, trainable, has_aux=True)
        y_pred, new_non_trainable, counts, new_metrics, vector = aux
        present = gm.present_tasks(vector[:num_tasks], counts)
        # The K task gradients, then the extra loss's where the forward pass had one
        # (known when tracing: a model without `add_loss` terms or regularisers saves a
        # backward pass).
        num_rows = num_tasks + (1 if extra_terms[-1] else 0)
        cotangents = jnp.eye(num_tasks + 1, dtype=vector.dtype)[:num_rows]
        (stacked,) = task_vjps(vjp_function, cotangents)
        # One (rows, P) matrix, the shared variables' columns first: one product for
        # the Gram matrix, one (coefficients, then 1 for the extra loss) for the update.
        shared = list(model.shared_variable_indices)
        shared_set = set(shared)
        order = shared + [i for i in range(len(stacked)) if i not in shared_set]
        matrix = gm.flatten_blocks([stacked[i] for i in order])
        width = sum(int(np.prod(stacked[i].shape[1:])) for i in shared)
        rows = matrix[:num_tasks, :width]
        gram = gm.mask_gram(rows @ rows.T, present) / scale**2
        losses = jnp.where(present, vector[:num_tasks], 0.0)
        coefficients, new_non_trainable = _coefficients(
            model, strategy, gram, losses, present, trainable, new_non_trainable
        )
        extra_rows = num_rows - num_tasks
        weights = jnp.concatenate([coefficients, jnp.ones((extra_rows,), coefficients.dtype)])
        kept = jnp.concatenate([present, jnp.ones((extra_rows,), bool)])
        flat = gm.weighted_sum_of_rows(weights, gm.zero_absent(matrix, kept))
        pieces = gm.split_columns(flat, [stacked[i].shape[1:] for i in order])
        gradients = [None] * len(stacked)
        for index, piece in zip(order, pieces):
            gradients[index] = piece.astype(stacked[index].dtype)

    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, gradients, trainable
    )
    total = jnp.sum(coefficients * losses) + vector[num_tasks]
    with _scope(model, trainable, new_non_trainable, new_metrics) as scope:
        model.track_task_losses(vector[:num_tasks], counts, coefficients, present)
    new_metrics = _read_back(scope, model.metrics_variables, new_metrics)
    # Keras's JAX step updates `loss` and the compiled metrics here (no public equivalent).
    logs, new_metrics = model._update_metrics_variables(
        new_metrics, total, x, y, y_pred, sample_weight
    )
    return logs, (trainable, new_non_trainable, optimizer_variables, new_metrics)


def _coefficients(model, strategy, gram, losses, present, trainable, non_trainable):
    """Runs the strategy on the Gram matrix with its state mapped; returns its new state too."""
    with _scope(model, trainable, non_trainable) as scope:
        coefficients = gm.strategy_coefficients(strategy, gram, losses, present)
        strategy.last_coefficients.assign(coefficients)
    return coefficients, _read_back(scope, model.non_trainable_variables, non_trainable)
