"""What a new user meets first: the line before a slow first step, and dict inputs by name."""

import warnings

import keras
import numpy as np
import pytest

import kerasmtl
from kerasmtl import Task
from kerasmtl.testing.models import regression_data, small_model

# Runs on every backend (.ci/run repeats it on JAX and torch).
pytestmark = pytest.mark.backend_neutral


def _data(num=16, seed=0):
    return regression_data(num, seed=seed)


def _model(seed=0):
    return small_model(units=3, activation=None, seed=seed)


# === The first step of a gradient-based strategy ===


_TRACED = pytest.mark.backend_only(
    "tensorflow",
    "jax",
    reason="torch runs the step eagerly (without jit_compile): nothing is traced, no line; "
    "test_no_notice_when_nothing_is_traced checks that",
)


@_TRACED
@pytest.mark.parametrize("verbose", [1, 2, "auto", None])
def test_gradient_based_fit_says_it_traces_before_the_first_step(verbose, capsys):
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", weighting="mgda")
    kwargs = {} if verbose is None else {"verbose": verbose}
    model.fit(x, y, epochs=2, batch_size=8, **kwargs)
    output = capsys.readouterr().out
    line = next(line for line in output.splitlines() if "tracing" in line)
    assert line.startswith("MGDA: tracing the per-task gradients of 2 tasks"), line
    # The trunk's kernel and bias are the variables both tasks reach.
    assert "2 shared variables" in line and "the first step takes longer" in line, line
    # Printed before the first step: before the epoch's progress line.
    assert output.index(line) < output.index("Epoch 1/2"), output


@_TRACED
def test_representation_gradients_name_the_representation(capsys):
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", weighting="pcgrad", gradients="representation")
    model.fit(x, y, epochs=1, batch_size=8, verbose=2)
    output = capsys.readouterr().out
    assert "with respect to the shared representation (layer 'trunk')" in output, output


@pytest.mark.parametrize("weighting, verbose", [("mgda", 0), ("dwa", 1), ("equal", 2)])
def test_no_notice_when_silent_or_loss_based(weighting, verbose, capsys):
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", weighting=weighting)
    model.fit(x, y, epochs=1, batch_size=8, verbose=verbose)
    assert "tracing" not in capsys.readouterr().out


def test_no_notice_when_nothing_is_traced(capsys):
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", weighting="mgda")
    model.fit(x, y, epochs=1, batch_size=8, verbose=2)
    first = capsys.readouterr().out
    # The step is traced once per compile: a second fit starts at full speed.
    model.fit(x, y, epochs=1, batch_size=8, verbose=2)
    assert "tracing" not in capsys.readouterr().out
    # torch runs the step eagerly; so does any backend with run_eagerly=True.
    assert ("tracing" in first) == (keras.backend.backend() != "torch"), first
    model.compile(optimizer="sgd", weighting="mgda", run_eagerly=True)
    model.fit(x, y, epochs=1, batch_size=8, verbose=2)
    assert "tracing" not in capsys.readouterr().out


# === Dict inputs keyed by the input's name ===


def _mmoe():
    keras.utils.set_random_seed(0)
    tasks = [Task("a", head=1, loss="mse"), Task("b", head=1, loss="mse")]
    return kerasmtl.models.mmoe({"features": (4,)}, tasks, num_experts=2, expert_units=(4,))


@pytest.mark.parametrize("build", [_model, _mmoe], ids=["hard_sharing", "mmoe"])
@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "array"])
def test_one_named_input_takes_a_dict_or_an_array_without_warnings(build, as_dict):
    x, y = _data()
    model = build()
    model.compile(optimizer="sgd")
    inputs = {"features": x} if as_dict else x
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Keras's Variable.__array__ and NumPy >= 2, as in pyproject.toml.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        model.fit(inputs, y, epochs=1, batch_size=8, verbose=0)
        predictions = model.predict(inputs, verbose=0)
        model.evaluate(inputs, y, verbose=0)
        called = model(inputs)
    assert sorted(predictions) == ["a", "b"]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(called["a"]), predictions["a"], rtol=1e-5, atol=1e-6
    )


def test_a_dict_with_another_key_still_fails_clearly():
    x, _ = _data()
    model = _model()
    with pytest.raises(Exception, match="features"):
        model({"image": x})
