"""The shared-bottom multi-task model: one shared network, one tower per task."""

import keras

from kerasmtl import architecture_config as ac
from kerasmtl.layers import Expert
from kerasmtl.models.architecture_utils import check_units, make_layer
from kerasmtl.models.base_architecture import BaseArchitecture
from kerasmtl.task import check_tasks


@keras.saving.register_keras_serializable(package="kerasmtl")
class SharedBottom(BaseArchitecture):
    """The shared-bottom model: a shared network, then a tower and a head per task.

    Hard parameter sharing (Caruana, "Multitask Learning", Machine Learning
    1997) in the form used as the baseline of the mixture-of-experts papers
    (Ma et al., KDD 2018, Fig. 1a): every task reads the output of one shared
    bottom network; each task then has its own tower (`Dense` layers) and its
    head (`Task.head`). The bottom is the model's shared representation
    (layer `"bottom"`), so gradient-based weighting can use
    `compile(gradients="representation")`.

    Args:
        inputs: the inputs: a named `keras.Input` or a list of them, or a dict
            mapping input names to shapes (`{"features": (100,)}`,
            `{"image": (32, 32, 3)}`) or to tabular feature specifications
            (`"numeric"`, `("numeric", size)`, `("categorical",
            vocabulary_size[, embedding_dim])`), e.g.
            `{"age": "numeric", "city": ("categorical", 50)}`. Several vector
            features are concatenated; see `kerasmtl.models` for the details.
        tasks: a list of `kerasmtl.Task`, each with a `head`.
        bottom_units: tuple of ints, the units of the `Dense` layers of the
            default bottom (an `Expert` named `"bottom"`).
        tower_units: tuple of ints, the units of the `Dense` layers of each
            task's default tower (an `Expert` named `{task}_tower`); `()` for
            no tower.
        bottom: optional Keras layer or model that replaces the default
            bottom, e.g. a convolutional trunk for images. It is renamed
            `"bottom"` if unbuilt.
        tower: optional function `tower(layer_name)` returning a new layer
            per task, replacing the default towers.
        activation: activation of the default bottom and towers.
        dropout: float, the dropout rate of the default bottom and towers.
        embedding_dim: int, the embedding size of categorical features.
        name: the model name.
        **kwargs: `keras.Model` keyword arguments.

    A feature map returned by `bottom` is averaged to a vector before the
    towers. The config holds every argument: a `bottom` layer is saved with
    `keras.layers.serialize` (a bottom function: the graph it built), and
    the towers built by `tower=` (a function cannot be saved) likewise.

    Example:

    >>> import numpy as np
    >>> from kerasmtl import Task
    >>> model = SharedBottom(
    ...     {"age": "numeric", "city": ("categorical", 10)},
    ...     [Task("income", head=1, loss="mse"), Task("married", head=1, loss="mse")],
    ...     bottom_units=(16,), tower_units=(4,))
    >>> model.compile(optimizer="adam")
    >>> x = {"age": np.random.rand(8, 1), "city": np.random.randint(0, 10, (8, 1))}
    >>> y = {"income": np.random.rand(8, 1), "married": np.random.rand(8, 1)}
    >>> history = model.fit(x, y, epochs=1, verbose=0)
    >>> sorted(model.predict(x, verbose=0))
    ['income', 'married']
    """

    def __init__(
        self,
        inputs,
        tasks,
        *,
        bottom_units=(32,),
        tower_units=(8,),
        bottom=None,
        tower=None,
        activation="relu",
        dropout=0.0,
        embedding_dim=8,
        name="shared_bottom",
        **kwargs,
    ):
        check_tasks(tasks)
        bottom_units = check_units(bottom_units, "bottom_units", allow_empty=False)

        # === Layers ===
        if bottom is None:
            bottom_layer = Expert(
                bottom_units, activation=activation, dropout=dropout, name="bottom"
            )
        elif isinstance(bottom, keras.layers.Layer) and not bottom.built:
            bottom_layer = make_layer(lambda layer_name: bottom, "bottom", "bottom")
        else:
            bottom_layer = bottom

        # === Functional Model ===
        bottom_outputs = []

        def trunk(shared):
            bottom_outputs.append(shared)
            return {task.name: shared for task in tasks}

        super().__init__(
            inputs,
            tasks,
            trunk=trunk,
            bottom=bottom_layer,
            tower_units=tower_units,
            tower=tower,
            activation=activation,
            dropout=dropout,
            embedding_dim=embedding_dim,
            name=name,
            **kwargs,
        )
        if isinstance(bottom_layer, keras.layers.Layer):
            self.representation = bottom_layer.name
        else:
            self.representation = ac.layer_called_once(self, bottom_outputs[0])

        # === Config ===
        self.bottom_units = bottom_units
        self.bottom = bottom
        if bottom is None:
            # The default bottom is rebuilt from `bottom_units`, not saved.
            self._bottom_config = None

    def get_config(self):
        return {
            **super().get_config(),
            "bottom_units": list(self.bottom_units),
            "bottom": self._bottom_config,
        }


def shared_bottom(
    inputs,
    tasks,
    bottom_units=(32,),
    tower_units=(8,),
    bottom=None,
    tower=None,
    activation="relu",
    dropout=0.0,
    embedding_dim=8,
    name="shared_bottom",
):
    """Builds a `SharedBottom` model: a shared network, then a tower and a head per task.

    The same as `SharedBottom(inputs, tasks, bottom_units=..., ...)`; see
    `SharedBottom` for the method (Caruana, Machine Learning 1997) and the
    arguments.

    Returns:
        A `SharedBottom` model with one output per task, keyed by task name.

    Example:

    >>> from kerasmtl import Task
    >>> model = shared_bottom(
    ...     {"features": (6,)},
    ...     [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...     bottom_units=(16,), tower_units=(4,))
    >>> model.representation
    'bottom'
    """
    return SharedBottom(**locals())
