"""Event batches in the AGC schema: :func:`generate_events` (one block of a sample) and
:func:`iter_sample_events` (the batches of one sample file, in memory, as written)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from agc_core.config import AnalysisConfig, GeneratorFilter, load_analysis_config
from agc_core.errors import ConfigError
from agc_core.lazyimport import LazyModule
from agc_core.synthetic.detector import (
    _pileup_jets,
    _reco_jets,
    _reco_leptons,
    _sort_events,
    _trigger_objects,
)
from agc_core.synthetic.filter import _jet_filter, _lepton_filter, _take, sample_filter
from agc_core.synthetic.partons import (
    _HARD,
    _cluster,
    _fsr,
    _multiplicity,
    _Partons,
    _radiation,
    _tau_decays,
)
from agc_core.synthetic.physics import (
    DETECTOR,
    ELECTRON_MASS,
    MUON_MASS,
    PDG_E,
    PDG_MU,
    Detector,
    ProcessTune,
    sample_tune,
)
from agc_core.synthetic.vectors import _kinematics

# imported when a batch is converted for writing
ak: Any = LazyModule("awkward")



BLOCK_EVENTS = 25_000  # events generated (and written as one basket per branch) at a time



@dataclass(frozen=True)
class EventBatch:
    """Generated events in the AGC ntuple schema, as flat arrays.

    Attributes:
        n_events: number of events.
        counts: ``{collection: int32 per-event multiplicity}`` (jet, electron, muon, trigobj).
        jagged: ``{collection: {property: flat array}}``, float32 (``ch`` int32).
        scalars: ``{branch: per-event array}`` (met_*, PV_*).
        n_generated: events generated for this batch (more than ``n_events`` where a
            generator filter dropped some; the default is ``n_events``).
        filter_pass: where the filter was only flagged (``flag_filter``): per event, whether
            it passes the generator filter; else None.
        generated_index: where a generator filter dropped events: each event's index among
            the ``n_generated``; else None.
    """

    n_events: int
    counts: dict[str, np.ndarray]
    jagged: dict[str, dict[str, np.ndarray]]
    scalars: dict[str, np.ndarray]
    n_generated: int = -1
    filter_pass: np.ndarray | None = None
    generated_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.n_generated < 0:
            object.__setattr__(self, "n_generated", self.n_events)

    def head(self, k: int) -> EventBatch:
        """The first ``k`` events; a filtered batch then stands for the events generated up to
        its k-th (``generated_index``)."""
        counts = {c: v[:k] for c, v in self.counts.items()}
        jagged = {c: {prop: a[: int(counts[c].sum())] for prop, a in props.items()}
                  for c, props in self.jagged.items()}
        n_gen = (int(self.generated_index[k - 1]) + 1 if self.generated_index is not None
                 and k > 0 else min(k, self.n_generated))
        return EventBatch(k, counts, jagged, {b: a[:k] for b, a in self.scalars.items()},
                          n_gen, None if self.filter_pass is None else self.filter_pass[:k],
                          None if self.generated_index is None else self.generated_index[:k])

    def branches(self) -> dict[str, np.ndarray]:
        """Every branch as the reader sees it: counters, flat jagged contents, scalars."""
        out: dict[str, np.ndarray] = {}
        for name, counts in self.counts.items():
            out[f"number{name}"] = counts
            for prop, values in self.jagged[name].items():
                out[f"{name}_{prop}"] = values
        out.update(self.scalars)
        return out

    def offsets(self, collection: str) -> np.ndarray:
        """int64 offsets (length n_events + 1) of a collection."""
        off = np.zeros(self.n_events + 1, dtype=np.int64)
        np.cumsum(self.counts[collection], out=off[1:])
        return off

    def to_awkward(self) -> dict[str, Any]:
        """The tree content for uproot: one record array per collection, plus scalars."""
        data: dict[str, Any] = {}
        for name, counts in self.counts.items():
            data[name] = ak.zip({prop: ak.unflatten(values, counts)
                                 for prop, values in self.jagged[name].items()})
        data.update(self.scalars)
        return data


_COMPONENTS = ("radiation", "hard", "fsr", "tau", "pileup", "jets", "leptons", "event")


def _generators(seed: int, stream: int, file_idx: int, block: int
                ) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per generator component, keyed on all four numbers."""
    return {name: np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([seed, stream, file_idx, block, i])))
        for i, name in enumerate(_COMPONENTS)}


def generate_events(tune: ProcessTune, n_events: int, seed: int, stream: int, file_idx: int,
                    block: int = 0, det: Detector = DETECTOR,
                    gen_filter: GeneratorFilter | None = None, flag_filter: bool = False
                    ) -> EventBatch:
    """Generate one batch of events of one sample, fully vectorized.

    Args:
        tune: the sample's generator knobs (:func:`sample_tune`).
        n_events: number of events.
        seed: dataset seed.
        stream: random stream of the sample (the nominal sample's index in ``cfg.samples``;
            variation samples share their nominal's stream: the same generated events,
            simulated with changed knobs).
        file_idx: file index within the sample.
        block: block index within the file.
        det: detector knobs.
        gen_filter: a generator-level filter: after the radiation multiplicity (at least
            ``min_partons``) and after the hard process (:func:`_lepton_filter`), the events
            that fail it are dropped before anything else is generated for them.
        flag_filter: with ``gen_filter``, keep every event and flag the ones that pass in
            ``filter_pass`` instead (to check that the filter drops no selected event).

    Returns:
        The events in the AGC schema (``n_generated`` = ``n_events``; with a filter, the
        passing events' ``generated_index``).
    """
    rng = _generators(seed, stream, file_idx, block)
    n = n_events
    # particle level; a generator filter drops events as early as it can tell
    count = _multiplicity(rng["radiation"], n, tune.radiation)
    passed = index = None
    if gen_filter is not None:
        passed = count >= gen_filter.min_partons
        if not flag_filter:
            index = np.flatnonzero(passed)
            count = count[index]
            n = count.shape[0]
    rad = _radiation(rng["radiation"], count, tune)
    kt = rng["radiation"].normal(0.0, 5.0, (2, n))
    rx = kt[0] - np.where(rad.valid, rad.pt * np.cos(rad.phi), 0.0).sum(axis=1)
    ry = kt[1] - np.where(rad.valid, rad.pt * np.sin(rad.phi), 0.0).sum(axis=1)
    hard = _HARD[tune.hard](rng["hard"], n, tune, rx, ry)
    vis, tau_jets, tau_nu_px, tau_nu_py = _tau_decays(rng["tau"], hard)
    if gen_filter is not None:
        keep = _lepton_filter(vis, [hard.quarks, rad], gen_filter)
        if flag_filter:
            passed &= keep
        else:
            rad, hard, vis, tau_jets, tau_nu_px, tau_nu_py, index = (
                _take(x, keep) for x in (rad, hard, vis, tau_jets, tau_nu_px, tau_nu_py,
                                         index))
            n = int(keep.sum())
    ev_rng = rng["event"]
    npv = 1 + ev_rng.poisson(det.pileup_mean, n)
    pileup = _pileup_jets(rng["pileup"], npv, det)
    (quarks, gluons), (rad, rad_gluons) = (_fsr(rng["fsr"], p, tune) for p in (hard.quarks, rad))
    if gen_filter is not None:
        keep = _jet_filter([quarks, rad, gluons, rad_gluons, tau_jets, pileup], gen_filter)
        if flag_filter:
            passed &= keep
        else:
            quarks, rad, gluons, rad_gluons, tau_jets, pileup, vis, hard, index = (
                _take(x, keep) for x in (quarks, rad, gluons, rad_gluons, tau_jets, pileup,
                                         vis, hard, index))
            tau_nu_px, tau_nu_py, npv = tau_nu_px[keep], tau_nu_py[keep], npv[keep]
            n = int(keep.sum())
    # detector level
    r = tune.jet_response
    parts = [quarks, rad, gluons, rad_gluons]
    merged = _Partons(*(np.concatenate([getattr(p, f.name) for p in parts], axis=1)
                        for f in dataclasses.fields(_Partons)))
    partons = _cluster(merged)
    blocks = [(partons, r, tune.oof_loss), (tau_jets, r, 0.0), (pileup, 1.0, 0.0)]
    ev, jets = _reco_jets(rng["jets"], blocks, tune.b_fragmentation, det)
    counts: dict[str, np.ndarray] = {}
    jagged: dict[str, dict[str, np.ndarray]] = {}
    ht = np.bincount(ev, weights=jets["pt"], minlength=n)  # for the MET resolution
    counts["jet"], jets = _sort_events(ev, jets["pt"], n, jets)
    jagged["jet"] = {**_kinematics(jets["pt"], jets["eta"], jets["phi"], jets["mass"]),
                     "mass": jets["mass"].astype(np.float32),
                     "btag": jets["btag"].astype(np.float32),
                     "ch": jets["ch"].astype(np.int32)}
    ev, leptons = _reco_leptons(rng["leptons"], vis, [quarks, rad], det)
    sorted_leptons = {}
    for name, code, mass, iso_name in (("electron", PDG_E, ELECTRON_MASS, "iso"),
                                       ("muon", PDG_MU, MUON_MASS, "pfreliso04all")):
        is_flav = leptons["pdg"] == code
        counts[name], lep = _sort_events(ev[is_flav], leptons["pt"][is_flav], n,
                                         {k: a[is_flav] for k, a in leptons.items()})
        sorted_leptons[name] = lep
        jagged[name] = {**_kinematics(lep["pt"], lep["eta"], lep["phi"], mass),
                        "ch": lep["ch"].astype(np.int32),
                        iso_name: lep["iso"].astype(np.float32)}
    counts["trigobj"], jagged["trigobj"] = _trigger_objects(ev_rng, n, [
        (counts["electron"], sorted_leptons["electron"], 1, 20.0),
        (counts["muon"], sorted_leptons["muon"], 1, 20.0),
        (counts["jet"], jets, 2, 30.0),
    ])
    scalars = _event_scalars(ev_rng, hard.nu_px + tau_nu_px, hard.nu_py + tau_nu_py, ht, npv,
                             det)
    return EventBatch(n, counts, jagged, scalars, n_events,
                      passed if flag_filter else None, index)


def _event_scalars(rng: np.random.Generator, nu_px: np.ndarray, nu_py: np.ndarray,
                   ht: np.ndarray, npv: np.ndarray, det: Detector) -> dict[str, np.ndarray]:
    """Per-event branches: missing transverse momentum and primary vertices."""
    n = npv.shape[0]
    sigma = det.met_sigma0 + det.met_sigma_ht * np.sqrt(ht)
    g = rng.standard_normal((2, n))
    met_px = nu_px + sigma * g[0]
    met_py = nu_py + sigma * g[1]
    met_pt = np.hypot(met_px, met_py)
    good = npv - rng.binomial(npv - 1, 0.05)
    return {
        "met_pt": met_pt.astype(np.float32),
        "met_phi": np.arctan2(met_py, met_px).astype(np.float32),
        "met_e": met_pt.astype(np.float32),
        "met_px": met_px.astype(np.float32),
        "met_py": met_py.astype(np.float32),
        "PV_npvs": npv.astype(np.int32),
        "PV_npvsGood": good.astype(np.int32),
        "PV_x": rng.normal(0.0695, 0.0015, n).astype(np.float32),
        "PV_y": rng.normal(0.0987, 0.0015, n).astype(np.float32),
        "PV_z": rng.normal(0.0, 4.5, n).astype(np.float32),
    }




def _stream_id(cfg: AnalysisConfig, process: str) -> int:
    """Random stream of a process: the index of its nominal sample in ``cfg.samples``."""
    return cfg.samples.index((process, "nominal"))



def _sample_batches(tune: ProcessTune, n_events: int, seed: int, stream: int, file_idx: int,
                    gen_filter: GeneratorFilter | None, flag_filter: bool = False
                    ) -> Iterator[EventBatch]:
    """The batches of one file of ``n_events`` events.

    Without a filter (or with ``flag_filter``: every event, flagged), blocks of BLOCK_EVENTS
    events (``multiplier`` times as many with ``flag_filter``). With a generator filter,
    blocks of ``multiplier`` x BLOCK_EVENTS generated events, filtered, until ``n_events``
    have passed (the last block cut after the n-th): as a filtered production, the file holds
    the events requested and its batches' ``n_generated`` add up to the events generated
    for them (about ``n_events`` / the filter's efficiency).

    Raises:
        ConfigError: the filter keeps no event of 20 blocks in a row.
    """
    if gen_filter is None or flag_filter:
        mult = gen_filter.multiplier if gen_filter is not None else 1
        total = n_events * mult
        for block, start in enumerate(range(0, total, BLOCK_EVENTS * mult)):
            yield generate_events(tune, min(BLOCK_EVENTS * mult, total - start), seed, stream,
                                  file_idx, block, gen_filter=gen_filter,
                                  flag_filter=flag_filter)
        return
    written = empty = 0
    for block in itertools.count():
        if written >= n_events:
            return
        batch = generate_events(tune, BLOCK_EVENTS * gen_filter.multiplier, seed, stream,
                                file_idx, block, gen_filter=gen_filter)
        empty = empty + 1 if batch.n_events == 0 else 0
        if empty >= 20:
            raise ConfigError(f"synthetic dataset: the generator filter of "
                              f"{gen_filter.process} kept no event in 20 blocks of "
                              f"{BLOCK_EVENTS * gen_filter.multiplier} ({gen_filter})")
        if written + batch.n_events > n_events:
            batch = batch.head(n_events - written)
        written += batch.n_events
        if batch.n_events:
            yield batch



def iter_sample_events(process: str, variation: str, n_events: int, seed: int,
                       cfg: AnalysisConfig | None = None, file_idx: int = 0,
                       flag_filter: bool = False, filtered: bool = True
                       ) -> Iterator[EventBatch]:
    """Generate the events of one sample file in memory, block by block (no I/O).

    Yields exactly the batches :func:`write_sample_file` writes for the same arguments. A
    process with a generator filter (``cfg.dataset.generator_filter``) yields ``n_events``
    events that pass it; each batch's ``n_generated`` says how many generated events it
    stands for (the normalization: about ``n_events`` / the filter's efficiency).

    Args:
        process, variation: the sample.
        n_events: events of the file.
        seed: dataset seed.
        cfg: analysis configuration.
        file_idx: file index within the sample.
        flag_filter: for a filtered process, generate ``multiplier`` x ``n_events`` events
            unfiltered (other random numbers) and flag the ones that pass in
            ``filter_pass``.
        filtered: False: no generator filter, ``n_events`` plain events (e.g. a benchmark's
            events per second on an unfiltered sample, as the AGC's).
    """
    cfg = cfg or load_analysis_config()
    tune = sample_tune(process, variation)
    stream = _stream_id(cfg, process)
    gen_filter = sample_filter(cfg.dataset.generator_filter, process) if filtered else None
    yield from _sample_batches(tune, n_events, seed, stream, file_idx, gen_filter,
                               flag_filter)
