"""Smoke tests of ``python -m agc_core bench``: every cheap section runs and prints its table."""

from __future__ import annotations

import pytest

from agc_core.cli import main
from agc_core.synthetic import generate_dataset


@pytest.fixture(scope="module")
def tiny_fileset(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_data")
    return generate_dataset(out, events_per_file=2000, files_per_sample=1, seed=5)


def test_kernels_section(capsys):
    rc = main(["bench", "--what", "kernels", "--events", "3000", "--reference-events", "500",
               "--mix-events", "0", "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "process_chunk, all variations" in out and "speedup" in out


def test_mlp_section(capsys):
    rc = main(["bench", "--what", "mlp", "--events", "3000", "--mix-events", "2000",
               "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "numba MLP" in out and "sample mix" in out


def test_io_section(capsys, tiny_fileset):
    rc = main(["bench", "--what", "io", "--fileset", str(tiny_fileset), "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "agc_core" in out and "uproot_ak (zlib)" in out and "50 %" in out
    assert "uproot_ak (libdeflate)" in out


def test_e2e_section_table(capsys, tiny_fileset, monkeypatch):
    """The e2e table (runs faked: the real ones take minutes): every row, and the ratios,
    memory at the default chunk size, warm and first run in the notes."""
    from types import SimpleNamespace

    from agc_core import bench, runner
    from agc_core.results import DEFAULT_CHUNKSIZE

    def fake_run(options):
        w = options.workers
        rate = (2.0e6 if options.io_only else 1.4e6) * w * (0.9 if w == 2 else 1.0)
        n = 4_000_000 if options.fileset == "one.json" else 18_000
        chunks = -(-n // min(options.chunksize, 2000 if n == 18_000 else n))
        return SimpleNamespace(metrics={"event_rate_steady_hz": rate,
                                        "event_rate_cputime_hz": rate / w},
                               num_workers=w, n_events=n, n_chunks=chunks, walltime=n / rate,
                               workers=[SimpleNamespace(max_rss_mb=300.0 if n > 18_000
                                                        else 150.0)] * w)

    monkeypatch.setattr(runner, "run_analysis", fake_run)
    monkeypatch.setattr(bench.e2e, "_big_fileset", lambda cfg, events: "one.json")
    monkeypatch.setattr(bench.e2e, "e2e_cli_runs", lambda fileset, tmp, repeat, first: (
        3.2, 31.5, {"plan": 24.0, "compile": 10.0, "compile_wait": 0.0}))
    rc = main(["bench", "--what", "e2e", "--fileset", str(tiny_fileset), "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    for row in ("I/O only (4 %)", "processing, 4x data", "one 1,000,000-event file",
                "warm default run", "first run"):
        assert row in out
    assert "2 workers / 1 worker, processing: 1.80x" in out
    assert "1 worker 70%" in out
    assert f"default chunk size ({DEFAULT_CHUNKSIZE:,} entries): 300 MB" in out
    assert "warm default run: 3.2 s" in out and "first run: 31.5 s" in out
    assert "scaling set" not in out


def test_e2e_scaling_fileset_rows(capsys, tiny_fileset, monkeypatch):
    """--scaling-fileset: 1 and 2 workers on that fileset, with their ratio in the notes."""
    from types import SimpleNamespace

    from agc_core import runner

    def fake_run(options):
        w = options.workers
        scale = 0.95 if options.fileset == "big9.json" and w == 2 else 0.8 if w == 2 else 1.0
        rate = 1.4e6 * w * scale
        return SimpleNamespace(metrics={"event_rate_steady_hz": rate,
                                        "event_rate_cputime_hz": rate / w},
                               num_workers=w, n_events=18_000, n_chunks=9,
                               walltime=18_000 / rate, workers=[SimpleNamespace(
                                   max_rss_mb=150.0)] * w)

    monkeypatch.setattr(runner, "run_analysis", fake_run)
    rc = main(["bench", "--what", "e2e", "--fileset", str(tiny_fileset), "--repeat", "1",
               "--no-cli-runs", "--big-file-events", "0", "--scaling-fileset", "big9.json"])
    out = capsys.readouterr().out
    assert rc == 0 and "scaling set: processing" in out
    assert "scaling set (big9.json): 2 workers / 1 worker, processing 1.90x steady, " \
           "1.90x wall" in out
    assert "2 workers / 1 worker, processing: 1.60x" in out


def test_warm_run_reuses_the_output_folder_of_a_run_before(monkeypatch, tmp_path):
    """The warm run is timed as a user's second run: into the output folder (entries cache,
    basket layouts) of an untimed first one; the first run gets fresh caches."""
    from agc_core import bench

    calls = []

    def fake(argv, cwd, env=None):
        calls.append((argv, env))
        return 3.0 + 0.1 * len(calls), {"stage_times_s": {"plan": 1.0}}

    monkeypatch.setattr(bench.e2e, "_timed_cli", fake)
    warm, first, stages = bench.e2e.e2e_cli_runs("fs.json", str(tmp_path), 2, True)
    assert len(calls) == 4 and len({tuple(a) for a, _ in calls[:3]}) == 1
    assert warm == 3.2 and first == 3.4 and stages == {"plan": 1.0}
    assert "AGC_CORE_DATA" in calls[3][1] and "NUMBA_CACHE_DIR" in calls[3][1]


def test_repeated_fileset_keeps_the_declared_entries(tmp_path):
    """A generator-filtered file's nevts (events generated) differs from its entries: the
    bench's bigger dataset keeps both, so its planning checks entries, without warnings."""
    import json

    from agc_core.bench.e2e import _repeated_fileset

    src = tmp_path / "fileset.json"
    src.write_text(json.dumps({"wjets": {"nominal": {"files": [
        {"path": "w/0.root", "nevts": 1_100_000, "entries": 100_000}]}}}))
    out = json.loads(_repeated_fileset(src, 3, tmp_path).read_text())
    files = out["wjets"]["nominal"]["files"]
    assert [(f["nevts"], f["entries"]) for f in files] == [(1_100_000, 100_000)] * 3
    assert all(f["path"] == str(tmp_path / "w" / "0.root") for f in files)
