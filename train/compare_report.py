"""The report of ``python -m train.compare``: ``report.md`` and its plots, written atomically.

``report.md`` holds, for the compared problem: the best tuned learning rate of each baseline,
SafeRate over each base and the peers (final training loss and test accuracy as mean ± std over
seeds, wall time, time to reach the best tuned baseline's final loss, divergences); SafeRate
against the best tuned run of the same base with what the tuning grid cost; SafeRate's steps
(learning rates, refused steps); and the whole grid. The plots (PNG, first seed for curves):

* ``loss_vs_step.png`` and ``loss_vs_time.png``: training loss (log scale) against the step and
  against the wall time inside training steps;
* ``saferate_learning_rate.png``: SafeRate's learning rate against the step;
* ``loss_vs_learning_rate.png``: final training loss against the learning rate for each tuned
  baseline (mean ± std over seeds, diverged rates marked), with SafeRate over the same base as a
  horizontal line.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from train import metrics
from train.compare_runs import PEER
from train.compare_runs import SAFERATE
from train.compare_runs import TUNED
from train.compare_runs import RunOutcome
from train.compare_runs import seed_targets

REPORT_FILE = "report.md"
LOSS_VS_STEP = "loss_vs_step.png"
LOSS_VS_TIME = "loss_vs_time.png"
SAFERATE_LEARNING_RATE = "saferate_learning_rate.png"
LOSS_VS_LEARNING_RATE = "loss_vs_learning_rate.png"
PLOT_FILES = (LOSS_VS_STEP, LOSS_VS_TIME, SAFERATE_LEARNING_RATE, LOSS_VS_LEARNING_RATE)

_Group = list[RunOutcome]
_UNDEFINED_IF_DIVERGED = ("final_train_loss", "test_loss", "test_accuracy", "time_to_target_s")


def write_report(
    config: ml_collections.ConfigDict, outcomes: Sequence[RunOutcome], workdir: str | Path
) -> None:
    """Writes ``report.md`` and the plots of :data:`PLOT_FILES` into ``workdir``."""
    workdir = Path(workdir)
    groups = group_runs(outcomes)
    best = best_tuned_groups(groups)
    first_seed = outcomes[0].spec.seed
    curves = [
        _first_seed_run(group, first_seed)
        for group in (
            *_kind(groups, SAFERATE),
            *[group for group in best.values() if group],
            *_kind(groups, PEER),
        )
    ]
    curves = [outcome for outcome in curves if outcome is not None]
    _plot_curves(curves, "step", workdir / LOSS_VS_STEP, first_seed)
    _plot_curves(curves, "wall_time_s", workdir / LOSS_VS_TIME, first_seed)
    _plot_saferate_learning_rates(_kind(groups, SAFERATE), workdir / SAFERATE_LEARNING_RATE)
    _plot_grid(config, groups, workdir / LOSS_VS_LEARNING_RATE)
    text = _report_text(config, outcomes, groups, best)
    metrics.atomic_write(workdir / REPORT_FILE, lambda file: file.write(text))


def group_runs(outcomes: Sequence[RunOutcome]) -> dict[tuple, _Group]:
    """Outcomes grouped over seeds by ``(kind, optimizer, learning_rate)``, in run order."""
    groups: dict[tuple, _Group] = collections.defaultdict(list)
    for outcome in outcomes:
        spec = outcome.spec
        groups[(spec.kind, spec.optimizer, spec.learning_rate)].append(outcome)
    return dict(groups)


def best_tuned_groups(groups: dict[tuple, _Group]) -> dict[str, _Group | None]:
    """Per tuned base, the learning rate's runs with the lowest mean final training loss.

    A learning rate at which any seed diverged does not qualify; a base whose every learning
    rate diverged maps to None.
    """
    best: dict[str, tuple[float, _Group] | None] = {}
    for (kind, optimizer, _), group in groups.items():
        if kind != TUNED:
            continue
        best.setdefault(optimizer, None)
        losses = _values(group, "final_train_loss")
        if None in losses:
            continue
        mean = statistics.fmean(losses)
        if best[optimizer] is None or mean < best[optimizer][0]:
            best[optimizer] = (mean, group)
    return {base: None if entry is None else entry[1] for base, entry in best.items()}


def _kind(groups: dict[tuple, _Group], kind: str) -> list[_Group]:
    return [group for key, group in groups.items() if key[0] == kind]


def _first_seed_run(group: _Group, seed: int) -> RunOutcome | None:
    return next((outcome for outcome in group if outcome.spec.seed == seed), None)


def _values(group: _Group, field: str) -> list[float | None]:
    """The ``field`` of each run; None for a diverged run's losses, accuracy and target time."""
    return [
        None
        if outcome.record["diverged"] and field in _UNDEFINED_IF_DIVERGED
        else outcome.record[field]
        for outcome in group
    ]


def _mean_std(values: Sequence[float | None], spec: str, std_spec: str = ".2g") -> str:
    finite = [value for value in values if value is not None]
    if not finite:
        return "—"
    text = format(statistics.fmean(finite), spec)
    if len(finite) > 1:
        text += " ± " + format(statistics.stdev(finite), std_spec)
    if len(finite) < len(values):
        text += f" ({len(finite)}/{len(values)} seeds)"
    return text


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [value for value in values if value is not None]
    return statistics.fmean(finite) if finite else None


def _time_to_target(group: _Group) -> str:
    times = _values(group, "time_to_target_s")
    reached = [time for time in times if time is not None]
    mean = format(statistics.fmean(reached), ".2f") if reached else "never"
    return f"{mean} ({len(reached)}/{len(times)})"


def _diverged(group: _Group) -> str:
    return f"{sum(outcome.record['diverged'] for outcome in group)}/{len(group)}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator == 0:
        return "—"
    return f"{numerator / denominator:.3g}"


def _label(group: _Group) -> str:
    spec = group[0].spec
    if spec.kind == SAFERATE:
        return f"**SafeRate({spec.base})**"
    if spec.kind == TUNED:
        return f"{spec.optimizer}, best tuned"
    return spec.optimizer


def _learning_rate_cell(group: _Group) -> str:
    rate = group[0].spec.learning_rate
    return "—" if rate is None else f"{rate:g}"


def _refused_steps(outcome: RunOutcome) -> int:
    return sum(1 for row in outcome.rows if row.get("learning_rate") == 0)


def _problem_lines(config: ml_collections.ConfigDict, outcomes: Sequence[RunOutcome]) -> list[str]:
    model = config.model
    if model.name == "mlp":
        model_text = f"MLP, hidden layers {tuple(model.hidden_sizes)}, {model.activation}"
    else:
        model_text = (
            f"CNN, conv features {tuple(model.conv_features)} (kernel {model.kernel_size}, "
            f"{model.pooling} pooling {model.pool_size}), dense {tuple(model.dense_sizes)}, "
            f"{model.activation}"
        )
    dataset = config.dataset
    train_size = "all" if dataset.train_size == -1 else f"first {dataset.train_size:,}"
    test_size = "all" if dataset.test_size == -1 else f"first {dataset.test_size:,}"
    batch = "full batch" if dataset.batch_size == -1 else f"mini-batches of {dataset.batch_size}"
    seeds = sorted({outcome.spec.seed for outcome in outcomes})
    window = config.compare.final_loss_window
    final = "the training loss at the last step" + (
        f" (mean over the last {window} steps)" if window > 1 else ""
    )
    return [
        f"- Model: {model_text}; {config.dtype}.",
        f"- Data: `{dataset.name}`, {train_size} training and {test_size} test images, {batch}.",
        f"- {_steps_per_run(config)} steps per run; seeds {', '.join(map(str, seeds))}.",
        f"- Final train loss: {final}, as logged in `metrics.jsonl` (for a full batch: the loss "
        "at the parameters before the last update).",
        "- Wall time: seconds inside training steps (compilation and evaluation excluded), "
        "measured one run after another on this machine; other processes sharing the CPU add "
        "noise.",
    ]


def _report_text(
    config: ml_collections.ConfigDict,
    outcomes: Sequence[RunOutcome],
    groups: dict[tuple, _Group],
    best: dict[str, _Group | None],
) -> str:
    lines = [
        f"# SafeRate vs tuned baselines and learning-rate-free peers: {config.model.name} "
        f"on {config.dataset.name}",
        "",
        *_problem_lines(config, outcomes),
        "",
        "Target of each seed (the lowest final training loss of any tuned run, which "
        "*time to target* is measured against):",
        "",
    ]
    for seed, target in seed_targets(outcomes).items():
        if target is None:
            lines.append(f"- seed {seed}: none (every tuned run diverged)")
        else:
            lines.append(
                f"- seed {seed}: {target.record['final_train_loss']:.4g} "
                f"({target.spec.description})"
            )
    lines += [
        "",
        "## Results",
        "",
        "Mean ± std over seeds. Time to target: mean over the seeds whose run reached it "
        "(reached/seeds).",
        "",
        "| method | learning rate | final train loss | test accuracy | wall time (s) "
        "| time to target (s) | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    table_groups = [group for group in best.values() if group] + _kind(groups, SAFERATE)
    table_groups += _kind(groups, PEER)
    for group in table_groups:
        lines.append(
            f"| {_label(group)} | {_learning_rate_cell(group)} "
            f"| {_mean_std(_values(group, 'final_train_loss'), '.4g')} "
            f"| {_mean_std(_values(group, 'test_accuracy'), '.4f')} "
            f"| {_mean_std(_values(group, 'wall_time_s'), '.2f')} "
            f"| {_time_to_target(group)} | {_diverged(group)} |"
        )
    for base, group in best.items():
        if group is None:
            lines.append(f"| {base}, best tuned | every learning rate diverged | | | | | |")
    lines += _versus_tuned(config, groups, best)
    lines += _saferate_steps(groups)
    lines += _grid_table(config, groups)
    lines += [
        "",
        "## Plots",
        "",
        f"![training loss vs step]({LOSS_VS_STEP})",
        f"![training loss vs wall time]({LOSS_VS_TIME})",
        f"![SafeRate learning rate vs step]({SAFERATE_LEARNING_RATE})",
        f"![final loss vs learning rate]({LOSS_VS_LEARNING_RATE})",
        "",
    ]
    return "\n".join(lines)


def _grid_cost(groups: dict[tuple, _Group], base: str, field: str) -> tuple[float, int]:
    """The summed ``field`` of a base's grid runs over all seeds, and the number of seeds."""
    runs = [
        outcome
        for (kind, optimizer, _), group in groups.items()
        if kind == TUNED and optimizer == base
        for outcome in group
    ]
    seeds = len({outcome.spec.seed for outcome in runs})
    return math.fsum(outcome.record[field] or 0.0 for outcome in runs), seeds


def _versus_tuned(
    config: ml_collections.ConfigDict,
    groups: dict[tuple, _Group],
    best: dict[str, _Group | None],
) -> list[str]:
    saferate = {group[0].spec.base: group for group in _kind(groups, SAFERATE)}
    lines = [
        "",
        "## SafeRate against the best tuned run of its base",
        "",
        "Ratios of means over seeds (SafeRate / best tuned; below 1: SafeRate lower). The grid "
        "cost is per seed: the summed wall time of the base's runs over the "
        f"{len(config.compare.learning_rates)} learning rates (elapsed: compilation and "
        "evaluation included).",
        "",
        "| base | best tuned lr | final loss ratio | wall time ratio | grid cost per seed (s) "
        "| grid elapsed per seed (s) | grid cost / SafeRate wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for base in [*best, *(base for base in saferate if base not in best)]:
        tuned, ours = best.get(base), saferate.get(base)
        cost, seeds = _grid_cost(groups, base, "wall_time_s")
        elapsed, _ = _grid_cost(groups, base, "elapsed_s")
        per_seed = cost / seeds if seeds else None
        ours_time = _mean(_values(ours, "wall_time_s")) if ours else None
        tuned_loss = _mean(_values(tuned, "final_train_loss")) if tuned else None
        ours_loss = _mean(_values(ours, "final_train_loss")) if ours else None
        lines.append(
            f"| {base} | {_learning_rate_cell(tuned) if tuned else '—'} "
            f"| {_ratio(ours_loss, tuned_loss)} "
            f"| {_ratio(ours_time, _mean(_values(tuned, 'wall_time_s')) if tuned else None)} "
            f"| {'—' if per_seed is None else format(per_seed, '.1f')} "
            f"| {format(elapsed / seeds, '.1f') if seeds else '—'} "
            f"| {_ratio(per_seed, ours_time)} |"
        )
    total, _ = _grid_cost_all(groups, "wall_time_s")
    total_elapsed, runs = _grid_cost_all(groups, "elapsed_s")
    lines += [
        "",
        f"The whole tuning grid ({runs} runs over all seeds and bases) cost {total:.1f} s of "
        f"training steps, {total_elapsed:.1f} s elapsed.",
    ]
    return lines


def _grid_cost_all(groups: dict[tuple, _Group], field: str) -> tuple[float, int]:
    runs = [outcome for key, group in groups.items() if key[0] == TUNED for outcome in group]
    return math.fsum(outcome.record[field] or 0.0 for outcome in runs), len(runs)


def _saferate_steps(groups: dict[tuple, _Group]) -> list[str]:
    saferate = _kind(groups, SAFERATE)
    if not saferate:
        return []
    lines = [
        "",
        "## SafeRate's steps",
        "",
        "Over all steps of all seeds. A refused step (learning rate 0) leaves the parameters "
        "unchanged; when the bound was not finite it also halves the trust region.",
        "",
        "| run | median learning rate | max learning rate | refused steps per run |",
        "|---|---|---|---|",
    ]
    for group in saferate:
        rates = [
            row["learning_rate"]
            for outcome in group
            for row in outcome.rows
            if row.get("learning_rate") is not None
        ]
        refused = [_refused_steps(outcome) for outcome in group]
        steps = group[0].record["steps"]
        lines.append(
            f"| {_label(group)} | {statistics.median(rates) if rates else 0:.3g} "
            f"| {max(rates, default=0):.3g} | {_mean_std(refused, '.1f')} of {steps} |"
        )
    return lines


def _grid_table(config: ml_collections.ConfigDict, groups: dict[tuple, _Group]) -> list[str]:
    bases = list(config.compare.bases)
    if not bases:
        return []
    lines = [
        "",
        "## The tuning grid: final train loss",
        "",
        "| learning rate | " + " | ".join(bases) + " |",
        "|---" * (len(bases) + 1) + "|",
    ]
    for rate in config.compare.learning_rates:
        cells = []
        for base in bases:
            group = groups.get((TUNED, base, float(rate)), [])
            diverged = sum(outcome.record["diverged"] for outcome in group)
            cell = _mean_std(_values(group, "final_train_loss"), ".4g")
            if diverged == len(group):
                cell = f"diverged ({diverged}/{len(group)})"
            elif diverged:
                cell = f"{cell}; {diverged} diverged"
            cells.append(cell)
        lines.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    return lines


def _style(outcome: RunOutcome, colors: dict[str, str]) -> dict[str, Any]:
    spec = outcome.spec
    if spec.kind == SAFERATE:
        return {"color": colors[spec.base], "linestyle": "-", "linewidth": 2.0}
    if spec.kind == TUNED:
        return {"color": colors[spec.base], "linestyle": "--", "linewidth": 1.2}
    return {"color": colors[spec.optimizer], "linestyle": ":", "linewidth": 1.5}


def _colors(outcomes: Sequence[RunOutcome]) -> dict[str, str]:
    names: list[str] = []
    for outcome in outcomes:
        spec = outcome.spec
        name = spec.optimizer if spec.kind == PEER else spec.base
        if name not in names:
            names.append(name)
    return {name: f"C{index % 10}" for index, name in enumerate(names)}


def _curve_label(outcome: RunOutcome) -> str:
    spec = outcome.spec
    if spec.kind == SAFERATE:
        return f"SafeRate({spec.base})"
    if spec.kind == TUNED:
        return f"{spec.optimizer} lr={spec.learning_rate:g} (best tuned)"
    return spec.optimizer


def _new_figure(width: float = 8.0, height: float = 5.0, columns: int = 1) -> tuple[Figure, Any]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def _save(figure: Figure, path: Path) -> None:
    metrics.atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100), mode="wb")


def _plot_curves(outcomes: Sequence[RunOutcome], x_field: str, path: Path, seed: int) -> None:
    figure, (axes,) = _new_figure(width=10.0)
    colors = _colors(outcomes)
    for outcome in outcomes:
        xs = [row[x_field] for row in outcome.rows]
        ys = [math.nan if row["train_loss"] is None else row["train_loss"] for row in outcome.rows]
        axes.plot(xs, ys, label=_curve_label(outcome), **_style(outcome, colors))
    if any(row["train_loss"] for outcome in outcomes for row in outcome.rows):
        axes.set_yscale("log")
    x_label = "step" if x_field == "step" else "wall time in training steps (s)"
    axes.set(xlabel=x_label, ylabel="training loss", title=f"Training loss, seed {seed}")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(figure, path)


def _plot_saferate_learning_rates(groups: Sequence[_Group], path: Path) -> None:
    figure, (axes,) = _new_figure()
    colors = _colors([group[0] for group in groups])
    positive = False
    for group in groups:
        outcome = group[0]
        rows = outcome.rows
        rates = [row.get("learning_rate") for row in rows]
        ys = [rate if rate else math.nan for rate in rates]
        positive = positive or any(rate for rate in rates)
        label = f"SafeRate({outcome.spec.base}), {_refused_steps(outcome)} refused steps"
        axes.plot(
            [row["step"] for row in rows], ys, label=label, **_style(outcome, colors), marker="."
        )
    if positive:
        axes.set_yscale("log")
    title = "SafeRate's learning rate (refused steps, rate 0, not drawn)"
    if groups:
        title += f", seed {groups[0][0].spec.seed}"
    axes.set(xlabel="step", ylabel="learning rate", title=title)
    axes.grid(alpha=0.3, which="both")
    if groups:
        axes.legend(fontsize="small")
    _save(figure, path)


def _plot_grid(config: ml_collections.ConfigDict, groups: dict[tuple, _Group], path: Path) -> None:
    bases = list(config.compare.bases) or ["(no tuned baselines)"]
    figure, axes_row = _new_figure(4.0 * len(bases), 4.0, columns=len(bases))
    saferate = {group[0].spec.base: group for group in _kind(groups, SAFERATE)}
    for axes, base in zip(axes_row, bases, strict=True):
        rates, means, stds, diverged = [], [], [], []
        for rate in config.compare.learning_rates:
            group = groups.get((TUNED, base, float(rate)))
            if not group:
                continue
            losses = _values(group, "final_train_loss")
            if None in losses:
                diverged.append(float(rate))
                continue
            rates.append(float(rate))
            means.append(statistics.fmean(losses))
            stds.append(statistics.stdev(losses) if len(losses) > 1 else 0.0)
        if rates:
            axes.errorbar(rates, means, yerr=stds, marker="o", capsize=3, label=f"{base} (tuned)")
        if base in saferate:
            loss = _mean(_values(saferate[base], "final_train_loss"))
            if loss is not None:
                axes.axhline(loss, color="k", linestyle="--", label=f"SafeRate({base})")
        if means:
            axes.set_yscale("log")
        if diverged:
            top = max(means) * 1.5 if means else 1.0
            axes.plot(diverged, [top] * len(diverged), "rx", markersize=9, label="diverged")
        axes.set_xscale("log")
        axes.set(xlabel="learning rate", ylabel="final training loss", title=base)
        axes.grid(alpha=0.3, which="both")
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    _save(figure, path)


def _steps_per_run(config) -> int:
    """``compare.num_steps`` when set, else the config's own ``num_steps``."""
    steps = config.compare.get("num_steps", -1)
    return steps if steps > 0 else config.num_steps
