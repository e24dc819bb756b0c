"""``bench --what remote`` (:mod:`agc_core.bench.remote`): a tiny run against the session's
XRootD server (one scheme, RTT 0) has the table's structure and the local run's histograms;
the command passes its flags. No timing is asserted."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SMALL_CHUNK

from agc_core.bench import remote as bench_remote_module
from agc_core.bench.remote import (
    PLAN_COLUMNS,
    RUN_COLUMNS,
    bench_remote,
    format_table,
)
from agc_core.cli import main
from agc_core.histograms import histogram_digest


def files_under(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def tiny_rows(xrootd_server, served_dataset):
    """The benchmark on the served small dataset: local and http at RTT 0, 2 names per file in
    the planning table; in process, the options of the session's clean local run."""
    before = files_under(served_dataset.parent)
    rows = bench_remote(served_dataset, schemes=("http",), rtts_ms=(0.0,), copies=2,
                        server=xrootd_server,
                        options={"chunksize": SMALL_CHUNK, "inference": "none",
                                 "executor": "iterative"})
    assert files_under(served_dataset.parent) == before  # its copies removed
    assert xrootd_server.running()  # a server it was given is left running
    return rows


def test_run_rows_equal_the_local_run(tiny_rows, small_run):
    runs = [r for r in tiny_rows if r["table"] == "run"]
    assert [(r["input"], r["rtt_ms"], r["cache"]) for r in runs] == [
        ("local", None, "cold"), ("local", None, "warm"), ("http", 0.0, "cold"),
        ("http", 0.0, "warm")]
    want = histogram_digest(small_run.hist)  # the session's own local run, not the bench's
    for r in runs:
        assert r["complete"] and r["events"] == small_run.n_events, r
        assert r["hist_sha256"] == want, r
        assert r["same_hist"] is True
        assert r["rate_hz"] > 0 and r["plan_s"] > 0 and r["process_s"] > 0
        assert r["repeat"] == 1
    local_cold, local_warm, http_cold, _ = runs
    assert local_cold["local_fraction"] == local_warm["local_fraction"] == 1.0
    # of a local run just before each remote repetition (not of the local rows' medians)
    assert http_cold["local_fraction"] > 0
    assert local_cold["connections"] is None and local_cold["proxy_bytes"] is None
    # the remote run went through the proxy
    assert http_cold["connections"] >= 1 and http_cold["peak_open"] >= 1
    assert http_cold["proxy_bytes"] > 0
    # CPU seconds: the analysis's always, the server's and proxy's for the remote runs only
    assert all(r["cpu_s"] > 0 for r in runs)
    assert local_cold["cpu_others_s"] is None and http_cold["cpu_others_s"] > 0


def test_cpu_meter_counts_each_party():
    """A child process burning CPU counts as the analysis's; a process named as the server
    counts as the server's, not the analysis's."""
    import subprocess
    import sys
    import time

    from agc_core.bench.cpu import CpuMeter, process_cpu

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    server = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(60)"])
    try:
        meter = CpuMeter(server=server.pid)
        meter.start()
        subprocess.run([sys.executable, "-c", burn], check=True)
        while (process_cpu(server.pid) or 0.0) < 0.3:  # the "server" burnt its share
            time.sleep(0.05)
        cpu = meter.stop()
    finally:
        server.kill()
        server.wait()
    assert cpu["client"] >= 0.25 and cpu["server"] >= 0.25 and cpu["proxy"] == 0.0
    assert cpu["client"] < 0.3 + 0.25  # the server's 0.3 s are not in it


def served_files(served_dataset) -> int:
    data = json.loads(served_dataset.read_text())
    return sum(len(body["files"]) for process in data.values() for body in process.values())


def test_plan_rows(tiny_rows, served_dataset):
    plans = [r for r in tiny_rows if r["table"] == "plan"]
    n = served_files(served_dataset)
    assert [(r["input"], r["rtt_ms"], r["files"]) for r in plans] == [
        ("http", 0.0, n), ("http", 0.0, 2 * n)]
    assert all(r["failed"] == 0 and r["connections"] >= 1 for r in plans)
    assert plans[1]["tasks"] == 2 * plans[0]["tasks"] > 0


def test_table_layout(tiny_rows, served_dataset):
    text = format_table(tiny_rows)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("input") and "cache" in
                  line)
    assert re.split(r"\s{2,}", lines[header].strip()) == RUN_COLUMNS
    runs = lines[header + 2: header + 6]
    assert [line.split()[:3] for line in runs] == [
        ["local", "-", "cold"], ["local", "-", "warm"], ["http", "0", "cold"],
        ["http", "0", "warm"]]
    assert all(line.split()[-1] == "=" for line in runs)  # the same histograms
    assert "planning alone" in text
    n = served_files(served_dataset)
    plan_header = next(i for i, line in enumerate(lines) if line.startswith("input")
                       and "files" in line)
    assert re.split(r"\s{2,}", lines[plan_header].strip()) == PLAN_COLUMNS
    assert [line.split()[:3] for line in lines[plan_header + 2: plan_header + 4]] == [
        ["http", "0", str(n)], ["http", "0", str(2 * n)]]


def test_digest_sees_one_bin(small_run):
    """The histogram check means something: one bin changed changes the digest."""
    hist = small_run.hist.copy()
    assert histogram_digest(hist) == histogram_digest(small_run.hist)
    view = hist.view(flow=True)
    view.value[(0,) * view.value.ndim] += 1.0
    assert histogram_digest(hist) != histogram_digest(small_run.hist)


def test_command_passes_its_flags(monkeypatch, capsys):
    """``bench --what remote`` calls bench_remote with the flags and prints its table (the
    benchmark itself faked)."""
    seen = {}
    row = {"table": "run", "input": "local", "rtt_ms": None, "cache": "cold", "events": 10,
           "plan_s": 0.5, "process_s": 1.5, "rate_hz": 5.0, "local_fraction": 1.0,
           "bytes_network": 0, "bytes_cache": 0, "proxy_bytes": None, "connections": None,
           "peak_open": None, "same_hist": True, "repeat": 2}

    def fake(fileset, **kwargs):
        seen.update(kwargs, fileset=fileset)
        return [row]

    monkeypatch.setattr(bench_remote_module, "bench_remote", fake)
    rc = main(["bench", "--what", "remote", "--schemes", "root", "--rtt-ms", "0", "5",
               "--remote-repeat", "2", "--workers", "1", "--copies", "0", "--fileset", "x.json"])
    assert rc == 0
    assert seen["fileset"] == "x.json" and list(seen["schemes"]) == ["root"]
    assert list(seen["rtts_ms"]) == [0.0, 5.0]
    assert (seen["repeat"], seen["workers"], seen["copies"]) == (2, 1, 0)
    out = capsys.readouterr().out
    assert "remote inputs" in out and "median of 2 run(s)" in out
    assert "planning alone" not in out


def test_incomplete_runs_are_marked():
    base = {"table": "run", "rtt_ms": None, "cache": "cold", "events": 10, "plan_s": 0.5,
            "process_s": 1.5, "rate_hz": 5.0, "local_fraction": 1.0, "bytes_network": 0,
            "bytes_cache": 0, "proxy_bytes": None, "connections": None, "peak_open": None,
            "same_hist": True, "complete": True}
    rows = [{**base, "input": "local"}, {**base, "input": "http", "rtt_ms": 20.0,
                                         "complete": False, "same_hist": False},
            {**base, "input": "root", "rtt_ms": 20.0, "same_hist": False}]
    cells = [line.split()[-1] for line in format_table(rows).splitlines()[4:7]]
    assert cells == ["=", "incomplete", "DIFFERS"]


def test_proxies_never_reuse_a_port(monkeypatch):
    """This process's XRootD client keeps state per host:port: a proxy on a port an earlier
    one had is replaced (and closed)."""
    from types import SimpleNamespace

    import agc_core.bench.proxy as proxy_module

    ports = iter([7001, 7001, 7002])
    closed = []

    class FakeProxy:
        def __init__(self, target, rtt):
            self.port = next(ports)

        def close(self):
            closed.append(self.port)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    for name in ("DelayProxy", "DelayProxyProcess"):  # in this process or its own
        monkeypatch.setattr(proxy_module, name, FakeProxy, raising=False)
    monkeypatch.setattr(bench_remote_module, "_USED_PORTS", set())
    server = SimpleNamespace(port=1)
    with bench_remote_module._proxy(server, 20.0) as first:
        assert first.port == 7001
    with bench_remote_module._proxy(server, 20.0) as second:
        assert second.port == 7002
    assert closed == [7001, 7001, 7002]


def test_median_run_and_spread():
    runs = [{"rate_hz": 3.0, "n": "a"}, {"rate_hz": 1.0, "n": "b"}, {"rate_hz": 2.0, "n": "c"}]
    row = bench_remote_module._median_run(runs)
    assert (row["n"], row["repeat"], row["spread"]) == ("c", 3, 1.0)
    row = bench_remote_module._median_run([*runs, {"rate_hz": 4.0, "n": "d"}])
    assert (row["n"], row["repeat"], row["spread"]) == ("c", 4, 1.5)  # the lower middle
    one = bench_remote_module._median_run([{"plan_s": 2.0}], "plan_s")
    assert one["spread"] is None and one["repeat"] == 1


def test_fraction_of_local_is_of_the_paired_local_runs(monkeypatch, tmp_path):
    """Each remote repetition's rate is divided by that of the local run just before it (the
    median of the ratios), whatever the rates of runs minutes apart."""
    from pathlib import Path

    local, remote = Path("local.json"), Path("remote.json")
    rates = iter([100.0, 200.0, 50.0, 150.0,   # rep 0: local cold, warm; remote cold, warm
                  300.0, 300.0, 120.0, 270.0,  # rep 1
                  10.0, 10.0, 9.0, 1.0])       # rep 2

    def fake_run(options, proxy=None, server=None):
        return {"events": 1, "plan_s": 0.1, "process_s": 0.1, "rate_hz": next(rates),
                "fileset": options.fileset}

    monkeypatch.setattr(bench_remote_module, "timed_run", fake_run)
    cold, warm = bench_remote_module._cold_warm(
        "http", lambda port, out: remote, None, None, tmp_path, 3, 1, {}, local=local)
    assert cold["local_fraction"] == pytest.approx(0.5)    # of 0.5, 0.4, 0.9
    assert warm["local_fraction"] == pytest.approx(0.75)   # of 0.75, 0.9, 0.1
    assert cold["rate_hz"] == 50.0 and warm["rate_hz"] == 150.0  # the median remote runs


def test_cpu_ceiling_is_the_paired_local_cpu_over_the_runs():
    """The most 'of local' a CPU-bound run can reach: local CPU s over the run's CPU s plus
    the server's and the proxy's (None where a figure is missing)."""
    ceiling = bench_remote_module.cpu_ceiling
    assert ceiling({"cpu_s": 1.8}, {"cpu_s": 2.0, "cpu_others_s": 0.4}) == pytest.approx(0.75)
    assert ceiling({"cpu_s": 1.8}, {"cpu_s": 1.8, "cpu_others_s": None}) == pytest.approx(1.0)
    assert ceiling({"cpu_s": None}, {"cpu_s": 2.0}) is None
    assert ceiling({"cpu_s": 1.8}, {"cpu_s": 0.0}) is None


def test_cpu_ceiling_column_is_the_median_of_the_repetitions(monkeypatch, tmp_path):
    from pathlib import Path

    cpus = iter([2.0, 1.5, 4.0, 1.5,   # rep 0: local cold, warm; remote cold, warm
                 2.0, 1.5, 2.0, 1.5,   # rep 1
                 2.0, 1.5, 3.0, 3.0])  # rep 2

    def fake_run(options, proxy=None, server=None):
        return {"events": 1, "plan_s": 0.1, "process_s": 0.1, "rate_hz": 1.0,
                "cpu_s": next(cpus), "cpu_others_s": 0.0}

    monkeypatch.setattr(bench_remote_module, "timed_run", fake_run)
    cold, warm = bench_remote_module._cold_warm(
        "http", lambda port, out: Path("r.json"), None, None, tmp_path, 3, 1, {},
        local=Path("l.json"))
    assert cold["cpu_ceiling"] == pytest.approx(2 / 3)  # of 0.5, 1.0, 2/3
    assert warm["cpu_ceiling"] == pytest.approx(1.0)    # of 1.0, 1.0, 0.5
    table = bench_remote_module.format_table([
        {"table": "run", "input": "http", "rtt_ms": 0.0, "cache": "cold", "events": 1,
         "plan_s": 0.1, "process_s": 0.1, "rate_hz": 1.0, "local_fraction": 0.6,
         "cpu_ceiling": 0.7, "bytes_network": 0, "bytes_cache": 0, "proxy_bytes": 0,
         "connections": 1, "peak_open": 1}])
    assert "CPU ceiling" in table and "70 %" in table
