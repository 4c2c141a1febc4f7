"""Packaging: a non-editable install works from outside the repository; README's commands stay true.

README's python blocks run in tests/test_examples.py.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_non_editable_install_imports_from_outside_the_repository(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True, cwd=tmp_path, capture_output=True, text=True,
    )
    code = (
        "import kerasmtl, kerasmtl.models, kerasmtl.callbacks, kerasmtl.layers, "
        "kerasmtl.weighting, kerasmtl.data\n"
        "import pathlib\n"
        f"assert pathlib.Path(kerasmtl.__file__).is_relative_to({str(target)!r}), "
        "kerasmtl.__file__\n"
        "print(kerasmtl.models.__name__, kerasmtl.callbacks.LossWeightScheduler.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kerasmtl.models LossWeightScheduler" in result.stdout


def _readme():
    return (ROOT / "README.md").read_text()


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"^python3 -m venv .*$", _readme(), flags=re.MULTILINE)
    assert len(commands) == 2
    assert commands[0].endswith("python examples/main.py")
    assert commands[1].endswith("python -m pytest")
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()
