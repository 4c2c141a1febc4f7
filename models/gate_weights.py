"""Reads the per-task expert weights of a mixture-of-experts model."""

import keras

from kerasmtl.layers.base_gate import BaseGate


def gate_weights(model, x, batch_size=None):
    """Returns each task's gate weights over the experts, `{task: (batch, num_experts)}`.

    Works on the models of `mmoe`, `cgc`, `ple` and `dselect_k` (and any
    `MultiTaskModel` with a `kerasmtl.layers.Gate` or `DSelectKGate` named
    `{task}_gate`): a functional sub-model over the model's inputs returns the
    gate layers' outputs, so the weights are exactly those the model uses
    (inference mode). For `cgc` and `ple` they are the weights of the last
    extraction level, over the task's own experts first, then the shared
    experts.

    Args:
        model: a `kerasmtl.MultiTaskModel` with gates.
        x: the model inputs, as for `model.predict`.
        batch_size: optional int, as for `model.predict`.

    Returns:
        A dict `{task: numpy array (batch, num_experts)}`; each row is
        non-negative and sums to 1.

    Example:

    >>> import numpy as np
    >>> from kerasmtl import Task
    >>> from kerasmtl.models import dselect_k
    >>> model = dselect_k({"features": (6,)},
    ...                   [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")],
    ...                   num_experts=4, k=2)
    >>> weights = gate_weights(model, np.random.rand(3, 6).astype("float32"))
    >>> weights["a"].shape
    (3, 4)
    """
    task_names = getattr(model, "task_names", None)
    if task_names is None:
        raise TypeError(
            "`gate_weights` reads the gates of a kerasmtl.MultiTaskModel. "
            f"Received: model={model!r}"
        )
    layers = {layer.name: layer for layer in model.layers}
    missing = [name for name in task_names if not isinstance(layers.get(f"{name}_gate"), BaseGate)]
    if missing:
        gates = sorted(name for name, layer in layers.items() if isinstance(layer, BaseGate))
        raise ValueError(
            f"The model has no gate layer named '{{task}}_gate' for task(s) {missing}: "
            "gate weights exist for mixture-of-experts models (mmoe, cgc, ple, dselect_k). "
            f"Gate layers of this model: {gates}. Received: model={model.name}"
        )
    # Built per call and not kept: the probe shares the model's layers and weights.
    probe = keras.Model(model.input, {name: layers[f"{name}_gate"].output for name in task_names})
    return probe.predict(x, batch_size=batch_size, verbose=0)
