"""Export for TF Serving: signature, variables, fresh-process verification, warm-up, versions."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import kerasmtl
from kerasmtl import Task
from kerasmtl import export as export_module
from kerasmtl.export import (
    ExportVerificationError,
    export_for_serving,
    read_warmup_requests,
    resolve_postprocess,
    verify_export,
    write_warmup_requests,
)
from kerasmtl.testing.references import softmax

pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")

NUM_CLASSES = 3


def _tasks():
    return [
        Task(
            "digit",
            head=NUM_CLASSES,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ),
        Task("size", head=1, loss="mse"),
    ]


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = {
        "digit": rng.integers(0, NUM_CLASSES, size=n),
        "size": rng.normal(size=(n, 1)).astype("float32"),
    }
    return x, y


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([keras.layers.Dense(8, activation="relu")], name="trunk")
    model = kerasmtl.hard_sharing({"features": (4,)}, trunk, _tasks(), name="two_tasks")
    # Uncertainty weighting: its learned log-variances are trainable variables of the
    # model, the very state that must stay out of the export.
    model.compile(optimizer="adam", weighting="uncertainty")
    x, y = _data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return model, x


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    model, x = trained
    base = tmp_path_factory.mktemp("serving")
    raw = export_for_serving(model, base)
    processed = export_for_serving(model, base, postprocess="auto", warmup_inputs=x[:4])
    return {"base": base, "raw": raw, "processed": processed}


def _reference(model, x):
    """The served outputs with postprocess='auto', computed in NumPy from the Keras model."""
    raw = model.predict(x, verbose=0)
    return {
        "digit": softmax(raw["digit"]),
        "digit_class_ids": np.argmax(raw["digit"], axis=-1),
        "size": raw["size"],
    }


def _meta_graph(export_dir):
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    (meta_graph,) = saved_model.meta_graphs
    return meta_graph


@pytest.mark.e2e
def test_saved_model_cli_lists_named_input_and_task_outputs(exports):
    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable))
    cli = cli or shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not on PATH")
    result = subprocess.run(
        [
            cli,
            "show",
            "--dir",
            exports["processed"],
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shown = result.stdout
    assert "inputs['features']" in shown
    for output in ("digit", "digit_class_ids", "size"):
        assert f"outputs['{output}']" in shown
    assert "keras_tensor" not in shown
    assert "DT_INT64" in shown  # the class ids
    assert "tensorflow/serving/predict" in shown


def test_layout_and_signatures(exports):
    base = exports["base"]
    assert sorted(os.listdir(base / "two_tasks")) == ["1", "2"]  # no staging folder left
    assert exports["raw"] == os.path.join(base, "two_tasks", "1")
    for key, outputs in (
        ("raw", ["digit", "size"]),
        ("processed", ["digit", "digit_class_ids", "size"]),
    ):
        meta_graph = _meta_graph(exports[key])
        assert list(meta_graph.meta_info_def.tags) == ["serve"]
        signature = meta_graph.signature_def["serving_default"]
        assert sorted(signature.inputs) == ["features"]
        assert sorted(signature.outputs) == outputs
        assert signature.method_name == "tensorflow/serving/predict"


def test_saved_variables_are_exactly_the_layer_weights(trained, exports):
    model, _ = trained
    layer_weights = [w for layer in model.layers for w in layer.weights]
    expected = sorted((w.path, tuple(w.shape)) for w in layer_weights)
    # The strategy's own variable exists (named `uncertainty`, or `uncertainty_<n>` when
    # other tests of the session made Uncertainty strategies before) ...
    log_variances = model.weighting.log_variances.path
    assert log_variances in [w.path for w in model.weights]
    assert log_variances not in [path for path, _ in expected]  # ... and is no layer weight
    assert len(model.optimizer.variables) > 0
    for export_dir in (exports["raw"], exports["processed"]):
        meta_graph = _meta_graph(export_dir)
        saved = sorted(
            (node.variable.name, tuple(dim.size for dim in node.variable.shape.dim))
            for node in meta_graph.object_graph_def.nodes
            if node.WhichOneof("kind") == "variable"
        )
        assert saved == expected
        # Each weight is stored once in the checkpoint, with the trained values.
        checkpoint = os.path.join(export_dir, "variables", "variables")
        stored = [
            name
            for name, _ in tf.train.list_variables(checkpoint)
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
        ]
        assert len(stored) == len(layer_weights)
        reader = tf.train.load_checkpoint(checkpoint)
        stored_values = sorted(reader.get_tensor(name).tobytes() for name in stored)
        model_values = sorted(np.asarray(w.numpy()).tobytes() for w in layer_weights)
        assert stored_values == model_values


@pytest.mark.e2e
@pytest.mark.parametrize("key", ["raw", "processed"])
def test_fresh_process_verification(trained, exports, key):
    model, x = trained
    report = verify_export(exports[key], model, x, atol=1e-5)
    assert report["passed"]
    assert report["kerasmtl_imported"] is False
    assert report["python_ops"] == []
    assert report["inputs"] == ["features"]
    expected_outputs = ["digit", "size"] if key == "raw" else ["digit", "digit_class_ids", "size"]
    assert report["outputs"] == expected_outputs
    assert sorted(report["max_abs_error"]) == expected_outputs
    assert all(error <= 1e-5 for error in report["max_abs_error"].values())
    assert "uncertainty/log_variances" not in report["variables"]


@pytest.mark.e2e
def test_verification_fails_when_the_model_changed(trained, exports):
    model, x = trained
    kernel = model.get_layer("size").kernel
    original = kernel.numpy()
    kernel.assign(original + 1.0)
    try:
        with pytest.raises(ExportVerificationError, match="output 'size' differs") as caught:
            verify_export(exports["raw"], model, x)
    finally:
        kernel.assign(original)
    assert caught.value.report["passed"] is False
    assert caught.value.report["max_abs_error"]["digit"] <= 1e-5


def test_python_function_ops_are_found(tmp_path):
    module = tf.Module()
    module.serve = tf.function(
        lambda x: tf.py_function(lambda v: v * 2.0, [x], tf.float32),
        input_signature=[tf.TensorSpec((None,), tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path))
    assert "EagerPyFunc" in export_module._saved_model_ops(str(tmp_path))


@pytest.mark.e2e
def test_warmup_requests_written_read_and_replayed(trained, exports):
    model, x = trained
    export_dir = exports["processed"]
    (log,) = read_warmup_requests(export_dir)  # from export_for_serving(warmup_inputs=x[:4])
    np.testing.assert_array_equal(
        tf.make_ndarray(log.predict_log.request.inputs["features"]), x[:4]
    )

    path = write_warmup_requests(export_dir, {"features": x[:6]}, num_records=3)
    assert path == os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")
    logs = read_warmup_requests(export_dir)
    assert len(logs) == 3
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    for index, log in enumerate(logs):
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert request.model_spec.name == "two_tasks"
        assert list(request.inputs) == ["features"]
        assert request.inputs["features"].dtype == tf.float32.as_datatype_enum
        inputs = tf.make_ndarray(request.inputs["features"])
        np.testing.assert_array_equal(inputs, x[2 * index : 2 * index + 2])
        # Replayed against the reloaded SavedModel, checked against a NumPy reference.
        outputs = {k: v.numpy() for k, v in served(features=tf.constant(inputs)).items()}
        reference = _reference(model, inputs)
        assert sorted(outputs) == sorted(reference)
        np.testing.assert_allclose(outputs["digit"], reference["digit"], atol=1e-5)
        np.testing.assert_allclose(outputs["digit"].sum(axis=-1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(outputs["digit_class_ids"], reference["digit_class_ids"])
        np.testing.assert_allclose(outputs["size"], reference["size"], atol=1e-5)


def test_warmup_arguments_are_checked(exports, trained):
    _, x = trained
    with pytest.raises(ValueError, match="input names"):
        write_warmup_requests(exports["raw"], {"image": x})
    with pytest.raises(ValueError, match="num_records"):
        write_warmup_requests(exports["raw"], x[:2], num_records=3)
    with pytest.raises(FileNotFoundError, match="No warm-up file"):
        read_warmup_requests(exports["raw"])


def test_versions_and_overwrite(trained, tmp_path):
    model, x = trained
    first = export_for_serving(model, tmp_path, name="versions")
    second = export_for_serving(model, tmp_path, name="versions")
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    with pytest.raises(ValueError, match="Version 2 of model 'versions' already exists"):
        export_for_serving(model, tmp_path, name="versions", version=2)
    replaced = export_for_serving(
        model, tmp_path, name="versions", version=2, postprocess="auto", overwrite=True
    )
    assert replaced == second
    assert "digit_class_ids" in _meta_graph(replaced).signature_def["serving_default"].outputs
    assert os.path.basename(export_for_serving(model, tmp_path, name="versions", version=7)) == "7"
    assert os.path.basename(export_for_serving(model, tmp_path, name="versions")) == "8"
    assert sorted(os.listdir(tmp_path / "versions"), key=int) == ["1", "2", "7", "8"]
    with pytest.raises(ValueError, match="positive int"):
        export_for_serving(model, tmp_path, name="versions", version=0)


@pytest.mark.e2e
def test_model_with_two_named_inputs(tmp_path):
    keras.utils.set_random_seed(1)

    def trunk(inputs):
        joined = keras.layers.Concatenate()([inputs["pixels"], inputs["metadata"]])
        return keras.layers.Dense(8, activation="relu", name="shared")(joined)

    model = kerasmtl.hard_sharing(
        {"pixels": (4,), "metadata": (2,)}, trunk, _tasks(), name="two_inputs"
    )
    model.compile(optimizer="adam")
    rng = np.random.default_rng(1)
    x = {
        "pixels": rng.normal(size=(8, 4)).astype("float32"),
        "metadata": rng.normal(size=(8, 2)).astype("float32"),
    }
    model.fit(x, _data(8)[1], epochs=1, verbose=0)
    export_dir = export_for_serving(model, tmp_path, postprocess="auto", warmup_inputs=x)
    signature = _meta_graph(export_dir).signature_def["serving_default"]
    assert sorted(signature.inputs) == ["metadata", "pixels"]
    assert [dim.size for dim in signature.inputs["metadata"].tensor_shape.dim] == [-1, 2]
    assert sorted(signature.outputs) == ["digit", "digit_class_ids", "size"]
    (log,) = read_warmup_requests(export_dir)
    assert sorted(log.predict_log.request.inputs) == ["metadata", "pixels"]
    report = verify_export(export_dir, model, x)
    assert report["inputs"] == ["metadata", "pixels"]
    assert report["passed"]


def test_auto_postprocess_reads_the_losses():
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(4)(inputs)
    tasks = [
        Task("logits", head=3, loss=keras.losses.CategoricalCrossentropy(from_logits=True)),
        Task("binary", head=1, loss=keras.losses.BinaryCrossentropy(from_logits=True)),
        Task(
            "softmaxed",
            head=keras.layers.Dense(3, activation="softmax"),
            loss="sparse_categorical_crossentropy",
        ),
        Task("value", head=1, loss="mse"),
    ]
    outputs = {task.name: task.build_head()(hidden) for task in tasks}
    model = kerasmtl.MultiTaskModel(inputs, outputs, tasks)
    assert resolve_postprocess(model, "auto") == {
        "logits": "probabilities_and_class_ids",
        "binary": "sigmoid",
        "softmaxed": "raw",
        "value": "raw",
    }
    assert resolve_postprocess(model, {"logits": "class_ids"})["logits"] == "class_ids"
    assert resolve_postprocess(model, None) == dict.fromkeys(model.task_names, "raw")
    # A loss given to `compile` overrides the task's own.
    model.compile(loss={"value": keras.losses.BinaryCrossentropy(from_logits=True)})
    assert resolve_postprocess(model, "auto")["value"] == "sigmoid"
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['nope'\].*Tasks"):
        resolve_postprocess(model, {"nope": "probabilities"})
    with pytest.raises(ValueError, match="Unknown post-processing mode for task 'value'"):
        resolve_postprocess(model, {"value": "softmax"})


def test_unnamed_inputs_and_clashing_names_are_refused(tmp_path):
    inputs = keras.Input((4,))
    tasks = [Task("a", loss="mse"), Task("a_class_ids", loss="mse")]
    outputs = {name: keras.layers.Dense(2, name=name)(inputs) for name in ("a", "a_class_ids")}
    model = kerasmtl.MultiTaskModel(inputs, outputs, tasks)
    with pytest.raises(ValueError, match="has no name of its own"):
        export_for_serving(model, tmp_path)
    named = keras.Input((4,), name="features")
    outputs = {name: keras.layers.Dense(2, name=name)(named) for name in ("a", "a_class_ids")}
    model = kerasmtl.MultiTaskModel(named, outputs, tasks)
    with pytest.raises(ValueError, match="also a task name"):
        export_for_serving(model, tmp_path, postprocess={"a": "probabilities_and_class_ids"})
    assert not os.path.exists(tmp_path / model.name)
