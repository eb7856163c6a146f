"""Tests of ``python -m train.compare``: the runner end to end on a tiny problem, and its parts."""

import importlib
import json
import math
import shutil

import pytest
from train_testing import REPO_ROOT
from train_testing import cli_overrides
from train_testing import run_python
from train_testing import small_config

from train import compare
from train import compare_report
from train import compare_runs
from train import metrics
from train.train import validate_config

DIVERGING_RATE = 1e30


def _tiny_config():
    config = small_config(num_steps=3, eval_every_steps=0, checkpoint_every_steps=3)
    config.compare.seeds = (0,)
    config.compare.bases = ("adam", "sgd")
    config.compare.learning_rates = (1e-2, DIVERGING_RATE)
    config.compare.saferate_bases = ("adam",)
    config.compare.peers = ("prodigy",)
    config.compare.num_steps = -1  # the runs train for the 3 steps above
    return config


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("compare")
    lines = []
    outcomes = compare.run_comparison(_tiny_config(), workdir, echo=lines.append)
    return workdir, outcomes, lines


def test_results_json_has_one_record_per_run(comparison):
    workdir, outcomes, _ = comparison
    runs = json.loads((workdir / compare.RESULTS_FILE).read_text())["runs"]
    assert [run["optimizer"] for run in runs] == [
        "saferate(adam)",
        "adam",
        "adam",
        "sgd",
        "sgd",
        "prodigy",
    ]
    assert runs == [outcome.record for outcome in outcomes]
    for run in runs:
        assert tuple(run) == compare.RECORD_KEYS
        assert run["seed"] == 0 and run["steps"] == 3
        assert run["wall_time_s"] > 0 and run["elapsed_s"] >= run["wall_time_s"]
        assert (run["learning_rate"] is None) == (run["optimizer"] in ("saferate(adam)", "prodigy"))
        assert run["diverged"] == (run["learning_rate"] == DIVERGING_RATE)
        if not run["diverged"]:
            assert math.isfinite(run["final_train_loss"]) and 0 <= run["test_accuracy"] <= 1
    # The target is the best tuned final loss; that run reaches it no later than its last step.
    best = min(
        (run for run in runs if run["learning_rate"] == 1e-2), key=lambda r: r["final_train_loss"]
    )
    assert 0 < best["time_to_target_s"] <= best["wall_time_s"]


def test_each_run_has_its_own_workdir_without_checkpoints(comparison):
    workdir, outcomes, _ = comparison
    for outcome in outcomes:
        run_dir = workdir / outcome.spec.directory
        assert [row["step"] for row in metrics.read_metrics(run_dir)] == [1, 2, 3]
        assert not (run_dir / "checkpoints").exists()
    assert {outcome.spec.directory for outcome in outcomes} == {
        "seed0/saferate_adam",
        "seed0/adam_lr1.00e-02",
        "seed0/adam_lr1.00e+30",
        "seed0/sgd_lr1.00e-02",
        "seed0/sgd_lr1.00e+30",
        "seed0/prodigy",
    }


def test_report_and_plots(comparison):
    workdir, _, lines = comparison
    report = (workdir / compare_report.REPORT_FILE).read_text()
    for text in (
        "## Results",
        "| adam, best tuned | 0.01 |",
        "| sgd, best tuned | 0.01 |",
        "| **SafeRate(adam)** |",
        "| prodigy |",
        "## SafeRate against the best tuned run of its base",
        "The whole tuning grid (4 runs",
        "| 1e+30 | diverged (1/1) | diverged (1/1) |",
        "first 256 training",
    ):
        assert text in report
    for name in compare_report.PLOT_FILES:
        assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report
    assert lines[0] == "[compare 1/6, 5 remaining] seed 0: saferate(adam)"
    assert lines[4].startswith("[compare 3/6, 3 remaining] seed 0: adam lr=1e+30")
    assert "diverged" in lines[5]


def _run_cli(workdir, *flags, returncode=0):
    argv = ["train.compare", "--config=configs/default.py", f"--workdir={workdir}", *flags]
    return run_python(
        f"import runpy, sys\nsys.argv = {argv!r}\n"
        "runpy.run_module('train.compare', run_name='__main__')",
        returncode=returncode,
    )


def test_cli_reuses_finished_runs(comparison, tmp_path):
    workdir, outcomes, _ = comparison
    shutil.copytree(workdir, tmp_path / "copy")
    (tmp_path / "copy" / compare.RESULTS_FILE).unlink()
    result = _run_cli(tmp_path / "copy", *cli_overrides(_tiny_config()))
    assert result.stderr.count("(reused)") == len(outcomes), result.stderr
    runs = json.loads((tmp_path / "copy" / compare.RESULTS_FILE).read_text())["runs"]
    assert runs == [outcome.record for outcome in outcomes]


def test_cli_reports_a_bad_config_without_a_trace(tmp_path):
    result = _run_cli(tmp_path, "--config.compare.bases=('adamm',)", returncode=1)
    assert "config.compare.bases" in result.stderr and "Traceback" not in result.stderr


def test_an_arithmetic_error_is_recorded_as_divergence(tmp_path, monkeypatch):
    def raise_floating_point_error(config, workdir, *, dataset=None):
        raise FloatingPointError("invalid value (nan) encountered in jit(train_step)")

    monkeypatch.setattr(compare.train, "train_and_evaluate", raise_floating_point_error)
    config = _tiny_config()
    config.compare.bases = ()
    config.compare.peers = ()
    lines = []
    (outcome,) = compare.run_comparison(config, tmp_path, dataset=object(), echo=lines.append)
    assert outcome.record["diverged"] and outcome.record["final_train_loss"] is None
    assert "FloatingPointError" in lines[1]
    report = (tmp_path / compare_report.REPORT_FILE).read_text()
    assert "| **SafeRate(adam)** | — | — | — |" in report


def _rows(losses, seconds_per_step=1.0):
    return [
        {"step": step, "train_loss": loss, "wall_time_s": step * seconds_per_step}
        for step, loss in enumerate(losses, start=1)
    ]


def test_time_to_target_is_the_first_time_the_loss_is_at_most_the_target():
    history = compare.smoothed_losses(_rows([2.0, 1.0, 0.5, 0.7, 0.4]), window=1)
    assert compare.time_to_target(history, 0.5) == 3.0
    assert compare.time_to_target(history, 0.45) == 5.0
    assert compare.time_to_target(history, 2.0) == 1.0
    assert compare.time_to_target(history, 0.3) is None
    assert compare.time_to_target(history, None) is None


def test_time_to_target_skips_non_finite_losses():
    history = compare.smoothed_losses(_rows([2.0, None, 0.1]), window=1)
    assert compare.time_to_target(history, 0.5) == 3.0


def test_windowed_losses_average_the_last_steps():
    history = compare.smoothed_losses(_rows([4.0, 2.0, 0.0, 1.0]), window=2)
    assert [loss for _, _, loss in history] == [4.0, 3.0, 1.0, 0.5]
    assert compare.time_to_target(history, 1.0) == 3.0
    history = compare.smoothed_losses(_rows([4.0, None, 2.0, 1.0]), window=2)
    assert [loss for _, _, loss in history] == [4.0, None, None, 1.5]


def _spec(kind=compare_runs.TUNED, optimizer="adam", learning_rate=1e-2, seed=0):
    return compare_runs.RunSpec(kind, optimizer, "adam", learning_rate, seed, small_config())


@pytest.mark.parametrize(
    ("losses", "error", "diverged"),
    [
        ([2.3, 1.0, 0.5], None, False),
        ([2.3, 5.0, 20.0], None, False),
        ([2.3, 50.0, 24.0], None, True),
        ([2.3, None, None], None, True),
        ([2.3, 1.0], "FloatingPointError: nan", True),
        ([], "FloatingPointError: nan", True),
    ],
)
def test_divergence(losses, error, diverged):
    rows = _rows(losses)
    if rows:
        rows[-1].update(test_loss=0.5, test_accuracy=0.8)
    record = compare.make_record(_spec(), rows, window=1, elapsed_s=1.0, error=error)
    assert record["diverged"] == diverged


def test_a_non_finite_test_loss_is_divergence():
    rows = _rows([2.3, 1.0])
    rows[-1].update(test_loss=None, test_accuracy=0.1)
    assert compare.make_record(_spec(), rows, window=1, elapsed_s=1.0)["diverged"]


def test_target_is_the_best_non_diverged_tuned_run_of_each_seed():
    def outcome(kind, loss, seed, diverged=False):
        record = {"final_train_loss": loss, "diverged": diverged}
        return compare_runs.RunOutcome(_spec(kind=kind, seed=seed), record, [])

    outcomes = [
        outcome(compare_runs.SAFERATE, 0.1, 0),
        outcome(compare_runs.TUNED, 0.5, 0),
        outcome(compare_runs.TUNED, 0.3, 0),
        outcome(compare_runs.TUNED, 0.01, 0, diverged=True),
        outcome(compare_runs.TUNED, 0.2, 1, diverged=True),
    ]
    targets = compare_runs.seed_targets(outcomes)
    assert targets[0] is outcomes[2] and targets[1] is None


def test_the_runner_and_the_report_do_not_import_each_other():
    import ast
    import pathlib

    def imported(module):
        tree = ast.parse(pathlib.Path(module.__file__).read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    assert not {"train.compare", "train.compare_report"} & imported(compare_runs)
    assert "train.compare" not in imported(compare_report)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seeds", ()),
        ("seeds", (0, 0)),
        ("seeds", (0.5,)),
        ("bases", ("adamm",)),
        ("saferate_bases", ("prodigy",)),
        ("peers", ("adam",)),
        ("learning_rates", (1e-3, -1.0)),
        ("learning_rates", ()),
        ("final_loss_window", 0),
    ],
)
def test_invalid_compare_config(field, value):
    config = _tiny_config()
    config.compare[field] = value
    with pytest.raises(ValueError, match=f"config.compare.{field}"):
        compare.validate_compare_config(config)


def test_a_config_without_a_compare_section_says_where_to_start():
    config = small_config()
    del config["compare"]
    with pytest.raises(ValueError, match="configs/default.py"):
        compare.plan_runs(config)


@pytest.mark.parametrize(
    "config_file",
    sorted(p.stem for p in (REPO_ROOT / "configs").glob("compare_*.py")),
)
def test_every_comparison_config_plans_valid_runs(config_file):
    config = importlib.import_module(f"configs.{config_file}").get_config()
    specs = compare.plan_runs(config)
    compare_config = config.compare
    per_seed = len(compare_config.saferate_bases) + len(compare_config.peers)
    per_seed += len(compare_config.bases) * len(compare_config.learning_rates)
    assert len(specs) == per_seed * len(compare_config.seeds) >= 3 * 23
    assert len({spec.directory for spec in specs}) == len(specs)
    for spec in specs:
        validate_config(spec.config)
        assert spec.config.checkpoint_every_steps == 0
        assert spec.config.num_steps == config.num_steps


def test_compare_num_steps_overrides_the_run_length():
    from configs import default
    from train import compare

    config = default.get_config()
    config.num_steps = 1000
    config.compare.num_steps = 7
    assert all(spec.config.num_steps == 7 for spec in compare.plan_runs(config))
    config.compare.num_steps = -1
    assert all(spec.config.num_steps == 1000 for spec in compare.plan_runs(config))
    config.compare.num_steps = 0
    with pytest.raises(ValueError, match="compare.num_steps"):
        compare.plan_runs(config)
