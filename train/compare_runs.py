"""The runs of a comparison (kinds, specs, outcomes), shared by the runner and the report.

:mod:`train.compare` plans and runs them; :mod:`train.compare_report` writes ``report.md`` from
their outcomes. Both import this module, so neither needs the other's names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections

SAFERATE, TUNED, PEER = "saferate", "tuned", "peer"


@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """One training run of a comparison.

    Attributes:
      kind: ``saferate``, ``tuned`` (a base at a grid learning rate) or ``peer``.
      optimizer: the label in ``results.json``, e.g. ``saferate(adam)``, ``adam``, ``dog``.
      base: the base optimizer of SafeRate, tuned and line-search runs; None for other peers.
      learning_rate: the grid learning rate of a tuned run; None otherwise.
      seed: ``config.seed`` of the run.
      config: the complete training config of the run.
    """

    kind: str
    optimizer: str
    base: str | None
    learning_rate: float | None
    seed: int
    config: ml_collections.ConfigDict

    @property
    def directory(self) -> str:
        """The run's workdir, relative to the comparison's."""
        name = self.optimizer.replace("(", "_").replace(")", "")
        if self.learning_rate is not None:
            name = f"{name}_lr{self.learning_rate:.2e}"
        return f"seed{self.seed}/{name}"

    @property
    def description(self) -> str:
        if self.learning_rate is None:
            return self.optimizer
        return f"{self.optimizer} lr={self.learning_rate:g}"


@dataclasses.dataclass
class RunOutcome:
    """A finished run: its spec, its ``results.json`` record and its metrics rows."""

    spec: RunSpec
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    error: str | None = None
    reused: bool = False


def seed_targets(outcomes: Sequence[RunOutcome]) -> dict[int, RunOutcome | None]:
    """Per seed, the tuned run with the lowest final training loss (None if all diverged)."""
    targets: dict[int, RunOutcome | None] = {}
    for outcome in outcomes:
        seed = outcome.spec.seed
        targets.setdefault(seed, None)
        loss = outcome.record["final_train_loss"]
        if outcome.spec.kind != TUNED or outcome.record["diverged"]:
            continue
        best = targets[seed]
        if best is None or loss < best.record["final_train_loss"]:
            targets[seed] = outcome
    return targets
