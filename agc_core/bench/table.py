"""A benchmark's result as a table (:class:`BenchTable`), and the timing helper
:func:`best_time`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class BenchTable:
    """One section's result: a titled table of rows (first column = name).

    Attributes:
        title: section title.
        columns: column headers.
        rows: table rows (strings or numbers).
        notes: lines printed under the table.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The table as aligned text."""
        cells = [[_fmt(c) for c in row] for row in [self.columns, *self.rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [self.title, "=" * len(self.title)]
        for k, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths, strict=True))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += self.notes
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or not np.isfinite(value):
            return f"{value:g}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)



def best_time(fn: Callable[[], Any], repeat: int, min_time: float = 0.0,
              clock: Callable[[], float] = time.process_time) -> float:
    """Smallest time (s) of ``repeat`` calls of ``fn`` (at least ``min_time`` in total).

    The default clock is the process CPU time (all threads), which makes "per core" rates
    robust against other load on the machine; pass ``time.perf_counter`` for wall time.
    """
    best = np.inf
    spent = 0.0
    k = 0
    while k < repeat or spent < min_time:
        t0 = clock()
        fn()
        dt = clock() - t0
        best = min(best, dt)
        spent += dt
        k += 1
    return best
