"""Resuming a run: finished chunks recorded atomically in the output folder (``--resume``).

Every chunk that succeeds is written at once to ``<output_dir>/resume/<run key>/<index>.npz``
(its histogram and its statistics; a temporary name, then a rename, so a record is complete or
absent). ``--resume`` reads the records whose run key matches (same tasks, seed, classifier,
configuration, ...) and processes only the other chunks; the merge in task order makes the
final histograms equal an uninterrupted run's. A run that completes removes its records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.histograms import HistArray

log = logging.getLogger(__name__)

RESUME_DIR = "resume"
VERSION = 1


def run_key(tasks: Sequence[Any], settings: dict[str, Any]) -> str:
    """A hash of everything that decides a chunk's histogram: the tasks and the settings.

    Args:
        tasks: the planned ``ChunkTask`` objects (frozen dataclasses).
        settings: seed, classifier, model folder, configuration (its text), processor, ...
    """
    h = hashlib.sha256()
    h.update(json.dumps([VERSION, settings], sort_keys=True, default=str).encode())
    for t in tasks:  # (a file's basket layout follows from the file: not part of the key)
        fields = [getattr(t, f.name) for f in dataclasses.fields(t) if f.name != "layout"]
        h.update(json.dumps(fields, default=str).encode())
    return h.hexdigest()[:20]


class Journal:
    """The records of the chunks one run finished (one folder per run key).

    Args:
        output_dir: the run's output folder.
        key: :func:`run_key` of the run.
        resume: keep and read existing records (else every old record is removed).
    """

    def __init__(self, output_dir: Path, key: str, resume: bool) -> None:
        self.root = Path(output_dir) / RESUME_DIR
        self.folder = self.root / key
        if not resume:
            self.clear()
        elif self.root.is_dir():
            for other in self.root.iterdir():  # records of other settings cannot be reused
                if other.name != key:
                    log.warning("--resume: ignoring the records in %s (another plan or other "
                                "settings)", other)
                    shutil.rmtree(other, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def load(self, result_type: type) -> dict[int, Any]:
        """The recorded results by task index (``result_type``: the worker's ChunkResult)."""
        out: dict[int, Any] = {}
        for path in sorted(self.folder.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    hist = HistArray(tuple(meta.pop("variations")), z["sumw"].copy(),
                                     z["sumw2"].copy())
                meta["input_warnings"] = tuple(meta.get("input_warnings", ()))
                meta["skipped"] = tuple(meta.get("skipped", ()))
                out[int(meta["index"])] = result_type(hist=hist, **meta)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("--resume: ignoring unreadable record %s (%s)", path, exc)
        return out

    def record(self, result: Any) -> None:
        """Write one finished chunk's result (histogram and statistics), atomically."""
        from agc_core.outputs import atomic_path

        if result.hist is None:
            return
        meta = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                if f.name != "hist"}
        meta["variations"] = list(result.hist.variations)
        try:
            with atomic_path(self.folder / f"{result.index}.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, sumw=result.hist.sumw, sumw2=result.hist.sumw2,
                         meta=np.array(json.dumps(meta)))
        except OSError as exc:
            log.warning("cannot record chunk %d for --resume: %s", result.index, exc)

    def clear(self) -> None:
        """Remove every record (the run completed, or a new run starts)."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
