"""Tests of agc_core.forkserver: the early fork server's instructions protocol and when the
CLI starts it (the whole run with it: tests/test_runner.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from agc_core import forkserver


def test_preload_lists_the_worker_and_the_processor_module():
    assert forkserver.preload(None) == ["agc_core.executors", "agc_core.worker"]
    assert forkserver.preload("agc_core.processor:process_chunk")[-1] == "agc_core.processor"


@pytest.mark.parametrize("argv", [
    [], ["fit", "--histograms", "x.root"], ["run", "--executor", "dask"],
    ["-q", "run", "--start-method=spawn"], ["run", "--io-only"], ["run", "--backend", "reference"],
    ["run", "--config", "other.yaml"], ["run", "--help"]])
def test_cli_starts_it_only_for_a_default_run(argv, monkeypatch):
    started = []
    monkeypatch.setattr(forkserver, "start", lambda *a, **k: started.append(a))
    assert forkserver.start_for_cli(argv) is None and not started


def test_cli_default_run_starts_it_once(monkeypatch, tmp_path):
    monkeypatch.setattr(forkserver, "start",
                        lambda modules, config, prewarm, folder=None: tmp_path / "w")
    assert forkserver.start_for_cli(["-v", "run", "--workers", "2"]) == tmp_path / "w"
    assert forkserver.take_early() == tmp_path / "w" and forkserver.take_early() is None


def test_waits_for_the_instructions(tmp_path):
    path = tmp_path / ".warmup.json"
    w = {"wait_for": str(path), "parent": os.getppid(), "timeout": 5.0}
    writer = threading.Timer(0.05, forkserver.write_instructions, (path, {"path": "a.root"}))
    writer.start()
    t0 = time.monotonic()
    assert forkserver.wait_for_instructions(w) == {"path": "a.root"}
    assert time.monotonic() - t0 < 4.0 and path.exists()  # the main process removes it
    assert not list(tmp_path.glob("*.tmp"))


def test_gives_up_without_instructions(tmp_path):
    path = tmp_path / ".warmup.json"
    gone = {"wait_for": str(path), "parent": -1, "timeout": 5.0}
    assert forkserver.wait_for_instructions(gone) == {}  # the main process went away
    late = {**gone, "parent": os.getppid(), "timeout": 0.05}
    assert forkserver.wait_for_instructions(late) == {}
    forkserver.write_instructions(path, {})  # nothing to warm: removed by the fork server
    assert forkserver.wait_for_instructions(late) == {} and not path.exists()
