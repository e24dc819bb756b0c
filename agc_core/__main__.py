"""Entry point of ``python -m agc_core``."""

import atexit
import contextlib
import logging
import os
import sys

from agc_core.cli import main


def exit_now(code: int) -> None:
    """Exit with ``code`` once everything is flushed and the exit handlers have run, without
    the interpreter's teardown of every module (numba's and LLVM's objects: ~0.25 s after a
    run). Output files are closed by then: they are written atomically, stage by stage."""
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        atexit._run_exitfuncs()  # multiprocessing's clean-up, temporary folders
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    finally:
        os._exit(code)


def _main() -> int:
    try:
        return main()
    except BrokenPipeError:  # e.g. piped into head: the rest of the output is not wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    exit_now(_main())
