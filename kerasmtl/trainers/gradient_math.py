"""What every backend's gradient step shares, written once in `keras.ops`.

A trainer (one per backend) computes the task losses and the task gradients
its own way; everything else happens here, identically on every backend:

- which trainable variables are shared (reached by two or more task outputs),
  decided once from the functional graph (JAX gives zeros, not `None`, for an
  unconnected variable, so gradients cannot tell);
- which tasks are present in the step (a labelled sample and a finite loss);
- the Gram matrix of the task gradients, summed block by block, with the rows
  and columns of absent tasks zeroed;
- the coefficients from the strategy, exactly zero for absent tasks;
- the combined update `sum_k a_k g_k + grad(extra)`, selecting (never
  multiplying) so that a NaN gradient of an absent task cannot leak in.
"""

import itertools
import math

import keras
from keras import ops

from kerasmtl.weighting.gram_utils import mask_gram

PARAMETERS = "parameters"
REPRESENTATION = "representation"


def _node_of_tensor(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    return history.operation._inbound_nodes[history.node_index]


def _ancestor_operations(output):
    """The operations (layers) the symbolic `output` depends on, in the functional graph."""
    seen_nodes, operations = set(), []
    stack = [_node_of_tensor(output)]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        operations.append(node.operation)
        stack.extend(node.parent_nodes)
    return operations


def task_variable_sets(model):
    """For each task, the ids of the trainable variables its output depends on.

    Read from the functional graph: a layer (or nested model) on the path from
    the inputs to a task's output contributes all of its trainable variables.
    """
    sets = []
    for name in model.task_names:
        ids = set()
        for operation in _ancestor_operations(model.output[name]):
            for variable in getattr(operation, "trainable_variables", ()):
                ids.add(id(variable))
        sets.append(ids)
    return sets


def shared_variable_indices(model):
    """Indices into `model.trainable_variables` of the variables two or more tasks reach.

    Raises:
        ValueError: when no variable is shared (a gradient-based strategy has
            nothing to balance).
    """
    sets = task_variable_sets(model)
    shared = [
        index
        for index, variable in enumerate(model.trainable_variables)
        if sum(id(variable) in ids for ids in sets) >= 2
    ]
    if not shared:
        raise ValueError(
            "A gradient-based weighting strategy needs parameters shared by two or more "
            f"tasks, and this model has none. Tasks: {model.task_names}. "
            f"Received: weighting={model.weighting.name}"
        )
    return shared


def representation_tensor(model, layer_name):
    """The symbolic output of layer `layer_name` as it is used in `model`'s graph.

    `model.get_layer(name).output` is the layer's own output, which for a nested
    model (a `keras.applications` trunk, a functional trunk) is a tensor of the
    nested graph, not connected to `model.inputs`. The tensor we want is the
    output of the layer's call in this model's graph.
    """
    layer = model.get_layer(layer_name)
    # `_nodes_by_depth` is the functional graph's own node table (no public accessor).
    nodes = [
        node
        for depth_nodes in model._nodes_by_depth.values()
        for node in depth_nodes
        if node.operation is layer
    ]
    if len(nodes) != 1 or len(nodes[0].output_tensors) != 1:
        raise ValueError(
            f"The representation layer '{layer_name}' must be called once in the model and "
            f"return one tensor; it is called {len(nodes)} time(s). Received: "
            f"representation={layer_name!r}"
        )
    return nodes[0].output_tensors[0]


def present_tasks(losses, counts):
    """Boolean `(K,)`: the task has a labelled sample in the batch and a finite loss."""
    losses = ops.cast(losses, "float32")
    return ops.logical_and(ops.cast(counts, "float32") > 0.0, ops.isfinite(losses))


def zero_absent(values, present):
    """`values` with the rows of absent tasks (leading axis) set to exact zeros."""
    shape = (-1,) + (1,) * (len(values.shape) - 1)
    return ops.where(ops.reshape(present, shape), values, ops.zeros_like(values))


def _size(shape):
    return int(math.prod(shape))


def flatten_blocks(blocks):
    """The `(K, P)` float32 matrix of `(K, ...)` blocks, each flattened, side by side."""
    rows = [ops.reshape(ops.cast(block, "float32"), (block.shape[0], -1)) for block in blocks]
    return rows[0] if len(rows) == 1 else ops.concatenate(rows, axis=1)


def split_columns(flat, shapes):
    """Splits the `(P,)` vector `flat` back into tensors of the given shapes."""
    sizes = [_size(shape) for shape in shapes]
    if len(sizes) == 1:
        return [ops.reshape(flat, tuple(shapes[0]))]
    pieces = ops.split(flat, list(itertools.accumulate(sizes[:-1])))
    return [ops.reshape(piece, tuple(shape)) for piece, shape in zip(pieces, shapes)]


def weighted_sum_of_rows(coefficients, matrix):
    """`sum_k a_k matrix[k]` as one `(1, K) @ (K, P)` product."""
    weights = ops.reshape(ops.cast(coefficients, matrix.dtype), (1, -1))
    return ops.reshape(ops.matmul(weights, matrix), (-1,))


def gram_of_blocks(blocks):
    """The `(K, K)` Gram matrix of task gradients given as `(K, ...)` blocks.

    The blocks are flattened into one `(K, P)` matrix (one concatenation, one
    product), which traces to a handful of ops whatever the number of variables.
    """
    rows = flatten_blocks(blocks)
    return ops.matmul(rows, ops.transpose(rows))


def task_gradient_matrix(per_task, shapes):
    """The `(K, P)` float32 matrix of the task gradients of one group of variables.

    Args:
        per_task: a list over the K tasks of lists over the variables of the
            group: task k's gradient of each (`None` where the task does not
            reach the variable: zeros).
        shapes: the variables' shapes.

    Returns:
        Row k is task k's gradients, flattened and concatenated in variable order.
    """
    rows = []
    for gradients in per_task:
        pieces = [
            ops.zeros((_size(shape),), "float32")
            if gradient is None
            else ops.reshape(ops.cast(gradient, "float32"), (-1,))
            for gradient, shape in zip(gradients, shapes)
        ]
        rows.append(pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=0))
    return ops.stack(rows)


def strategy_coefficients(strategy, gram, losses, present):
    """The strategy's `(K,)` coefficients from a masked Gram matrix; 0 for absent tasks."""
    safe_losses = ops.where(present, ops.cast(losses, "float32"), ops.zeros_like(losses))
    coefficients = ops.cast(
        strategy.compute_weights_from_gram(mask_gram(gram, present), safe_losses, present),
        "float32",
    )
    coefficients = ops.where(present, coefficients, ops.zeros_like(coefficients))
    return ops.stop_gradient(coefficients)


def combine_task_gradients(task_gradients, coefficients, present, extra_gradients=None):
    """Per variable: `sum_k a_k g_k (+ extra)` from `(K, ...)` stacked task gradients.

    `task_gradients` and `extra_gradients` are lists over variables; an entry may
    be `None` (no path from the losses to that variable). A variable reached by
    nothing gets `None` back. The stacks are combined as one `(K, P)` matrix: one
    selection of the present rows, one product, one split back into variables.
    """
    reached = [index for index, stacked in enumerate(task_gradients) if stacked is not None]
    combined = [None] * len(task_gradients)
    if reached:
        matrix = zero_absent(flatten_blocks([task_gradients[i] for i in reached]), present)
        shapes = [task_gradients[i].shape[1:] for i in reached]
        flat = weighted_sum_of_rows(coefficients, matrix)
        for index, piece in zip(reached, split_columns(flat, shapes)):
            combined[index] = ops.cast(piece, task_gradients[index].dtype)
    return _add_extra(combined, extra_gradients)


def combine_task_gradient_lists(
    per_task, matrix, shared, shapes, coefficients, present, extra_gradients=None
):
    """`sum_k a_k g_k (+ extra)` per variable from per-task gradient lists.

    The shared variables' part comes from their `(K, P)` matrix
    (`task_gradient_matrix`), combined in one product and split back; each other
    variable (reached by one task, a head) gets `a_k g_k` from the tasks that
    reach it, selected so that a NaN gradient of an absent task cannot leak.

    Args:
        per_task: a list over the tasks of lists over all variables (`None`
            where the task does not reach the variable).
        matrix: `task_gradient_matrix` of the variables at indices `shared`.
        shared: indices of the shared variables.
        shapes: the shapes of all variables.
        coefficients: `(K,)` coefficients, 0 for absent tasks.
        present: boolean `(K,)`.
        extra_gradients: `None` or a list over all variables.

    Returns:
        A list over all variables; `None` where nothing reaches the variable.
    """
    num_variables = len(per_task[0])
    combined = [None] * num_variables
    flat = weighted_sum_of_rows(coefficients, zero_absent(matrix, present))
    for index, piece in zip(shared, split_columns(flat, [shapes[i] for i in shared])):
        combined[index] = piece
    shared_set = set(shared)
    weights = flags = None
    for index in range(num_variables):
        if index in shared_set:
            continue
        for task, gradients in enumerate(per_task):
            gradient = gradients[index]
            if gradient is None:
                continue
            if weights is None:
                weights = ops.unstack(ops.cast(coefficients, "float32"))
                flags = ops.unstack(present)
            gradient = ops.convert_to_tensor(gradient)
            term = ops.where(
                flags[task],
                ops.cast(weights[task], gradient.dtype) * gradient,
                ops.zeros_like(gradient),
            )
            combined[index] = term if combined[index] is None else combined[index] + term
    return _add_extra(combined, extra_gradients)


def _add_extra(combined, extra_gradients):
    if extra_gradients is None:
        return combined
    result = []
    for total, extra in zip(combined, extra_gradients):
        if extra is not None:
            total = extra if total is None else total + ops.cast(extra, total.dtype)
        result.append(total)
    return result


def check_gradient_source(model, strategy, gradients):
    """Validates `compile(gradients=...)` against the strategy and the model; returns the source."""
    source = gradients or getattr(strategy, "preferred_gradients", PARAMETERS)
    if source not in (PARAMETERS, REPRESENTATION):
        raise ValueError(
            "`gradients` must be 'parameters' or 'representation'. "
            f"Received: gradients={gradients!r}"
        )
    if source == PARAMETERS and getattr(strategy, "combines_representation_gradients", False):
        raise ValueError(
            f"'{strategy.name}' combines the task gradients coordinate by coordinate at the "
            "shared representation and cannot use gradients with respect to the parameters. "
            "Use gradients='representation' (the default for it) on a model with a shared "
            f"representation. Received: gradients={gradients!r}"
        )
    if source == REPRESENTATION:
        if not strategy.supports_representation_gradients:
            raise ValueError(
                f"'{strategy.name}' is defined on parameter gradients and cannot use "
                "gradients with respect to the representation. Use gradients='parameters'."
            )
        if model.representation is None:
            raise ValueError(
                "gradients='representation' differentiates the task losses with respect to "
                "a shared representation, and this model names none "
                "(model.representation is None). Use gradients='parameters' (every "
                "architecture supports it), or an architecture that sets it: "
                "kerasmtl.HardSharing / hard_sharing (the trunk), models.SharedBottom (the "
                "bottom), models.MMoE, CGC, PLE or DSelectK (the stacked expert outputs, "
                "layer 'experts'), the seed models; or pass representation=<name of the "
                "layer every head reads> to MultiTaskModel. Received: "
                f"gradients='representation', model={model.name!r} ({type(model).__name__})"
            )
    return source


def representation_correction(strategy, task_gradients, representation, coefficients, present):
    """What the strategy's representation hook adds to `sum_k a_k g_k`, or `None`.

    For a strategy with `combines_representation_gradients`, the trunk must
    receive `strategy.combine_representation_gradients(g, present, A)` instead
    of `sum_k a_k g_k` (what one backward pass of `sum_k a_k L_k` gives it).
    The trainers add the returned difference as an extra output gradient of the
    representation, so the heads keep `sum_k a_k dL_k/dheads` and the trunk gets
    exactly the hook's gradient. `task_gradients` is `(K, *representation.shape)`;
    absent tasks' rows are zeroed here. The result has the representation's dtype.
    """
    if not getattr(strategy, "combines_representation_gradients", False):
        return None
    gradients = zero_absent(ops.cast(task_gradients, "float32"), present)
    combined = ops.cast(
        strategy.combine_representation_gradients(gradients, present, representation), "float32"
    )
    weights = ops.reshape(
        ops.cast(coefficients, "float32"), (-1,) + (1,) * (len(gradients.shape) - 1)
    )
    correction = ops.stop_gradient(combined - ops.sum(weights * gradients, axis=0))
    return ops.cast(correction, representation.dtype)


def head_inputs(model, representation, x):
    """The input of `representation_views.heads`: the representation (and the inputs if read)."""
    if not model.representation_views.heads_read_inputs:
        return representation
    if isinstance(x, dict):
        inputs = [x[tensor.name] for tensor in model.inputs]
    else:
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
    return [representation, *inputs]


class RepresentationViews:
    """Functional views of a model around its shared representation.

    `full` maps the inputs to `(outputs, representation)`; `trunk` maps the
    inputs to the representation; `heads` maps the representation (followed by
    the model inputs when a head also reads an input directly) to the outputs.
    All share the model's layers and variables. TensorFlow and torch
    differentiate the task losses with respect to `full`'s representation;
    JAX differentiates `heads` as a function of it.
    """

    def __init__(self, model):
        features = representation_tensor(model, model.representation)
        self.full = keras.Model(model.inputs, [model.output, features])
        self.trunk = keras.Model(model.inputs, features)
        try:
            self.heads = keras.Model(features, model.output)
            self.heads_read_inputs = False
        except ValueError:
            # A head also reads a model input directly: feed the inputs too.
            self.heads = keras.Model([features, *model.inputs], model.output)
            self.heads_read_inputs = True
