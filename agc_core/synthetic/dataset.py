"""The dataset cache: the embedded dataset generated once (in parallel), checked against its
manifest and reused (:func:`ensure_dataset`, :func:`generate_dataset`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from agc_core.config import AnalysisConfig, DatasetParams, load_analysis_config
from agc_core.errors import ConfigError, InputError
from agc_core.lazyimport import LazyModule
from agc_core.synthetic.events import _stream_id, generate_events
from agc_core.synthetic.partons import _cluster_events
from agc_core.synthetic.physics import sample_tune
from agc_core.synthetic.writer import (
    GENERATOR_VERSION,
    _compression,
    _file_key,
    _sha256,
    _tree_title,
    tune_digest,
    write_sample_file,
)

# imported when a file is written or checked in full: a warm run's dataset check needs neither
ak: Any = LazyModule("awkward")
uproot: Any = LazyModule("uproot")

log = logging.getLogger(__name__)


FILESET_NAME = "fileset.json"
MANIFEST_NAME = "manifest.json"


def default_data_dir() -> Path:
    """Where the embedded dataset is cached: ``$AGC_CORE_DATA`` or ``~/.cache/agc-core/dataset``."""
    env = os.environ.get("AGC_CORE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "agc-core" / "dataset"



def resolve_params(cfg: AnalysisConfig, events_per_file: int | None,
                    files_per_sample: int | None, seed: int | None, compression: str | None,
                    compression_level: int | None) -> DatasetParams:
    """Fill unset parameters from ``cfg.dataset`` and validate them."""
    d = cfg.dataset
    comp = (compression or d.compression).lower()
    if compression_level is None:
        compression_level = d.compression_level
    params = DatasetParams(
        events_per_file=d.events_per_file if events_per_file is None else int(events_per_file),
        files_per_sample=(d.files_per_sample if files_per_sample is None
                          else int(files_per_sample)),
        seed=d.seed if seed is None else int(seed),
        compression=comp,
        compression_level=int(compression_level),
        tree=d.tree,
        generator_filter=d.generator_filter,
    )
    _compression(params.compression, params.compression_level)
    if params.events_per_file < 1 or params.files_per_sample < 1 or params.seed < 0:
        raise ConfigError("synthetic dataset: events per file and files per sample must be "
                          f">= 1 and the seed >= 0, got {params}")
    return params



def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _file_ok(path: Path, entry: dict[str, Any], tree: str, checksum: bool) -> bool:
    """Whether a cached file is intact and current.

    Checks the size, the entry count and generator key uproot reads back (and the SHA-256 if
    asked) against the manifest entry. A file whose size and modification time are those
    recorded when it last passed is taken as it is (a warm run's check of 18 files: 1 ms, not
    0.2 s); a pass records the time in ``entry`` (the manifest is rewritten with it).
    """
    try:
        st = path.stat()
        if st.st_size != entry["size"]:
            return False
        if not checksum and entry.get("mtime_ns") == st.st_mtime_ns:
            return True
        with uproot.open(path) as f:
            t = f[tree]
            if t.num_entries != entry["entries"] or t.title != _tree_title(entry["key"]):
                return False
    except Exception:  # any failure to read the file means "regenerate it"
        return False
    if checksum and _sha256(path) != entry["sha256"]:
        return False
    entry["mtime_ns"] = st.st_mtime_ns
    return True


def _relpath(process: str, variation: str, file_idx: int) -> str:
    """File path of one sample file relative to the dataset folder."""
    return f"{process}__{variation}/{file_idx}.root"


def default_generate_workers() -> int:
    """Processes that generate the dataset by default: one per core."""
    return max(1, os.cpu_count() or 1)


def _generate_file(job: tuple[Path, str, str, int, DatasetParams, AnalysisConfig]
                   ) -> dict[str, Any]:
    """Pool task: :func:`write_sample_file` of one (path, process, variation, file) job."""
    return write_sample_file(*job)


def _pool_context() -> Any:
    """Start method of the generation pool: ``fork`` where there is one (the workers need
    nothing but this module, already imported; no main-script re-import), else ``spawn``."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _write_files(jobs: list[tuple[Path, str, str, int, DatasetParams, AnalysisConfig]],
                 workers: int, bar: Any, status: Callable[[], str] | None
                 ) -> list[dict[str, Any]]:
    """Write every job's file, in ``workers`` processes (this one if 1); manifest entries in
    job order, whatever order the files finish in."""
    def done() -> None:
        if status is not None:
            bar.set_postfix_str(status(), refresh=False)
        bar.update()

    if workers <= 1 or len(jobs) <= 1:
        entries = []
        for job in jobs:
            log.debug("generating %s", job[0])
            entries.append(write_sample_file(*job))
            done()
        return entries
    if not _cluster_events.signatures:  # compile (or load) it once here, not in every worker
        _, process, variation, file_idx, params, cfg = jobs[0]
        generate_events(sample_tune(process, variation), 1, params.seed,
                        _stream_id(cfg, process), file_idx, 0)
    results: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_pool_context()) as pool:
        futures = {pool.submit(_generate_file, job): k for k, job in enumerate(jobs)}
        try:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                done()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return [results[k] for k in range(len(jobs))]


def _build(out_dir: Path, params: DatasetParams, cfg: AnalysisConfig, progress: bool | None,
           reuse: bool, checksum: bool, workers: int | None = None,
           status: Callable[[], str] | None = None) -> Path:
    """Write (or reuse) every file, then the manifest and the fileset JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    old: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            old = dict(json.loads(manifest_path.read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            old = {}
    jobs = [(p, v, i) for p, v in cfg.samples for i in range(params.files_per_sample)]
    if progress is None:  # a terminal or a notebook (agc_core.progress)
        from agc_core.progress import shown

        progress = shown(None)
    files: dict[str, Any] = {}
    todo = []
    digests = {sample: tune_digest(*sample) for sample in cfg.samples}  # once per sample
    for p, v, i in jobs:
        rel = _relpath(p, v, i)
        entry = old.get(rel) if reuse else None
        if (isinstance(entry, dict) and entry.get("key") == _file_key(params, p, v, i)
                and entry.get("tune") == digests[(p, v)]
                and _file_ok(out_dir / rel, entry, params.tree, checksum)):
            files[rel] = entry
        else:
            files[rel] = None
            todo.append((out_dir / rel, p, v, i, params, cfg))
    t0 = time.perf_counter()
    if todo:
        n_workers = min(default_generate_workers() if workers is None else max(1, workers),
                        len(todo))
        log.info("generating %d synthetic files in %s (%d processes)", len(todo), out_dir,
                 n_workers)
        from agc_core.progress import bar_class

        with bar_class()(total=len(todo), desc=f"generating synthetic AGC dataset ({n_workers} "
                                               f"processes)", unit="file",
                         disable=not progress) as bar:
            if status is not None:
                bar.set_postfix_str(status())
            for job, entry in zip(todo, _write_files(todo, n_workers, bar, status), strict=True):
                files[_relpath(*job[1:4])] = entry
    for rel in set(old) - set(files):  # files of an earlier, larger dataset
        (out_dir / rel).unlink(missing_ok=True)
    _write_json(manifest_path, {"generator": GENERATOR_VERSION,
                                "params": dataclasses.asdict(params), "files": files})
    fileset: dict[str, Any] = {}
    for p, v, i in jobs:
        rel = _relpath(p, v, i)
        entry = files[rel]
        # a filtered sample: nevts counts the generated events (its normalization), and the
        # file's own entries are declared beside them
        generated = entry.get("generated", entry["entries"])
        file_info = {"path": rel, "nevts": generated}
        if generated != entry["entries"]:
            file_info["entries"] = entry["entries"]
        fileset.setdefault(p, {}).setdefault(v, {"files": []})["files"].append(file_info)
    fileset_path = out_dir / FILESET_NAME
    _write_json(fileset_path, fileset)
    if todo:
        log.info("generated %d of %d synthetic files in %s (%.1f s)", len(todo), len(jobs),
                 out_dir, time.perf_counter() - t0)
    else:
        log.info("reusing the synthetic dataset in %s", out_dir)
    return fileset_path


def generate_dataset(out_dir: str | Path | None = None, events_per_file: int | None = None,
                     files_per_sample: int | None = None, seed: int | None = None,
                     compression: str | None = None, cfg: AnalysisConfig | None = None,
                     progress: bool | None = None, compression_level: int | None = None,
                     workers: int | None = None, status: Callable[[], str] | None = None
                     ) -> Path:
    """Generate the embedded synthetic dataset (every file, even if cached).

    Args:
        out_dir: destination folder (default :func:`default_data_dir`).
        events_per_file: events per file (default ``cfg.dataset.events_per_file``).
        files_per_sample: files per sample (default ``cfg.dataset.files_per_sample``).
        seed: random seed (default ``cfg.dataset.seed``).
        compression: ``zlib``, ``lz4`` or ``zstd`` (default ``cfg.dataset.compression``).
        cfg: analysis configuration (default: the packaged one).
        progress: show a progress bar (default: in a terminal or a notebook).
        compression_level: compression level (default ``cfg.dataset.compression_level``).
        workers: processes generating files at once (default: one per core); the files'
            bytes do not depend on it.
        status: called after each file; its text is shown beside the progress bar (e.g.
            the background kernel compilation's state).

    Returns:
        Path of the fileset JSON (AGC ``ntuples_merged.json`` format, relative paths).

    Raises:
        ConfigError: invalid parameters.
        InputError: the folder cannot be written.
    """
    cfg = cfg or load_analysis_config()
    params = resolve_params(cfg, events_per_file, files_per_sample, seed, compression,
                             compression_level)
    out = Path(out_dir) if out_dir is not None else default_data_dir()
    try:
        return _build(out, params, cfg, progress, reuse=False, checksum=False, workers=workers,
                      status=status)
    except OSError as exc:
        raise InputError(f"synthetic dataset: cannot write {out}: {exc}") from exc


def ensure_dataset(out_dir: str | Path | None = None, events_per_file: int | None = None,
                   files_per_sample: int | None = None, seed: int | None = None,
                   compression: str | None = None, cfg: AnalysisConfig | None = None,
                   progress: bool | None = None, compression_level: int | None = None,
                   checksum: bool = False, workers: int | None = None,
                   status: Callable[[], str] | None = None) -> Path:
    """The embedded dataset, generated on first use and cached.

    Files whose manifest entry matches the parameters, the generator version and the
    sample's generator knobs (:func:`tune_digest`), with the recorded size and entry count
    (and SHA-256 when ``checksum``), are reused; missing, damaged or outdated files are
    regenerated.

    Args:
        out_dir: cache folder (default :func:`default_data_dir`).
        events_per_file: see :func:`generate_dataset`.
        files_per_sample: see :func:`generate_dataset`.
        seed: see :func:`generate_dataset`.
        compression: see :func:`generate_dataset`.
        cfg: see :func:`generate_dataset`.
        progress: see :func:`generate_dataset`.
        compression_level: see :func:`generate_dataset`.
        checksum: also verify every file's SHA-256 (reads all files).
        workers: see :func:`generate_dataset`.
        status: see :func:`generate_dataset`.

    Returns:
        Path of the fileset JSON.

    Raises:
        ConfigError: invalid parameters.
        InputError: the folder cannot be written.
    """
    cfg = cfg or load_analysis_config()
    params = resolve_params(cfg, events_per_file, files_per_sample, seed, compression,
                             compression_level)
    out = Path(out_dir) if out_dir is not None else default_data_dir()
    try:
        return _build(out, params, cfg, progress, reuse=True, checksum=checksum,
                      workers=workers, status=status)
    except OSError as exc:
        raise InputError(f"synthetic dataset: cannot write {out}: {exc}") from exc
