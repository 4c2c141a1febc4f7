"""Every script in examples/ runs, with a tiny budget, and prints what it promises; so does
every python block of README.md, as pasted.

The scripts are found by listing examples/; each needs an entry in `BUDGETS` (its tiny
arguments and a line its output must contain), so a new example cannot be left out.
Full-size figures are in the scripts' docstrings and README.md; no timing is asserted.
"""

import os
import re

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


def test_every_example_has_a_budget():
    assert set(SCRIPTS) == set(BUDGETS), (
        f"examples/ and BUDGETS differ: {sorted(set(SCRIPTS) ^ set(BUDGETS))}"
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path, run_python):
    args, expected = BUDGETS[script]
    args = [arg.format(out=tmp_path) for arg in args]
    output = run_python(os.path.join(EXAMPLES, script), *args, cwd=tmp_path)
    assert expected in output, output
    if script == "main.py":
        assert os.path.exists(tmp_path / "loss_weights.png")
        assert os.path.exists(tmp_path / "serving" / "multi_digits" / "1" / "saved_model.pb")
        assert "checked in a fresh process" in output
    if script == "task_affinity.py":
        assert os.path.exists(tmp_path / "task_affinity.npy")


def _readme_blocks():
    """README's python programs: its python blocks that import kerasmtl (not one-line fragments)."""
    with open(os.path.join(ROOT, "README.md")) as file:
        readme = file.read()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)
    return [block for block in blocks if "import kerasmtl" in block]


def test_readme_has_the_blocks_it_is_tested_by():
    blocks = _readme_blocks()
    assert any("kerasmtl.hard_sharing" in block and "quickstart.keras" in block for block in blocks)
    assert any("keras.applications" in block for block in blocks)
    assert any('"categorical"' in block for block in blocks)


@pytest.mark.e2e
@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_python_block_runs_as_pasted(index, tmp_path, run_python):
    blocks = _readme_blocks()
    block = blocks[index]
    saves = 'model.save("quickstart.keras")'
    # A block that loads the quickstart's model runs after the quickstart, in one directory.
    quickstart = next(b for b in blocks if saves in b)
    runs = [quickstart, block] if "quickstart.keras" in block and saves not in block else [block]
    for code in runs:
        output = run_python("-W", "error::UserWarning", "-c", code, cwd=tmp_path)
    if saves in block:
        assert "category_loss" in output
        assert (tmp_path / "quickstart.keras").exists()
