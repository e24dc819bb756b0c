"""The process pool's fork server, started before the rest of a run is even imported.

A run's workers are forked from a fork server (``multiprocessing`` ``forkserver``) that
imports the worker modules and warms numba once. That start-up (~0.75 s: a new interpreter,
its imports, numba's own start-up) used to begin only once the run had planned its tasks;
:func:`start` begins it first, so that it overlaps with this process's imports, argument
parsing, configuration, dataset check and planning.

The protocol: the fork server gets the environment variable :data:`WARMUP_ENV` naming an
instructions file that does not exist yet; once the tasks are known, the main process writes
it (:func:`write_instructions`: the first task's file and entries, the classifier), and the
fork server, which waits for it (:func:`wait_for_instructions`), warms the reader on it. The
worker side is :func:`agc_core.worker.warm_up_from_env`.

This module imports nothing but the standard library: ``python -m agc_core run`` calls
:func:`start_for_cli` before building its argument parser.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WARMUP_ENV = "AGC_CORE_WARMUP"
#: how long an early-started fork server waits for its warm-up instructions (a first run
#: generates the dataset meanwhile; a big remote fileset takes long to plan)
WARMUP_WAIT_S = 300.0
#: its polling interval: 5 ms at first, growing to 50 ms after a second
WARMUP_POLL_S = (0.005, 0.05)
#: modules the fork server of a run imports before forking workers (plus the processor's)
BASE_PRELOAD = ("agc_core.executors", "agc_core.worker")
DEFAULT_PROCESSOR = "agc_core.processor:process_chunk"
#: ``run`` options after which the CLI does not start the fork server early (the runner then
#: decides: another executor, start method or processor, another configuration, I/O only)
CLI_OPTIONS_OFF = ("--executor", "--start-method", "--backend", "--config", "--io-only",
                   "--scheduler-address", "-h", "--help")

_early: Path | None = None  # the instructions file of the fork server started early


def preload(processor: str | None) -> list[str]:
    """The modules a run's fork server imports: the executors, the worker, the processor."""
    return [*BASE_PRELOAD, *([processor.partition(":")[0]] if processor else [])]


def start(preload_modules: Sequence[str], config_path: str | None = None,
          prewarm: str | None = None, folder: str | Path | None = None) -> Path | None:
    """Start the fork server now; its warm-up waits for instructions in the returned file.

    Args:
        preload_modules: modules it imports first.
        config_path: the analysis configuration (for ``prewarm``).
        prewarm: a chunk processor (``module:function``) whose compiled kernels it loads on a
            few events generated in memory before waiting (numba's start-up: ~0.35 s), or None.
        folder: where the instructions file will be (default: the temporary folder).

    Returns:
        The instructions file (not created yet), or None: no fork server on this platform,
        one already running (it has warmed up, or never will), or it could not start.
    """
    import multiprocessing
    from multiprocessing import forkserver

    if ("forkserver" not in multiprocessing.get_all_start_methods() or os.environ.get(
            WARMUP_ENV) or getattr(forkserver._forkserver, "_forkserver_pid", None)):
        return None
    fd, name = tempfile.mkstemp(prefix=".warmup.", suffix=".json", dir=folder)
    os.close(fd)
    os.unlink(name)  # its appearance is the signal
    os.environ[WARMUP_ENV] = json.dumps({"wait_for": name, "parent": os.getpid(),
                                         "timeout": WARMUP_WAIT_S, "config": config_path,
                                         "processor": prewarm})
    try:
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload_modules))
        forkserver.ensure_running()
    except (OSError, ValueError) as exc:
        log.debug("fork server not started early: %s", exc)
        return None
    finally:
        os.environ.pop(WARMUP_ENV, None)
    return Path(name)


def start_for_cli(argv: Sequence[str]) -> Path | None:
    """``python -m agc_core run`` with the default executor, processor and configuration:
    start the fork server before anything else (kept for :func:`take_early`)."""
    global _early
    if not sys.platform.startswith("linux"):  # the pool's default start method is spawn there
        return None
    args = list(argv)
    while args and args[0] in ("-q", "--quiet", "-v", "--verbose"):
        args.pop(0)
    if not args or args[0] != "run" or any(a.split("=")[0] in CLI_OPTIONS_OFF
                                           for a in args[1:]):
        return None
    from agc_core.config import DEFAULT_ANALYSIS_CONFIG

    _early = start_for_run(DEFAULT_PROCESSOR, False, str(DEFAULT_ANALYSIS_CONFIG))
    return _early


def start_for_run(processor: str, io_only: bool, config_path: str,
                  folder: str | Path | None = None) -> Path | None:
    """:func:`start` for a run of ``processor``: it pre-warms the default processor's kernels
    when they are compiled (on a first run they compile elsewhere, in the background)."""
    from agc_core.compilation import kernels_cached

    prewarm = (not io_only and processor == DEFAULT_PROCESSOR
               and kernels_cached(mlp=False))
    return start(preload(None if io_only else processor), config_path,
                 processor if prewarm else None, folder)


def take_early() -> Path | None:
    """The instructions file of the fork server :func:`start_for_cli` started (once)."""
    global _early
    early, _early = _early, None
    return early


def exit_without_teardown() -> None:
    """In a fork server started by :func:`start`: when it exits (after the main process), skip
    the interpreter's teardown of numba and LLVM (~0.3 s during which a pipe such as ``python
    -m agc_core run | tee log`` stays open). Its children exit through ``os._exit`` anyway."""
    import atexit

    atexit.register(os._exit, 0)


def write_instructions(path: Path, spec: dict[str, Any]) -> None:
    """Write the warm-up instructions whole (the fork server reads them once they exist)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, path)


def wait_for_instructions(w: dict[str, Any]) -> dict[str, Any]:
    """In the fork server: the instructions once written ({} if they never come: the main
    process went away or took longer than ``timeout``; an empty file is removed here)."""
    path, start = Path(w["wait_for"]), time.monotonic()
    while not path.exists():
        waited = time.monotonic() - start
        if os.getppid() != w["parent"] or waited > float(w["timeout"]):
            return {}
        time.sleep(min(WARMUP_POLL_S[1], WARMUP_POLL_S[0] + waited * WARMUP_POLL_S[1]))
    spec = json.loads(path.read_text())
    if not spec:  # nothing to warm: the main process may be gone before it can remove it
        path.unlink(missing_ok=True)
    return spec
