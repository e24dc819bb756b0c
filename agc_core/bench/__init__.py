"""Benchmarks: kernels (and other stages) against the awkward reference, printed as tables.

``python -m agc_core bench [--what SECTION ...]``. Speed is never asserted in a test; this is
where it is measured. What it holds:

- :mod:`~agc_core.bench.table`: :class:`BenchTable` (a section's result) and :func:`best_time`;
- :mod:`~agc_core.bench.sections`: the registry (:func:`register_section`,
  :data:`SECTION_MODULES`) and :func:`run_bench`;
- the sections: :mod:`~agc_core.bench.kernels` (``kernels``), :mod:`~agc_core.bench.e2e`
  (``e2e``), :mod:`~agc_core.bench.reader` (``io``), :mod:`~agc_core.bench.mlp` (``mlp``),
  :mod:`~agc_core.bench.fit` (``fit``), :mod:`~agc_core.bench.remote` (``remote``, with its
  :mod:`~agc_core.bench.proxy` and :mod:`~agc_core.bench.xrootd` server).

A new section: a module with a function decorated by :func:`register_section`, listed in
:data:`SECTION_MODULES`; ``bench --what`` offers it.
"""

from agc_core.bench.e2e import BIG_FILE_EVENTS
from agc_core.bench.sections import (
    SECTION_MODULES,
    SECTIONS,
    SectionFn,
    load_section_modules,
    register_section,
    run_bench,
    section_names,
)
from agc_core.bench.table import BenchTable, best_time

__all__ = [
    "BIG_FILE_EVENTS", "SECTIONS", "SECTION_MODULES", "BenchTable", "SectionFn", "best_time",
    "load_section_modules", "register_section", "run_bench", "section_names",
]
