"""Detects a script that starts worker processes without ``if __name__ == "__main__":``.

Worker processes started with ``forkserver`` or ``spawn`` (our default start methods, and
Dask's) import the user's main script again before they run anything. A script that calls
:func:`agc_core.runner.run_analysis` at its top level would then start the analysis again in
every worker, which Python refuses while the worker is still bootstrapping: each worker dies
and every chunk fails with "worker processes keep dying". This module finds that case in the
parent, before any worker starts, by locating the call in the main script's source.
"""

from __future__ import annotations

import ast
import logging
import os
import sys
from types import FrameType

log = logging.getLogger(__name__)


def _is_main_guard(node: ast.stmt) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either operand order)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1


def _main_script_frame(frame: FrameType | None) -> FrameType | None:
    """The module-level frame of the ``__main__`` script on the call stack, if any."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:  # interactive session, notebook, python -c: nothing is re-imported
        return None
    path = os.path.realpath(path)
    while frame is not None:
        if (frame.f_code.co_name == "<module>"
                and frame.f_globals.get("__name__") == "__main__"
                and os.path.realpath(frame.f_code.co_filename) == path):
            return frame
        frame = frame.f_back
    return None


def unguarded_call_site(frame: FrameType | None = None) -> tuple[str, int] | None:
    """Where the main script calls into us outside ``if __name__ == "__main__":``.

    Args:
        frame: where to start walking up the stack (default: the caller's frame).

    Returns:
        (script path, line) of the top-level statement that leads to this call, or None when
        there is no main script, its source cannot be read, or the call is guarded.
    """
    main_frame = _main_script_frame(frame if frame is not None else sys._getframe(1))
    if main_frame is None:
        return None
    path = main_frame.f_code.co_filename
    line = main_frame.f_lineno
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if _is_main_guard(node) and node.lineno <= line <= (node.end_lineno or node.lineno):
            return None
    return path, line


def unguarded_message(where: tuple[str, int], executor: str) -> str:
    """The one-line explanation of :func:`unguarded_call_site`'s finding."""
    path, line = where
    return (f"{path}:{line}: run_analysis is called at the top level of the script, but the "
            f"'{executor}' executor starts worker processes that import the script again "
            f"(they would all die); put the call under 'if __name__ == \"__main__\":' (or use "
            f"executor='iterative')")
