"""Synthetic chunks shared by the tests and the benchmarks: generated samples, hand-written
jagged events, random edge cases (empty events, exactly four jets, btag exactly 0.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig, load_analysis_config
from agc_core.io import Chunk


def synthetic_chunk(process: str, variation: str, n_events: int, seed: int = 42,
                    cfg: AnalysisConfig | None = None, filtered: bool = True) -> Chunk:
    """Events of one sample generated in memory by ``agc_core.synthetic`` (no files).

    Args:
        process, variation: the sample.
        n_events: number of events (for a process with a generator filter: events that pass
            it, out of more generated: :func:`synthetic_sample` says how many).
        seed: generator seed.
        cfg: analysis configuration.
        filtered: False: no generator filter (``n_events`` plain events).

    Returns:
        An :class:`agc_core.io.Chunk` with the analysis branches (entry_start 0).
    """
    return synthetic_sample(process, variation, n_events, seed, cfg, filtered)[0]


def synthetic_sample(process: str, variation: str, n_events: int, seed: int = 42,
                     cfg: AnalysisConfig | None = None, filtered: bool = True
                     ) -> tuple[Chunk, int]:
    """:func:`synthetic_chunk` and the number of events generated for it (its normalization:
    more than ``n_events`` for a generator-filtered process)."""
    from agc_core.synthetic import iter_sample_events

    cfg = cfg or load_analysis_config()
    batches = list(iter_sample_events(process, variation, n_events, seed, cfg,
                                      filtered=filtered))
    return chunk_from_batches(batches, cfg), sum(b.n_generated for b in batches)


def chunk_from_batches(batches: list[Any], cfg: AnalysisConfig) -> Chunk:
    """One :class:`agc_core.io.Chunk` (analysis branches, entry_start 0) from generated
    ``agc_core.synthetic.EventBatch`` es."""
    columns: dict[str, list[np.ndarray]] = {}
    counts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for coll in ("jet", "electron", "muon"):
            counts.setdefault(coll, []).append(batch.counts[coll])
            for prop, values in batch.jagged[coll].items():
                name = f"{coll}_{prop}"
                if name in cfg.analysis_branches:
                    columns.setdefault(name, []).append(values)
    offsets = {}
    for coll, parts in counts.items():
        c = np.concatenate(parts).astype(np.int64)
        off = np.zeros(c.shape[0] + 1, dtype=np.int64)
        np.cumsum(c, out=off[1:])
        offsets[coll] = off
    cols = {k: np.ascontiguousarray(np.concatenate(v), dtype=np.float32)
            for k, v in columns.items()}
    n_events = sum(b.n_events for b in batches)
    return Chunk(n_events, 0, n_events, cols, offsets, 0)


def chunk_from_jagged(jets: list[list[tuple[float, float, float, float, float]]],
                      electrons: list[list[float]], muons: list[list[float]],
                      entry_start: int = 0) -> Chunk:
    """A chunk from per-event Python lists (for edge-case tests).

    Args:
        jets: per event, a list of (pt, eta, phi, e, btag) tuples.
        electrons, muons: per event, a list of pt values.
        entry_start: index in the file of the first event.
    """
    def offsets(lists: list[list[Any]]) -> np.ndarray:
        off = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lists], out=off[1:])
        return off

    flat = [j for ev in jets for j in ev]
    cols = {f"jet_{p}": np.array([j[k] for j in flat], dtype=np.float32)
            for k, p in enumerate(("pt", "eta", "phi", "e", "btag"))}
    cols["electron_pt"] = np.array([p for ev in electrons for p in ev], dtype=np.float32)
    cols["muon_pt"] = np.array([p for ev in muons for p in ev], dtype=np.float32)
    n = len(jets)
    return Chunk(n, entry_start, entry_start + n, cols,
                      {"jet": offsets(jets), "electron": offsets(electrons),
                       "muon": offsets(muons)}, 0)


def random_chunk(n_events: int, seed: int, mean_jets: float = 6.0, mean_leptons: float = 0.6,
                 entry_start: int = 0, edge_fraction: float = 0.03,
                 cfg: AnalysisConfig | None = None) -> Chunk:
    """Random events with the analysis branches, rich in edge cases (for tests and benches).

    Jets: Poisson multiplicity (a few events with 20), pt = 15 + Exp(40) GeV, some exactly at
    the jet cut, at the cut divided by the JES factor and just around the cut, b-tag scores
    with some exactly at the threshold; leptons: Poisson multiplicity, pt = 10 + Exp(30) GeV,
    some exactly at their cut (cuts from ``cfg``, default the packaged configuration).

    Args:
        n_events: number of events.
        seed: numpy seed.
        mean_jets, mean_leptons: Poisson means of the jet and of each lepton multiplicity.
        entry_start: index in the file of the first event (keys the JER draws).
        edge_fraction: fraction of values put exactly on a threshold.
    """
    cfg = cfg if cfg is not None else load_analysis_config()
    sel = cfg.selection
    rng = np.random.default_rng(seed)

    def offsets(counts: np.ndarray) -> np.ndarray:
        off = np.zeros(n_events + 1, dtype=np.int64)
        np.cumsum(counts, out=off[1:])
        return off

    n_jets = rng.poisson(mean_jets, n_events)
    n_jets[rng.random(n_events) < 0.002] = 20
    joff = offsets(n_jets)
    eoff = offsets(rng.poisson(mean_leptons, n_events))
    moff = offsets(rng.poisson(mean_leptons, n_events))
    nj = int(joff[-1])
    pt = (15 + rng.exponential(40, nj)).astype(np.float32)
    edge = rng.random(nj) < edge_fraction
    cut = sel.jet_pt_min
    pt[edge] = rng.choice(np.array([cut, cut / cfg.systematics.jes_factor, cut - 1e-3,
                                    cut + 1e-3], dtype=np.float32), int(edge.sum()))
    eta = rng.normal(0, 1.5, nj).astype(np.float32)
    btag = np.where(rng.random(nj) < 0.4, rng.random(nj), 0.1 * rng.random(nj))
    btag = btag.astype(np.float32)
    btag[rng.random(nj) < edge_fraction] = sel.btag_threshold
    phi = rng.uniform(-np.pi, np.pi, nj).astype(np.float32)
    e = (pt.astype(np.float64) * np.cosh(eta) * rng.uniform(1.0, 1.2, nj)).astype(np.float32)
    el = (10 + rng.exponential(30, eoff[-1])).astype(np.float32)
    mu = (10 + rng.exponential(30, moff[-1])).astype(np.float32)
    el[rng.random(el.shape[0]) < edge_fraction] = sel.electron_pt_min
    mu[rng.random(mu.shape[0]) < edge_fraction] = sel.muon_pt_min
    cols = {"jet_pt": pt, "jet_eta": eta, "jet_phi": phi, "jet_e": e, "jet_btag": btag,
            "electron_pt": el, "muon_pt": mu}
    return Chunk(n_events, entry_start, entry_start + n_events, cols,
                      {"jet": joff, "electron": eoff, "muon": moff}, 0)


def slice_chunk(chunk: Any, start: int, stop: int) -> Chunk:
    """Events [start, stop) of a chunk as a new chunk (entry_start shifted accordingly)."""
    offsets: dict[str, np.ndarray] = {}
    columns: dict[str, np.ndarray] = {}
    for coll, off in chunk.offsets.items():
        lo, hi = off[start], off[stop]
        offsets[coll] = off[start: stop + 1] - lo
        for name, values in chunk.columns.items():
            if name.split("_", 1)[0] == coll:
                columns[name] = values[lo:hi]
    return Chunk(stop - start, chunk.entry_start + start, chunk.entry_start + stop,
                      columns, offsets, 0)


# --------------------------------------------------------------------------------------------
# kernels section


@dataclass(frozen=True)
class ThresholdClassifier:
    """A deterministic stand-in for the MLP in tests: class 1 if a feature exceeds a threshold.

    Attributes:
        threshold: cut on the feature (GeV for HT).
        feature: feature name (looked up in the region's feature list).
        cfg_features: ``{region: feature names}`` (from ``cfg.regions``).
    """

    threshold: float
    cfg_features: dict[str, tuple[str, ...]]
    feature: str = "HT"

    @classmethod
    def from_config(cls, cfg: AnalysisConfig, threshold: float, feature: str = "HT"
                    ) -> ThresholdClassifier:
        """A classifier cutting on ``feature`` (in every region) at ``threshold``."""
        return cls(threshold, {r.name: r.features for r in cfg.regions}, feature)

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        """int64 0/1 per row: ``features[:, feature] > threshold``."""
        column = self.cfg_features[region].index(self.feature)
        return (features[:, column] > self.threshold).astype(np.int64)
