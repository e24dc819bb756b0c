"""Tests of agc_core.io.cache: verified, atomic, bounded, safe with concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest

from agc_core.errors import ConfigError
from agc_core.io.cache import ByteCache, file_key, parse_size

KEY = file_key("root://127.0.0.1:1//f.root", 1000, b"u" * 16)


def payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_put_get_and_containing_entry(tmp_path):
    cache = ByteCache(tmp_path)
    data = payload(1000)
    assert cache.get(KEY, 0, 1000) is None and cache.stats.misses == 1
    cache.put(KEY, 0, 1000, data)
    assert cache.get(KEY, 0, 1000).tobytes() == data
    # a range inside a stored one is served by it, in this and in a fresh process's view
    assert ByteCache(tmp_path).get(KEY, 100, 250).tobytes() == data[100:250]
    assert cache.has(KEY, 10, 20) and not cache.has(KEY, 900, 1001)
    assert cache.stats.bytes_from_cache == 1000


def test_identity_is_url_size_and_uuid():
    url = "https://127.0.0.1:1/f.root"
    keys = {file_key(url, 10, b"a" * 16), file_key(url, 11, b"a" * 16),
            file_key(url, 10, b"b" * 16), file_key(url + "x", 10, b"a" * 16)}
    assert len(keys) == 4


@pytest.mark.parametrize("damage", ["truncate", "flip", "extend", "header"])
def test_corrupt_entry_is_detected_removed_and_refetched(tmp_path, damage, caplog):
    cache = ByteCache(tmp_path)
    data = payload(4096, 1)
    cache.put(KEY, 0, 4096, data)
    (entry,) = [p for p, _, _ in cache.entries()]
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[:-100]
    elif damage == "flip":
        raw[-7] ^= 0xFF
    elif damage == "extend":
        raw += b"x"
    else:
        raw[:4] = b"XXXX"
    entry.write_bytes(bytes(raw))
    fresh = ByteCache(tmp_path)
    assert fresh.get(KEY, 0, 4096) is None  # never used
    assert fresh.stats.corrupt == 1 and not entry.exists()
    assert "corrupt entry" in caplog.text
    fresh.put(KEY, 0, 4096, data)  # fetched again
    assert fresh.get(KEY, 0, 4096).tobytes() == data


def test_short_answer_is_not_cached(tmp_path):
    cache = ByteCache(tmp_path)
    cache.put(KEY, 0, 100, payload(60))
    assert cache.get(KEY, 0, 100) is None and not list(cache.entries())


def _writer(folder: str, seed: int, rounds: int) -> None:
    cache = ByteCache(folder)
    for i in range(rounds):
        cache.put(KEY, 0, 200_000, payload(200_000, 7))  # all write the same entry
        cache.put(KEY, 200_000 + seed, 200_100 + seed, payload(100, seed + i))
        got = ByteCache(folder).get(KEY, 0, 200_000)
        assert got is not None and got.tobytes() == payload(200_000, 7)


def test_concurrent_writers_never_expose_half_an_entry(tmp_path):
    """Four processes write the same entry 30 times while reading it back: every read is
    whole and verified (atomic rename), nothing corrupt is found, no temporary file is left."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s, 30)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    cache = ByteCache(tmp_path)
    assert cache.get(KEY, 0, 200_000).tobytes() == payload(200_000, 7)
    assert cache.stats.corrupt == 0
    assert not [p for p in (tmp_path / "bytes").rglob(".*") if p.is_file()]


def test_size_bound_drops_least_recently_used(tmp_path):
    cache = ByteCache(tmp_path, max_bytes=3500)
    for i in range(5):
        cache.put(KEY, i * 1000, (i + 1) * 1000, payload(1000, i))
        path = cache._dir(KEY) / cache._name(i * 1000, (i + 1) * 1000)
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    cache.get(KEY, 0, 1000)  # used now: the most recent
    removed = cache.trim()
    assert removed > 0
    left = ByteCache(tmp_path)
    assert sum(s for _, s, _ in left.entries()) <= 3500
    assert left.get(KEY, 0, 1000) is not None  # recently used: kept
    assert left.get(KEY, 1000, 2000) is None and left.get(KEY, 2000, 3000) is None  # oldest
    assert left.get(KEY, 4000, 5000) is not None
    summary = left.summary()
    assert summary.entries == 3 and summary.files == 1 and "3 from 1 remote files" in \
        summary.describe().replace(",", "")
    assert left.clear() > 0 and left.summary().entries == 0


def test_parse_size():
    assert parse_size("20GB") == 20 * 1000**3
    assert parse_size("1.5 MB") == 1_500_000
    assert parse_size("0") == 0 and parse_size(None) is None
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("lots")


def test_cache_command_shows_trims_and_clears(tmp_path, capsys):
    """``python -m agc_core cache``: what the cache holds, --trim to a size (least recently
    used first), --clear; a size that is no size is one line of error."""
    from agc_core.cli import main

    cache = ByteCache(tmp_path)
    for i in range(4):
        cache.put(KEY, i * 1000, (i + 1) * 1000, payload(1000, i))
    (tmp_path / "plans" / "ab").mkdir(parents=True)
    (tmp_path / "plans" / "ab" / "abc.json").write_text("{}")
    assert main(["cache", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "4 from 1 remote files" in out and "plans        : 1" in out
    assert main(["cache", "--cache-dir", str(tmp_path), "--trim", "2500B"]) == 0
    assert "2 from 1 remote files" in capsys.readouterr().out
    assert main(["cache", "--cache-dir", str(tmp_path), "--clear"]) == 0
    out = capsys.readouterr().out
    assert "cleared" in out and "0 from 0 remote files" in out and "plans        : 0" in out
    with pytest.raises(SystemExit) as info:  # argparse's usage error
        main(["cache", "--cache-dir", str(tmp_path), "--trim", "lots"])
    assert info.value.code == 2 and "'lots' is not a size" in capsys.readouterr().err
