"""A Multi-Task Attention Network (MTAN) over a small convolutional encoder."""

import keras

from kerasmtl import architecture_config as ac
from kerasmtl.inputs import make_inputs
from kerasmtl.layers import TaskAttention
from kerasmtl.models.architecture_utils import (
    base_config,
    check_factory,
    check_units,
    deserialize_arguments,
    task_outputs,
    tower_names,
)
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class MTAN(MultiTaskModel):
    """An MTAN: task attention modules over the stages of a shared encoder.

    A simplified Multi-Task Attention Network (Liu et al., "End-to-End
    Multi-Task Learning with Attention", CVPR 2019). A shared encoder of
    `len(filters)` stages (a 3x3 convolution with `activation`, named
    `encoder_stage_{j}`, then 2x2 max pooling between stages) computes the
    shared features. Each task has a soft-attention path along the encoder:
    at stage 1 its attention module (`kerasmtl.layers.TaskAttention`,
    `{task}_attention_1`) masks the stage's output; at stage `j > 1` the
    task's previous attended features go through a 3x3 convolution to the
    stage's channels and a 2x2 max pooling (`{task}_stage_{j}_conv`,
    `{task}_stage_{j}_pool`), and the module computes its mask from the shared
    stage output concatenated with them. The last attended map is averaged
    over space and goes to the task's tower and head.

    Simplifications of the paper (whose networks are SegNet / Wide ResNet with
    decoders for dense prediction): one convolution per stage, masks computed
    from the stage output rather than from the stage's first convolution,
    no batch normalization, and global average pooling to vector heads (no
    decoder). Images are channels-last.

    Args:
        inputs: one image input: a named `keras.Input` or a dict
            `{name: (height, width, channels)}`.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        filters: tuple of ints, the channels of each encoder stage (2 or 3
            stages is typical). The height and width must be at least
            `2 ** (len(filters) - 1)`.
        attention_filters: int, the hidden channels of the attention modules;
            `None` for the channels of each stage.
        tower_units: tuple of ints, the units of each task's tower; `()` for
            none.
        tower: optional function `tower(layer_name)` returning a new layer
            per task, replacing the default towers.
        activation: activation of the convolutions and towers.
        dropout: float, the dropout rate of the default towers.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    The config holds every argument; the towers built by `tower=` (a function
    cannot be saved) are saved with `keras.layers.serialize`.

    Example:

    >>> from kerasmtl import Task
    >>> model = MTAN({"image": (16, 16, 3)},
    ...              [Task("digit", head=10), Task("parity", head=2)],
    ...              filters=(8, 16), tower_units=())
    >>> {task: tuple(output.shape) for task, output in model.output.items()}
    {'digit': (None, 10), 'parity': (None, 2)}
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
        filters=(16, 32, 64),
        attention_filters=None,
        tower_units=(16,),
        tower=None,
        activation="relu",
        dropout=0.0,
        name="mtan",
        **kwargs,
    ):
        check_tasks(tasks)
        filters = check_units(filters, "filters", allow_empty=False)
        tower_units = check_units(tower_units, "tower_units")
        check_factory(tower, "tower")
        model_inputs = make_inputs(inputs)
        if isinstance(model_inputs, dict) and len(model_inputs) == 1:
            model_inputs = next(iter(model_inputs.values()))
        if not isinstance(model_inputs, keras.KerasTensor) or len(model_inputs.shape) != 4:
            raise ValueError(
                "`mtan` reads one image input (batch, height, width, channels), e.g. "
                f"inputs={{'image': (32, 32, 3)}}. Received: inputs={inputs!r}"
            )
        smallest = 2 ** (len(filters) - 1)
        height, width = model_inputs.shape[1:3]
        if (height is not None and height < smallest) or (width is not None and width < smallest):
            raise ValueError(
                f"{len(filters)} encoder stages halve the image {len(filters) - 1} times, so "
                f"the height and width must be at least {smallest}. "
                f"Received: image shape={tuple(model_inputs.shape[1:])}, filters={filters}"
            )

        # === Functional Model ===
        stages = []
        x = model_inputs
        for index, stage_filters in enumerate(filters, start=1):
            if index > 1:
                x = keras.layers.MaxPooling2D(2, name=f"encoder_pool_{index}")(x)
            x = keras.layers.Conv2D(
                stage_filters,
                3,
                padding="same",
                activation=activation,
                name=f"encoder_stage_{index}",
            )(x)
            stages.append(x)

        attended = {}
        for task in tasks:
            previous = None
            for index, (stage, stage_filters) in enumerate(zip(stages, filters), start=1):
                if previous is not None:
                    previous = keras.layers.Conv2D(
                        stage_filters,
                        3,
                        padding="same",
                        activation=activation,
                        name=f"{task.name}_stage_{index}_conv",
                    )(previous)
                    previous = keras.layers.MaxPooling2D(2, name=f"{task.name}_stage_{index}_pool")(
                        previous
                    )
                attention = TaskAttention(
                    hidden_filters=attention_filters, name=f"{task.name}_attention_{index}"
                )
                previous = attention(stage) if previous is None else attention(stage, previous)
            attended[task.name] = previous
        outputs = task_outputs(attended, tasks, tower_units, tower, activation, dropout)
        super().__init__(model_inputs, outputs, tasks, name=name, **kwargs)

        # === Config ===
        self.filters = filters
        self.attention_filters = attention_filters
        self.tower_units = tower_units
        self.tower = tower
        self.activation = activation
        self.dropout = dropout
        self._config_inputs = ac.serialize_inputs(inputs)

    def get_config(self):
        return {
            **base_config(self),
            "filters": list(self.filters),
            "attention_filters": self.attention_filters,
            "tower_units": list(self.tower_units),
            "tower": ac.serialize_factory(self, self.tower, tower_names(self.tasks)),
            "activation": self.activation,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**deserialize_arguments(config))


def mtan(
    inputs,
    tasks,
    filters=(16, 32, 64),
    attention_filters=None,
    tower_units=(16,),
    tower=None,
    activation="relu",
    dropout=0.0,
    name="mtan",
):
    """Builds an `MTAN`: task attention modules over the stages of a shared encoder.

    The same as `MTAN(inputs, tasks, filters=..., ...)`; see `MTAN` for the
    method (Liu et al., CVPR 2019) and the arguments.

    Returns:
        An `MTAN` model with one output per task, keyed by task name.

    Example:

    >>> from kerasmtl import Task
    >>> model = mtan({"image": (16, 16, 3)},
    ...              [Task("digit", head=10), Task("parity", head=2)],
    ...              filters=(8, 16), tower_units=())
    >>> {task: tuple(output.shape) for task, output in model.output.items()}
    {'digit': (None, 10), 'parity': (None, 2)}
    """
    return MTAN(
        inputs,
        tasks,
        filters=filters,
        attention_filters=attention_filters,
        tower_units=tower_units,
        tower=tower,
        activation=activation,
        dropout=dropout,
        name=name,
    )
