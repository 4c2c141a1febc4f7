"""The one-step lookahead of meta-learned weightings (Auto-Lambda), in `keras.ops`.

A strategy that declares `requires_lookahead = True` (`AutoLambda`) updates its
weights each training step from how one virtual training step would change
the primary tasks' loss on held-out data. The math is the same on every
backend and lives here; each backend's trainer supplies only a small
`value_and_grad(function, values)` (TF: `tf.GradientTape`, JAX:
`jax.value_and_grad`, torch: `torch.autograd.grad`) and calls
`task_loss_differences` inside its compiled train step, before the ordinary
step. Under a `tf.distribute` strategy with several replicas the TensorFlow
trainer also passes `global_losses` and `reduce_sum` (all-reduces), so that
every replica computes the meta update of the global batch; they are the
identity on one device and under JAX's `DataParallel` (whose arrays are already
global). Every forward pass here is `model.stateless_call`: no model variable is
touched, and the state the passes would update (batch-normalisation
statistics, ...) is discarded.
"""

import keras
from keras import ops

from kerasmtl.trainers import gradient_math as gm

#: The norm of the finite-difference perturbation `eps * d` (the paper's 0.01).
FINITE_DIFFERENCE_RADIUS = 0.01


def uses_lookahead(model):
    """Whether the model's strategy takes a lookahead meta step each training step."""
    strategy = getattr(model, "weighting", None)
    return strategy is not None and getattr(strategy, "requires_lookahead", False)


def batch_size(x):
    """The batch size of the inputs `x` (a Python int, or a scalar tensor on TF)."""
    first = next(t for t in keras.tree.flatten(x) if t is not None)
    return ops.shape(first)[0]


def split_batch(structure, start, stop):
    """Rows `start:stop` of every tensor of a nested structure (`None` stays `None`)."""
    if structure is None:
        return None
    return keras.tree.map_structure(
        lambda tensor: None if tensor is None else tensor[start:stop], structure
    )


def task_loss_differences(
    model,
    x,
    y,
    sample_weight,
    trainable_values,
    non_trainable_values,
    weights,
    learning_rate,
    primary_mask,
    value_and_grad,
    global_losses=None,
    reduce_sum=None,
    replicas=1,
):
    """The finite differences `h_k ~ <d, grad L_k(theta; tr)>` of Auto-Lambda's meta step.

    The batch is split into two disjoint halves: the first is `tr`, the
    second `val`. With `theta` the trainable values and `lambda` = `weights`:

    1. `theta' = theta - alpha * grad(sum_k lambda_k L_k(theta; tr) + extra)`
       (`extra`: the model's own losses, regularisers and `add_loss` terms);
    2. `d = grad_theta' sum_{k primary} L_k(theta'; val)`;
    3. `eps = 0.01 / ||d||`, `h_k = (L_k(theta + eps d; tr) - L_k(theta - eps d; tr)) / (2 eps)`.

    Args:
        model: the `MultiTaskModel`.
        x, y, sample_weight: the step's batch (as `train_step` unpacks it).
        trainable_values: the values of `model.trainable_variables`, in order.
        non_trainable_values: the values of `model.non_trainable_variables`.
        weights: float32 `(K,)`, the task weights `lambda`.
        learning_rate: `alpha`, a float32 scalar.
        primary_mask: a list of K booleans, the primary tasks.
        value_and_grad: `value_and_grad(function, values) -> (aux, gradients)`
            for `function(values) -> (scalar, aux)`: the gradient of the scalar
            with respect to the list `values` (zeros where unconnected) and
            `aux` without gradient.
        global_losses: `global_losses(losses, counts) -> (shares, counts, totals)`
            for lists over the tasks of this replica's losses and label counts:
            this replica's differentiable shares of the global losses (they sum
            over the replicas to the global losses), the global label counts
            and the global losses (no gradient). `None`: one replica, the
            losses are their own shares and totals.
        reduce_sum: `reduce_sum(values) -> values`, the sum over the replicas
            of a list of tensors (`None`: the identity).
        replicas: the number of replicas; the model's extra loss, which each
            replica computes in full, enters each replica's objective divided
            by it.

    Under several replicas each replica splits its own share of the global
    batch into halves; the global `tr` / `val` are the unions of the
    replicas' halves. The gradients of the shares are summed over the
    replicas (`reduce_sum`) into the global batch's gradients, and `h` uses
    the global losses, so every replica computes the same `h` and `mask`.

    Returns:
        `(differences, mask)`: float32 `(K,)` `h` (0 outside `mask`) and the
        boolean `(K,)` tasks that take the meta step: present in `tr`, in a
        step where `tr` has a labelled task, `val` a labelled primary task, and
        `d` is non-zero and finite.
    """
    num_tasks = len(primary_mask)
    if global_losses is None:
        global_losses = _own_losses
    if reduce_sum is None:
        reduce_sum = _identity
    primary = ops.convert_to_tensor(primary_mask, "bool")
    weights = ops.cast(weights, "float32")
    half = batch_size(x) // 2
    x_train, x_held_out = split_batch(x, 0, half), split_batch(x, half, None)
    y_train, y_held_out = split_batch(y, 0, half), split_batch(y, half, None)
    weight_train = split_batch(sample_weight, 0, half)
    weight_held_out = split_batch(sample_weight, half, None)

    def task_losses(values, inputs, labels, sample_weights):
        """This replica's shares, the global losses (0 where absent), presence, extra loss."""
        y_pred, _, forward_losses = model.stateless_call(
            values, non_trainable_values, inputs, training=True, return_losses=True
        )
        losses, counts = model.compute_task_loss_list(labels, y_pred, sample_weights)
        losses = [ops.cast(loss, "float32") for loss in losses]
        shares, counts, totals = global_losses(losses, counts)
        totals = ops.stack(totals)
        present = gm.present_tasks(totals, ops.stack(counts))
        zeros = ops.zeros_like(totals)
        shares = ops.where(present, ops.stack(shares), zeros)
        extra = model.extra_loss_total(forward_losses)
        return shares, ops.where(present, totals, zeros), present, extra

    def train_objective(values):
        shares, _, present, extra = task_losses(values, x_train, y_train, weight_train)
        return ops.sum(weights * shares) + extra / replicas, present

    def held_out_objective(values):
        shares, _, present, _ = task_losses(values, x_held_out, y_held_out, weight_held_out)
        counted = ops.logical_and(present, primary)
        return ops.sum(ops.where(counted, shares, ops.zeros_like(shares))), counted

    train_present, gradients = value_and_grad(train_objective, trainable_values)
    gradients = reduce_sum(list(gradients))
    alpha = ops.cast(learning_rate, "float32")
    virtual = [
        value - ops.cast(alpha, value.dtype) * ops.cast(gradient, value.dtype)
        for value, gradient in zip(trainable_values, gradients)
    ]
    primary_present, direction = value_and_grad(held_out_objective, virtual)
    direction = reduce_sum(list(direction))
    squared = [ops.sum(ops.square(ops.cast(d, "float32"))) for d in direction]
    norm = ops.sqrt(ops.sum(ops.stack(squared))) if squared else ops.convert_to_tensor(0.0)
    valid = ops.logical_and(norm > 0.0, ops.isfinite(norm))
    valid = ops.logical_and(valid, ops.any(train_present))
    valid = ops.logical_and(valid, ops.any(primary_present))
    epsilon = FINITE_DIFFERENCE_RADIUS / ops.where(valid, norm, 1.0)

    def shifted(sign):
        values = [
            value + ops.cast(sign * epsilon, value.dtype) * ops.cast(d, value.dtype)
            for value, d in zip(trainable_values, direction)
        ]
        return task_losses(values, x_train, y_train, weight_train)[1]

    differences = (shifted(1.0) - shifted(-1.0)) / (2.0 * epsilon)
    mask = ops.logical_and(ops.logical_and(train_present, valid), ops.isfinite(differences))
    mask = ops.reshape(mask, (num_tasks,))
    return ops.where(mask, differences, ops.zeros_like(differences)), mask


def _own_losses(losses, counts):
    return losses, counts, losses


def _identity(values):
    return values


def meta_step(
    model,
    x,
    y,
    sample_weight,
    trainable_values,
    non_trainable_values,
    value_and_grad,
    **replica_reductions,
):
    """Runs the strategy's lookahead meta update (its variables `assign`ed); returns the weights.

    The caller maps the model's and the optimizer's variables where the
    backend needs it (JAX: a `keras.StatelessScope`). `replica_reductions`:
    `global_losses`, `reduce_sum` and `replicas` of `task_loss_differences`
    (TensorFlow with several replicas).
    """
    strategy = model.weighting
    learning_rate = strategy.lookahead_rate(model.optimizer)
    differences, mask = task_loss_differences(
        model,
        x,
        y,
        sample_weight,
        trainable_values,
        non_trainable_values,
        strategy.compute_weights(ops.zeros((len(model.task_names),))),
        learning_rate,
        strategy.primary_mask,
        value_and_grad,
        **replica_reductions,
    )
    return strategy.meta_update(differences, mask, learning_rate)
