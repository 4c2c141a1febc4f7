"""The benchmark scripts run, with tiny budgets, and print their tables.

The examples run in tests/test_examples.py.

Their figures are recorded in benchmarks/README.md from full runs; these tests only keep
the scripts working (no timing is asserted here).
"""

import math
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_rows(output, first_cell):
    """The cells of the table rows (not rules) whose first cell starts with `first_cell`."""
    rows = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        is_rule = cells[0].startswith("---")
        if line.startswith("|") and not is_rule and cells[0].startswith(first_cell):
            rows.append(cells)
    return rows


def test_strategy_step_time_prints_ratios(run_python):
    output = run_python(
        "strategy_step_time.py",
        *("--tasks", "2", "--steps", "2", "--repeats", "1", "--only", "mgda", "dwa"),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    labels = [row[0] for row in _table_rows(output, "")]
    assert "MGDA (parameters)" in labels and "MGDA (representation)" in labels, output
    assert "DWA" in labels, output
    for row in _table_rows(output, "MGDA"):
        assert math.isfinite(float(row[2])) and float(row[2]) > 0.0, output


def test_parameter_gradient_routes_prints_ratios(run_python):
    output = run_python(
        "parameter_gradient_routes.py",
        *("--tasks", "2", "--steps", "2", "--repeats", "1"),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    routes = {row[0]: float(row[2]) for row in _table_rows(output, "") if row[0] != "route"}
    assert set(routes) >= {"one backward", "K backward passes", "pfor jacobian"}, output
    assert routes["one backward"] == 1.0


def test_dynamic_weights_prints_ratios(run_python):
    output = run_python(
        "dynamic_weights.py",
        *("--epochs", "2", "--repeats", "1", "--samples", "256"),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    assert _table_rows(output, "dynamic") and _table_rows(output, "recompile"), output


def test_multi_digits_delta_m_prints_a_table(run_python):
    output = run_python(
        "multi_digits_delta_m.py",
        *("--seeds", "0", "--epochs", "1", "--strategies", "equal", "pcgrad"),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    for name in ("equal", "pcgrad"):
        (row,) = _table_rows(output, name)
        assert re.fullmatch(r"[+-]\d+\.\d\d ± \d+\.\d\d", row[3]), output


def test_backend_step_time_prints_ratios_per_backend(run_python):
    output = run_python(
        "backend_step_time.py",
        *(
            "--backends",
            "tensorflow",
            "torch",
            "--tasks",
            "2",
            "--strategies",
            "equal",
            "pcgrad+rep",
            "--samples",
            "128",
            "--epochs",
            "1",
        ),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    rows = _table_rows(output, "tensorflow") + _table_rows(output, "torch")
    assert [row[2] for row in rows] == ["equal", "pcgrad+rep"] * 2, output
    for row in rows:
        assert float(row[3]) > 0.0 and math.isfinite(float(row[4])), output
    assert all(row[5] == "1.00" for row in _table_rows(output, "tensorflow")), output


def test_many_tasks_prints_the_solver_share(run_python):
    output = run_python(
        "many_tasks.py",
        *(
            "--tasks",
            "2",
            "12",
            "--only",
            "mgda",
            "--samples",
            "128",
            "--epochs",
            "1",
            "--calls",
            "2",
            "--gram-steps",
            "2",
        ),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    rows = _table_rows(output, "")
    assert [(row[0], row[1]) for row in rows if row[0] in ("2", "12")] == [
        ("2", "mgda"),
        ("12", "mgda"),
    ], output
    for row in rows[1:]:
        assert float(row[2]) > 0.0 and float(row[3]) > 0.0 and row[4].endswith("%"), output
        assert float(row[5]) > 0.0 and row[6].endswith("%"), output  # on training's Gram matrices


def test_scaling_prints_routes_memory_and_a_plot(run_python, tmp_path):
    plot = tmp_path / "scaling.png"
    output = run_python(
        "scaling.py",
        *(
            "--tasks",
            "2",
            "--trunks",
            "--variants",
            "equal",
            "pcgrad+rep",
            "pcgrad",
            "--samples",
            "128",
            "--epochs",
            "1",
            "--memory-steps",
            "2",
            "--memory-tasks",
            "2",
            "--plot",
            str(plot),
        ),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    rows = _table_rows(output, "tensorflow")
    timed = [row for row in rows if row[1] == "mlp"]
    assert [(row[3], row[4]) for row in timed] == [
        ("losses", "equal"),
        ("representation", "pcgrad+rep"),
        ("parameters", "pcgrad"),
    ], output
    for row in timed:
        assert float(row[5]) > 0.0 and math.isfinite(float(row[7])), output
    memory = [row for row in rows if row[1] != "mlp"]
    assert [row[2] for row in memory] == ["plain keras", "equal", "pcgrad+rep", "pcgrad"], output
    for row in memory:
        assert float(row[6]) >= float(row[5]) > 0.0, output
    assert plot.stat().st_size > 0


def test_jax_parameter_route_time_prints_each_route(run_python):
    output = run_python(
        "jax_parameter_route_time.py",
        *("--tasks", "2", "--methods", "loop", "split", "--calls", "1", "--repeats", "1"),
        cwd=os.path.join(ROOT, "benchmarks"),
    )
    rows = {row[1]: row for row in _table_rows(output, "2")}
    assert set(rows) >= {
        "forward + 1 backward",
        "forward + K pullbacks (loop)",
        "forward + K pullbacks (split)",
    }, output
    assert rows["forward + 1 backward"][3] == "1.00", output
    for row in rows.values():  # ms per call and the first call's seconds
        assert float(row[2]) > 0.0 and float(row[6]) > 0.0, output
