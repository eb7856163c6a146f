"""``python -m train.compare``: SafeRate against tuned baselines and learning-rate-free peers.

    python -m train.compare --config configs/compare_mlp.py --workdir runs/compare_mlp

For every seed in ``config.compare.seeds`` it trains, on the same loaded data, for the same
number of steps:

* SafeRate over each of ``compare.saferate_bases`` (no learning rate to tune);
* each of ``compare.bases`` at every learning rate of ``compare.learning_rates`` (the tuning
  grid);
* each of ``compare.peers`` (learning-rate-free methods and line searches) at its defaults.

Each run trains in its own subdirectory ``DIR/seed<seed>/<run>/`` (``metrics.jsonl``,
``loss.png``; checkpoints only with ``compare.checkpoint_runs``). A run whose loss becomes
non-finite or ends ten times above where it started, or that raises an ``ArithmeticError``
(e.g. under ``jax_debug_nans``), is recorded as diverged. Finished runs are reused when the
command is repeated with the same workdir and an unchanged run config. At the end, written
atomically into ``DIR``:

* ``results.json``: ``{"runs": [record, ...]}``, one record per run (see :data:`RECORD_KEYS`);
* ``report.md`` and the plots, see :mod:`train.compare_report`.

Command-line overrides apply to every run, e.g. ``--config.num_steps=100
--config.compare.seeds=(0,1,2) --config.compare.learning_rates=(1e-3,1e-2)``; tuples of names
need quotes inside: ``--config.compare.bases="('adam','sgd')"``. The command keeps JAX's
compilation cache in ``DIR/jax_cache`` (unless ``JAX_COMPILATION_CACHE_DIR`` is set), so the
runs of later seeds skip compilation.
"""

from __future__ import annotations

import collections
import json
import math
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections

from train import compare_report
from train import data
from train import metrics
from train import optimizers
from train import train
from train.compare_runs import PEER
from train.compare_runs import SAFERATE
from train.compare_runs import TUNED
from train.compare_runs import RunOutcome
from train.compare_runs import RunSpec
from train.compare_runs import seed_targets

RESULTS_FILE = "results.json"
RUN_FILE = "compare_run.json"
COMPILATION_CACHE = "jax_cache"
RECORD_KEYS = (
    "optimizer",
    "learning_rate",
    "seed",
    "final_train_loss",
    "test_loss",
    "test_accuracy",
    "wall_time_s",
    "steps",
    "time_to_target_s",
    "diverged",
    "elapsed_s",
)
"""Fields of a ``results.json`` record, ``null`` where one does not apply:

* ``optimizer``: ``saferate(<base>)``, a tuned base (``adam``), or a peer (``prodigy``,
  ``backtracking(<base>)``);
* ``learning_rate``: the grid value for tuned runs, ``null`` for SafeRate and peers;
* ``final_train_loss``: the training loss at the last step (the mean over the last
  ``compare.final_loss_window`` steps), ``null`` if not finite;
* ``test_loss``, ``test_accuracy``: after the last step;
* ``wall_time_s``: seconds inside training steps (compilation and evaluation excluded);
* ``time_to_target_s``: ``wall_time_s`` at the first step whose (windowed) training loss is at
  most the seed's target, the lowest final training loss of any tuned run with that seed;
* ``diverged``: the loss became non-finite, or ended above :data:`DIVERGENCE_FACTOR` times the
  first step's, or the run raised an ``ArithmeticError``;
* ``elapsed_s``: the run's whole duration, compilation and evaluation included.
"""

DIVERGENCE_FACTOR = 10.0
"""A run whose final training loss exceeds its first by this factor counts as diverged."""

_IGNORED_FOR_REUSE = ("compare", "progress_bar")


def validate_compare_config(config: ml_collections.ConfigDict) -> None:
    """Checks a whole config's ``compare`` section.

    Raises:
      ValueError: naming the offending ``compare.*`` field and what it may be.
    """
    if "compare" not in config:
        raise ValueError(
            "The config has no 'compare' section; start the config from configs/default.py "
            "(from configs import default; config = default.get_config())."
        )
    compare = config.compare
    steps = compare.get("num_steps", -1)
    if not isinstance(steps, int) or not (steps == -1 or steps > 0):
        raise ValueError(f"config.compare.num_steps={steps!r} must be -1 or a positive integer.")
    seeds = compare.seeds
    if (
        not isinstance(seeds, Sequence)
        or not seeds
        or not all(isinstance(seed, int) for seed in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ValueError(
            f"config.compare.seeds={seeds!r} must be a non-empty tuple of distinct integers, "
            "e.g. --config.compare.seeds=(0,1,2)."
        )
    for field in ("bases", "saferate_bases"):
        _check_names(compare, field, tuple(optimizers.PLAIN_OPTIMIZERS))
    _check_names(compare, "peers", (*optimizers.LEARNING_RATE_FREE, *optimizers.LINE_SEARCHES))
    rates = compare.learning_rates
    if not isinstance(rates, Sequence) or not all(
        isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0 for rate in rates
    ):
        raise ValueError(
            f"config.compare.learning_rates={rates!r} must be a tuple of positive numbers."
        )
    if compare.bases and not rates:
        raise ValueError(
            "config.compare.learning_rates is empty but config.compare.bases needs a grid; "
            "give learning rates or set --config.compare.bases=()."
        )
    window = compare.final_loss_window
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"config.compare.final_loss_window={window!r} must be a positive integer.")
    if not isinstance(compare.checkpoint_runs, bool):
        raise ValueError(
            f"config.compare.checkpoint_runs={compare.checkpoint_runs!r} must be True or False."
        )


def _check_names(compare: ml_collections.ConfigDict, field: str, allowed: tuple[str, ...]) -> None:
    names = compare[field]
    if not isinstance(names, Sequence) or isinstance(names, str):
        raise ValueError(f"config.compare.{field}={names!r} must be a tuple of optimizer names.")
    unknown = [name for name in names if name not in allowed]
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"config.compare.{field}={tuple(names)!r} must list distinct names from: "
            f"{', '.join(allowed)}."
        )


def plan_runs(config: ml_collections.ConfigDict) -> list[RunSpec]:
    """The runs of a comparison, seed by seed: SafeRate, then the tuning grid, then the peers."""
    validate_compare_config(config)
    compare = config.compare
    specs = []
    for seed in compare.seeds:
        for base in compare.saferate_bases:
            specs.append(_spec(config, SAFERATE, f"saferate({base})", seed, "saferate", base))
        for base in compare.bases:
            for rate in compare.learning_rates:
                specs.append(_spec(config, TUNED, base, seed, base, base, float(rate)))
        for peer in compare.peers:
            base = config.optimizer.base if peer in optimizers.WITH_BASE else None
            label = f"{peer}({base})" if base else peer
            specs.append(_spec(config, PEER, label, seed, peer, base))
    return specs


def _spec(
    config: ml_collections.ConfigDict,
    kind: str,
    label: str,
    seed: int,
    name: str,
    base: str | None,
    learning_rate: float | None = None,
) -> RunSpec:
    run = config.copy_and_resolve_references()
    run.seed = seed
    if config.compare.get("num_steps", -1) > 0:
        run.num_steps = config.compare.num_steps
    if not config.compare.checkpoint_runs:
        run.checkpoint_every_steps = 0
    run.optimizer.name = name
    if base is not None:
        run.optimizer.base = base
    # Peers run at their own defaults, whatever learning rate the base config holds.
    run.optimizer.learning_rate = learning_rate
    return RunSpec(kind, label, base, learning_rate, seed, run)


def run_comparison(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    dataset: data.Dataset | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[RunOutcome]:
    """Runs every planned run (reusing finished ones), then writes the results and the report.

    Args:
      config: a config with a ``compare`` section (see ``configs/default.py``).
      workdir: where the runs' subdirectories, ``results.json``, ``report.md`` and the plots go.
      dataset: the loaded dataset to train every run on; loaded from ``config.dataset`` if None.
      echo: receives the progress lines; by default they go to stderr.

    Returns:
      The outcomes in run order, with ``time_to_target_s`` filled in.

    Raises:
      ValueError: the config, or the config of one of the runs, is invalid.
      data.DatasetError: the dataset cannot be loaded.
    """
    echo = echo or _echo
    specs = plan_runs(config)
    for spec in specs:
        train.validate_config(spec.config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        dataset = data.load_dataset(config.dataset, config.dtype)
    window = config.compare.final_loss_window
    outcomes = []
    for index, spec in enumerate(specs, start=1):
        echo(
            f"[compare {index}/{len(specs)}, {len(specs) - index} remaining] "
            f"seed {spec.seed}: {spec.description}"
        )
        outcome = _reuse(workdir, spec, window) or _run(workdir, spec, dataset, window)
        echo(f"    {_summary(outcome)}")
        outcomes.append(outcome)
    fill_time_to_target(outcomes, window)
    results = {"runs": [outcome.record for outcome in outcomes]}
    metrics.atomic_write(
        workdir / RESULTS_FILE, lambda file: json.dump(results, file, indent=1, allow_nan=False)
    )
    compare_report.write_report(config, outcomes, workdir)
    echo(f"wrote {workdir / RESULTS_FILE} and {workdir / compare_report.REPORT_FILE}")
    return outcomes


def _run(workdir: Path, spec: RunSpec, dataset: data.Dataset, window: int) -> RunOutcome:
    run_dir = workdir / spec.directory
    error = None
    started = time.perf_counter()
    try:
        train.train_and_evaluate(spec.config, run_dir, dataset=dataset)
    except ArithmeticError as exception:
        error = f"{type(exception).__name__}: {exception}"
    elapsed = time.perf_counter() - started
    metrics_file = run_dir / metrics.METRICS_FILE
    rows = metrics.read_metrics(metrics_file) if metrics_file.exists() else []
    record = make_record(spec, rows, window, elapsed, error)
    saved = {"config": _reuse_key(spec.config), "record": record, "error": error}
    run_dir.mkdir(parents=True, exist_ok=True)  # A run can fail before creating it.
    metrics.atomic_write(run_dir / RUN_FILE, lambda file: json.dump(saved, file, indent=1))
    return RunOutcome(spec, record, rows, error)


def _reuse(workdir: Path, spec: RunSpec, window: int) -> RunOutcome | None:
    """The outcome of an identical run finished earlier in this workdir, if there is one."""
    run_dir = workdir / spec.directory
    try:
        saved = json.loads((run_dir / RUN_FILE).read_text())
        rows = metrics.read_metrics(run_dir)
    except (OSError, ValueError):
        return None
    if saved.get("config") != _reuse_key(spec.config):
        return None
    error = saved.get("error")
    record = make_record(spec, rows, window, saved["record"]["elapsed_s"], error)
    return RunOutcome(spec, record, rows, error, reused=True)


def _reuse_key(config: ml_collections.ConfigDict) -> dict[str, Any]:
    config_dict = json.loads(config.to_json_best_effort())
    return {key: value for key, value in config_dict.items() if key not in _IGNORED_FOR_REUSE}


def make_record(
    spec: RunSpec,
    rows: Sequence[dict[str, Any]],
    window: int,
    elapsed_s: float,
    error: str | None = None,
) -> dict[str, Any]:
    """The ``results.json`` record of a run, without ``time_to_target_s`` (filled in later)."""
    last = rows[-1] if rows else {}
    history = smoothed_losses(rows, window)
    final_loss = history[-1][2] if history else None
    diverged = (
        error is not None
        or final_loss is None
        or any(row["train_loss"] is None for row in rows)
        or last.get("test_loss") is None
        or final_loss > DIVERGENCE_FACTOR * rows[0]["train_loss"]
    )
    return {
        "optimizer": spec.optimizer,
        "learning_rate": spec.learning_rate,
        "seed": spec.seed,
        "final_train_loss": final_loss,
        "test_loss": last.get("test_loss"),
        "test_accuracy": last.get("test_accuracy"),
        "wall_time_s": last.get("wall_time_s"),
        "steps": last.get("step"),
        "time_to_target_s": None,
        "diverged": diverged,
        "elapsed_s": elapsed_s,
    }


def smoothed_losses(
    rows: Sequence[dict[str, Any]], window: int
) -> list[tuple[int, float, float | None]]:
    """``(step, wall_time_s, loss)`` per row; the loss is the mean over the last ``window`` steps.

    The mean covers the logged rows with ``step`` in ``(step - window, step]`` (fewer at the
    start of a run) and is None when any of them is not finite (logged as null).
    """
    history = []
    recent: collections.deque[tuple[int, float | None]] = collections.deque()
    for row in rows:
        step = row["step"]
        recent.append((step, row["train_loss"]))
        while recent[0][0] <= step - window:
            recent.popleft()
        losses = [loss for _, loss in recent]
        mean = None if None in losses else math.fsum(losses) / len(losses)
        history.append((step, row["wall_time_s"], mean))
    return history


def time_to_target(
    history: Sequence[tuple[int, float, float | None]], target: float | None
) -> float | None:
    """The wall time of the first ``history`` entry whose loss is at most ``target``, else None."""
    if target is None:
        return None
    for _, wall_time, loss in history:
        if loss is not None and loss <= target:
            return wall_time
    return None


def fill_time_to_target(outcomes: Sequence[RunOutcome], window: int) -> None:
    """Sets every record's ``time_to_target_s`` against its seed's best tuned final loss."""
    targets = seed_targets(outcomes)
    for outcome in outcomes:
        best = targets[outcome.spec.seed]
        target = None if best is None else best.record["final_train_loss"]
        outcome.record["time_to_target_s"] = time_to_target(
            smoothed_losses(outcome.rows, window), target
        )


def _summary(outcome: RunOutcome) -> str:
    record = outcome.record
    reused = " (reused)" if outcome.reused else ""
    if record["diverged"]:
        reason = f": {outcome.error}" if outcome.error else ""
        return f"diverged{reason}{reused}"
    return (
        f"final train loss {record['final_train_loss']:.4g}, test accuracy "
        f"{record['test_accuracy']:.4f}, {record['wall_time_s']:.1f} s in steps, "
        f"{record['elapsed_s']:.1f} s in all{reused}"
    )


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _main(argv: list[str], workdir: str, config: ml_collections.ConfigDict) -> None:
    from absl import app
    from absl import flags
    from absl import logging

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if jax.config.jax_compilation_cache_dir is None:
        # Runs that differ only in the seed compile to the same program: compile it once.
        jax.config.update("jax_compilation_cache_dir", str(Path(workdir) / COMPILATION_CACHE))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:
        run_comparison(config, workdir)
    except ValueError as error:
        # Bad configs and missing data: the message says what to do. DatasetError is one.
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    from absl import app
    from absl import flags
    from ml_collections import config_flags

    # Defined here, not at import, so that tests can import this module next to train.__main__.
    _WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the runs, results and report.")
    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "Config file with a compare section.", lock_config=True
    )
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(lambda argv: _main(argv, _WORKDIR.value, _CONFIG.value))
