"""Which kinks a bound met: a trace-time report of the non-smooth rules a walk applied.

A caller that can choose between bounds (SafeRate adds a degree-1 bound only where a degree-2
one pays kink terms) asks for the report around the call that builds the bound::

    with kink_report() as report:
        bounds = taylor_bounds(f, 2)(x0, region)
    report.sources  # e.g. ("relu", "max-pool"); empty for a smooth function

It records what the rules did while *tracing* (Python, once per trace; under ``jit`` or
``vmap`` too), not values: a relu whose units all keep one sign over the region is still
reported. Smooth named functions whose code uses ``max`` for stability (``logsumexp``,
``softplus``, ...) go through their sharp rules and are not reported.
"""

from __future__ import annotations

import contextlib
import dataclasses

_ACTIVE: list[KinkReport] = []


@dataclasses.dataclass
class KinkReport:
    """The non-smooth rules applied while the report was open, in the order they ran."""

    sources: list[str] = dataclasses.field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.sources)


@contextlib.contextmanager
def kink_report():
    """Collect, into the :class:`KinkReport` it yields, every kinked rule applied inside."""
    report = KinkReport()
    _ACTIVE.append(report)
    try:
        yield report
    finally:
        _ACTIVE.remove(report)


def note(source: str) -> None:
    """Called by a rule that encloses a kink or a switch (relu, max, pooling, where)."""
    for report in _ACTIVE:
        report.sources.append(source)
