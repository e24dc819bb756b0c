"""The benchmark sections: registered by name (:func:`register_section`) by the modules of
:data:`SECTION_MODULES`, run by :func:`run_bench`. A new section: a module with a function
decorated by :func:`register_section`, its name in :data:`SECTION_MODULES` (``bench --what``
then offers it)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from agc_core.bench.table import BenchTable
from agc_core.config import AnalysisConfig, load_analysis_config

#: a section: ``fn(args, cfg) -> BenchTable``; ``args``: the bench options (the
#: namespace :mod:`agc_core.cli.bench` parses)
SectionFn = Callable[[Any, AnalysisConfig], BenchTable]

#: registered sections: name -> (function, help)
SECTIONS: dict[str, tuple[SectionFn, str]] = {}

#: the modules whose import registers sections, in the order of ``--what all`` (a module that
#: is absent is skipped)
SECTION_MODULES: tuple[str, ...] = ("agc_core.bench.kernels", "agc_core.bench.e2e",
                                     "agc_core.bench.reader", "agc_core.bench.mlp",
                                     "agc_core.bench.fit", "agc_core.bench.remote")


def register_section(name: str, help: str) -> Callable[[SectionFn], SectionFn]:
    """Decorator registering a benchmark section ``fn(args, cfg) -> BenchTable``."""

    def deco(fn: SectionFn) -> SectionFn:
        SECTIONS[name] = (fn, help)
        return fn

    return deco




def section_names() -> list[str]:
    """The registered sections' names in the order of their modules in
    :data:`SECTION_MODULES` (after :func:`load_section_modules`): the choices of
    ``bench --what``."""
    load_section_modules()
    rank = {module: i for i, module in enumerate(SECTION_MODULES)}
    return sorted(SECTIONS, key=lambda name: rank.get(SECTIONS[name][0].__module__, len(rank)))


def run_bench(args: Any) -> int:
    """``python -m agc_core bench``: run the selected sections and print their tables.

    Args:
        args: the bench options (``what``: section names or ``all``; the rest as the
            sections read them: :mod:`agc_core.cli.bench` defines them).
    """
    cfg = load_analysis_config(getattr(args, "config", None))
    names = section_names() if "all" in args.what else args.what
    load_section_modules()
    for name in names:
        fn, _ = SECTIONS[name]
        table = fn(args, cfg)
        print(table.render())
        print()
    return 0


def load_section_modules() -> None:
    """Import :data:`SECTION_MODULES` (those present), which register their sections."""
    for module in SECTION_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
