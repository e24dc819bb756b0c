"""One sample file on disk: generated, written atomically with fixed UUIDs and write time
(the same key gives the same bytes in any process), with its manifest entry."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig, DatasetParams
from agc_core.errors import ConfigError
from agc_core.lazyimport import LazyModule
from agc_core.synthetic.events import _sample_batches, _stream_id
from agc_core.synthetic.filter import sample_filter
from agc_core.synthetic.physics import DETECTOR, Detector, sample_tune

# imported when a file is written or checked in full: a warm run's dataset check needs neither
ak: Any = LazyModule("awkward")
uproot: Any = LazyModule("uproot")



# Bump whenever the generated content changes: cached datasets of another version are rebuilt.
GENERATOR_VERSION = "agc-core-synthetic-7"
COMPRESSIONS = ("zlib", "lz4", "zstd")


def _fast_zlib(level: int) -> Any:
    """uproot's ZLIB compression through libdeflate (uproot's ``ZLIB.library = "deflate"``;
    the ``deflate`` package is one of our dependencies): the same ROOT ``ZL`` blocks of zlib
    streams any reader decompresses, 3x the standard library's speed at level 1 here and
    deterministic, for files ~5 % larger (the standard library compresses uproot's
    big-endian columns a little better)."""
    zlib = uproot.ZLIB(level)
    zlib.library = "deflate"
    return zlib


def _compression(name: str, level: int) -> Any:
    """The uproot compression object for a name and level."""
    table = {"zlib": _fast_zlib, "lz4": uproot.LZ4, "zstd": uproot.ZSTD}
    if name not in table:
        raise ConfigError(f"synthetic dataset: unknown compression '{name}' "
                          f"(choose from {', '.join(COMPRESSIONS)})")
    return table[name](level)



def _file_key(params: DatasetParams, process: str, variation: str, file_idx: int
              ) -> dict[str, Any]:
    """What a single file's content depends on (stored in the manifest)."""
    key = {"generator": GENERATOR_VERSION, "process": process, "variation": variation,
           "file_idx": file_idx, "events": params.events_per_file, "seed": params.seed,
           "compression": params.compression, "level": params.compression_level,
           "tree": params.tree}
    gen_filter = sample_filter(params.generator_filter, process)
    if gen_filter is not None:
        key["filter"] = dataclasses.asdict(gen_filter)
    return key


def tune_digest(process: str, variation: str, det: Detector = DETECTOR) -> str:
    """Digest of the generator knobs of one sample (its tune and the detector), kept in each
    file's manifest entry: a cached file made with other knobs is regenerated even where the
    generator version was not bumped (the version still covers changes of the code)."""
    knobs = {"tune": dataclasses.asdict(sample_tune(process, variation)),
             "detector": dataclasses.asdict(det)}
    text = json.dumps(knobs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]



def _uuid_function(key: dict[str, Any]) -> Callable[[], uuid.UUID]:
    """Deterministic UUIDs for one file (uproot asks for one per file and directory).

    The JER draws are keyed on a file's ROOT UUID (:func:`agc_core.planning.file_identity`),
    so a regenerated dataset must get the same UUIDs to give the same ``pt_res_up``
    histograms: they are derived from what the file's content depends on.
    """
    seed = json.dumps(key, sort_keys=True).encode()
    counter = itertools.count()

    def make() -> uuid.UUID:
        n = next(counter).to_bytes(8, "little")
        return uuid.UUID(bytes=hashlib.blake2b(seed + n, digest_size=16).digest(), version=4)

    return make


#: the creation / modification time written into every synthetic file (uproot stamps the wall
#: clock otherwise), so that a file's bytes depend only on its key
WRITE_TIME = datetime.datetime(2015, 1, 1)
#: the uproot modules that read the clock while writing a file
_CLOCK_MODULES = ("uproot.writing._cascade", "uproot.writing._cascadetree",
                  "uproot.writing.writable")


class _FixedClock(datetime.datetime):
    """``datetime.datetime`` whose ``now()`` is :data:`WRITE_TIME`."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime.datetime:
        return WRITE_TIME


@contextlib.contextmanager
def _fixed_write_time() -> Iterator[None]:
    """Make uproot stamp :data:`WRITE_TIME` (TDatime of file header, directory, keys, baskets)
    while writing, so the same key gives the same bytes (and SHA-256) in any process."""
    shim = types.SimpleNamespace(**{k: getattr(datetime, k) for k in dir(datetime)
                                    if not k.startswith("__")})
    shim.datetime = _FixedClock
    import importlib

    modules = [importlib.import_module(name) for name in _CLOCK_MODULES]
    saved = [(m, m.datetime) for m in modules if hasattr(m, "datetime")]
    try:
        for m, _ in saved:
            m.datetime = shim  # type: ignore[attr-defined]
        yield
    finally:
        for m, orig in saved:
            m.datetime = orig  # type: ignore[attr-defined]



def _tree_title(key: dict[str, Any]) -> str:
    """Tree title recording what the file's content depends on (checked on reuse)."""
    return "agc-core synthetic " + json.dumps(key, sort_keys=True, separators=(",", ":"))


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_sample_file(path: Path, process: str, variation: str, file_idx: int,
                      params: DatasetParams, cfg: AnalysisConfig) -> dict[str, Any]:
    """Generate one file of one sample and write it atomically (temporary folder + rename).

    The bytes depend only on the file's key (fixed UUIDs and write time), not on the process
    or the time that writes it.

    Args:
        path: destination ROOT file.
        process: process name.
        variation: sample variation.
        file_idx: file index within the sample (part of the random seed).
        params: dataset parameters.
        cfg: analysis configuration (sample list, tree name).

    Returns:
        The file's manifest entry (key, size, sha256, entries; generated: the events
        generated, more than the entries for a process with a generator filter).
    """
    tune = sample_tune(process, variation)
    stream = _stream_id(cfg, process)
    key = _file_key(params, process, variation, file_idx)
    # a private folder, the final name: uproot writes the file's name into it
    tmp_dir = path.parent / f".tmp-{os.getpid()}"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / path.name
    try:
        with _fixed_write_time(), uproot.recreate(
                tmp, compression=_compression(params.compression, params.compression_level),
                uuid_function=_uuid_function(key)) as f:
            tree = None
            entries = generated = 0
            gen_filter = sample_filter(params.generator_filter, process)
            for batch in _sample_batches(tune, params.events_per_file, params.seed, stream,
                                         file_idx, gen_filter):
                entries += batch.n_events
                generated += batch.n_generated
                data = batch.to_awkward()
                if tree is None:
                    types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content)
                             for k, v in data.items()}
                    tree = f.mktree(params.tree, types, title=_tree_title(key),
                                    counter_name=lambda counted: f"number{counted}",
                                    field_name=lambda outer, inner: f"{outer}_{inner}")
                tree.extend(data)
        entry = {"key": key, "tune": tune_digest(process, variation),
                 "size": tmp.stat().st_size, "sha256": _sha256(tmp), "entries": entries,
                 "generated": generated}
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            tmp_dir.rmdir()
    return entry
