"""Logging setup: console output plus one rotating log file shared by every worker process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from concurrent_log_handler import ConcurrentRotatingFileHandler

log = logging.getLogger(__name__)

LOG_FILE_NAME = "agc.log"
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 3

# marks the handlers this module installed, so repeated setup replaces instead of stacking
_MARK = "_agc_core_handler"
# level and propagation of the agc_core logger before setup_run_logging (restored after)
_SAVED: list = []


@dataclass(frozen=True)
class LogSetup:
    """What a worker process needs to log into the run's shared log file.

    Attributes:
        log_file: the rotating log file, or None for no file logging.
        level: the logging level of the ``agc_core`` logger tree.
    """

    log_file: str | None
    level: int = logging.INFO


def level_from_flags(quiet: bool = False, verbose: bool = False) -> int:
    """The console level for the CLI's ``--quiet`` / ``--verbose`` flags."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose else logging.INFO


def _remove_own_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
            handler.close()


def file_handler(log_file: str | Path, level: int = logging.DEBUG) -> logging.Handler:
    """A process-safe rotating file handler (``ConcurrentRotatingFileHandler``) on ``log_file``.

    Every process that logs into the same file must use such a handler: the file lock makes
    the writes and the rotation safe across processes.
    """
    handler = ConcurrentRotatingFileHandler(
        str(log_file), mode="a", maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
    )
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    setattr(handler, _MARK, True)
    return handler


class _ForwardAbove(logging.Handler):
    """Hands records at or above a level on to the handlers of another logger (the root).

    Lets ``agc_core`` log INFO into its file while what reaches the application's own
    handlers keeps the threshold the application had set.
    """

    def __init__(self, handlers: Callable[[], list[logging.Handler]], level: int) -> None:
        super().__init__(level)
        self.handlers = handlers

    def emit(self, record: logging.LogRecord) -> None:
        for handler in self.handlers():
            if record.levelno >= handler.level:
                handler.handle(record)


def setup_run_logging(output_dir: str | Path | None, level: int = logging.INFO,
                      console: bool = False) -> LogSetup:
    """Configure the main process for a run: ``agc.log`` in the output folder.

    The file records ``level`` (INFO, or DEBUG) and above, whatever the console shows, so a
    ``--quiet`` run still leaves a useful log. What reaches the application's (root) handlers
    keeps the threshold the ``agc_core`` logger had before. Calling this again replaces the
    handlers it installed before; :func:`teardown_run_logging` removes them.

    Args:
        output_dir: the run's output folder (created if needed), or None for no log file.
        level: the level of the log file.
        console: add a console (stderr) handler at the previous threshold when the
            application has none (e.g. a plain script).

    Returns:
        The :class:`LogSetup` to hand to worker processes.
    """
    pkg = logging.getLogger("agc_core")
    if not any(getattr(h, _MARK, False) for h in pkg.handlers):
        _SAVED[:] = [pkg.level, pkg.propagate]
    _remove_own_handlers(pkg)
    previous = pkg.getEffectiveLevel()
    pkg.setLevel(min(level, previous))
    pkg.propagate = False
    root = logging.getLogger()
    forward: logging.Handler
    if root.handlers:
        forward = _ForwardAbove(lambda: root.handlers, previous)
    elif console:
        forward = logging.StreamHandler()
        forward.setLevel(previous)
        forward.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    else:  # what Python would do without any handler: warnings to stderr
        last = logging.lastResort
        forward = _ForwardAbove(lambda: [last] if last else [], max(previous, logging.WARNING))
    setattr(forward, _MARK, True)
    pkg.addHandler(forward)
    file_level = level
    log_file = None
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        log_file = str(out / LOG_FILE_NAME)
        pkg.addHandler(file_handler(log_file, file_level))
    return LogSetup(log_file, file_level)


def setup_worker_logging(setup: LogSetup) -> None:
    """Configure a worker process: log records of ``agc_core`` go only to the shared file.

    Workers do not print: the main process reports what happened to each chunk. Safe to call
    more than once per process (the handler is replaced, not stacked).
    """
    pkg = logging.getLogger("agc_core")
    _remove_own_handlers(pkg)
    pkg.setLevel(setup.level)
    pkg.propagate = False
    if setup.log_file is None:
        return
    try:
        pkg.addHandler(file_handler(setup.log_file, setup.level))
    except OSError as exc:  # e.g. a remote Dask worker without the output folder
        pkg.propagate = True
        log.warning("cannot open log file %s on this worker: %s", setup.log_file, exc)


def teardown_run_logging() -> None:
    """Remove the handlers installed by :func:`setup_run_logging`, restore the level."""
    pkg = logging.getLogger("agc_core")
    _remove_own_handlers(pkg)
    level, propagate = _SAVED if _SAVED else (logging.NOTSET, True)
    pkg.setLevel(level)
    pkg.propagate = propagate
