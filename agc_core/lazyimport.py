"""Modules imported on their first use (uproot and awkward: ~0.25 s a process)."""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """A stand-in for module ``name`` that imports it when an attribute is first looked up.

    A process that never reads a file through uproot (a worker reading planned files, a run
    whose dataset check needs no file opened) then never pays for its import.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"
