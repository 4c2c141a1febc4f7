"""The Adaptive Information Transfer Multi-task (AITM) framework for conversion funnels."""

import math

import keras
from keras import ops

from kerasmtl.layers import Expert
from kerasmtl.models.architecture_utils import check_units
from kerasmtl.models.esmm import _check_names, check_feature_spec
from kerasmtl.models.tabular_inputs import build_inputs
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import Task


@keras.saving.register_keras_serializable(package="kerasmtl")
class AdaptiveInformationTransfer(keras.layers.Layer):
    """AITM's Adaptive Information Transfer module: attention over two vectors.

    From Xi et al., "Modeling the Sequential Dependence among Audience
    Multi-step Conversions with Multi-task Learning in Targeted Display
    Advertising" (KDD 2021), Sec. 3.2. For conversion step `t`, the
    information transferred from step `t - 1` is `p = h(z_{t-1})` (the
    `info` layer: `Dense` with ReLU, then dropout), and with `q_t` the output
    of step `t`'s tower,

    `z_t = sum_{u in {p, q_t}} w_u g1(u)`,
    `w_u = softmax_u(<g2(u), g3(u)> / sqrt(d))`,

    where `g1, g2, g3` are bias-free `Dense` projections to `d` units (value,
    query and key; `d` is the size of `q_t`). The attention weights let each
    sample decide how much of the previous step's information to take.

    Args:
        dropout: float in `[0, 1)`, the dropout rate after the `info` layer.
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        previous: `z_{t-1}`, the previous step's transferred information,
            shape `(batch, d_previous)`.
        current: `q_t`, this step's tower output, shape `(batch, d)`.
        training: bool, whether dropout is active.
        return_attention_scores: bool, also return the weights `w`
            `(batch, 2)` (column 0: the transferred information, 1: the
            tower output).

    Input shape:
        `previous`: `(batch, d_previous)`; `current`: `(batch, d)`.

    Output shape:
        `(batch, d)`.

    Example:

    >>> import numpy as np
    >>> layer = AdaptiveInformationTransfer()
    >>> z, w = layer(np.ones((4, 6)), np.ones((4, 8)), return_attention_scores=True)
    >>> tuple(z.shape), tuple(w.shape)
    ((4, 8), (4, 2))
    """

    def __init__(self, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
        self.dropout = float(dropout)

    def build(self, previous_shape, current_shape):
        units = current_shape[-1]
        self.info = keras.layers.Dense(units, activation="relu", name="info")
        self.info.build(previous_shape)
        self.info_dropout = keras.layers.Dropout(self.dropout, name="info_dropout")
        self.info_dropout.build(current_shape)
        self.value = keras.layers.Dense(units, use_bias=False, name="value")
        self.query = keras.layers.Dense(units, use_bias=False, name="query")
        self.key = keras.layers.Dense(units, use_bias=False, name="key")
        for layer in (self.value, self.query, self.key):
            layer.build(current_shape)

    def call(self, previous, current, training=None, return_attention_scores=False):
        transferred = self.info_dropout(self.info(previous), training=training)
        # (batch, 2, d): the two candidates, attended over axis 1.
        candidates = ops.stack([transferred, ops.cast(current, transferred.dtype)], axis=1)
        units = candidates.shape[-1]
        scores = ops.sum(self.query(candidates) * self.key(candidates), axis=-1)
        weights = ops.softmax(scores / math.sqrt(units), axis=1)
        outputs = ops.sum(ops.expand_dims(weights, -1) * self.value(candidates), axis=1)
        if return_attention_scores:
            return outputs, weights
        return outputs

    def compute_output_shape(self, previous_shape, current_shape):
        return tuple(current_shape)

    def compute_output_spec(
        self, previous, current, training=None, return_attention_scores=False
    ):
        outputs = keras.KerasTensor(tuple(current.shape), dtype=self.compute_dtype)
        if return_attention_scores:
            return outputs, keras.KerasTensor((current.shape[0], 2), dtype=self.compute_dtype)
        return outputs

    def get_config(self):
        return {**super().get_config(), "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="kerasmtl")
class BehavioralExpectationCalibrator(keras.layers.Layer):
    """AITM's behavioral expectation calibrator: penalizes `p_t > p_{t-1}`.

    From Xi et al. (KDD 2021), Sec. 3.3. In a conversion funnel the
    probability of reaching step `t` cannot exceed that of reaching step
    `t - 1`. The layer returns `current` unchanged and adds, through
    `add_loss`, the penalty

    `alpha * mean_batch(max(current - previous, 0))`,

    the paper's `alpha * L_lc` term for one pair of steps (the paper sums the
    pairs `t = 2..T`, averaged over the `N` samples). Gradients flow into
    both probabilities, as in the paper.

    Args:
        alpha: float >= 0, the weight of the penalty (the paper uses 0.6).
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        previous: `p_{t-1}`, probabilities `(batch, 1)` of the previous step.
        current: `p_t`, probabilities `(batch, 1)` of this step.

    Returns:
        `current`, unchanged.

    Example:

    >>> import numpy as np
    >>> layer = BehavioralExpectationCalibrator(alpha=0.5)
    >>> out = layer(np.array([[0.2], [0.6]]), np.array([[0.4], [0.1]]))
    >>> round(float(keras.ops.convert_to_numpy(layer.losses[0])), 6)
    0.05
    """

    def __init__(self, alpha=0.6, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
            math.isfinite(alpha) and alpha >= 0
        ):
            raise ValueError(
                f"`alpha` must be a finite number >= 0. Received: alpha={alpha!r}"
            )
        self.alpha = float(alpha)

    def build(self, previous_shape, current_shape):
        pass

    def call(self, previous, current):
        excess = ops.relu(ops.cast(current, "float32") - ops.cast(previous, "float32"))
        self.add_loss(self.alpha * ops.mean(ops.sum(excess, axis=-1)))
        return current

    def compute_output_shape(self, previous_shape, current_shape):
        return tuple(current_shape)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="kerasmtl")
class AITM(MultiTaskModel):
    """Adaptive Information Transfer Multi-task model for multi-step conversions.

    From Xi et al., "Modeling the Sequential Dependence among Audience
    Multi-step Conversions with Multi-task Learning in Targeted Display
    Advertising" (KDD 2021). A funnel of `T` steps (e.g. impression ->
    click -> purchase) has one task per step, `p_t = p(reaching step t | x)`
    for each impression `x`:

    - shared embeddings of the tabular `features` (concatenated, layer
      `"features"`) feed one tower per step (`kerasmtl.layers.Expert`
      `{step}_tower`, output `q_t`);
    - step 1 reads its tower, `z_1 = q_1`; step `t >= 2` reads
      `z_t = AIT(z_{t-1}, q_t)` (`AdaptiveInformationTransfer`
      `{step}_transfer`): attention over the information transferred from
      the previous step and its own tower;
    - each step's head is a one-unit sigmoid `Dense` (named after step 1, and
      `{step}_head` for the others), so outputs are probabilities;
    - for `t >= 2` a `BehavioralExpectationCalibrator` named after the step
      returns `p_t` and adds `alpha * mean(max(p_t - p_{t-1}, 0))` to the
      loss through `add_loss`: the model's own loss, which no weighting
      strategy scales.

    Labels: as in the paper (Sec. 3.4 and its experiments), every step is
    trained with binary cross-entropy over **all impressions**, with label 0
    for an impression that did not reach the step (a purchase label is 0
    where there was no click). So no label is masked: the tasks have no
    `mask_value`, and `L = sum_t BCE_t + alpha * L_lc` with every term a
    mean over the batch. (ESMM, by contrast, masks its CVR label; see
    `kerasmtl.models.esmm.ESMM`.) `model.funnel_labels(click, conversion,
    ...)` builds the labels from 0/1 arrays.

    Args:
        features: a dict mapping each input name to a tabular feature
            specification (`"numeric"`, `("numeric", size)`,
            `("categorical", vocabulary_size[, embedding_dim])`).
        task_names: the names of the funnel's steps, in funnel order (at
            least two), e.g. `("click", "purchase")`.
        tower_units: tuple of ints, the units of each tower's `Dense` layers
            (the paper: 128-64-32).
        embedding_dim: int, the embedding size of categorical features (the
            paper: 5).
        activation: the activation of the towers.
        dropout: float in `[0, 1)`, the dropout rate of the towers and of the
            transferred information.
        alpha: float >= 0, the calibrator's weight (the paper's 0.6).
        name: the model name.
        **kwargs: other `keras.Model` arguments, such as `trainable`.

    Example:

    >>> import numpy as np
    >>> model = AITM({"user": ("categorical", 20), "price": "numeric"},
    ...              task_names=("click", "purchase"), tower_units=(8,), embedding_dim=4)
    >>> model.compile(optimizer="adam")
    >>> rng = np.random.default_rng(0)
    >>> x = {"user": rng.integers(0, 20, (64, 1)), "price": rng.normal(size=(64, 1))}
    >>> click = (rng.random((64, 1)) < 0.3).astype("float32")
    >>> y = model.funnel_labels(click, click * (rng.random((64, 1)) < 0.5))
    >>> history = model.fit(x, y, epochs=1, verbose=0)
    >>> sorted(model.predict(x, verbose=0))
    ['click', 'purchase']
    """

    def __init__(
        self,
        features,
        task_names=("click", "conversion"),
        tower_units=(32, 16),
        embedding_dim=8,
        activation="relu",
        dropout=0.0,
        alpha=0.6,
        name="aitm",
        **kwargs,
    ):
        # === Config ===
        features = check_feature_spec(features)
        task_names = _check_names(task_names, None, "task_names", "naming the funnel's steps")
        if len(task_names) < 2:
            raise ValueError(
                "AITM models a funnel of at least two steps (e.g. ('click', 'purchase')). "
                f"Received: task_names={task_names!r}"
            )
        tower_units = check_units(tower_units, "tower_units", allow_empty=False)
        tasks = [
            Task(step, loss=keras.losses.BinaryCrossentropy(name=f"{step}_bce"))
            for step in task_names
        ]

        # === Layers ===
        towers = [
            Expert(tower_units, activation=activation, dropout=dropout, name=f"{step}_tower")
            for step in task_names
        ]
        transfers = [
            AdaptiveInformationTransfer(dropout=dropout, name=f"{step}_transfer")
            for step in task_names[1:]
        ]
        heads = [
            keras.layers.Dense(1, activation="sigmoid", name=step if t == 0 else f"{step}_head")
            for t, step in enumerate(task_names)
        ]
        calibrators = [
            BehavioralExpectationCalibrator(alpha, name=step) for step in task_names[1:]
        ]

        # === Functional Model ===
        model_inputs, shared = build_inputs(features, embedding_dim)
        transferred = towers[0](shared)
        outputs = {task_names[0]: heads[0](transferred)}
        previous = outputs[task_names[0]]
        for t in range(1, len(task_names)):
            transferred = transfers[t - 1](transferred, towers[t](shared))
            probability = calibrators[t - 1](previous, heads[t](transferred))
            outputs[task_names[t]] = probability
            previous = probability
        representation = "features" if len(features) > 1 else None
        super().__init__(
            model_inputs, outputs, tasks, representation=representation, name=name, **kwargs
        )

        # === Config ===
        self.features = features
        self.task_names_config = task_names
        self.tower_units = tower_units
        self.embedding_dim = embedding_dim
        self.activation = activation
        self.dropout = dropout
        self.alpha = float(alpha)

    def funnel_labels(self, *steps):
        """Returns `{step: label}` for `fit` from one 0/1 array per funnel step.

        Args:
            *steps: one array `(N,)` or `(N, 1)` per step, in funnel order:
                1 where the impression reached the step. Values where the
                previous step was not reached are ignored (0, -1 or NaN
                alike) and become 0: the paper's labels over all impressions.

        Returns:
            A dict of float32 `(N, 1)` labels over all impressions.
        """
        import numpy as np

        from kerasmtl.models.esmm import _column

        names = self.task_names_config
        if len(steps) != len(names):
            raise ValueError(
                f"Give one label array per funnel step {list(names)}. "
                f"Received: {len(steps)} arrays"
            )
        labels, reached = {}, None
        for name, values in zip(names, steps):
            values = _column(values, name)
            checked = values if reached is None else values[reached]
            if not np.all(np.isin(checked, (0.0, 1.0))):
                raise ValueError(
                    f"Labels of step '{name}' must be 0 or 1 wherever the previous step was "
                    f"reached. Received: values={np.unique(checked)[:10].tolist()}"
                )
            if reached is not None:
                values = np.where(reached, values, 0.0)
            reached = values == 1.0
            labels[name] = values.astype("float32")
        return labels

    def get_config(self):
        # The hyper-parameters rebuild the graph; the weights come from the file.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "features": self.features,
            "task_names": self.task_names_config,
            "tower_units": self.tower_units,
            "embedding_dim": self.embedding_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "alpha": self.alpha,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
