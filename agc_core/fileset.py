"""Read an AGC fileset JSON into the samples to process, their files and xsec weights."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agc_core.config import AnalysisConfig
from agc_core.errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: process names in a fileset that are collision data (no cross section, not processed here)
DATA_PROCESSES = ("data",)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass(frozen=True)
class FileEntry:
    """One input file of a sample.

    Attributes:
        path: local path (absolute, or as given when absolute) or URL (``https://``, ``root://``).
        nevts: number of events the fileset declares for the file (the normalization; for a
            generator-filtered sample, the events generated before the filter).
        file_id: index of the file within its sample's list in the fileset (stable under
            ``n_files_max_per_sample``); keys the per-jet random draws.
        entries: the file's entries where the fileset declares them (optional ``entries``
            key: a filtered sample's file holds fewer entries than its ``nevts``); None:
            ``nevts``.
    """

    path: str
    nevts: int
    file_id: int
    entries: int | None = None

    @property
    def expected_entries(self) -> int:
        """The entries the file should hold: ``entries`` if declared, else ``nevts``."""
        return self.nevts if self.entries is None else self.entries


@dataclass(frozen=True)
class SampleFiles:
    """One sample (process, variation) with the files to process and its normalization.

    Attributes:
        process: process name, e.g. ``ttbar``.
        variation: sample variation, e.g. ``nominal`` or ``ME_var``.
        sample_id: index of (process, variation) in ``cfg.samples``; samples of a variation
            that the configuration does not list get indices after those.
        files: the files used (after ``n_files_max_per_sample``).
        nevts_total: sum of ``nevts`` over ``files``.
        xsec: cross section in pb.
        xsec_weight: ``xsec * luminosity / nevts_total``.
    """

    process: str
    variation: str
    sample_id: int
    files: tuple[FileEntry, ...]
    nevts_total: int
    xsec: float
    xsec_weight: float


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path.

    Args:
        path: a path or URL.

    Returns:
        True for strings like ``https://host/f.root``, ``root://host//f.root``, ``file:///f``.
    """
    return bool(_URL.match(path))


def resolve_path(path: str, base: Path) -> str:
    """Resolve a fileset file path: URLs and absolute paths unchanged, relative ones joined.

    Args:
        path: the path as written in the fileset.
        base: the folder of the fileset JSON (absolute).

    Returns:
        The path to open.
    """
    if is_url(path) or Path(path).is_absolute():
        return path
    return str(base / path)


def read_fileset_json(path: str | Path) -> Any:
    """Read and parse a fileset JSON file.

    Args:
        path: the fileset file.

    Returns:
        The parsed JSON document.

    Raises:
        InputError: the file is missing or unreadable, or not valid JSON (with line and column).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{p}: fileset file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{p}: fileset path is a directory, expected a JSON file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read fileset ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: malformed JSON at line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}") from exc


def _parse_files(raw: Any, where: str) -> list[tuple[str, int, int | None]]:
    """Validate the ``files`` list of one sample.

    Args:
        raw: the value of the sample's ``files`` key.
        where: ``"<fileset>: key 'process.variation.files'"`` prefix for messages.

    Returns:
        (path as written, nevts, entries or None) per file.

    Raises:
        InputError: not a list, empty, or an entry without a valid ``path`` or ``nevts``.
    """
    if not isinstance(raw, list):
        raise InputError(f"{where} must be a list of {{\"path\", \"nevts\"}} objects, "
                         f"got {type(raw).__name__}")
    if not raw:
        raise InputError(f"{where} is an empty file list")
    out = []
    for i, entry in enumerate(raw):
        item = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{item} must be an object with 'path' and 'nevts', "
                             f"got {type(entry).__name__}")
        if "path" not in entry:
            raise InputError(f"{item} has no 'path'")
        fpath = entry["path"]
        if not isinstance(fpath, str) or not fpath.strip():
            raise InputError(f"{item}.path must be a non-empty string, got {fpath!r}")
        if "nevts" not in entry:
            raise InputError(f"{item} ({fpath}) has no 'nevts'")
        nevts = entry["nevts"]
        if isinstance(nevts, bool) or not isinstance(nevts, int):
            raise InputError(f"{item}.nevts ({fpath}) must be an integer, got {nevts!r}")
        if nevts < 0:
            raise InputError(f"{item}.nevts ({fpath}) must not be negative, got {nevts}")
        entries = entry.get("entries")
        if entries is not None and (isinstance(entries, bool) or not isinstance(entries, int)
                                    or entries < 0):
            raise InputError(f"{item}.entries ({fpath}) must be an integer >= 0, "
                             f"got {entries!r}")
        out.append((fpath, nevts, entries))
    return out


def parse_fileset(raw: Any, cfg: AnalysisConfig, source: Path,
                  n_files_max_per_sample: int = -1) -> list[SampleFiles]:
    """Validate a parsed fileset document and build the samples to process.

    Args:
        raw: the parsed JSON (``{process: {variation: {"files": [{"path", "nevts"}]}}}``).
        cfg: the analysis configuration (cross sections, luminosity, samples).
        source: the fileset file (absolute); relative file paths are resolved against its folder.
        n_files_max_per_sample: use at most this many files per sample (the first ones);
            -1 uses all.

    Returns:
        The samples (the ``data`` process skipped), ordered by ``sample_id``.

    Raises:
        InputError: wrong structure, unknown process, bad file entry, empty file list.
        ConfigError: invalid ``n_files_max_per_sample``.
    """
    if (isinstance(n_files_max_per_sample, bool) or not isinstance(n_files_max_per_sample, int)
            or (n_files_max_per_sample < 1 and n_files_max_per_sample != -1)):
        raise ConfigError(f"n_files_max_per_sample must be -1 (all files) or a positive integer, "
                          f"got {n_files_max_per_sample!r}")
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{source}: the top level must be a non-empty object "
                         f"{{process: {{variation: {{\"files\": [...]}}}}}}")
    known = {s: i for i, s in enumerate(cfg.samples)}
    base = source.parent
    samples = []
    extra = 0
    for process, variations in raw.items():
        if process in DATA_PROCESSES:
            log.debug("%s: skipping process '%s' (collision data)", source, process)
            continue
        if process not in cfg.xsec_pb:
            raise InputError(f"{source}: process '{process}' is unknown: it has no cross section "
                             f"in {cfg.path} (known processes: {', '.join(cfg.xsec_pb)})")
        if not isinstance(variations, dict) or not variations:
            raise InputError(f"{source}: key '{process}' must be a non-empty object "
                             f"{{variation: {{\"files\": [...]}}}}")
        for variation, body in variations.items():
            key = f"{process}.{variation}"
            if not isinstance(body, dict):
                raise InputError(f"{source}: key '{key}' must be an object with a 'files' list")
            if "files" not in body:
                raise InputError(f"{source}: key '{key}' has no 'files' list")
            files = _parse_files(body["files"], f"{source}: key '{key}.files'")
            if (process, variation) in known:
                sample_id = known[(process, variation)]
            else:
                sample_id = len(known) + extra
                extra += 1
                log.warning("%s: variation '%s' of process '%s' is not listed in %s; processing "
                            "it as sample %d (it fills only its own variation)", source, variation,
                            process, cfg.path, sample_id)
            if n_files_max_per_sample != -1:
                files = files[:n_files_max_per_sample]
            entries = tuple(FileEntry(resolve_path(p, base), n, i, m)
                            for i, (p, n, m) in enumerate(files))
            nevts_total = sum(e.nevts for e in entries)
            if nevts_total <= 0:
                raise InputError(f"{source}: key '{key}': the files used declare 0 events in total "
                                 f"(nevts), cannot normalize the sample")
            xsec = cfg.xsec_pb[process]
            samples.append(SampleFiles(
                process=process,
                variation=variation,
                sample_id=sample_id,
                files=entries,
                nevts_total=nevts_total,
                xsec=xsec,
                xsec_weight=xsec * cfg.luminosity_pb / nevts_total,
            ))
    if not samples:
        raise InputError(f"{source}: no sample to process (only data?)")
    samples.sort(key=lambda s: s.sample_id)
    return samples


def load_fileset(path: str | Path, cfg: AnalysisConfig,
                 n_files_max_per_sample: int = -1) -> list[SampleFiles]:
    """Load an AGC fileset JSON into the samples to process.

    Args:
        path: the fileset JSON, e.g. ``ntuples_merged.json``.
        cfg: the analysis configuration (cross sections, luminosity, samples).
        n_files_max_per_sample: use at most this many files per sample; -1 uses all.

    Returns:
        One :class:`SampleFiles` per (process, variation), ``data`` skipped, ordered by
        ``sample_id``.

    Raises:
        InputError: missing file, malformed JSON, wrong structure, unknown process, a file entry
            without valid ``path``/``nevts``, an empty file list. Each message names the fileset
            and the key.
        ConfigError: invalid ``n_files_max_per_sample``.
    """
    source = Path(path).resolve()
    samples = parse_fileset(read_fileset_json(source), cfg, source, n_files_max_per_sample)
    log.info("fileset %s: %d samples, %d files, %d events declared (nevts)", source,
             len(samples), sum(len(s.files) for s in samples), sum(s.nevts_total for s in samples))
    return samples
