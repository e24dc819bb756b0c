"""Tests of agc_core.io: the reader against uproot, both on-disk layouts, chunking, bad inputs."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from agc_core import io
from agc_core.config import load_analysis_config
from agc_core.errors import ConfigError, InputError

SHARED = Path(__file__).resolve().parents[2] / "shared"
POET = SHARED / "agc" / "poet_layout_sample.root"
needs_poet = pytest.mark.skipif(not POET.exists(), reason="shared/ not available")

BRANCHES = ["jet_pt", "jet_eta", "jet_phi", "jet_e", "jet_btag", "jet_ch", "electron_pt",
            "muon_pt", "met_pt", "PV_npvs"]
# events per extend call: one basket each, so basket boundaries at 700, 2000, 2001, 3000, 5000
EXTENDS = [700, 1300, 1, 999, 2000]


def counter(name: str) -> str:
    return "number" + name


def collection(rng: np.random.Generator, counts: np.ndarray, fields: list[str]) -> ak.Array:
    total = int(counts.sum())
    out = {}
    for f in fields:
        if f == "ch":
            values = rng.choice(np.array([-1, 1], np.int32), total)
        else:
            values = (rng.exponential(40.0, total) + 20.0).astype(np.float32)
        out[f] = ak.unflatten(values, counts)
    return ak.zip(out)


def make_events(n: int, seed: int = 0) -> dict[str, ak.Array | np.ndarray]:
    """Random events in the AGC schema; some events without jets or leptons."""
    rng = np.random.default_rng(seed)
    njet = rng.poisson(3.0, n)
    njet[:10] = 0
    nele = rng.poisson(0.6, n)
    nele[700:2000] = 0  # one basket of electrons with no content at all
    return {
        "jet": collection(rng, njet, ["pt", "eta", "phi", "e", "btag", "ch"]),
        "electron": collection(rng, nele, ["pt", "eta"]),
        "muon": collection(rng, rng.poisson(0.6, n), ["pt", "eta"]),
        "met_pt": rng.exponential(30.0, n).astype(np.float32),
        "PV_npvs": rng.integers(0, 40, n).astype(np.int32),
    }


def write_file(path: Path, events: dict, extends: list[int],
               compression: uproot.compression.Compression | None = None) -> Path:
    """Write events with uproot (float[] layout, counters number<obj>), one basket per extend."""
    comp = uproot.ZLIB(1) if compression is None else compression
    with uproot.recreate(path, compression=comp) as f:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                 for k, v in events.items()}
        f.mktree("events", types, counter_name=counter)
        start = 0
        for size in extends:
            f["events"].extend({k: v[start:start + size] for k, v in events.items()})
            start += size
    return path


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("io") / "small.root"
    return write_file(path, make_events(sum(EXTENDS)), EXTENDS)


@pytest.fixture(autouse=True)
def _fresh_cache():
    yield
    io.close_files()


def uproot_reference(path, branches, start, stop, tree="events"):
    """Flat content and offsets from plain uproot with library="ak"."""
    with uproot.open(path) as f:
        arrays = f[tree].arrays(branches, entry_start=start, entry_stop=stop, library="ak",
                                how=dict)
    columns, offsets = {}, {}
    for name, arr in arrays.items():
        if arr.ndim == 1:
            columns[name] = ak.to_numpy(arr)
        else:
            columns[name] = ak.to_numpy(ak.flatten(arr))
            offsets[name] = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(arr)))])
    return columns, offsets


def assert_chunk_equals_uproot(path, branches, start, stop):
    chunk = io.read_chunk(path, branches, start, stop)
    columns, offsets = uproot_reference(path, branches, start, stop)
    assert (chunk.n_events, chunk.entry_start, chunk.entry_stop) == (stop - start, start, stop)
    assert set(chunk.columns) == set(branches)
    for name in branches:
        got, want = chunk.columns[name], columns[name]
        assert got.dtype == want.dtype and got.dtype.isnative, name
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, want, err_msg=f"{name} [{start}, {stop})")
        if name in offsets:
            off = chunk.offsets[io.collection_of(name)]
            assert off.dtype == np.int64 and len(off) == stop - start + 1 and off[0] == 0
            np.testing.assert_array_equal(off, offsets[name], err_msg=name)
    assert set(chunk.offsets) == {io.collection_of(n) for n in offsets}
    return chunk


# ---- equality with uproot ----

def test_whole_file_equals_uproot(small_file):
    chunk = assert_chunk_equals_uproot(small_file, BRANCHES, 0, sum(EXTENDS))
    assert set(chunk.offsets) == {"jet", "electron", "muon"}
    assert chunk.columns["jet_pt"].dtype == np.float32
    assert chunk.columns["jet_ch"].dtype == np.int32
    assert np.all(np.diff(chunk.offsets["jet"])[:10] == 0)  # events without jets
    # bytes_read = all baskets of the branches read
    with uproot.open(small_file) as f:
        t = f["events"]
        assert chunk.bytes_read == sum(int(t[b].compressed_bytes) for b in BRANCHES)


def test_random_ranges_equal_uproot(small_file):
    n = sum(EXTENDS)
    rng = np.random.default_rng(7)
    edges = np.cumsum(EXTENDS)
    ranges = [(0, 0), (n, n), (123, 123), (699, 701), (700, 2000), (1999, 2002), (2000, 2001),
              (2001, 2001), (0, 10), (4999, 5000)]
    ranges += [tuple(sorted(int(x) for x in rng.integers(0, n + 1, 2))) for _ in range(25)]
    ranges += [(int(e) - int(rng.integers(1, 50)), int(e) + int(rng.integers(1, 50)))
               for e in edges[:-1]]  # around each basket boundary
    for start, stop in ranges:
        assert_chunk_equals_uproot(small_file, BRANCHES, start, stop)


def test_empty_range(small_file):
    chunk = io.read_chunk(small_file, BRANCHES, 1500, 1500)
    assert chunk.n_events == 0 and chunk.bytes_read == 0
    assert chunk.columns["jet_pt"].dtype == np.float32 and len(chunk.columns["jet_pt"]) == 0
    np.testing.assert_array_equal(chunk.offsets["jet"], [0])
    assert len(chunk.columns["met_pt"]) == 0


def test_bytes_read_counts_overlapping_baskets(small_file):
    with uproot.open(small_file) as f:
        b = f["events"]["jet_pt"]
        sizes = [b.basket_compressed_bytes(i) for i in range(b.num_baskets)]
    assert io.read_chunk(small_file, ["jet_pt"], 10, 20).bytes_read == sizes[0]
    assert io.read_chunk(small_file, ["jet_pt"], 690, 2001).bytes_read == sum(sizes[:3])


def test_defaults_and_duplicates(small_file):
    chunk = io.read_chunk(small_file, ["jet_pt", "jet_pt", "met_pt"])
    assert list(chunk.columns) == ["jet_pt", "met_pt"]
    assert chunk.n_events == sum(EXTENDS) == io.num_entries(small_file)
    assert io.read_chunk(str(small_file), [], 5, 9).columns == {}
    as_url = io.read_chunk(f"file://{small_file}", ["jet_pt"], 5, 900)
    np.testing.assert_array_equal(as_url.columns["jet_pt"],
                                  io.read_chunk(small_file, ["jet_pt"], 5, 900).columns["jet_pt"])


@pytest.mark.parametrize("compression", [uproot.LZ4(1), uproot.ZSTD(1), uproot.LZMA(1), None],
                         ids=["lz4", "zstd", "lzma", "uncompressed"])
def test_other_compressions(tmp_path, compression):
    events = make_events(1500, seed=3)
    comp = uproot.ZLIB(0) if compression is None else compression
    path = write_file(tmp_path / "c.root", events, [600, 900], comp)
    for start, stop in [(0, 1500), (550, 650), (600, 601)]:
        assert_chunk_equals_uproot(path, BRANCHES, start, stop)


def test_fixed_size_arrays_fall_back_to_uproot(tmp_path):
    path = tmp_path / "fixed.root"
    pos = np.arange(30, dtype=np.float64).reshape(10, 3)
    with uproot.recreate(path) as f:
        f.mktree("events", {"vertex_xyz": np.dtype((np.float64, (3,))), "met_pt": np.float32})
        f["events"].extend({"vertex_xyz": pos, "met_pt": np.ones(10, np.float32)})
    chunk = io.read_chunk(path, ["vertex_xyz", "met_pt"], 2, 5)
    np.testing.assert_array_equal(chunk.columns["vertex_xyz"], pos[2:5].ravel())
    np.testing.assert_array_equal(chunk.offsets["vertex"], [0, 3, 6, 9])


def test_rewritten_file_is_reread(tmp_path):
    path = tmp_path / "f.root"
    write_file(path, make_events(300, seed=1), [300])
    first = io.read_chunk(path, ["jet_pt"]).columns["jet_pt"]
    write_file(path, make_events(400, seed=2), [400])
    second = io.read_chunk(path, ["jet_pt"])
    assert second.n_events == 400
    assert not np.array_equal(first[:10], second.columns["jet_pt"][:10])


# ---- the real (ROOT, std::vector) layout ----

@needs_poet
def test_poet_layout_equals_uproot():
    n = io.num_entries(POET)
    assert n == 2000
    with uproot.open(POET) as f:
        interp = f["events"]["jet_pt"].interpretation
    assert isinstance(interp, uproot.AsJagged) and interp.header_bytes == 10
    rng = np.random.default_rng(11)
    ranges = [(0, n), (0, 0), (790, 810), (1590, 1600)]
    ranges += [tuple(sorted(int(x) for x in rng.integers(0, n + 1, 2))) for _ in range(8)]
    for start, stop in ranges:
        assert_chunk_equals_uproot(POET, BRANCHES, start, stop)


@needs_poet
def test_poet_layout_equals_uproot_written_layout(tmp_path):
    """The ROOT std::vector layout and the uproot float[] layout read into identical arrays."""
    with uproot.open(POET) as f:
        t = f["events"]
        names = [k for k in t.keys() if not k.startswith("number")]
        arrays = t.arrays(names, library="ak", how=dict)
    colls = sorted({n.split("_", 1)[0] for n in names if arrays[n].ndim == 2})
    events = {c: ak.zip({n.split("_", 1)[1]: arrays[n] for n in names
                         if n.startswith(c + "_")}) for c in colls}
    events.update({n: ak.to_numpy(arrays[n]) for n in names if arrays[n].ndim == 1})
    rewritten = write_file(tmp_path / "rewritten.root", events, [700, 1300])
    with uproot.open(rewritten) as f:
        assert f["events"]["jet_pt"].typename == "float[]"
        assert f["events"]["jet_pt"].count_branch.name == "numberjet"
    for start, stop in [(0, 2000), (0, 0), (650, 1700), (1999, 2000)]:
        real = io.read_chunk(POET, names, start, stop)
        ours = io.read_chunk(rewritten, names, start, stop)
        assert real.offsets.keys() == ours.offsets.keys() == set(colls)
        for c in colls:
            np.testing.assert_array_equal(real.offsets[c], ours.offsets[c])
        for name in names:
            a, b = real.columns[name], ours.columns[name]
            assert a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)


# ---- chunking, branch sets, file checks, decompression ----

def test_chunk_ranges_follow_basket_boundaries(small_file):
    n = sum(EXTENDS)
    assert io.chunk_ranges(small_file, ["jet_pt", "met_pt"], 1000) == [
        (0, 2000), (2000, 3000), (3000, 5000)]
    assert io.chunk_ranges(small_file, ["jet_pt"], 600) == [
        (0, 700), (700, 1300), (1300, 2000), (2000, 3000), (3000, 3600), (3600, 4200),
        (4200, 5000)]
    assert io.chunk_ranges(small_file, ["jet_pt"], 10**6) == [(0, n)]
    # no basket boundary within 2 * step: cut at step (memory stays bounded)
    assert io.chunk_ranges(small_file, ["jet_pt"], 300)[:4] == [
        (0, 300), (300, 700), (700, 1000), (1000, 1300)]
    with pytest.raises(ConfigError, match="chunk size"):
        io.chunk_ranges(small_file, ["jet_pt"], 0)


def test_branch_set():
    cfg = load_analysis_config()
    assert io.branch_set(cfg, "analysis") == tuple(cfg.analysis_branches)
    assert io.branch_set(cfg, 4) == tuple(cfg.io_branch_sets[4])
    assert io.branch_set(cfg, "50%") == tuple(cfg.io_branch_sets[50])
    with pytest.raises(ConfigError, match=r"unknown branch set '7'.*analysis, 4, 15, 25, 50"):
        io.branch_set(cfg, "7")


def test_check_file(small_file):
    info = io.check_file(small_file, ["jet_pt", "met_pt"])
    assert info.num_entries == sum(EXTENDS)
    assert "numberjet" in info.branches and "jet_pt" in info.branches
    assert info.compressed_bytes > 0
    with pytest.raises(InputError, match="has no branch 'jet_ptt'; did you mean 'jet_pt'"):
        io.check_file(small_file, ["jet_ptt"])


def test_zlib_backends_agree():
    data = np.random.default_rng(0).normal(size=50_000).astype(">f4").view(np.uint8)
    packed = np.frombuffer(zlib.compress(data.tobytes(), 1), np.uint8)
    assert io.zlib_backend() in io.ZLIB_BACKENDS
    for name, backend in io.ZLIB_BACKENDS.items():
        out = np.empty(len(data), np.uint8)
        assert backend(packed, out) == len(data), name
        np.testing.assert_array_equal(out, data, err_msg=name)


def _block(algo: bytes, compressed: bytes, size: int) -> bytes:
    return (algo + b"\x08" + len(compressed).to_bytes(3, "little") + size.to_bytes(3, "little")
            + compressed)


def test_decompress_multiple_blocks_and_errors():
    a, b = b"a" * 1000 + bytes(range(256)), b"xyz" * 500
    payload = np.frombuffer(_block(b"ZL", zlib.compress(a), len(a))
                            + _block(b"ZL", zlib.compress(b), len(b)), np.uint8)
    out = np.empty(len(a) + len(b), np.uint8)
    io.decompress_into(payload, out)
    assert out.tobytes() == a + b
    with pytest.raises(ValueError, match="expected"):
        io.decompress_into(payload, np.empty(len(a) + len(b) + 1, np.uint8))
    bad = np.frombuffer(_block(b"QQ", b"12345", 5), np.uint8)
    with pytest.raises(ValueError, match="unknown compression algorithm"):
        io.decompress_into(bad, np.empty(5, np.uint8))


def test_benchmark_read_reports(small_file):
    res = io.benchmark_read(small_file, ["jet_pt", "electron_pt", "met_pt"], repeats=1)
    assert res["n_events"] == sum(EXTENDS)
    assert res["compressed_bytes"] > 0 and res["uncompressed_bytes"] > 0
    for k in ("agc_core", "uproot_ak"):
        assert res[k]["events_per_s"] > 0 and res[k]["mb_per_s"] > 0
    assert res["speedup"] > 0
    chunked = io.benchmark_read(small_file, ["jet_pt"], repeats=1, step=1000)
    assert chunked["compressed_bytes"] == res["compressed_bytes"] - sum(
        io.read_chunk(small_file, [b]).bytes_read for b in ("electron_pt", "met_pt"))


# ---- bad inputs: each gets one clear message naming file, tree, branch or range ----

def test_missing_file(tmp_path):
    path = tmp_path / "absent.root"
    with pytest.raises(InputError, match=re.escape(f"{path}: file not found")):
        io.read_chunk(path, ["jet_pt"])
    with pytest.raises(InputError, match="file not found"):
        io.num_entries(path)


def test_empty_and_non_root_files(tmp_path):
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=re.escape(f"{empty}: empty file (0 bytes)")):
        io.read_chunk(empty, ["jet_pt"])
    text = tmp_path / "text.root"
    text.write_text("hello, this is not ROOT at all" * 10)
    with pytest.raises(InputError, match=re.escape(f"{text}: not a ROOT file")):
        io.read_chunk(text, ["jet_pt"])
    with pytest.raises(InputError, match="is a directory"):
        io.read_chunk(tmp_path, ["jet_pt"])


def test_truncated_file(tmp_path, small_file):
    path = tmp_path / "cut.root"
    data = small_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=re.escape(f"{path}: truncated file: {len(data) // 2} "
                                                   f"bytes, but its ROOT header declares "
                                                   f"{len(data)}")):
        io.read_chunk(path, ["jet_pt"])


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.8, 0.95, 0.999])
def test_truncated_file_with_consistent_header(tmp_path, small_file, fraction):
    """A cut file whose header was patched to its new length: still one clear InputError."""
    data = bytearray(small_file.read_bytes())
    cut = int(len(data) * fraction)
    data = data[:cut]
    version = int.from_bytes(data[4:8], "big")
    if version >= 1000000:
        data[12:20] = cut.to_bytes(8, "big")
    else:
        data[12:16] = cut.to_bytes(4, "big")
    path = tmp_path / "cut.root"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=re.escape(str(path))):
        io.read_chunk(path, BRANCHES)


def test_corrupt_basket(tmp_path, small_file):
    with uproot.open(small_file) as f:
        b = f["events"]["jet_eta"]
        seek = int(b.member("fBasketSeek")[1])
        size = int(b.basket_compressed_bytes(1))
        start, stop = (int(x) for x in b.basket_entry_start_stop(1))
    data = bytearray(small_file.read_bytes())
    mid = seek + size // 2
    data[mid:mid + 64] = bytes(64)
    path = tmp_path / "corrupt.root"
    path.write_bytes(bytes(data))
    io.read_chunk(path, ["jet_pt"], start, stop)  # other branches still read
    message = (f"{path}: tree 'events', entries [{start}, {stop}), branch 'jet_eta': cannot read, "
               f"truncated or corrupt file?")
    with pytest.raises(InputError, match=re.escape(message)):
        io.read_chunk(path, ["jet_pt", "jet_eta"], start, stop)


def test_corrupt_bytes_never_escape_as_other_errors(tmp_path, small_file):
    data = small_file.read_bytes()
    rng = np.random.default_rng(5)
    for i in range(12):
        damaged = bytearray(data)
        for pos in rng.integers(100, len(data), 8):
            damaged[pos:pos + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        path = tmp_path / f"damaged{i}.root"
        path.write_bytes(bytes(damaged))
        try:
            io.read_chunk(path, BRANCHES)
        except InputError as exc:
            assert str(path) in str(exc)


def test_missing_tree(small_file):
    with pytest.raises(InputError, match=re.escape(f"{small_file}: no tree 'Events' (trees in "
                                                   f"the file: events)")):
        io.read_chunk(small_file, ["jet_pt"], tree="Events")


def test_missing_branch(small_file):
    message = f"{small_file}: tree 'events' has no branch 'jet_btg'; did you mean 'jet_btag'"
    with pytest.raises(InputError, match=re.escape(message)):
        io.read_chunk(small_file, ["jet_pt", "jet_btg"])
    with pytest.raises(InputError, match=r"has no branch 'zzz'$"):
        io.read_chunk(small_file, ["zzz"])


@pytest.mark.parametrize(("start", "stop"), [(-1, 10), (10, 5), (0, 5001), (5001, None)])
def test_entry_range_out_of_bounds(small_file, start, stop):
    with pytest.raises(InputError, match=r"entry range \[.*\) is out of bounds: tree 'events' "
                                         r"has 5000 entries"):
        io.read_chunk(small_file, ["jet_pt"], start, stop)


def test_inconsistent_multiplicities(tmp_path):
    path = tmp_path / "bad.root"
    pt = ak.Array([[1.0, 2.0], [], [3.0]])
    eta = ak.Array([[1.0, 2.0], [0.5], [3.0]])
    with uproot.recreate(path) as f:
        f.mktree("events", {"jet_pt": pt.type.content, "jet_eta": eta.type.content})
        f["events"].extend({"jet_pt": pt, "jet_eta": eta})
    message = (f"{path}: tree 'events', entries [0, 3): branches 'jet_pt' and 'jet_eta' of "
               f"collection 'jet' have different multiplicities (first at entry 1)")
    with pytest.raises(InputError, match=re.escape(message)):
        io.read_chunk(path, ["jet_pt", "jet_eta"])


@pytest.mark.parametrize("handler", ["FSSpecSource", "MultithreadedFileSource"])
def test_other_uproot_sources(small_file, monkeypatch, handler):
    """The sources uproot uses for remote files (threads, futures) give the same arrays."""
    source = (uproot.source.fsspec.FSSpecSource if handler == "FSSpecSource"
              else uproot.source.file.MultithreadedFileSource)
    monkeypatch.setattr(io.files, "LOCAL_SOURCE", source)
    io.close_files()
    for start, stop in [(0, 5000), (650, 2050), (10, 10)]:
        assert_chunk_equals_uproot(small_file, BRANCHES, start, stop)


# --- the open-file cache under threads (a closed memory map under a reader crashed) ----------

STRESS = r"""
import sys, threading
import numpy as np
from agc_core import io
io.files.OPEN_FILES_MAX = int(sys.argv[1])
paths = sys.argv[3:]
want = {p: io.read_chunk(p, ["jet_pt", "met_pt"]).columns["jet_pt"].sum() for p in paths}
io.close_files()
errors = []
def work(k):
    try:
        for r in range(int(sys.argv[2])):
            p = paths[(k * 7 + r) % len(paths)]
            got = io.read_chunk(p, ["jet_pt", "met_pt"]).columns["jet_pt"].sum()
            assert got == want[p], (p, got, want[p])
            if r % 17 == k:
                io.close_files()
    except Exception as exc:
        errors.append(repr(exc))
def run_threads():
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors[:3]
    assert io.open_files() <= io.OPEN_FILES_MAX
io.read_chunk(paths[0], ["jet_pt"])  # forked children inherit an open file: not theirs to use
import multiprocessing
children = [multiprocessing.get_context("fork").Process(target=run_threads) for _ in range(2)]
for c in children: c.start()
run_threads()
for c in children: c.join()
assert [c.exitcode for c in children] == [0, 0], [c.exitcode for c in children]
print("ok")
"""


def test_open_file_cache_survives_many_threads_and_processes(tmp_path):
    """8 threads x 18 files through a cache of 4, with close_files() in between, in this
    process and two forked ones at once: no crash, the same arrays.

    In a subprocess, so that a segfault fails this test instead of killing the test run (the
    reader used to unmap a file another thread was still reading: 2 crashes in 3 runs).
    """
    import subprocess
    import sys

    paths = [str(write_file(tmp_path / f"f{i}.root", make_events(3000, seed=i), [1000] * 3))
             for i in range(18)]
    proc = subprocess.run([sys.executable, "-c", STRESS, "4", "25", *paths],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


# --- uproot's own reading: fallback and the types the native decoders do not handle ---------


def test_native_decoding_problem_falls_back_to_uproot(small_file, monkeypatch, caplog):
    def misparse(*args, **kwargs):
        raise ValueError("a layout the native decoder misparses")

    monkeypatch.setattr(io.reader, "_read_jagged", misparse)
    io.close_files()
    with caplog.at_level("WARNING", logger="agc_core.io"):
        assert_chunk_equals_uproot(small_file, BRANCHES, 650, 2050)
    assert "the native decoder failed (ValueError: a layout the native decoder misparses); " \
           "read with uproot" in caplog.text


def test_strings_and_nested_arrays_are_read_through_uproot(tmp_path):
    """Types beyond numbers and lists of numbers: one Python object per event, via uproot."""
    path = tmp_path / "types.root"
    tags = ["a", "bb", "", "ccc"]
    grid = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    with uproot.recreate(path) as f:
        f.mktree("events", {"tag": "string", "grid": np.dtype(("f4", (3, 2))),
                            "met_pt": "float32"})
        f["events"].extend({"tag": np.array(tags, dtype=object), "grid": grid,
                            "met_pt": np.arange(4, dtype=np.float32)})
    io.check_file(path, ["tag", "grid", "met_pt"])  # accepted, not refused
    chunk = io.read_chunk(path, ["tag", "grid", "met_pt"], 1, 4)
    assert list(chunk.columns["tag"]) == tags[1:]
    assert chunk.columns["grid"].dtype == object
    assert [np.asarray(x).tolist() for x in chunk.columns["grid"]] == grid[1:].tolist()
    np.testing.assert_array_equal(chunk.columns["met_pt"], [1, 2, 3])
    assert chunk.offsets == {}


# --- RNTuple, ROOT's new columnar format (read through uproot) ------------------------------


def test_rntuple_gives_the_same_chunks_and_histograms(small_dataset, small_run, cfg, tmp_path):
    """The small dataset's analysis branches written as RNTuples (same file UUIDs, so the same
    keyed JER draws): identical chunks, and a run gives identical histograms."""
    import json
    from dataclasses import replace

    from agc_core.runner import run_analysis

    branches = list(cfg.analysis_branches)
    fileset = json.loads(small_dataset.read_text())
    for process in fileset.values():
        for variation in process.values():
            for f in variation["files"]:
                src, dst = small_dataset.parent / f["path"], tmp_path / f["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                with uproot.open(src) as fin:
                    arrays = fin["events"].arrays(branches, library="ak")
                    uuid = fin.file.uuid
                with uproot.recreate(dst, uuid_function=lambda u=uuid: u) as fout:
                    fout["events"] = {b: arrays[b] for b in branches}
    (tmp_path / small_dataset.name).write_text(json.dumps(fileset))
    src = small_dataset.parent / "ttbar__nominal" / "0.root"
    dst = tmp_path / "ttbar__nominal" / "0.root"
    with uproot.open(dst) as f:
        assert f.classnames() == {"events;1": "ROOT::RNTuple"}
    a, b = io.read_chunk(dst, branches, 300, 1700), io.read_chunk(src, branches, 300, 1700)
    for k in branches:
        assert a.columns[k].dtype == b.columns[k].dtype
        np.testing.assert_array_equal(a.columns[k], b.columns[k])
    for k in b.offsets:
        np.testing.assert_array_equal(a.offsets[k], b.offsets[k])
    r = run_analysis(replace(small_run.options, fileset=tmp_path / small_dataset.name,
                             output_dir=tmp_path / "out"))
    assert r.complete and r.n_events == small_run.n_events
    got, want = r.hist.view(flow=True), small_run.hist.view(flow=True)
    np.testing.assert_array_equal(got.value, want.value)
    np.testing.assert_array_equal(got.variance, want.variance)


def _mapped_rss_kb(path: Path) -> int:
    """Resident kB of this process's memory mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    target = str(path.resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == target
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_read_chunk_gives_back_the_file_pages(tmp_path, monkeypatch):
    """The baskets' pages of a memory-mapped file leave the worker's resident memory once
    decoded (else its footprint grows with the part of the file read while it stays open);
    the arrays read are unchanged by it."""
    path = write_file(tmp_path / "big.root", make_events(60_000, seed=4), [20_000] * 3,
                      compression=uproot.ZLIB(1))
    first = io.read_chunk(path, BRANCHES, 0, 60_000)
    assert first.bytes_read > 1_000_000
    kept = _mapped_rss_kb(path)
    again = io.read_chunk(path, BRANCHES, 0, 60_000)
    for name in BRANCHES:
        np.testing.assert_array_equal(first.columns[name], again.columns[name])
    io.close_files()
    monkeypatch.setattr(io.reader, "_drop_pages", lambda source, its: None)
    io.read_chunk(path, BRANCHES, 0, 60_000)
    without = _mapped_rss_kb(path)
    assert without * 1024 > first.bytes_read // 2  # what the test would see without it
    assert kept * 1024 < first.bytes_read // 4, (kept, without)


# ---- file layouts: reading a planned file without parsing its TTree ----

def assert_same_chunk(a, b):
    assert (a.n_events, a.entry_start, a.entry_stop, a.bytes_read) == (
        b.n_events, b.entry_start, b.entry_stop, b.bytes_read)
    assert a.columns.keys() == b.columns.keys() and a.offsets.keys() == b.offsets.keys()
    for name in a.columns:
        np.testing.assert_array_equal(a.columns[name], b.columns[name], strict=True)
    for name in a.offsets:
        np.testing.assert_array_equal(a.offsets[name], b.offsets[name], strict=True)


def layout_ranges(n, seed):
    rng = np.random.default_rng(seed)
    out = [(0, n), (0, 0), (n, n), (n - 1, n), (0, 1)]
    return out + [tuple(sorted(int(x) for x in rng.integers(0, n + 1, 2))) for _ in range(10)]


def test_layout_reads_what_the_reader_reads(small_file, monkeypatch):
    """Every range (across baskets, empty, at the ends) reads the same arrays and bytes with
    the planned layout as through uproot's TTree, which the layout path never opens."""
    layout = io.file_layout(small_file, BRANCHES)
    assert layout["num_entries"] == sum(EXTENDS)
    assert len(layout["branches"]["jet_pt"]["ranges"]) == len(EXTENDS)  # one basket each
    json.dumps(layout)  # (kept in the planner's JSON cache)
    usual = {r: io.read_chunk(small_file, BRANCHES, *r) for r in layout_ranges(
        sum(EXTENDS), 4)}
    io.close_files()
    monkeypatch.setattr(io.reader, "_tree",
                        lambda *a: pytest.fail("the layout path parsed the tree"))
    for r, chunk in usual.items():
        assert_same_chunk(io.read_chunk(small_file, BRANCHES, *r, layout=layout), chunk)


@needs_poet
def test_layout_of_the_real_root_layout():
    """ROOT's std::vector branches (10-byte entry headers) through the layout, too."""
    layout = io.file_layout(POET, BRANCHES)
    assert layout["branches"]["jet_pt"]["header"] == 10
    for r in layout_ranges(2000, 5):
        assert_same_chunk(io.read_chunk(POET, BRANCHES, *r, layout=layout),
                          io.read_chunk(POET, BRANCHES, *r))


def test_stale_or_wrong_layout_is_not_used(tmp_path, small_file):
    """A layout of a file that changed since, or that does not fit it, reads the usual way:
    the right data, or the usual message."""
    path = tmp_path / "f.root"
    write_file(path, make_events(300, seed=1), [300])
    stale = io.file_layout(path, ["jet_pt"])
    write_file(path, make_events(400, seed=2), [200, 200])
    assert_same_chunk(io.read_chunk(path, ["jet_pt"], 0, 400, layout=stale),
                      io.read_chunk(path, ["jet_pt"], 0, 400))
    wrong = io.file_layout(small_file, BRANCHES)
    wrong["branches"]["jet_pt"]["ranges"][1] = wrong["branches"]["jet_eta"]["ranges"][1]
    assert_same_chunk(io.read_chunk(small_file, BRANCHES, 0, sum(EXTENDS), layout=wrong),
                      io.read_chunk(small_file, BRANCHES, 0, sum(EXTENDS)))
    with pytest.raises(InputError, match="out of bounds"):
        io.read_chunk(small_file, BRANCHES, 0, sum(EXTENDS) + 1, layout=wrong)
    with pytest.raises(InputError, match=r"127\.0\.0\.1:1"):  # remote: needs the server
        io.file_layout("root://127.0.0.1:1//f.root", BRANCHES)


# ---- the package: its names load their module on first use ----

def test_the_package_names_resolve_to_their_modules():
    """Every name ``agc_core.io`` offers is its module's own object (a setting read at call
    time: its current value in the module that owns it)."""
    import importlib

    for name, module in io._API.items():
        owner = importlib.import_module(f"agc_core.io.{module}")
        assert getattr(io, name) is getattr(owner, name), name
    assert set(io.__all__) <= set(dir(io))
    assert io.OPEN_FILES_MAX is io.files.OPEN_FILES_MAX
    with pytest.raises(AttributeError, match="no attribute 'read_chunks'"):
        io.read_chunks  # noqa: B018
