"""Export a multi-task model for TensorFlow Serving, warm it up, and verify the export.

`export_for_serving` writes a SavedModel in the versioned layout TF Serving
watches (`<base_dir>/<name>/<version>/`) with one `serving_default` signature:
the model's named inputs in, one named output per task out, optionally
post-processed (softmax probabilities and class ids). Only the network is
exported: no weighting-strategy variables, no optimizer, no label masks or
trainer. `write_warmup_requests` writes the TF Serving warm-up file,
`read_warmup_requests` reads it back, and `verify_export` reloads the export in a
fresh Python process that imports only TensorFlow and compares its outputs with
the Keras model's.

TensorFlow is imported inside the functions that need it, and TensorFlow Serving
(`pip install "kerasmtl[serving]"`) only by the warm-up functions.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
import uuid

import keras
import numpy as np
from keras import ops

#: The signature TF Serving calls when a request names none.
SIGNATURE_NAME = "serving_default"
#: Where TF Serving looks for warm-up requests, relative to the version folder.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
#: What `export_for_serving` records about the outputs, for `verify_export` and for users.
METADATA_FILE = os.path.join("assets.extra", "kerasmtl_serving.json")
#: TF Serving reads at most this many warm-up records.
MAX_WARMUP_RECORDS = 1000
#: Ops that call back into Python: a server has no Python, so they cannot run there.
PYTHON_FUNCTION_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")

POSTPROCESS_MODES = (
    "raw",
    "probabilities",
    "class_ids",
    "probabilities_and_class_ids",
    "sigmoid",
)
CLASS_IDS_SUFFIX = "_class_ids"

_SOFTMAX_LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
)
_SIGMOID_LOSSES = ("binary_crossentropy", "binary_focal_crossentropy")
_MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SERVING_HINT = (
    'TensorFlow Serving\'s Python API is needed: pip install "kerasmtl[serving]" '
    "(package tensorflow-serving-api)."
)


def _require_tensorflow():
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            "Exporting a SavedModel for TF Serving needs TensorFlow, on any Keras backend: "
            'pip install "kerasmtl[tensorflow,serving]".'
        ) from None
    return tf


_EXPORT_CHILD_SCRIPT = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np
import keras
import kerasmtl
from kerasmtl.export import export_for_serving
model_path, base_dir, arguments_path, warmup_path = sys.argv[1:5]
with open(arguments_path) as handle:
    arguments = json.load(handle)
warmup = None
if warmup_path:
    with np.load(warmup_path) as data:
        warmup = {key: data[key] for key in data.files}
        if list(warmup) == ["__single__"]:
            warmup = warmup["__single__"]
model = keras.saving.load_model(model_path, compile=False)
print(export_for_serving(model, base_dir, warmup_inputs=warmup, **arguments))
"""


def _export_in_tensorflow_process(
    model, base_dir, name, version, postprocess, warmup_inputs, overwrite
):
    """Exports a model of another backend through TensorFlow, in a child process.

    A SavedModel is a TensorFlow graph: the model (its `.keras` file, weights
    included) is loaded with the TensorFlow backend in a fresh process and
    exported there exactly as a model trained on TensorFlow would be. The
    post-processing modes are resolved here, where the compiled losses are known.
    """
    arguments = {
        "name": model.name if name is None else name,
        "version": version,
        "postprocess": resolve_postprocess(model, postprocess),
        "overwrite": overwrite,
    }
    with tempfile.TemporaryDirectory(prefix="kerasmtl-export-") as workdir:
        model_path = os.path.join(workdir, "model.keras")
        model.save(model_path)
        arguments_path = os.path.join(workdir, "arguments.json")
        with open(arguments_path, "w") as handle:
            json.dump(arguments, handle)
        warmup_path = ""
        if warmup_inputs is not None:
            warmup_path = os.path.join(workdir, "warmup.npz")
            arrays = (
                {key: np.asarray(value) for key, value in warmup_inputs.items()}
                if isinstance(warmup_inputs, dict)
                else {"__single__": np.asarray(warmup_inputs)}
            )
            np.savez(warmup_path, **arrays)
        result = _run_child(
            _EXPORT_CHILD_SCRIPT,
            [model_path, os.path.abspath(os.fspath(base_dir)), arguments_path, warmup_path],
            workdir,
            KERAS_BACKEND="tensorflow",
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"Exporting the {keras.backend.backend()} model through TensorFlow failed in a "
            f"child process (exit code {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout.strip().splitlines()[-1]


class ExportVerificationError(ValueError):
    """A reloaded export does not match its Keras model; `report` says where."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


def export_for_serving(
    model,
    base_dir,
    name=None,
    version=None,
    postprocess=None,
    warmup_inputs=None,
    overwrite=False,
):
    """Exports a multi-task model as a versioned SavedModel for TF Serving.

    Writes `<base_dir>/<name>/<version>/` (`saved_model.pb`, `variables/`,
    `assets.extra/`), the layout TF Serving's `--model_base_path=<base_dir>/<name>`
    expects. The version is written to a hidden temporary folder next to it and
    renamed into place at the end, so a server polling the folder never loads a
    half-written version.

    The `serving_default` signature takes the model's named inputs (an unnamed
    `keras.Input` would be called `keras_tensor_N`, so they must be named) and
    returns a dict of named outputs, per task `t`, by post-processing mode:

    | mode | outputs |
    |---|---|
    | `"raw"` | `t`: the head's output as is |
    | `"probabilities"` | `t`: `softmax(head output)` over the last axis |
    | `"class_ids"` | `t_class_ids`: `argmax` over the last axis (int64) |
    | `"probabilities_and_class_ids"` | `t` (softmax) and `t_class_ids` (argmax) |
    | `"sigmoid"` | `t`: `sigmoid(head output)` |

    `postprocess="auto"` reads each task's loss (the one given to `compile`, else
    `Task.loss`): a sparse/categorical (focal) cross-entropy with
    `from_logits=True` gives `"probabilities_and_class_ids"`, a binary (focal)
    cross-entropy with `from_logits=True` gives `"sigmoid"`, and anything else
    (regression, heads that already end in a softmax) `"raw"`.

    Only the network's weights are saved (the model's layers, called with
    `training=False`): the weighting strategy, its variables, the optimizer,
    metrics and the trainer are not part of the export.

    Args:
        model: a built functional Keras model with dict outputs, usually a
            `kerasmtl.MultiTaskModel`. Its inputs must be named.
        base_dir: the folder holding one subfolder per served model.
        name: the model name, the folder under `base_dir` and the name in
            `/v1/models/<name>:predict`. Defaults to `model.name`.
        version: a positive int. Defaults to one more than the largest numeric
            version folder already under `<base_dir>/<name>`, or 1.
        postprocess: `None` (every output raw), `"auto"`, one mode for every
            task, or a dict `{task: mode}` (tasks left out stay raw; a value may
            also be `"auto"`).
        warmup_inputs: optional model inputs (a dict keyed by input name, or one
            array for a one-input model) written as one warm-up request to
            `assets.extra/tf_serving_warmup_requests`; needs TF Serving's Python
            API. Call `write_warmup_requests` for more records.
        overwrite: whether to replace an existing folder for an explicit
            `version`.

    Returns:
        The path of the version folder, `<base_dir>/<name>/<version>`.

    Raises:
        ValueError: for unnamed inputs, non-dict outputs, an unknown task or mode
            in `postprocess`, clashing output names, or an existing version with
            `overwrite=False`.

    Example:

    ```python
    path = export_for_serving(model, "serving", postprocess="auto")
    report = verify_export(path, model, x_test[:8])
    ```
    """
    tf = _require_tensorflow()
    if keras.backend.backend() != "tensorflow":
        return _export_in_tensorflow_process(
            model, base_dir, name, version, postprocess, warmup_inputs, overwrite
        )
    serving_model = _serving_model(model)
    modes = resolve_postprocess(model, postprocess)
    output_names = _output_names(modes)
    name = model.name if name is None else name
    if not isinstance(name, str) or not _MODEL_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "`name` must be a non-empty folder name made of letters, digits, '_', '.' "
            f"or '-', starting with a letter or digit. Received: name={name!r}"
        )
    model_dir = os.path.join(os.fspath(base_dir), name)
    version = _resolve_version(model_dir, version)
    export_dir = os.path.join(model_dir, str(version))
    if os.path.exists(export_dir) and not overwrite:
        raise ValueError(
            f"Version {version} of model '{name}' already exists at {export_dir}. Pass "
            "overwrite=True to replace it, or leave `version=None` for the next version. "
            f"Received: version={version}"
        )

    input_specs = _input_specs(serving_model)

    def serve(inputs):
        structured = keras.tree.map_structure(
            lambda tensor: inputs[tensor.name], serving_model.input
        )
        return apply_postprocess(serving_model(structured, training=False), modes)

    archive = keras.export.ExportArchive()
    # Tracked through a plain holder, not as a layer: `track(layer)` saves the
    # `keras.Variable` wrappers next to the `tf.Variable`s the endpoint captures, and
    # TensorFlow stores both, doubling the checkpoint (keras-team/keras#23553). The
    # holder still lets the archive find lookup tables; the variable lists get the
    # captured `tf.Variable`s themselves, so each weight is stored once.
    holder = tf.__internal__.tracking.AutoTrackable()
    holder.model = serving_model
    archive.track(holder)
    archive.variables.extend(weight.value for weight in serving_model.weights)
    archive.trainable_variables.extend(w.value for w in serving_model.trainable_weights)
    archive.non_trainable_variables.extend(
        w.value for w in serving_model.non_trainable_weights
    )
    archive.add_endpoint(SIGNATURE_NAME, serve, [input_specs])

    os.makedirs(model_dir, exist_ok=True)
    # Hidden and non-numeric: TF Serving ignores it until the rename. `mkdir` (unlike
    # `mkdtemp`, which makes it private) keeps the umask's permissions, so a server
    # running as another user can read the version.
    staging = os.path.join(model_dir, f".{version}-incomplete-{uuid.uuid4().hex}")
    os.mkdir(staging)
    try:
        archive.write_out(staging, verbose=False)
        metadata = {
            "signature_name": SIGNATURE_NAME,
            "model_name": name,
            "version": version,
            "inputs": {
                key: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
                for key, spec in input_specs.items()
            },
            "postprocess": modes,
            "outputs": output_names,
        }
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, METADATA_FILE), "w") as handle:
            json.dump(metadata, handle, indent=2)
        if warmup_inputs is not None:
            write_warmup_requests(staging, warmup_inputs, num_records=1, model_name=name)
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.rename(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export_dir


def resolve_postprocess(model, postprocess):
    """Returns the post-processing mode of each task, `{task: mode}`, in task order.

    Args:
        model: the model to export.
        postprocess: as in `export_for_serving`.
    """
    task_names = _task_names(model)
    if postprocess is None:
        requested = {}
    elif isinstance(postprocess, str):
        requested = {task: postprocess for task in task_names}
    elif isinstance(postprocess, dict):
        unknown = [key for key in postprocess if key not in task_names]
        if unknown:
            raise ValueError(
                f"Unknown key(s) {unknown} in `postprocess`: they match no task. "
                f"Tasks: {task_names}. Received: postprocess keys={list(postprocess)}"
            )
        requested = dict(postprocess)
    else:
        raise TypeError(
            "`postprocess` must be None, 'auto', a mode for every task, or a dict "
            f"{{task: mode}}. Modes: {list(POSTPROCESS_MODES)}. "
            f"Received: postprocess={postprocess!r}"
        )
    modes = {}
    for task in task_names:
        mode = requested.get(task, "raw")
        if mode == "auto":
            mode = _infer_mode(_task_loss(model, task))
        if mode not in POSTPROCESS_MODES:
            raise ValueError(
                f"Unknown post-processing mode for task '{task}'. Expected 'auto' or one "
                f"of {list(POSTPROCESS_MODES)}. Received: postprocess[{task!r}]={mode!r}"
            )
        modes[task] = mode
    return modes


def apply_postprocess(outputs, modes):
    """Returns the serving outputs (a flat dict) for the model's dict of task outputs."""
    served = {}
    for task, mode in modes.items():
        value = outputs[task]
        if mode in ("probabilities", "probabilities_and_class_ids"):
            served[task] = ops.softmax(value, axis=-1)
        elif mode == "sigmoid":
            served[task] = ops.sigmoid(value)
        elif mode == "raw":
            served[task] = value
        if mode in ("class_ids", "probabilities_and_class_ids"):
            served[task + CLASS_IDS_SUFFIX] = ops.cast(ops.argmax(value, axis=-1), "int64")
    return served


def write_warmup_requests(export_dir, inputs, num_records=1, model_name=None):
    """Writes TF Serving's warm-up file, `assets.extra/tf_serving_warmup_requests`.

    TF Serving replays these requests when it loads the version, before it
    serves traffic, so the first real request does not pay for graph
    initialisation. The file is a TFRecord of
    `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`s, each a
    `PredictLog` holding a `PredictRequest` for the `serving_default` signature.

    Args:
        export_dir: the version folder of a SavedModel with a `serving_default`
            signature.
        inputs: a dict of arrays keyed by input name, or one array for a
            one-input signature; axis 0 is the batch.
        num_records: how many requests: the batch is split along axis 0 into
            this many nearly equal parts (at most 1000, TF Serving's limit, and
            at most the batch size).
        model_name: the `model_spec.name` of the requests. Defaults to the name
            of the folder above a numeric version folder.

    Returns:
        The path of the warm-up file.
    """
    import tensorflow as tf

    apis = _serving_apis()
    signature_inputs = _signature_io(export_dir)["inputs"]
    arrays = _input_arrays(list(signature_inputs), inputs, "inputs")
    batch = _batch_size(arrays)
    if (
        isinstance(num_records, bool)
        or not isinstance(num_records, int)
        or not 1 <= num_records <= min(batch, MAX_WARMUP_RECORDS)
    ):
        raise ValueError(
            f"`num_records` must be an int from 1 to min(batch size, {MAX_WARMUP_RECORDS}) = "
            f"{min(batch, MAX_WARMUP_RECORDS)}. Received: num_records={num_records!r}"
        )
    if model_name is None:
        folder = os.path.abspath(os.fspath(export_dir))
        if os.path.basename(folder).isdigit():
            model_name = os.path.basename(os.path.dirname(folder))
    bounds = np.array_split(np.arange(batch), num_records)
    path = os.path.join(os.fspath(export_dir), WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for rows in bounds:
            request = apis.predict_pb2.PredictRequest()
            request.model_spec.signature_name = SIGNATURE_NAME
            if model_name:
                request.model_spec.name = model_name
            for key, array in arrays.items():
                dtype = tf.dtypes.as_dtype(signature_inputs[key]["dtype"])
                request.inputs[key].CopyFrom(
                    tf.make_tensor_proto(array[rows[0] : rows[-1] + 1], dtype=dtype)
                )
            log = apis.prediction_log_pb2.PredictionLog(
                predict_log=apis.prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(export_dir):
    """Returns the `PredictionLog`s of an export's warm-up file, in file order.

    A request's inputs come back as arrays with
    `tf.make_ndarray(log.predict_log.request.inputs[name])`.
    """
    import tensorflow as tf

    apis = _serving_apis()
    path = os.path.join(os.fspath(export_dir), WARMUP_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No warm-up file at {path}. Write one with `write_warmup_requests` or "
            "`export_for_serving(..., warmup_inputs=...)`."
        )
    logs = []
    for record in tf.data.TFRecordDataset(path):
        log = apis.prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def verify_export(export_dir, model, x, atol=1e-5):
    """Reloads an export in a fresh Python process and compares it with the model.

    The child process imports TensorFlow only (it checks that `kerasmtl` is not in
    `sys.modules`), loads the SavedModel and calls `serving_default` on `x`. Its
    outputs must match the Keras model's, post-processed as recorded at export
    time, within `atol` (class ids exactly, except where the model's top two
    scores tie within `atol`). The export's graph and its function library must
    hold no Python-function op (`PyFunc`, `PyFuncStateless`, `EagerPyFunc`),
    which a server cannot run, and its variables must be the weights of the
    model's layers only.

    Args:
        export_dir: the version folder written by `export_for_serving` (or a
            `model.export` folder, whose outputs are then taken as raw).
        model: the Keras model that was exported.
        x: inputs: a dict of arrays keyed by input name, or one array for a
            one-input model.
        atol: the largest absolute difference allowed per output.

    Returns:
        A report dict: `max_abs_error` per output, `mismatched_class_ids` per class
        id output, `python_ops` (empty), `num_ops`, `variables`, the child
        process's `kerasmtl_imported` (False) and `seconds`, and `passed`.

    Raises:
        ExportVerificationError: (a `ValueError`) when anything differs; its
            `report` attribute holds the details.
    """
    export_dir = os.fspath(export_dir)
    serving_model = _serving_model(model)
    metadata_path = os.path.join(export_dir, METADATA_FILE)
    if os.path.exists(metadata_path):
        with open(metadata_path) as handle:
            modes = json.load(handle)["postprocess"]
    else:
        modes = {task: "raw" for task in _task_names(model)}
    input_names = [tensor.name for tensor in serving_model.inputs]
    arrays = _input_arrays(input_names, x, "x")
    arrays = {
        tensor.name: arrays[tensor.name].astype(tensor.dtype) for tensor in serving_model.inputs
    }
    structured = keras.tree.map_structure(lambda t: arrays[t.name], serving_model.input)
    raw = serving_model(structured, training=False)
    expected = {
        key: keras.ops.convert_to_numpy(value)
        for key, value in apply_postprocess(raw, modes).items()
    }

    served, child = _run_fresh_process(export_dir, arrays)
    failures = []
    if child["kerasmtl_imported"]:
        failures.append("the fresh process imported kerasmtl")
    if sorted(served) != sorted(expected):
        failures.append(
            f"the served outputs are {sorted(served)}, the model's {sorted(expected)}"
        )
    max_abs_error, mismatched = {}, {}
    for key in sorted(set(served) & set(expected)):
        got, want = served[key], expected[key]
        if got.shape != want.shape:
            failures.append(f"output '{key}' has shape {got.shape}, expected {want.shape}")
            continue
        if np.issubdtype(want.dtype, np.integer):
            differ = got != want
            max_abs_error[key] = float(np.max(np.abs(got - want), initial=0))
            task = key[: -len(CLASS_IDS_SUFFIX)]
            scores = keras.ops.convert_to_numpy(raw[task])
            chosen = np.take_along_axis(scores, got[..., None], axis=-1)[..., 0]
            best = np.take_along_axis(scores, want[..., None], axis=-1)[..., 0]
            # A tie within `atol` may break either way in another kernel.
            mismatched[key] = int(np.sum(differ & (np.abs(best - chosen) > atol)))
            if mismatched[key]:
                failures.append(f"{mismatched[key]} class id(s) of '{key}' differ")
        else:
            both_nan = np.isnan(got) & np.isnan(want)
            error = np.where(both_nan, 0.0, np.abs(got.astype("float64") - want))
            value = float(np.max(error, initial=0.0))
            max_abs_error[key] = value if np.isfinite(value) else float("inf")
            if not max_abs_error[key] <= atol:
                failures.append(
                    f"output '{key}' differs by up to {max_abs_error[key]:.3g} > atol={atol}"
                )

    ops_found = _saved_model_ops(export_dir)
    python_ops = sorted(ops_found & set(PYTHON_FUNCTION_OPS))
    if python_ops:
        failures.append(f"the graph holds Python-function ops {python_ops}")
    saved_variables = _saved_variables(export_dir)
    expected_variables = sorted(
        (_saved_variable_name(weight), tuple(weight.shape)) for weight in serving_model.weights
    )
    unexpected = sorted(set(saved_variables) - set(expected_variables))
    missing = sorted(set(expected_variables) - set(saved_variables))
    if unexpected or missing:
        failures.append(
            "the saved variables are not the model's layer weights: "
            f"unexpected {unexpected}, missing {missing}"
        )
    report = {
        "export_dir": export_dir,
        "signature_name": SIGNATURE_NAME,
        "inputs": child["inputs"],
        "outputs": sorted(served),
        "postprocess": modes,
        "max_abs_error": max_abs_error,
        "mismatched_class_ids": mismatched,
        "atol": atol,
        "python_ops": python_ops,
        "num_ops": len(ops_found),
        "variables": [name for name, _ in saved_variables],
        "kerasmtl_imported": child["kerasmtl_imported"],
        "seconds": child["seconds"],
        "passed": not failures,
    }
    if failures:
        raise ExportVerificationError(
            f"The export at {export_dir} does not match the model: " + "; ".join(failures),
            report,
        )
    return report


# === Helpers ===


def _task_names(model):
    names = getattr(model, "task_names", None)
    if names is not None:
        return list(names)
    output = _functional_output(model)
    if not isinstance(output, dict):
        raise ValueError(
            "The model's outputs must be a dict keyed by task name, such as a "
            f"`kerasmtl.MultiTaskModel`'s. Received: outputs of type {type(output).__name__}"
        )
    return list(output)


def _functional_output(model):
    try:
        return model.output
    except (AttributeError, ValueError):
        raise ValueError(
            "Only functional models (such as `kerasmtl.MultiTaskModel`, or a model built "
            "with `keras.Model(inputs, outputs)`) can be exported for serving, and they "
            f"must be built. Received: model={model.name!r} of type {type(model).__name__}"
        ) from None


def _serving_model(model):
    """A plain functional model over the same layers, without the training state."""
    output = _functional_output(model)
    _task_names(model)
    for tensor in model.inputs:
        if tensor.name.startswith("keras_tensor"):
            raise ValueError(
                f"The model input '{tensor.name}' has no name of its own; it would be "
                f"'{tensor.name}' in the serving signature. Build the model with named "
                "inputs: keras.Input(shape, name='image')."
            )
    return keras.Model(inputs=model.input, outputs=output, name=model.name)


def _input_specs(serving_model):
    import tensorflow as tf

    return {
        tensor.name: tf.TensorSpec(
            shape=(None,) + tuple(tensor.shape[1:]), dtype=tensor.dtype, name=tensor.name
        )
        for tensor in serving_model.inputs
    }


def _output_names(modes):
    names = {}
    for task, mode in modes.items():
        if mode != "class_ids":
            kind = "probabilities" if mode == "probabilities_and_class_ids" else mode
            names[task] = {"task": task, "kind": kind}
        if mode in ("class_ids", "probabilities_and_class_ids"):
            key = task + CLASS_IDS_SUFFIX
            if key in modes:
                raise ValueError(
                    f"The class ids of task '{task}' would be served as '{key}', which is "
                    f"also a task name. Rename a task or post-process '{task}' without class "
                    f"ids. Received: postprocess={modes}"
                )
            names[key] = {"task": task, "kind": "class_ids"}
    return names


def _task_loss(model, task_name):
    """The loss the model was compiled with for a task, else the task's own."""
    task = next((t for t in getattr(model, "tasks", ()) if t.name == task_name), None)
    loss = None if task is None else task.loss
    config = getattr(model, "_multitask_compile_config", None) or {}
    compiled = config.get("loss")
    if isinstance(compiled, dict):
        return compiled.get(task_name, loss)
    return loss if compiled is None else compiled


def _infer_mode(loss):
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not isinstance(loss, keras.losses.Loss):
        # A loss function takes `from_logits=False` by default: the head ends in its
        # own activation, so its output is served as is.
        return "raw"
    config = loss.get_config()
    if not config.get("from_logits", False):
        return "raw"
    softmax = (
        keras.losses.SparseCategoricalCrossentropy,
        keras.losses.CategoricalCrossentropy,
        keras.losses.CategoricalFocalCrossentropy,
    )
    sigmoid = (keras.losses.BinaryCrossentropy, keras.losses.BinaryFocalCrossentropy)
    if isinstance(loss, softmax) or config.get("name") in _SOFTMAX_LOSSES:
        return "probabilities_and_class_ids"
    if isinstance(loss, sigmoid) or config.get("name") in _SIGMOID_LOSSES:
        return "sigmoid"
    return "raw"


def _resolve_version(model_dir, version):
    if version is None:
        existing = []
        if os.path.isdir(model_dir):
            existing = [
                int(entry)
                for entry in os.listdir(model_dir)
                if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry))
            ]
        return max(existing, default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            "`version` must be a positive int (TF Serving serves numeric version folders) "
            f"or None for the next version. Received: version={version!r}"
        )
    return version


def _input_arrays(names, inputs, arg_name):
    if isinstance(inputs, dict):
        if sorted(inputs) != sorted(names):
            raise ValueError(
                f"The keys of `{arg_name}` must be the input names {sorted(names)}. "
                f"Received: {arg_name} keys={sorted(inputs)}"
            )
        return {key: np.asarray(inputs[key]) for key in names}
    if len(names) == 1 and not isinstance(inputs, (list, tuple)):
        return {names[0]: np.asarray(inputs)}
    raise ValueError(
        f"`{arg_name}` must be a dict keyed by the input names {sorted(names)}"
        + (" or one array" if len(names) == 1 else "")
        + f". Received: {arg_name} of type {type(inputs).__name__}"
    )


def _batch_size(arrays):
    sizes = {key: (array.shape[0] if array.ndim else None) for key, array in arrays.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(
            "Every input needs the same batch size along axis 0. "
            f"Received: batch sizes {sizes}"
        )
    return next(iter(sizes.values()))


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(_SERVING_HINT) from error

    return types.SimpleNamespace(predict_pb2=predict_pb2, prediction_log_pb2=prediction_log_pb2)


def _read_saved_model(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(os.fspath(export_dir), "saved_model.pb")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No SavedModel at {export_dir}: saved_model.pb is missing. Pass the version "
            "folder, e.g. <base_dir>/<name>/1."
        )
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    return saved_model


def _serving_meta_graph(export_dir):
    for meta_graph in _read_saved_model(export_dir).meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"The SavedModel at {export_dir} has no meta graph tagged 'serve'.")


def _signature_io(export_dir):
    import tensorflow as tf

    meta_graph = _serving_meta_graph(export_dir)
    if SIGNATURE_NAME not in meta_graph.signature_def:
        raise ValueError(
            f"The SavedModel at {export_dir} has no '{SIGNATURE_NAME}' signature. "
            f"Received signatures: {sorted(meta_graph.signature_def)}"
        )
    signature = meta_graph.signature_def[SIGNATURE_NAME]

    def describe(tensors):
        return {
            key: {
                "dtype": tf.dtypes.as_dtype(info.dtype).name,
                "shape": [dim.size for dim in info.tensor_shape.dim],
            }
            for key, info in sorted(tensors.items())
        }

    return {"inputs": describe(signature.inputs), "outputs": describe(signature.outputs)}


def _saved_model_ops(export_dir):
    """Every op type in the SavedModel's graphs and their function libraries."""
    found = set()
    for meta_graph in _read_saved_model(export_dir).meta_graphs:
        found.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            found.update(node.op for node in function.node_def)
    return found


def _saved_variable_name(weight):
    """The name a weight has in the SavedModel: its `tf.Variable`'s, else its path.

    A model of another backend is exported from a TensorFlow copy of it, whose
    variables are named after the weights' paths.
    """
    if keras.backend.backend() == "tensorflow":
        return weight.value.name.split(":")[0]
    return weight.path


def _saved_variables(export_dir):
    """`(name, shape)` of every variable saved in the export's object graph, sorted."""
    meta_graph = _serving_meta_graph(export_dir)
    return sorted(
        (node.variable.name, tuple(dim.size for dim in node.variable.shape.dim))
        for node in meta_graph.object_graph_def.nodes
        if node.WhichOneof("kind") == "variable"
    )


_CHILD_SCRIPT = """
import json, sys, time
start = time.time()
import numpy as np
import tensorflow as tf

export_dir, inputs_path, outputs_path, info_path = sys.argv[1:5]
signature = tf.saved_model.load(export_dir).signatures[{signature!r}]
specs = signature.structured_input_signature[1]
with np.load(inputs_path) as data:
    inputs = {{key: tf.constant(data[key], dtype=specs[key].dtype) for key in specs}}
outputs = {{key: value.numpy() for key, value in signature(**inputs).items()}}
np.savez(outputs_path, **outputs)
with open(info_path, "w") as handle:
    json.dump({{
        "kerasmtl_imported": "kerasmtl" in sys.modules,
        "inputs": sorted(specs),
        "seconds": time.time() - start,
    }}, handle)
""".format(signature=SIGNATURE_NAME)


def _run_child(script, arguments, workdir, **environment):
    """Runs `python -c script arguments...` in `workdir` (an empty folder, so nothing in the
    caller's folder can be imported) and returns the completed process."""
    environment = dict(os.environ, **environment)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, "-c", script, *arguments],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run_fresh_process(export_dir, arrays):
    with tempfile.TemporaryDirectory(prefix="kerasmtl-verify-") as workdir:
        inputs_path = os.path.join(workdir, "inputs.npz")
        outputs_path = os.path.join(workdir, "outputs.npz")
        info_path = os.path.join(workdir, "info.json")
        np.savez(inputs_path, **arrays)
        started = time.time()
        result = _run_child(
            _CHILD_SCRIPT,
            [os.path.abspath(export_dir), inputs_path, outputs_path, info_path],
            workdir,
        )
        if result.returncode != 0:
            raise ExportVerificationError(
                f"Loading {export_dir} and calling '{SIGNATURE_NAME}' failed in a fresh "
                f"process (exit code {result.returncode}):\n{result.stderr[-3000:]}",
                {"export_dir": export_dir, "passed": False, "stderr": result.stderr[-3000:]},
            )
        with np.load(outputs_path) as data:
            served = {key: data[key] for key in data.files}
        with open(info_path) as handle:
            info = json.load(handle)
        info["process_seconds"] = time.time() - started
        return served, info
