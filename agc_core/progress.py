"""Progress bars that suit where they are shown: a terminal, a Jupyter notebook, or nowhere.

In a terminal: tqdm's text bar on stderr. In a Jupyter kernel: tqdm's widget bar when
``ipywidgets`` is installed (the ``notebook`` extra), else the same text bar (Jupyter shows it
as cell output); never ``tqdm.auto``'s "IProgress not found" warning. ``enabled=None`` shows
the bar in a terminal or a notebook and hides it otherwise (a log file, a pipe, CI).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell is running)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def has_widgets() -> bool:
    """Whether ipywidgets (tqdm's notebook bar) can be imported."""
    return importlib.util.find_spec("ipywidgets") is not None


def shown(enabled: bool | None) -> bool:
    """Whether a bar is drawn: ``enabled``, or by default in a terminal or a notebook."""
    if enabled is not None:
        return enabled
    return sys.stderr.isatty() or in_notebook()


def bar_class(notebook: bool | None = None) -> Any:
    """tqdm's widget bar in a notebook with ipywidgets, else its text bar.

    Args:
        notebook: whether the bar is for a notebook (None: :func:`in_notebook`).
    """
    if (in_notebook() if notebook is None else notebook) and has_widgets():
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    return tqdm


def progress_bar(total: int, enabled: bool | None = None, **kwargs: Any) -> Any:
    """A tqdm bar of ``total`` steps (disabled, not absent, when not :func:`shown`).

    Args:
        total: the number of steps.
        enabled: show it (None: in a terminal or a notebook).
        **kwargs: tqdm's (``unit``, ``desc``, ``leave``, ...).
    """
    show = shown(enabled)
    cls = bar_class() if show else bar_class(notebook=False)
    if cls.__module__.startswith("tqdm.notebook"):
        kwargs.pop("dynamic_ncols", None)  # a text-bar option
    return cls(total=total, disable=not show, **kwargs)


def redirect_logging(bar: Any) -> Any:
    """A context in which the root logger's console output goes through ``bar`` (tqdm's
    ``logging_redirect_tqdm``), or a no-op context for a disabled bar.

    ``tqdm.contrib`` imports ``tqdm.auto``, which in a Jupyter kernel without ipywidgets warns
    "IProgress not found" although no bar of it is made: that warning is silenced here.
    """
    import contextlib
    import logging
    import warnings

    if bar.disable:
        return contextlib.nullcontext()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.contrib.logging import logging_redirect_tqdm
    return logging_redirect_tqdm(loggers=[logging.getLogger()], tqdm_class=type(bar))
