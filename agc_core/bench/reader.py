"""The ``io`` section: the columnar reader against plain uproot (``library="ak"``), with
uproot's zlib and with libdeflate."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from agc_core.bench.sections import register_section
from agc_core.bench.table import BenchTable
from agc_core.config import AnalysisConfig

log = logging.getLogger(__name__)


@contextlib.contextmanager
def uproot_with_libdeflate() -> Iterator[None]:
    """Make plain uproot decompress ZLIB baskets with libdeflate, as our reader does.

    uproot has the switch (``ZLIB.library = "deflate"``, read by its decompressor class on
    every basket), but uproot 5.7 calls ``deflate.zlib_decompress(data, bufsize=n)``, which
    python-deflate 0.9 rejects (its argument is ``originalsize``); so the decompressor's
    method is replaced here by the same call with the size passed positionally.
    """
    import deflate
    import uproot.compression

    cls = uproot.compression._DecompressZLIB
    before = cls.__dict__["decompress"]

    def decompress(self: Any, data: Any, uncompressed_bytes: int | None = None) -> bytes:
        return deflate.zlib_decompress(data, uncompressed_bytes)

    cls.decompress = decompress
    try:
        yield
    finally:
        cls.decompress = before


@register_section("io", "the columnar reader vs plain uproot (library='ak'), uproot with zlib "
                        "and with libdeflate, on one file")
def bench_io(args: Any, cfg: AnalysisConfig) -> BenchTable:
    """Read the analysis branch set (and the I/O-benchmark sets) of one embedded-dataset file.

    One core, warm page cache, the file opened anew on every repeat; rates from the best wall
    time and from the best process CPU time (robust against other load on the machine).
    Plain uproot runs twice: with its default decompressor (the standard library's zlib) and
    with libdeflate, the one our reader uses, so the last speedup compares like with like.
    """
    import json
    from pathlib import Path

    from agc_core import io
    from agc_core.fileset import resolve_path
    from agc_core.synthetic import ensure_dataset

    fileset = Path(getattr(args, "fileset", None) or ensure_dataset(cfg=cfg))
    first = json.loads(fileset.read_text())["ttbar"]["nominal"]["files"][0]["path"]
    path = resolve_path(first, fileset.parent)
    table = BenchTable(
        f"io: reading {path} (one core, best of {args.repeat})",
        ["branch set", "reader", "events", "MB read", "events/s", "MB/s", "events/CPU s",
         "MB/CPU s", "agc_core speedup"],
    )
    sets = [("analysis", io.branch_set(cfg, "analysis"))]
    sets += [(f"{p} %", io.branch_set(cfg, p)) for p in sorted(cfg.io_branch_sets) if p != 4]
    for name, branches in sets:
        res = io.benchmark_read(path, branches, repeats=args.repeat)
        with uproot_with_libdeflate():
            res_deflate = io.benchmark_read(path, branches, repeats=args.repeat)
        for reader, r, key in (("agc_core", res, "agc_core"),
                               ("uproot_ak (zlib)", res, "uproot_ak"),
                               ("uproot_ak (libdeflate)", res_deflate, "uproot_ak")):
            st = r[key]
            speedup = "" if key == "agc_core" else \
                f"{res['agc_core']['events_per_cpu_s'] / st['events_per_cpu_s']:.2f}x"
            table.rows.append([name, reader, r["n_events"], r["compressed_bytes"] / 1e6,
                               st["events_per_s"], st["mb_per_s"], st["events_per_cpu_s"],
                               st["mb_per_cpu_s"], speedup])
        table.notes.append(f"{name}: our reader's zlib backend {res['zlib_backend']}")
    table.notes.append("speedup: events per CPU second of agc_core over that uproot run")
    return table
