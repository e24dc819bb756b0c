"""CPU seconds a benchmarked run cost, per party: the analysis (this process, its workers and
fork server), the XRootD server and the delaying proxy (Linux ``/proc``; None elsewhere).

On a 2-core machine the server and the proxy of ``bench --what remote`` share the cores with
the analysis, which a real remote server does not: these columns show how much of a remote
run's time is that simulation's, and how much the analysis's own reading costs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["CpuMeter", "process_cpu"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float | None:
    """User + system seconds of ``pid`` and of its children it has reaped (None: gone, or no
    ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / _TICK


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(int(name))
    return out


def _tree(root: int, exclude: set[int]) -> list[int]:
    """``root`` and its living descendants, without ``exclude`` and theirs."""
    children = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in exclude:
            continue
        out.append(pid)
        todo += children.get(pid, [])
    return out


@dataclass
class CpuMeter:
    """Measures CPU seconds between :meth:`start` and :meth:`stop`.

    Args:
        server: the XRootD server's pid (None: none).
        proxy: the proxy process's pid (None: none).
    """

    server: int | None = None
    proxy: int | None = None

    def _snapshot(self) -> dict[str, dict[int, float]]:
        others = {p for p in (self.server, self.proxy) if p is not None}
        parts = {"client": _tree(os.getpid(), others),
                 "server": [] if self.server is None else _tree(self.server, set()),
                 "proxy": [] if self.proxy is None else _tree(self.proxy, set())}
        return {name: {p: c for p in pids if (c := process_cpu(p)) is not None}
                for name, pids in parts.items()}

    def start(self) -> None:
        """Take the first snapshot."""
        self._before = self._snapshot() if os.path.isdir("/proc") else None

    def stop(self) -> dict[str, float | None]:
        """CPU seconds since :meth:`start`: ``client``, ``server``, ``proxy`` (None without
        ``/proc``; processes born meanwhile count from zero, those reaped count in their
        parent)."""
        if getattr(self, "_before", None) is None:
            return {"client": None, "server": None, "proxy": None}
        after = self._snapshot()
        return {name: _delta(self._before[name], pids) for name, pids in after.items()}


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(max(0.0, c - before.get(p, 0.0)) for p, c in after.items())

