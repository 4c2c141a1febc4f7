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

import keras
from keras import ops

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


def gram_of_blocks(blocks):
    """The `(K, K)` Gram matrix of task gradients given as `(K, ...)` blocks.

    Summed block by block, so the `(K, P)` gradient matrix is never assembled.
    """
    gram = None
    for block in blocks:
        rows = ops.reshape(ops.cast(block, "float32"), (block.shape[0], -1))
        part = ops.matmul(rows, ops.transpose(rows))
        gram = part if gram is None else gram + part
    return gram


def mask_gram(gram, present):
    """Zeroes the rows and columns of absent tasks (whatever their gradients held)."""
    both = ops.logical_and(present[:, None], present[None, :])
    return ops.where(both, gram, ops.zeros_like(gram))


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
    nothing gets `None` back.
    """
    combined = []
    for index, stacked in enumerate(task_gradients):
        extra = None if extra_gradients is None else extra_gradients[index]
        total = None
        if stacked is not None:
            stacked = zero_absent(stacked, present)
            weights = ops.cast(coefficients, stacked.dtype)
            total = ops.tensordot(weights, stacked, axes=1)
        if extra is not None:
            total = extra if total is None else total + ops.cast(extra, total.dtype)
        combined.append(total)
    return combined


def check_gradient_source(model, strategy, gradients):
    """Validates `compile(gradients=...)` against the strategy and the model; returns the source."""
    source = gradients or getattr(strategy, "preferred_gradients", PARAMETERS)
    if source not in (PARAMETERS, REPRESENTATION):
        raise ValueError(
            "`gradients` must be 'parameters' or 'representation'. "
            f"Received: gradients={gradients!r}"
        )
    if source == REPRESENTATION:
        if not strategy.supports_representation_gradients:
            raise ValueError(
                f"'{strategy.name}' is defined on parameter gradients and cannot use "
                "gradients with respect to the representation. Use gradients='parameters'."
            )
        if model.representation is None:
            raise ValueError(
                "gradients='representation' needs the model to know its shared "
                "representation layer: build it with `kerasmtl.hard_sharing` (or another "
                "builder that sets it), pass `representation=<trunk layer name>` to "
                "MultiTaskModel, or use gradients='parameters'."
            )
    return source


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
