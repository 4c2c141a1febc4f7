"""Cross-stitch networks: one network per task, mixed after every block."""

import keras

from kerasmtl.layers import CrossStitch
from kerasmtl.models.architecture_utils import (
    apply_bottom,
    check_factory,
    check_units,
    make_layer,
    task_outputs,
)
from kerasmtl.models.tabular_inputs import build_inputs
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks


def cross_stitch(
    inputs,
    tasks,
    units=(32, 16),
    blocks=None,
    alpha_self=0.9,
    channelwise=False,
    tower_units=(),
    tower=None,
    activation="relu",
    dropout=0.0,
    embedding_dim=8,
    name="cross_stitch",
):
    """Builds a cross-stitch network: parallel task networks joined by learned mixing.

    From Misra et al., "Cross-stitch Networks for Multi-task Learning" (CVPR
    2016). Each task has its own column of blocks (by default `Dense` layers,
    `{task}_block_{i}`); after every block, a cross-stitch unit
    (`kerasmtl.layers.CrossStitch`, `cross_stitch_{i}`) replaces each task's
    activation with a learned linear mix of all tasks' activations, starting
    from `alpha_self` for the task's own activation and
    `(1 - alpha_self) / (T - 1)` for each other task's. How much the tasks
    share is therefore learned, from nearly separate networks
    (`alpha_self` near 1) to one shared network. Each column ends with the
    task's tower and head. Works for any number `T >= 2` of tasks.

    Args:
        inputs: the inputs: a named `keras.Input` or a list of them, or a dict
            mapping input names to shapes (`{"features": (100,)}`,
            `{"image": (32, 32, 3)}`) or to tabular feature specifications
            (`"numeric"`, `("numeric", size)`, `("categorical",
            vocabulary_size[, embedding_dim])`); see `kerasmtl.models`.
        tasks: a list of two or more `kerasmtl.Task`, each with a `head`.
        units: tuple of ints, the units of the default `Dense` blocks (one
            block per entry); unused when `blocks` is given.
        blocks: optional list of functions `block(layer_name)`, one per depth,
            each returning a new Keras layer (called once per task), e.g.
            `lambda layer_name: keras.layers.Conv2D(8, 3, activation="relu",
            name=layer_name)` for images. A block's output must have the same
            shape in every column. Feature maps are averaged to vectors before
            the towers.
        alpha_self: float, the starting weight of a task's own activation in
            every cross-stitch unit. Defaults to `0.9`.
        channelwise: bool, whether each channel has its own mixing matrix.
        tower_units: tuple of ints, the units of each task's tower after the
            last block; `()` (default) for none.
        tower: optional function `tower(layer_name)` returning a new layer
            per task, replacing the default towers.
        activation: activation of the default blocks and towers.
        dropout: float, the dropout rate of the default towers.
        embedding_dim: int, the embedding size of categorical features.
        name: the model name.

    Returns:
        A `kerasmtl.MultiTaskModel` with one output per task, keyed by task
        name.

    Example:

    >>> import numpy as np
    >>> from kerasmtl import Task
    >>> model = cross_stitch({"features": (10,)},
    ...                      [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse"),
    ...                       Task("c", head=2, loss="mse")],
    ...                      units=(8, 8), alpha_self=0.8)
    >>> mixing = keras.ops.convert_to_numpy(model.get_layer("cross_stitch_0").mixing)
    >>> mixing[0].astype("float64").round(2).tolist()
    [0.8, 0.1, 0.1]
    """
    check_tasks(tasks)
    if len(tasks) < 2:
        raise ValueError(
            "A cross-stitch network mixes two or more task networks. "
            f"Received: tasks={[task.name for task in tasks]}"
        )
    if blocks is None:
        units = check_units(units, "units", allow_empty=False)

        def dense_block(size):
            return lambda layer_name: keras.layers.Dense(
                size, activation=activation, name=layer_name
            )

        blocks = [dense_block(size) for size in units]
    elif not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(
            "`blocks` must be a non-empty list of functions `block(layer_name)` that each "
            f"return a new Keras layer. Received: blocks={blocks!r}"
        )
    for block in blocks:
        check_factory(block, "block")
    tower_units = check_units(tower_units, "tower_units")
    check_factory(tower, "tower")

    # === Functional Model ===
    model_inputs, features = build_inputs(inputs, embedding_dim)
    features = apply_bottom(features, None)
    columns = [features] * len(tasks)
    for depth, block in enumerate(blocks):
        columns = [
            make_layer(block, f"{task.name}_block_{depth}", "block")(column)
            for task, column in zip(tasks, columns)
        ]
        columns = CrossStitch(
            alpha_self=alpha_self, channelwise=channelwise, name=f"cross_stitch_{depth}"
        )(columns)
    outputs = task_outputs(
        {task.name: column for task, column in zip(tasks, columns)},
        tasks,
        tower_units,
        tower,
        activation,
        dropout,
    )
    return MultiTaskModel(model_inputs, outputs, tasks, name=name)
