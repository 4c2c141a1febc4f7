"""The Entire Space Multi-Task Model (ESMM) for post-click conversion rate estimation."""

import keras
import numpy as np

from kerasmtl.layers import Expert
from kerasmtl.models.architecture_utils import check_units
from kerasmtl.models.tabular_inputs import CATEGORICAL, NUMERIC, build_inputs
from kerasmtl.multi_task_model import MultiTaskModel
from kerasmtl.task import Task


@keras.saving.register_keras_serializable(package="kerasmtl")
class ESMM(MultiTaskModel):
    """Entire Space Multi-Task Model: CVR learned over all impressions through pCTCVR.

    From Ma et al., "Entire Space Multi-Task Model: An Effective Approach for
    Estimating Post-Click Conversion Rate" (SIGIR 2018). A model of the
    conversion rate (CVR, `p(conversion | click, x)`) trained on clicked
    impressions only is trained on another distribution than the one it
    serves (all impressions): the sample selection bias. And clicks are rare:
    data sparsity. ESMM writes the funnel impression -> click -> conversion as

    `pCTCVR = p(click, conversion | x) = pCTR * pCVR`

    and trains two outputs over the *entire* impression space, both with
    binary cross-entropy: `ctr` (pCTR, label: click) and `ctcvr` (pCTCVR,
    label: click AND conversion). The CVR tower gets its gradient only
    through `ctcvr`, and the embeddings are shared by both towers, so the
    abundant click data trains the features the CVR tower reads.

    Architecture: the tabular `features` (categorical vocabularies embedded by
    `keras.layers.Embedding` layers shared by both towers, plus numerics),
    concatenated (layer `"features"`); a CTR tower and a CVR tower
    (`kerasmtl.layers.Expert` layers `{ctr}_tower`, `{cvr}_tower`), each
    ending in a one-unit sigmoid `Dense` head named after its output; and
    `ctcvr`, the product of the two (a `keras.layers.Multiply`).

    The model has three outputs, keyed by `task_names` (default `"ctr"`,
    `"cvr"`, `"ctcvr"`), all probabilities. `cvr` (pCVR) is what the model
    is for at serving time; it is a task with `loss_weight=0` and
    `mask_value` for samples without a click, so that the training objective
    is exactly the paper's, `L = sum BCE(click, pCTR) + sum BCE(click *
    conversion, pCTCVR)` over all impressions, while `cvr_loss` is still
    logged as a diagnostic (binary cross-entropy of pCVR on the clicked
    impressions, through the kit's missing-label masks). The weight 0 is
    part of the default `Fixed` weighting; with `compile(loss_weights=...)`
    keep `cvr` at 0 for the paper's objective (a gradient-based weighting
    strategy would also see `cvr`'s gradient: use it knowingly).
    `model.funnel_labels(click, conversion)` builds the three labels.

    Args:
        features: a dict mapping each input name to a tabular feature
            specification: `"numeric"`, `("numeric", size)`, `("categorical",
            vocabulary_size)` or `("categorical", vocabulary_size,
            embedding_dim)` (see `kerasmtl.models`). Categorical inputs are
            int32 ids of shape `(1,)`.
        tower_units: tuple of ints, the units of the `Dense` layers of each
            tower (the paper uses 360-200-80; smaller here by default).
        embedding_dim: int, the embedding size of categorical features.
        activation: the activation of the towers' `Dense` layers.
        dropout: float in `[0, 1)`, the dropout rate in the towers.
        task_names: the names of the three outputs (and tasks), in the order
            CTR, CVR, CTCVR.
        mask_value: the label value that marks "no click" in the `cvr` label.
        name: the model name.
        **kwargs: other `keras.Model` arguments, such as `trainable`.

    Example:

    >>> import numpy as np
    >>> model = ESMM({"user": ("categorical", 20), "price": "numeric"},
    ...              tower_units=(8,), embedding_dim=4)
    >>> model.compile(optimizer="adam")
    >>> rng = np.random.default_rng(0)
    >>> x = {"user": rng.integers(0, 20, (64, 1)), "price": rng.normal(size=(64, 1))}
    >>> click = (rng.random((64, 1)) < 0.3).astype("float32")
    >>> conversion = click * (rng.random((64, 1)) < 0.5)
    >>> history = model.fit(x, model.funnel_labels(click, conversion), epochs=1, verbose=0)
    >>> predictions = model.predict(x, verbose=0)
    >>> sorted(predictions)
    ['ctcvr', 'ctr', 'cvr']
    >>> bool(np.allclose(predictions["ctcvr"], predictions["ctr"] * predictions["cvr"]))
    True
    """

    def __init__(
        self,
        features,
        tower_units=(32, 16),
        embedding_dim=8,
        activation="relu",
        dropout=0.0,
        task_names=("ctr", "cvr", "ctcvr"),
        mask_value=-1.0,
        name="esmm",
        **kwargs,
    ):
        # === Config ===
        features = check_feature_spec(features)
        tower_units = check_units(tower_units, "tower_units", allow_empty=False)
        task_names = _check_names(task_names, 3, "task_names", "(ctr, cvr, ctcvr)")
        ctr_name, cvr_name, ctcvr_name = task_names
        if mask_value is not None:
            mask_value = float(mask_value)
            if mask_value in (0.0, 1.0):
                raise ValueError(
                    "`mask_value` marks impressions without a click in the CVR label, so it "
                    f"cannot be a label value (0 or 1). Received: mask_value={mask_value}"
                )
        loss = keras.losses.BinaryCrossentropy
        tasks = [
            Task(ctr_name, loss=loss(name=f"{ctr_name}_bce")),
            Task(cvr_name, loss=loss(name=f"{cvr_name}_bce"), loss_weight=0.0,
                 mask_value=mask_value),
            Task(ctcvr_name, loss=loss(name=f"{ctcvr_name}_bce")),
        ]

        # === Layers ===
        ctr_tower = Expert(tower_units, activation=activation, dropout=dropout,
                           name=f"{ctr_name}_tower")
        cvr_tower = Expert(tower_units, activation=activation, dropout=dropout,
                           name=f"{cvr_name}_tower")
        ctr_head = keras.layers.Dense(1, activation="sigmoid", name=ctr_name)
        cvr_head = keras.layers.Dense(1, activation="sigmoid", name=cvr_name)
        product = keras.layers.Multiply(name=ctcvr_name)

        # === Functional Model ===
        model_inputs, shared = build_inputs(features, embedding_dim)
        ctr = ctr_head(ctr_tower(shared))
        cvr = cvr_head(cvr_tower(shared))
        outputs = {ctr_name: ctr, cvr_name: cvr, ctcvr_name: product([ctr, cvr])}
        representation = "features" if len(features) > 1 else None
        super().__init__(
            model_inputs, outputs, tasks, representation=representation, name=name, **kwargs
        )

        # === Config ===
        self.features = features
        self.tower_units = tower_units
        self.embedding_dim = embedding_dim
        self.activation = activation
        self.dropout = dropout
        self.task_names_config = task_names
        self.mask_value = mask_value

    def funnel_labels(self, click, conversion):
        """Returns the label dict `{ctr, cvr, ctcvr}` for `fit` from click and conversion.

        Args:
            click: array `(N,)` or `(N, 1)` of 0/1, whether each impression was
                clicked.
            conversion: array of the same shape: whether the click converted.
                Values where `click == 0` are ignored (0, -1 or NaN alike).

        Returns:
            A dict of float32 `(N, 1)` arrays: `ctr` = click, `ctcvr` = click
            AND conversion (both over all impressions), `cvr` = conversion
            where clicked and `mask_value` elsewhere.
        """
        return funnel_labels(click, conversion, self.task_names_config, self.mask_value)

    def get_config(self):
        # The hyper-parameters rebuild the graph; the weights come from the file.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "features": self.features,
            "tower_units": self.tower_units,
            "embedding_dim": self.embedding_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "task_names": self.task_names_config,
            "mask_value": self.mask_value,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def funnel_labels(click, conversion, task_names=("ctr", "cvr", "ctcvr"), mask_value=-1.0):
    """The ESMM label dict from click and conversion arrays (see `ESMM.funnel_labels`)."""
    click = _column(click, "click")
    conversion = _column(conversion, "conversion")
    if click.shape != conversion.shape:
        raise ValueError(
            "`click` and `conversion` must have the same number of impressions. "
            f"Received: click.shape={click.shape}, conversion.shape={conversion.shape}"
        )
    if not np.all(np.isin(click, (0.0, 1.0))):
        raise ValueError(
            "`click` must hold 0 or 1 for every impression. "
            f"Received: click values={np.unique(click)[:10].tolist()}"
        )
    clicked = click == 1.0
    if not np.all(np.isin(conversion[clicked], (0.0, 1.0))):
        raise ValueError(
            "`conversion` must hold 0 or 1 wherever `click` is 1. "
            f"Received: conversion values on clicks={np.unique(conversion[clicked])[:10].tolist()}"
        )
    converted = np.where(clicked, conversion, 0.0)
    fill = np.nan if mask_value is None else mask_value
    ctr_name, cvr_name, ctcvr_name = task_names
    return {
        ctr_name: click.astype("float32"),
        cvr_name: np.where(clicked, conversion, fill).astype("float32"),
        ctcvr_name: converted.astype("float32"),
    }


def _column(values, name):
    values = np.asarray(keras.ops.convert_to_numpy(values), dtype="float64")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != 1:
        raise ValueError(
            f"`{name}` must be an array of shape (N,) or (N, 1). Received: {name}.shape="
            f"{values.shape}"
        )
    return values


def check_feature_spec(features):
    """Returns the tabular feature specification of ESMM/AITM as a plain dict.

    Raises a `ValueError` naming the input for anything but `"numeric"`,
    `("numeric", size)` and `("categorical", vocabulary_size[, embedding_dim])`:
    these models save their inputs as a specification, not as tensors.
    """
    if not isinstance(features, dict) or not features:
        raise ValueError(
            "`features` must be a non-empty dict mapping input names to tabular feature "
            "specifications, e.g. {'user': ('categorical', 1000), 'price': 'numeric'}. "
            f"Received: features={features!r}"
        )
    checked = {}
    for name, spec in features.items():
        if not isinstance(name, str):
            raise ValueError(f"Input names must be strings. Received: {name!r}")
        if spec == NUMERIC:
            checked[name] = NUMERIC
            continue
        if isinstance(spec, (list, tuple)) and spec and spec[0] in (NUMERIC, CATEGORICAL):
            sizes = list(spec[1:])
            expected = (1,) if spec[0] == NUMERIC else (1, 2)
            if len(sizes) in expected and all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                for s in sizes
            ):
                checked[name] = [spec[0], *(int(s) for s in sizes)]
                continue
        raise ValueError(
            f"Input '{name}' has an unknown specification. Use 'numeric', ('numeric', size), "
            "('categorical', vocabulary_size) or ('categorical', vocabulary_size, "
            f"embedding_dim). Received: {name}={spec!r}"
        )
    return checked


def _check_names(names, count, arg_name, meaning):
    if (
        not isinstance(names, (list, tuple))
        or (count is not None and len(names) != count)
        or not all(isinstance(name, str) for name in names)
    ):
        size = f"{count} " if count is not None else ""
        raise ValueError(
            f"`{arg_name}` must be a tuple of {size}strings {meaning}. "
            f"Received: {arg_name}={names!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"`{arg_name}` must be distinct. Received: {arg_name}={names!r}")
    return tuple(names)
