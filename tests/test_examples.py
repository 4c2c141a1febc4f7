"""Every script in examples/ runs, with a tiny budget, and prints what it promises.

The scripts are found by listing examples/; each needs an entry in `BUDGETS` (its tiny
arguments and a line its output must contain), so a new example cannot be left out.
Full-size figures are in the scripts' docstrings and README.md; no timing is asserted.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

# script -> (arguments, text its output contains); "{out}" is the test's tmp_path.
BUDGETS = {
    "main.py": (("--epochs", "1", "--out", "{out}"), "delta-m vs single-task:"),
    "gradnorm_toy.py": (("--epochs", "1", "--tasks", "3"), "Spearman rank correlation"),
    "task_affinity.py": (
        ("--epochs", "1", "--every-n-steps", "20", "--out", "{out}"),
        "Suggested grouping into 2:",
    ),
    "tabular_recommendation.py": (
        ("--epochs", "1", "--samples", "2000", "--architecture", "ple"),
        "ple test AUC:",
    ),
}

SCRIPTS = sorted(name for name in os.listdir(EXAMPLES) if name.endswith(".py"))


def _run(script, args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_example_has_a_budget():
    assert set(SCRIPTS) == set(BUDGETS), (
        f"examples/ and BUDGETS differ: {sorted(set(SCRIPTS) ^ set(BUDGETS))}"
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    args, expected = BUDGETS[script]
    args = [arg.format(out=tmp_path) for arg in args]
    output = _run(script, args, cwd=str(tmp_path))
    assert expected in output, output
    if script == "main.py":
        assert os.path.exists(tmp_path / "loss_weights.png")
        assert os.path.exists(tmp_path / "serving" / "multi_digits" / "1" / "saved_model.pb")
        assert "checked in a fresh process" in output
    if script == "task_affinity.py":
        assert os.path.exists(tmp_path / "task_affinity.npy")
