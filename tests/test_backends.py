"""The same training on TensorFlow, JAX and PyTorch: one-step updates, files, exports, no-TF use.

These tests run in the main (TensorFlow) suite and start the other backends in
child processes (Keras picks its backend once per process).
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasmtl

SCRIPTS = Path(__file__).parent / "backend_scripts"
OTHER_BACKENDS = ("jax", "torch")

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="drives the other backends from the TensorFlow suite (one backend per process)",
)


@pytest.mark.slow
def test_one_sgd_step_is_the_same_on_every_backend(tmp_path, run_python):
    """Same batch, same initial weights, SGD(1.0): the same update everywhere (relative 1e-5).

    Every registered strategy but RLW (random weights), with parameter and, where the
    strategy allows it, representation gradients.
    """
    sys.path.insert(0, str(SCRIPTS))
    try:
        import one_step
    finally:
        sys.path.remove(str(SCRIPTS))
    one_step.main(tmp_path / "tensorflow.npz")
    reference = np.load(tmp_path / "tensorflow.npz")
    assert any(key.startswith("pcgrad/representation/") for key in reference.files)
    assert any(key.startswith("mgda/parameters/") for key in reference.files)
    for backend in OTHER_BACKENDS:
        run_python(
            SCRIPTS / "one_step.py", tmp_path / f"{backend}.npz", backend=backend, timeout=600
        )
        other = np.load(tmp_path / f"{backend}.npz")
        assert sorted(other.files) == sorted(reference.files)
        for key in reference.files:
            expected, actual = reference[key], other[key]
            # Relative 1e-5, with an absolute floor of 1e-7 for values that nearly cancel
            # (e.g. a bias that lands at 4e-4 from two terms of order 1: float32 rounding).
            difference = np.linalg.norm(actual - expected)
            assert difference <= 1e-5 * np.linalg.norm(expected) + 1e-7, (
                f"{backend}: {key} differs from TensorFlow by {difference:.2e} "
                f"(norm {np.linalg.norm(expected):.2e})"
            )


def test_import_and_gradient_fit_without_tensorflow(run_python):
    """JAX with TensorFlow unimportable: the kit trains; TF-only parts say what to install."""
    output = run_python(
        "-c",
        """
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
        import keras, numpy as np
        import kerasmtl
        from kerasmtl import Task
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 4)).astype("float32")
        y = {"a": rng.normal(size=(32, 1)).astype("float32"),
             "b": rng.normal(size=(32, 1)).astype("float32")}
        model = kerasmtl.hard_sharing(
            {"features": (4,)}, keras.layers.Dense(8, name="trunk"),
            [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")])
        model.compile(optimizer="adam", weighting="pcgrad")
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        assert np.isfinite(history.history["loss"][-1])
        try:
            import kerasmtl.data
        except ImportError as error:
            print("DATA:", error)
        try:
            kerasmtl.export.export_for_serving(model, "unused")
        except ImportError as error:
            print("EXPORT:", error)
        print("TF:", "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
        """,
        backend="jax",
        timeout=600,
    )
    assert "DATA: kerasmtl.data builds tf.data pipelines" in output
    assert 'pip install "kerasmtl[tensorflow,datasets]"' in output
    assert "EXPORT: Exporting a SavedModel for TF Serving needs TensorFlow" in output
    assert "TF: False" in output


_TRAIN_AND_SAVE = """
import sys
import keras, numpy as np
import kerasmtl
from kerasmtl import Task
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 4)).astype("float32")
y = {"a": rng.normal(size=(32, 1)).astype("float32"), "b": rng.integers(0, 3, size=(32,))}
model = kerasmtl.models.mmoe(
    {"features": (4,)},
    [Task("a", head=1, loss="mse"),
     Task("b", head=3, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))],
    num_experts=2, expert_units=(8,), tower_units=(4,))
model.compile(optimizer="adam", weighting="{weighting}")
model.fit(x, y, epochs=1, batch_size=8, verbose=0)
model.save(sys.argv[1])
np.save(sys.argv[2], x)
predictions = model.predict(x, verbose=0)
np.savez(sys.argv[3], **predictions)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_keras_file_moves_between_backends(tmp_path, backend, run_python):
    """Saved on JAX / torch, loaded on TensorFlow (same outputs) and back again."""
    model_path, x_path, out_path = tmp_path / "m.keras", tmp_path / "x.npy", tmp_path / "p.npz"
    run_python(
        "-c",
        _TRAIN_AND_SAVE.replace("{weighting}", "mgda"),
        model_path,
        x_path,
        out_path,
        backend=backend,
        timeout=600,
    )
    restored = keras.saving.load_model(model_path)
    assert isinstance(restored, kerasmtl.MultiTaskModel)
    assert restored.weighting.__class__.__name__ == "MGDA"
    x = np.load(x_path)
    expected = np.load(out_path)
    predictions = restored.predict(x, verbose=0)
    for task in ("a", "b"):
        np.testing.assert_allclose(predictions[task], expected[task], rtol=1e-5, atol=1e-5)
    # ... and back: TensorFlow saves, the other backend loads and predicts the same.
    restored.save(tmp_path / "back.keras")
    np.savez(tmp_path / "tf.npz", **predictions)
    run_python(
        "-c",
        """
        import sys
        import keras, numpy as np
        import kerasmtl
        model = keras.saving.load_model(sys.argv[1])
        predictions = model.predict(np.load(sys.argv[2]), verbose=0)
        expected = np.load(sys.argv[3])
        for task in ("a", "b"):
            np.testing.assert_allclose(predictions[task], expected[task], rtol=1e-5, atol=1e-5)
        model.fit(np.load(sys.argv[2]), {"a": predictions["a"], "b": np.zeros(32, "int32")},
                  epochs=1, verbose=0)  # the compiled strategy trains after loading
        """,
        tmp_path / "back.keras",
        x_path,
        tmp_path / "tf.npz",
        backend=backend,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_model_trained_on_jax_exports_and_verifies(tmp_path, run_python):
    """A JAX-trained model exports through TensorFlow and passes the fresh-process check."""
    output = run_python(
        "-c",
        """
        import json, sys
        import keras, numpy as np
        import kerasmtl
        from kerasmtl import Task
        from kerasmtl.export import export_for_serving, verify_export
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 4)).astype("float32")
        y = {"a": rng.normal(size=(32, 1)).astype("float32"), "b": rng.integers(0, 3, size=(32,))}
        model = kerasmtl.hard_sharing(
            {"features": (4,)}, keras.layers.Dense(8, activation="relu", name="trunk"),
            [Task("a", head=1, loss="mse"),
             Task("b", head=3,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))])
        model.compile(optimizer="adam", weighting="upgrad")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        path = export_for_serving(model, sys.argv[1], postprocess="auto", warmup_inputs=x[:2])
        report = verify_export(path, model, x[:8])
        print(json.dumps({"path": path, "passed": report["passed"],
                          "backend": keras.backend.backend()}))
        """,
        tmp_path / "serving",
        backend="jax",
        timeout=600,
    )
    result = json.loads(output.strip().splitlines()[-1])
    assert result["passed"] is True and result["backend"] == "jax"
    assert Path(result["path"], "saved_model.pb").exists()
    assert Path(result["path"], "assets.extra", "tf_serving_warmup_requests").exists()


@pytest.mark.slow
def test_jax_data_parallel_on_two_devices_equals_one_device(run_python):
    """`keras.distribution.DataParallel` on 2 virtual CPU devices: global-batch losses and Gram.

    Five strategies: MGDA, PCGrad (representation), UPGrad, DWA and AutoLambda (lookahead).
    """
    output = run_python(SCRIPTS / "jax_data_parallel.py", backend="jax", timeout=600)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 5 and all(line.endswith("ok") for line in lines), output


_PIPELINE_AND_MIXED_PRECISION = """
import keras, numpy as np, tensorflow as tf
import kerasmtl
from kerasmtl import Task
from kerasmtl.data import task_dataset

rng = np.random.default_rng(0)
features = {
    "x": rng.normal(size=(64, 4)).astype("float32"),
    "a": rng.normal(size=(64, 1)).astype("float32"),
    "b": rng.integers(0, 3, size=(64,)).astype("int64"),
}
raw = tf.data.Dataset.from_tensor_slices(features)
dataset = task_dataset(raw, ["a", "b"], {"features": "x"}, batch_size=16,
                       mask_when={"b": lambda example: example["x"][0] > 1.0})


def model():
    keras.utils.set_random_seed(0)
    return kerasmtl.hard_sharing(
        {"features": (4,)}, keras.layers.Dense(8, activation="relu", name="trunk"),
        [Task("a", head=1, loss="mse"),
         Task("b", head=3, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              mask_value=-1, metrics=["accuracy"])])


for weighting in ("dwa", "pcgrad"):
    m = model()
    m.compile(optimizer="adam", weighting=weighting)
    history = m.fit(dataset, epochs=2, verbose=0,
                    callbacks=[kerasmtl.callbacks.LossWeightScheduler()])
    assert all(np.isfinite(history.history[k][-1]) for k in ("loss", "a_loss", "b_loss"))
    print("pipeline", weighting, "ok")

keras.config.set_dtype_policy("mixed_float16")
m = model()
m.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2)),
          weighting="mgda")
before = m.get_layer("trunk").kernel.numpy().copy()
history = m.fit(dataset, epochs=2, verbose=0)
assert m.get_layer("trunk").compute_dtype == "float16"
assert np.all(np.isfinite(m.get_layer("trunk").kernel.numpy()))
assert not np.allclose(before, m.get_layer("trunk").kernel.numpy())
assert np.isfinite(history.history["loss"][-1])
print("mixed_float16 mgda ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_tf_data_pipeline_and_mixed_precision_on_other_backends(backend, run_python):
    """`task_dataset` feeds JAX / torch `fit`; `mixed_float16` trains a gradient strategy."""
    output = run_python("-c", _PIPELINE_AND_MIXED_PRECISION, backend=backend, timeout=600)
    assert "pipeline dwa ok" in output and "pipeline pcgrad ok" in output
    assert "mixed_float16 mgda ok" in output
