"""Cross-stitch networks: one network per task, mixed after every block."""

import keras

from kerasmtl import architecture_config as ac
from kerasmtl.layers import CrossStitch
from kerasmtl.models.architecture_utils import check_factory, check_units, make_layer
from kerasmtl.models.base_architecture import BaseArchitecture
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class CrossStitchNetwork(BaseArchitecture):
    """A cross-stitch network: parallel task networks joined by learned mixing.

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
        **kwargs: `keras.Model` keyword arguments.

    The config holds every argument; the layers built by `blocks` and
    `tower=` (functions cannot be saved) are saved with
    `keras.layers.serialize` and rebuilt from those configs.

    Example:

    >>> import numpy as np
    >>> from kerasmtl import Task
    >>> model = CrossStitchNetwork({"features": (10,)},
    ...                            [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse"),
    ...                       Task("c", head=2, loss="mse")],
    ...                            units=(8, 8), alpha_self=0.8)
    >>> mixing = keras.ops.convert_to_numpy(model.get_layer("cross_stitch_0").mixing)
    >>> mixing[0].astype("float64").round(2).tolist()
    [0.8, 0.1, 0.1]
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
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
        **kwargs,
    ):
        check_tasks(tasks)
        if len(tasks) < 2:
            raise ValueError(
                "A cross-stitch network mixes two or more task networks. "
                f"Received: tasks={[task.name for task in tasks]}"
            )
        units = check_units(units, "units", allow_empty=False) if blocks is None else units
        if blocks is not None and (not isinstance(blocks, (list, tuple)) or not blocks):
            raise ValueError(
                "`blocks` must be a non-empty list of functions `block(layer_name)` that each "
                f"return a new Keras layer. Received: blocks={blocks!r}"
            )
        for block in blocks or ():
            check_factory(block, "block")

        # === Layers ===
        def dense_block(size):
            return lambda layer_name: keras.layers.Dense(
                size, activation=activation, name=layer_name
            )

        factories = [dense_block(size) for size in units] if blocks is None else list(blocks)

        # === Functional Model ===
        def trunk(features):
            columns = [features] * len(tasks)
            for depth, block in enumerate(factories):
                columns = [
                    make_layer(block, f"{task.name}_block_{depth}", "block")(column)
                    for task, column in zip(tasks, columns)
                ]
                columns = CrossStitch(
                    alpha_self=alpha_self, channelwise=channelwise, name=f"cross_stitch_{depth}"
                )(columns)
            return {task.name: column for task, column in zip(tasks, columns)}

        super().__init__(
            inputs,
            tasks,
            trunk=trunk,
            bottom=None,
            tower_units=tower_units,
            tower=tower,
            activation=activation,
            dropout=dropout,
            embedding_dim=embedding_dim,
            name=name,
            **kwargs,
        )

        # === Config ===
        self.units = units
        self.blocks = None if blocks is None else list(blocks)
        self.alpha_self = alpha_self
        self.channelwise = channelwise

    def get_config(self):
        blocks = None
        if self.blocks is not None:
            blocks = [
                ac.serialize_factory(
                    self, block, [f"{task}_block_{depth}" for task in self.task_names]
                )
                for depth, block in enumerate(self.blocks)
            ]
        return {
            **super().get_config(),
            "units": list(self.units),
            "blocks": blocks,
            "alpha_self": self.alpha_self,
            "channelwise": self.channelwise,
        }


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
    """Builds a `CrossStitchNetwork`: parallel task networks joined by learned mixing.

    The same as `CrossStitchNetwork(inputs, tasks, units=..., ...)`; see
    `CrossStitchNetwork` for the method (Misra et al., CVPR 2016) and the
    arguments.

    Returns:
        A `CrossStitchNetwork` with one output per task, keyed by task name.

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
    return CrossStitchNetwork(**locals())
