"""The PyTorch trainer: eager task gradients with `torch.autograd.grad`."""

import keras
import torch

from kerasmtl.trainers import gradient_math as gm
from kerasmtl.trainers import lookahead
from kerasmtl.trainers.base_trainer import BaseMultiTaskTrainer


class TorchMultiTaskTrainer(BaseMultiTaskTrainer):
    """Mixed into `MultiTaskModel` on the torch backend (before `keras.Model`)."""

    def train_step(self, data):
        if lookahead.uses_lookahead(self):
            lookahead_meta_step(self, data)
        if not self._uses_gradient_step():
            return super().train_step(data)
        return gradient_train_step(self, data)


def _value_and_grad(function, values):
    values = [value.detach().requires_grad_(True) for value in values]
    value, aux = function(values)
    gradients = torch.autograd.grad(value, values, allow_unused=True)
    gradients = [
        torch.zeros_like(v) if g is None else g.detach() for g, v in zip(gradients, values)
    ]
    return keras.tree.map_structure(lambda t: t.detach(), aux), gradients


def lookahead_meta_step(model, data):
    """The strategy's lookahead meta update (Auto-Lambda), eagerly."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    lookahead.meta_step(
        model,
        x,
        y,
        sample_weight,
        [variable.value.detach() for variable in model.trainable_variables],
        [variable.value.detach() for variable in model.non_trainable_variables],
        _value_and_grad,
    )


def gradient_train_step(model, data):
    """The eager torch step along `sum_k a_k g_k` (see the TensorFlow step for the method).

    Parameter gradients: K calls of `torch.autograd.grad` on one graph
    (`retain_graph=True`), each over the trainable variables; the update is
    `sum_k a_k g_k` plus the extra loss's gradient. Representation gradients:
    K calls with respect to the representation, then one backward pass of
    `sum_k a_k L_k + extra`.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    strategy = model.weighting
    optimizer = model.optimizer
    num_tasks = len(model.task_names)
    variables = model.trainable_variables
    values = [variable.value for variable in variables]
    model.zero_grad()
    if model.gradient_source == gm.REPRESENTATION:
        # As tensors: a view built on `model.inputs` (a list) warns on a bare NumPy batch.
        x = keras.tree.map_structure(keras.ops.convert_to_tensor, x)
        y_pred, representation = model.representation_views.full(x, training=True)
    else:
        y_pred = model(x, training=True)
    task_losses, task_counts = model.compute_task_loss_list(y, y_pred, sample_weight)
    vector = torch.stack([loss.float() for loss in task_losses])
    counts = torch.stack([torch.as_tensor(c, dtype=torch.float32) for c in task_counts])
    present = gm.present_tasks(vector.detach(), counts)
    scale = float(optimizer.scale_loss(1.0)) if optimizer is not None else 1.0
    extra = model.extra_loss_total()
    # A left-out task contributes no graph at all: its loss is replaced by a constant.
    scaled = [
        torch.where(present[k], task_losses[k], torch.zeros_like(task_losses[k])) * scale
        for k in range(num_tasks)
    ]
    losses = torch.where(present, vector.detach(), torch.zeros_like(vector))

    if model.gradient_source == gm.REPRESENTATION:
        stacked = torch.stack(
            [_grad_or_zeros(scaled[k], [representation])[0] for k in range(num_tasks)]
        )
        rows = gm.zero_absent(stacked.reshape(num_tasks, -1).float(), present)
        with torch.no_grad():
            gram = rows @ rows.T / scale**2
            coefficients = gm.strategy_coefficients(strategy, gram, losses, present)
            # A per-coordinate rule of the strategy (its second hook): what it adds to
            # the `sum_k a_k g_k` the trunk would receive.
            correction = gm.representation_correction(
                strategy, stacked, representation.detach(), coefficients, present
            )
        total = sum(coefficients[k] * scaled[k] for k in range(num_tasks)) + extra * scale
        if correction is None:
            gradients = torch.autograd.grad(total, values, allow_unused=True)
        else:
            gradients = torch.autograd.grad(
                [total, representation],
                values,
                grad_outputs=[torch.ones_like(total), correction],
                allow_unused=True,
            )
    else:
        per_task = [
            torch.autograd.grad(scaled[k], values, retain_graph=True, allow_unused=True)
            for k in range(num_tasks)
        ]
        extra_gradients = None
        if extra.requires_grad:
            extra_gradients = torch.autograd.grad(extra * scale, values, allow_unused=True)
        with torch.no_grad():
            shared = model.shared_variable_indices
            shapes = [tuple(value.shape) for value in values]
            matrix = gm.task_gradient_matrix(
                [[gradients[i] for i in shared] for gradients in per_task],
                [shapes[i] for i in shared],
            )
            gram = gm.mask_gram(matrix @ matrix.T, present) / scale**2
            coefficients = gm.strategy_coefficients(strategy, gram, losses, present)
            gradients = gm.combine_task_gradient_lists(
                per_task, matrix, shared, shapes, coefficients, present, extra_gradients
            )
    gradients = [
        torch.zeros_like(value) if g is None else g.detach() for g, value in zip(gradients, values)
    ]
    with torch.no_grad():
        optimizer.apply(gradients, variables)
        strategy.last_coefficients.assign(coefficients)
        total = torch.sum(coefficients * losses) + extra.detach()
        batch_size = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
        # Keras's train steps log `loss` through this tracker; it has no public setter.
        model._loss_tracker.update_state(total, sample_weight=batch_size)
        model.track_task_losses(vector.detach(), counts, coefficients, present)
        return model.compute_metrics(x, y, y_pred, sample_weight)


def _grad_or_zeros(output, inputs):
    gradients = torch.autograd.grad(output, inputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for g, i in zip(gradients, inputs)]
