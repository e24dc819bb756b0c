"""The training data: MLP features of the nominal samples extracted with our kernels, from a
fileset or generated in memory, labelled (ttbar = signal) and weighted."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig
from agc_core.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledFeatures:
    """Features of selected events with their labels and physical weights.

    Attributes:
        features: float32 (n, n_features).
        labels: int8 (n,), 1 for the signal process, 0 otherwise.
        weights: float64 (n,), ``xsec / n_events_read`` of the event's sample (positive).
        process: int16 (n,), index into ``processes``.
        processes: process names.
    """

    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    process: np.ndarray
    processes: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of events."""
        return int(self.labels.shape[0])


def collect_features(fileset: str | Path, cfg: AnalysisConfig, max_events_per_sample: int | None
                     = None, seed: int | None = None,
                     extra_events: Mapping[str, int] | None = None, extra_first_file: int = 0
                     ) -> dict[str, LabelledFeatures]:
    """Run our kernels over the nominal samples of a fileset and collect the MLP features.

    Args:
        fileset: fileset JSON (AGC format).
        cfg: analysis configuration (signal process, regions, branches).
        max_events_per_sample: read at most this many events per sample (from its first
            files); None reads everything.
        seed: JER seed passed to the feature extraction (features use nominal kinematics,
            so it does not matter); default: the dataset seed.
        extra_events: process -> events of its nominal sample generated in memory by the
            synthetic generator (dataset seed, file indices from ``extra_first_file`` on) and
            added to the ones read; the sample's weight becomes ``xsec / (read + generated)``.
        extra_first_file: first file index of the generated events (the number of files per
            sample of the dataset, so that they differ from the files' events).

    Returns:
        Region name -> labelled features of all selected events.

    Raises:
        InputError: unreadable fileset or files, or no events selected in a region.
    """
    from agc_core import io, processor
    from agc_core.fileset import load_fileset

    seed = cfg.dataset.seed if seed is None else seed
    samples = [s for s in load_fileset(fileset, cfg) if s.variation == "nominal"]
    processes = tuple(dict.fromkeys(s.process for s in samples))
    parts: dict[str, list[tuple[np.ndarray, float, int, int]]] = {r.name: [] for r in cfg.regions}
    for sample in samples:
        budget = max_events_per_sample if max_events_per_sample is not None else -1
        n_read, n_norm = 0, 0.0
        sample_parts: dict[str, list[np.ndarray]] = {r.name: [] for r in cfg.regions}
        for entry in sample.files:
            if budget == 0:
                break
            stop = io.num_entries(entry.path, cfg.dataset.tree)
            if budget > 0:
                stop = min(stop, budget)
            chunk = io.read_chunk(entry.path, cfg.analysis_branches, 0, stop,
                                  tree=cfg.dataset.tree)
            info = processor.SampleInfo(sample.process, sample.variation, sample.sample_id,
                                        entry.file_id, sample.xsec_weight)
            feats = processor.compute_features(chunk, info, cfg, seed)
            for region, arr in feats.items():
                sample_parts[region].append(np.asarray(arr, dtype=np.float32))
            n_read += chunk.n_events
            # a generator-filtered file's entries stand for its nevts generated events
            n_norm += chunk.n_events * entry.nevts / max(entry.expected_entries, 1)
            if budget > 0:
                budget -= chunk.n_events
        n_extra = (extra_events or {}).get(sample.process, 0)
        if n_extra > 0:
            info = processor.SampleInfo(sample.process, sample.variation, sample.sample_id,
                                        extra_first_file, sample.xsec_weight)
            for feats, n_gen in _generated_features(sample.process, n_extra, extra_first_file,
                                                    info, cfg, seed, cfg.dataset.seed):
                for region, arr in feats.items():
                    sample_parts[region].append(np.asarray(arr, dtype=np.float32))
                n_norm += n_gen
            n_read += n_extra
        if n_read == 0:
            continue
        _add_sample(parts, sample_parts, sample.process, sample.xsec / n_norm, processes, cfg)
        log.info("%s: %d events read, selected %s", sample.process, n_read,
                 {r: int(sum(a.shape[0] for a in v)) for r, v in sample_parts.items()})
    return _labelled(parts, processes, str(fileset))


def generated_features(cfg: AnalysisConfig, data_seed: int, events_per_sample: int,
                       extra_events: Mapping[str, int] | None = None
                       ) -> dict[str, LabelledFeatures]:
    """MLP features of nominal events generated in memory by the synthetic generator.

    Args:
        cfg: analysis configuration (processes, signal process, regions).
        data_seed: the generator seed (not the embedded dataset's, to keep it held out).
        events_per_sample: events of every process's nominal sample.
        extra_events: process -> events generated in addition (for training statistics).

    Returns:
        Region name -> labelled features of all selected events.

    Raises:
        InputError: no events selected in a region.
    """
    from agc_core import processor

    processes = tuple(p for p, v in cfg.samples if v == "nominal")
    parts: dict[str, list[tuple[np.ndarray, float, int, int]]] = {r.name: [] for r in cfg.regions}
    for process in processes:
        n = events_per_sample + (extra_events or {}).get(process, 0)
        info = processor.SampleInfo(process, "nominal", cfg.samples.index((process, "nominal")),
                                    0, cfg.xsec_pb[process] * cfg.luminosity_pb / n)
        sample_parts: dict[str, list[np.ndarray]] = {r.name: [] for r in cfg.regions}
        n_gen = 0  # more than n for a generator-filtered process (W+jets)
        for feats, n_block in _generated_features(process, n, 0, info, cfg, data_seed,
                                                  data_seed):
            for region, arr in feats.items():
                sample_parts[region].append(np.asarray(arr, dtype=np.float32))
            n_gen += n_block
        _add_sample(parts, sample_parts, process, cfg.xsec_pb[process] / n_gen, processes, cfg)
        log.info("%s: %d events generated (seed %d), selected %s", process, n_gen, data_seed,
                 {r: int(sum(a.shape[0] for a in v)) for r, v in sample_parts.items()})
    return _labelled(parts, processes, f"generator seed {data_seed}")


def _add_sample(parts: dict[str, list[tuple[np.ndarray, float, int, int]]],
                sample_parts: Mapping[str, list[np.ndarray]], process: str, weight: float,
                processes: tuple[str, ...], cfg: AnalysisConfig) -> None:
    """Append one sample's selected features (with weight, label, process index) per region."""
    label = int(process == cfg.signal_process)
    for region, arrs in sample_parts.items():
        x = np.concatenate(arrs) if arrs else np.zeros((0, 0), np.float32)
        parts[region].append((x, weight, label, processes.index(process)))


def _labelled(parts: Mapping[str, list[tuple[np.ndarray, float, int, int]]],
              processes: tuple[str, ...], what: str) -> dict[str, LabelledFeatures]:
    """Concatenate the samples' parts into one LabelledFeatures per region."""
    out = {}
    for region, items in parts.items():
        items = [it for it in items if it[0].shape[0] > 0]
        if not items:
            raise InputError(f"{what}: no selected events in region {region}")
        out[region] = LabelledFeatures(
            features=np.concatenate([x for x, *_ in items]),
            labels=np.concatenate([np.full(x.shape[0], lab, np.int8) for x, _, lab, _ in items]),
            weights=np.concatenate([np.full(x.shape[0], w) for x, w, _, _ in items]),
            process=np.concatenate([np.full(x.shape[0], p, np.int16) for x, _, _, p in items]),
            processes=processes,
        )
    return out


def _generated_features(process: str, n_events: int, first_file: int, info: Any,
                        cfg: AnalysisConfig, seed: int, data_seed: int
                        ) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """MLP features of nominal events of one process generated in memory (generator seed
    ``data_seed``, files of ``cfg.dataset.events_per_file`` from ``first_file`` on), per
    block, with the events generated for the block (more than it holds for a
    generator-filtered process); ``seed`` keys the JER draws."""
    from agc_core import processor
    from agc_core.io import Chunk
    from agc_core.synthetic import iter_sample_events

    per_file = cfg.dataset.events_per_file
    for k, start in enumerate(range(0, n_events, per_file)):
        for batch in iter_sample_events(process, "nominal", min(per_file, n_events - start),
                                        data_seed, cfg, first_file + k):
            columns = {name: np.ascontiguousarray(values, dtype=np.float32)
                       for name, values in batch.branches().items()
                       if name in cfg.analysis_branches}
            offsets = {coll: batch.offsets(coll) for coll in ("jet", "electron", "muon")}
            chunk = Chunk(batch.n_events, 0, batch.n_events, columns, offsets, 0)
            yield processor.compute_features(chunk, info, cfg, seed), batch.n_generated
