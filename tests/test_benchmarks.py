"""The benchmark scripts still run (their ``--quick`` modes), so they do not rot between sessions.

Slow (each compiles several SafeRate steps): ``python -m pytest -m slow tests/test_benchmarks.py``.
"""

import pytest
from run_scripts import ROOT
from run_scripts import run_python

BENCHMARKS = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


def run_script(name: str, *argv: str) -> str:
    # No ``--data``: random pixels, so the scripts need nothing outside the repository.
    return run_python(BENCHMARKS / name, *argv, cwd=BENCHMARKS, timeout=900)


def table_rows(output: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def test_step_time_quick_prints_every_model_with_one_trace():
    output = run_script("step_time.py", "--quick", "--data", "/nonexistent", "--repeats", "2")
    step_rows = table_rows(output, "MLP") + table_rows(output, "CNN")
    rows = [row for row in step_rows if len(row) == 8]  # not the bound-pass table's row
    assert len(rows) == 3, output
    for row in rows:
        assert row[-1] == "1", row  # traced once
        assert float(row[3].rstrip("x")) > 0, row  # a ratio was measured (not asserted on)
    floors = [row[4] for row in rows]
    assert floors[2] == "—" and all(f.endswith("x") for f in floors[:2]), floors
    (smooth,) = [row for row in table_rows(output, "MLP 784-128-10 softplus") if len(row) == 4]
    assert all(cell.endswith("x)") for cell in smooth[2:]), smooth  # both working degrees ran


def test_device_checks_quick_reports_sound_bounds_and_no_loss_rise():
    output = run_script("device_checks.py", "--quick", "--repeats", "2")
    precision_rows = table_rows(output, "default") + table_rows(output, "highest")
    assert len(precision_rows) == 6, output
    for row in precision_rows:
        assert float(row[-1]) <= 1e-6, row  # worst violation relative to |h|: rounding only
    training_rows = [row for row in table_rows(output, "MLP 784-256-10") if "steps" in row[0]]
    assert len(training_rows) == 4, output
    for row in training_rows:
        assert float(row[2]) <= 1e-6, row  # no loss rise beyond rounding


def test_profile_bound_lists_the_kernels_of_a_small_bound_pass():
    output = run_script(
        "profile_bound.py",
        "--width",
        "64",
        "--inputs",
        "200",
        "--top",
        "5",
        "--timeline",
        "--shortest",
        "0",
    )
    rows = [row for row in table_rows(output, "") if row[0] not in ("kernel", "start (ms)")]
    kernels = [row for row in rows if len(row) == 3 and not row[0].startswith("---")]
    assert len(kernels) == 5, output
    assert any("dot" in row[2] for row in kernels), kernels
    assert "minor page faults per call" in output
    timeline = [row for row in rows if len(row) == 4 and not row[0].startswith("---")]
    starts = [float(row[0]) for row in timeline]
    assert all(float(end) >= float(start) for start, end, *_ in timeline), timeline
    assert starts == sorted(starts) and starts and starts[0] >= 0, timeline


def test_step_quality_quick_prints_the_tables_and_saferate_is_monotone():
    output = run_script("step_quality.py", "--quick", "--data", "/nonexistent")
    for title in ("## Table 1:", "## Table 1b:", "## Table 2:", "## Table 3:"):
        assert title in output, output
    table1 = output.split("## Table 1:")[1].split("## Table 1b:")[0]
    rows = table_rows(table1, "logistic regression") + table_rows(table1, "MLP 3x64 tanh")
    assert len(rows) == 2, output
    for row in rows:
        assert row[4] == "yes", row  # SafeRate's full-batch loss never went up
        assert all(cell != "nan" for cell in row), row
    table3 = output.split("## Table 3:")[1]
    rows = table_rows(table3, "logistic regression") + table_rows(table3, "MLP 3x64 tanh")
    assert len(rows) == 4, output  # two problems, trajectory steps 0 and 10
    for row in rows:
        ratios = [float(cell.split()[0]) for cell in row[4:]]
        assert len(ratios) == 2 and all(r >= 1 - 1e-9 for r in ratios), row  # sound: c2_hi >= R2*


def test_mm_vs_lbfgs_prints_every_problem_and_method():
    output = run_script("mm_vs_lbfgs.py", "--budget", "200")
    rows = [row for row in table_rows(output, "") if row[0] != "problem"]
    problems = {row[0] for row in rows}
    assert problems == {"linear", "logistic", "poisson", "rosenbrock"}
    assert len(rows) == 3 * len(problems)
    mm_rows = [row for row in rows if row[1] == "MM (this library)"]
    assert all(row[2] != "-" for row in mm_rows)


def test_integration_cells_quick_contains_the_reference_and_adapts_to_the_bump():
    output = run_script("integration_cells.py", "--quick")
    rows = table_rows(output, "1.5 e^(3x)") + table_rows(output, "exp(-((x - 0.3)/0.05)²)")
    assert len(rows) == 4, output  # two integrands, degrees 2 and 4
    for row in rows:
        assert row[-1] == "yes, yes", row  # both intervals contain mpmath.quad's value
        assert row[3].isdigit() and row[4].isdigit(), row  # both reached the width
    for row in rows:
        if row[0].startswith("exp("):  # a localised bump: fewer adaptive cells than uniform
            assert int(row[3]) < int(row[4]), row


def test_relu_slope_wrapping_quick_shows_affine_forms_narrower_than_intervals():
    output = run_script("relu_slope_wrapping.py", "--quick")
    radius = {row[1]: float(row[3]) for row in table_rows(output, "1e-04")}
    assert set(radius) == {"interval", "oracle crossings", "affine"}, output
    # Symbols carried exactly through the later layers never widen; true crossings are fewer.
    assert (
        radius["affine"] <= radius["interval"] and radius["oracle crossings"] <= radius["interval"]
    )
