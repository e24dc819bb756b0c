"""Tests of agc_core.logs: one rotating log file shared by processes loses and mixes no line."""

from __future__ import annotations

import logging
import multiprocessing
import re

from agc_core import logs
from agc_core.logs import LogSetup, setup_worker_logging

LINES = 10_000
WORKERS = 2
LINE = re.compile(r"^\S+ \S+ (\d+) INFO agc_core\.test: worker (\d) line (\d+) x{40}$")


def _write_lines(log_file: str, worker: int, max_bytes: int) -> None:
    logs.MAX_BYTES = max_bytes  # rotate often: the rotation must lose nothing either
    logs.BACKUP_COUNT = 100
    setup_worker_logging(LogSetup(log_file, logging.INFO))
    log = logging.getLogger("agc_core.test")
    for i in range(LINES):
        log.info("worker %d line %d %s", worker, i, "x" * 40)
    for handler in logging.getLogger("agc_core").handlers:
        handler.close()


def test_two_processes_lose_and_interleave_no_line(tmp_path):
    log_file = tmp_path / logs.LOG_FILE_NAME
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_lines, args=(str(log_file), w, 300_000))
             for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    files = sorted(tmp_path.glob(logs.LOG_FILE_NAME + "*"))
    assert len(files) > 2  # it did rotate
    seen: dict[int, list[int]] = {w: [] for w in range(WORKERS)}
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            m = LINE.match(line)
            assert m, f"a broken or mixed line in {path.name}: {line[:120]!r}"
            seen[int(m.group(2))].append(int(m.group(3)))
    for w in range(WORKERS):
        assert sorted(seen[w]) == list(range(LINES)), f"worker {w} lost or doubled lines"
