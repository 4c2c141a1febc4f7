import os
import subprocess
import sys
import textwrap

# Before anything imports TensorFlow: keep its C++ logging out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's models are tiny: XLA's CPU compile time (JAX jit, TF jit_compile) dominates
# their steps, and LLVM's optimisation passes are most of it (measured: a quarter of the CPU
# time of the architecture tests on JAX). Set before any backend starts; children inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backend_only(*backends, reason): run only on these Keras backends (the reason says why)",
    )


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("backend_only")
        if marker is None or backend in marker.args:
            continue
        reason = marker.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: backend_only needs a reason=")
        item.add_marker(pytest.mark.skip(reason=f"{'/'.join(marker.args)} only: {reason}"))


def _run_python(*arguments, backend=None, env=None, cwd=None, timeout=300):
    """Runs `python *arguments` in a child process; returns its stdout, fails the test on error.

    The one subprocess runner of the suite (examples, benchmarks, README blocks, other
    backends, fresh-process loads). `arguments` are what follows `python`: a script and its
    arguments, or `"-c", code` (dedented; paths and numbers are turned into strings). `backend` sets
    `KERAS_BACKEND` for the child; `env` adds variables; TensorFlow's C++ logging stays off.
    """
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if backend is not None:
        environment["KERAS_BACKEND"] = backend
    environment.update(env or {})
    command = [sys.executable, *map(str, arguments)]
    if "-c" in command[:-1]:
        # Code written indented inside a test reads as it runs.
        index = command.index("-c") + 1
        command[index] = textwrap.dedent(command[index])
    result = subprocess.run(
        command,
        cwd=None if cwd is None else str(cwd),
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        program = "-c <code>" if "-c" in command else command[1]
        pytest.fail(
            f"python {program} failed with exit code {result.returncode}"
            f"{'' if backend is None else f' on {backend}'}:\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout


@pytest.fixture(scope="session")
def run_python():
    """`run_python(*arguments, backend=None, env=None, cwd=None, timeout=300) -> stdout`.

    See `_run_python`: one runner for every test that starts a Python child process.
    """
    return _run_python
