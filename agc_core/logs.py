"""Logging setup: console output plus one rotating log file shared by every worker process."""

from __future__ import annotations

import logging
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


def setup_run_logging(output_dir: str | Path | None, level: int = logging.INFO,
                      console: bool = True) -> LogSetup:
    """Configure the main process: console at ``level`` and ``agc.log`` in the output folder.

    The file always records INFO and above (DEBUG when ``level`` is DEBUG), whatever the
    console shows, so a ``--quiet`` run still leaves a useful log. Calling this again replaces
    the handlers it installed before.

    Args:
        output_dir: the run's output folder (created if needed), or None for no log file.
        level: the console level.
        console: whether to add a console (stderr) handler; the CLI already has one when it
            called ``logging.basicConfig``, then this only adjusts its level.

    Returns:
        The :class:`LogSetup` to hand to worker processes.
    """
    pkg = logging.getLogger("agc_core")
    _remove_own_handlers(pkg)
    file_level = min(level, logging.INFO)
    pkg.setLevel(file_level)
    root = logging.getLogger()
    if console:
        if root.handlers:
            for handler in root.handlers:
                handler.setLevel(level)
        else:
            handler = logging.StreamHandler()
            handler.setLevel(level)
            handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
            setattr(handler, _MARK, True)
            pkg.addHandler(handler)
            pkg.propagate = False
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
    """Remove (and close) the handlers installed by :func:`setup_run_logging`."""
    pkg = logging.getLogger("agc_core")
    _remove_own_handlers(pkg)
    pkg.propagate = True
