"""Run outputs: the ``metrics.jsonl`` log, a progress bar, and the loss plot.

``metrics.jsonl`` holds one JSON object per logged step: ``step`` (updates done),
``train_loss`` and ``train_accuracy`` (of the batch the step trained on, at the parameters
before the update), ``learning_rate`` (the one the update used, ``null`` where it has no meaning),
``wall_time_s`` (cumulative seconds spent in training steps, compilation excluded), and
``test_loss``/``test_accuracy`` (after the update) on evaluation steps. Non-finite values (a
diverged run) are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tqdm
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a ``metrics.jsonl`` file (a workdir is accepted too) into a list of rows."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def atomic_write(path: str | os.PathLike, write: Any, mode: str = "w") -> None:
    """Writes a file through ``write(file)`` into a temporary file, then renames it into place."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, mode) as file:
            write(file)
        # mkstemp creates the file private (0600); results and reports are for everyone to read.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class MetricsWriter:
    """Appends rows to ``metrics.jsonl``, flushing after each, and keeps them for plotting.

    On a resumed run, rows past the restored step (written after the checkpoint by the run that
    was interrupted) are dropped first, so the file ends up as an uninterrupted run's would.
    """

    def __init__(self, workdir: str | os.PathLike, start_step: int, enabled: bool = True):
        self.path = Path(workdir) / METRICS_FILE
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            self.rows = [row for row in read_metrics(self.path) if row["step"] <= start_step]
        if enabled:
            atomic_write(self.path, lambda file: file.writelines(_line(row) for row in self.rows))
            self._file = open(self.path, "a")

    def write(self, row: Mapping[str, Any]) -> None:
        row = {key: _plain(value) for key, value in row.items()}
        self.rows.append(row)
        if self.enabled:
            self._file.write(_line(row))
            self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()


class ProgressBar:
    """A tqdm bar over training steps showing loss, learning rate and accuracies."""

    def __init__(self, num_steps: int, start_step: int, enabled: bool = True):
        self._bar = tqdm.tqdm(
            total=num_steps,
            initial=start_step,
            disable=not enabled,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
        )
        self._test_accuracy = None

    def update(self, row: Mapping[str, Any], steps: int = 1) -> None:
        if "test_accuracy" in row:
            self._test_accuracy = row["test_accuracy"]
        self._bar.set_postfix(
            loss=_format(row.get("train_loss"), ".4g"),
            lr=_format(row.get("learning_rate"), ".3g"),
            train_acc=_format(row.get("train_accuracy"), ".3f"),
            test_acc=_format(self._test_accuracy, ".3f"),
            refresh=False,
        )
        self._bar.update(steps)

    def close(self) -> None:
        self._bar.close()


def plot_metrics(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Plots train/test loss (log scale) and test accuracy against the step into ``path``."""
    rows = list(rows)
    figure = Figure(figsize=(10, 4))
    figure.subplots_adjust(left=0.07, right=0.98, wspace=0.25)
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    train = [(row["step"], row["train_loss"]) for row in rows if row["train_loss"] is not None]
    test = [row for row in rows if row.get("test_loss") is not None]
    if train:
        loss_axes.plot(*zip(*train, strict=True), label="train (batch)")
    if test:
        steps = [row["step"] for row in test]
        loss_axes.plot(steps, [row["test_loss"] for row in test], "o-", label="test")
        accuracy_axes.plot(steps, [row["test_accuracy"] for row in test], "o-", label="test")
    losses = [loss for _, loss in train] + [row["test_loss"] for row in test]
    if losses and all(math.isfinite(loss) and loss > 0 for loss in losses):
        loss_axes.set_yscale("log")
    loss_axes.set(xlabel="step", ylabel="loss", title=title)
    accuracy_axes.set(xlabel="step", ylabel="accuracy", title="test accuracy")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    accuracy_axes.grid(alpha=0.3)
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100), mode="wb")


def _plain(value: Any) -> Any:
    """JSON-ready Python value: numpy/JAX scalars become floats or ints, NaN/inf become None."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _format(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _line(row: Mapping[str, Any]) -> str:
    return json.dumps(row) + "\n"
