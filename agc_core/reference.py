"""Awkward-array reference of the seed's TtbarAnalysis.process, written without coffea.

This module follows the seed notebook step by step (selection, regions, observables, MLP
features, systematic variations, filling) with awkward arrays, so the numba kernels can be
checked against it kernel by kernel and end to end. It is the slow, obviously-correct path.

Precision follows the seed's awkward arithmetic: kinematics stay float32 (four-vector
components, their sums, the trijet mass, lepton pt, the sphericity tensor), while anything
multiplied by a pt variation factor is float64 (the seed stores the factors as float64 event
fields, so ``jet.pt * factor`` and HT are float64). Two documented choices where the seed is
not pinned down: four-vector components are ``float32(float64(pt) * cos(float64(phi)))`` (one
rounding, independent of the platform's float32 libm), and the sphericity eigenvalues are
computed in float64 from the float32 tensor.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import awkward as ak
import boost_histogram as bh
import numpy as np

from agc_core.classifier import Classifier
from agc_core.config import REGIONS, AnalysisConfig
from agc_core.histograms import N_CLASSES, HistArray
from agc_core.kernels.rng import jer_factors

log = logging.getLogger(__name__)

PT_VARIATIONS = ("pt_nominal", "pt_scale_up", "pt_res_up")


@dataclass(frozen=True)
class RegionOutput:
    """What one region of one pt variation produces for the selected events.

    Attributes:
        event_index: index in the chunk of each selected event (int64).
        observable: HT (4j1b, float64) or trijet mass (4j2b, float32).
        features: MLP inputs, float32 of shape (n, n_features).
        jet_pt: unscaled pt of the region's selected jets, jagged float32 (for b-tag weights).
    """

    event_index: np.ndarray
    observable: np.ndarray
    features: np.ndarray
    jet_pt: ak.Array


def build_events(chunk: Any) -> ak.Array:
    """Zip the flat columns and offsets of a chunk into jagged awkward collections.

    Args:
        chunk: an ``agc_core.io.Chunk`` (``columns`` and ``offsets`` dicts).

    Returns:
        A record array with fields ``jet`` (pt, eta, phi, e, btag), ``electron`` (pt),
        ``muon`` (pt), one entry per event.
    """
    def jagged(collection: str, props: tuple[str, ...]) -> ak.Array:
        counts = np.diff(chunk.offsets[collection])
        return ak.zip(
            {p: ak.unflatten(np.asarray(chunk.columns[f"{collection}_{p}"]), counts)
             for p in props}
        )

    return ak.zip(
        {
            "jet": jagged("jet", ("pt", "eta", "phi", "e", "btag")),
            "electron": jagged("electron", ("pt",)),
            "muon": jagged("muon", ("pt",)),
        },
        depth_limit=1,
    )


def pt_factors(events: ak.Array, chunk: Any, sample: Any, cfg: AnalysisConfig,
               seed: int) -> dict[str, ak.Array]:
    """The seed's jet pt variation factors as float64 event fields (or per-jet for JER).

    Returns:
        ``{"pt_nominal": per-event 1.0, "pt_scale_up": per-event jes_factor,
        "pt_res_up": per-jet Normal(1, jer_width) from the keyed generator}``.
    """
    n = len(events)
    res = jer_factors(np.asarray(chunk.offsets["jet"], dtype=np.int64), chunk.entry_start,
                      seed, sample.sample_id, sample.file_id, cfg.systematics.jer_width)
    return {
        "pt_nominal": ak.Array(np.full(n, 1.0)),
        "pt_scale_up": ak.Array(np.full(n, cfg.systematics.jes_factor)),
        "pt_res_up": ak.unflatten(res, ak.num(events.jet)),
    }


def four_momentum(jets: ak.Array) -> ak.Array:
    """Add float32 px, py, pz (rounded once from float64 trigonometry) to jets."""
    pt = ak.values_astype(jets.pt, np.float64)
    phi = ak.values_astype(jets.phi, np.float64)
    eta = ak.values_astype(jets.eta, np.float64)
    jets = ak.with_field(jets, ak.values_astype(pt * np.cos(phi), np.float32), "px")
    jets = ak.with_field(jets, ak.values_astype(pt * np.sin(phi), np.float32), "py")
    return ak.with_field(jets, ak.values_astype(pt * np.sinh(eta), np.float32), "pz")


def sphericity_a(jets: ak.Array) -> np.ndarray:
    """The seed's A = 1.5 * min |eigenvalue| of its pair tensor, per event (float64).

    ``S_ab = sum_{i<j} p_a(i) p_b(j) / sum_i |p(i)|^2`` in float32, eigenvalues in float64.
    """
    jets = four_momentum(jets)
    denominator = ak.sum(np.square(jets.px) + np.square(jets.py) + np.square(jets.pz), axis=-1)
    dijet = ak.combinations(jets, 2, fields=["j1", "j2"])
    j1, j2 = dijet.j1, dijet.j2
    sxx = ak.sum(j1.px * j2.px, axis=-1) / denominator
    syy = ak.sum(j1.py * j2.py, axis=-1) / denominator
    szz = ak.sum(j1.pz * j2.pz, axis=-1) / denominator
    sxy = ak.sum(j1.px * j2.py, axis=-1) / denominator
    sxz = ak.sum(j1.px * j2.pz, axis=-1) / denominator
    syz = ak.sum(j1.py * j2.pz, axis=-1) / denominator
    flat = np.stack([ak.to_numpy(x) for x in (sxx, sxy, sxz, sxy, syy, syz, sxz, syz, szz)],
                    axis=1)
    if len(flat) == 0:
        return np.zeros(0)
    tensor = flat.reshape((flat.shape[0], 3, 3)).astype(np.float64)
    eigenvalues = np.linalg.eigvals(tensor)
    return 1.5 * np.min(np.abs(eigenvalues), axis=-1)


def best_trijet(jets: ak.Array, btag_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Mass and average dR of the trijet with the largest pt among those with a b-tag.

    Follows the seed: all trijets (i<j<k) of the selected jets whose max btag exceeds the
    threshold (strict), the one with the largest float32 vector-sum pt (first on ties).

    Returns:
        (mass float32, average dR float32), one per event.
    """
    jets = four_momentum(jets)
    trijet = ak.combinations(jets, 3, fields=["j1", "j2", "j3"])
    j1, j2, j3 = trijet.j1, trijet.j2, trijet.j3
    px = (j1.px + j2.px) + j3.px
    py = (j1.py + j2.py) + j3.py
    pz = (j1.pz + j2.pz) + j3.pz
    e = (j1.e + j2.e) + j3.e
    pt = np.sqrt(px * px + py * py)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mass = np.sqrt(e * e - ((px * px + py * py) + pz * pz))
    d0 = np.sqrt((j1.eta - j2.eta) ** 2 + (j1.phi - j2.phi) ** 2)
    d1 = np.sqrt((j3.eta - j2.eta) ** 2 + (j3.phi - j2.phi) ** 2)
    d2 = np.sqrt((j3.eta - j1.eta) ** 2 + (j3.phi - j1.phi) ** 2)
    # the seed's ak.mean of the three float32 values: a float64 mean
    avg_dr = ak.values_astype(ak.mean(ak.concatenate(
        [d0[..., np.newaxis], d1[..., np.newaxis], d2[..., np.newaxis]], axis=2), axis=-1),
        np.float32)
    max_btag = np.maximum(j1.btag, np.maximum(j2.btag, j3.btag))
    keep = max_btag > btag_threshold
    pt, mass, avg_dr = pt[keep], mass[keep], avg_dr[keep]
    best = ak.argmax(pt, axis=1, keepdims=True)
    return (ak.to_numpy(ak.flatten(mass[best])).astype(np.float32),
            ak.to_numpy(ak.flatten(avg_dr[best])).astype(np.float32))


def analyse_pt_variation(events: ak.Array, factor: ak.Array, cfg: AnalysisConfig
                         ) -> dict[str, RegionOutput]:
    """Selection, regions, observables and features for one pt variation (seed's loop body).

    Args:
        events: from :func:`build_events`.
        factor: float64 pt factor, per event (scalar variations) or per jet (JER).
        cfg: the analysis configuration.

    Returns:
        ``{region: RegionOutput}`` for 4j1b and 4j2b.
    """
    sel = cfg.selection
    thr = sel.btag_threshold
    selected_electrons = events.electron[events.electron.pt > sel.electron_pt_min]
    selected_muons = events.muon[events.muon.pt > sel.muon_pt_min]
    jet_filter = events.jet.pt * factor > sel.jet_pt_min
    selected_jets = events.jet[jet_filter]
    per_jet = factor.ndim == 2
    jet_factor = factor[jet_filter] if per_jet else factor

    event_filters = (ak.count(selected_electrons.pt, axis=1)
                     + ak.count(selected_muons.pt, axis=1)) == sel.n_leptons
    event_filters = event_filters & (ak.count(selected_jets.pt, axis=1) >= sel.n_jets_min)
    event_filters = event_filters & (ak.sum(selected_jets.btag >= thr, axis=1) >= sel.n_btag_min)

    index = np.arange(len(events))[ak.to_numpy(event_filters)]
    selected_electrons = selected_electrons[event_filters]
    selected_muons = selected_muons[event_filters]
    selected_jets = selected_jets[event_filters]
    jet_factor = jet_factor[event_filters]

    out: dict[str, RegionOutput] = {}
    for region in REGIONS:
        if region == "4j1b":
            region_filter = ak.sum(selected_jets.btag >= thr, axis=1) == 1
        else:
            region_filter = ak.sum(selected_jets.btag > thr, axis=1) >= 2
        jets = selected_jets[region_filter]
        modifier = jet_factor[region_filter]
        ht = ak.to_numpy(ak.sum(jets.pt * modifier, axis=-1)).astype(np.float64)
        lepton_pt = ak.to_numpy(ak.sum(selected_electrons[region_filter].pt, axis=-1)
                                + ak.sum(selected_muons[region_filter].pt, axis=-1))
        lj_pt = ak.to_numpy(ak.fill_none(ak.max(jets.pt, axis=-1), np.float32(0)))
        if region == "4j1b":
            observable = ht
            columns = [sphericity_a(jets), lepton_pt, lj_pt, ht]
        else:
            mass, avg_dr = best_trijet(jets, thr)
            observable = mass
            columns = [mass, avg_dr, lepton_pt, lj_pt, ht]
        features = np.stack([np.asarray(c).astype(np.float32) for c in columns], axis=1) \
            if len(ht) else np.zeros((0, len(columns)), np.float32)
        out[region] = RegionOutput(index[ak.to_numpy(region_filter)], observable, features,
                                   jets.pt)
    return out


def analyse_chunk(chunk: Any, sample: Any, cfg: AnalysisConfig, seed: int
                  ) -> dict[str, dict[str, RegionOutput]]:
    """Run :func:`analyse_pt_variation` for every pt variation the sample gets.

    Returns:
        ``{pt_variation: {region: RegionOutput}}``; only ``pt_nominal`` for non-nominal samples.
    """
    events = build_events(chunk)
    factors = pt_factors(events, chunk, sample, cfg, seed)
    names = PT_VARIATIONS if sample.variation == "nominal" else PT_VARIATIONS[:1]
    return {name: analyse_pt_variation(events, factors[name], cfg) for name in names}


def btag_weight_factors(jet_pt: ak.Array, i_jet: int, cfg: AnalysisConfig) -> np.ndarray:
    """The seed's ``btag_weight_variation``: (n, 2) float64 factors 1 +/- m * pt_i / pt_ref."""
    m = cfg.systematics.btag_magnitude
    pt_i = ak.to_numpy(jet_pt[:, i_jet]) / np.float32(cfg.systematics.btag_pt_ref)
    return 1 + np.array([m, -m]) * pt_i.astype(np.float32)[:, None]


def wjets_scale_factors(cfg: AnalysisConfig) -> np.ndarray:
    """The seed's ``flat_variation``: [1 + m, 1 - m] built in float32, as float64."""
    m = cfg.systematics.wjets_magnitude
    return (np.float32(1.0) + np.array([m, -m], dtype=np.float32)).astype(np.float64)


def process_chunk_reference(chunk: Any, sample: Any, cfg: AnalysisConfig,
                            classifier: Classifier, seed: int) -> HistArray:
    """Fill the seed's histograms for one chunk of one sample, the awkward way.

    Args:
        chunk: columns + offsets of the chunk (``agc_core.io.Chunk``).
        sample: has ``process``, ``variation``, ``sample_id``, ``file_id``, ``xsec_weight``.
        cfg: the analysis configuration.
        classifier: the MLP (or any) classifier, the same object the kernels get.
        seed: seed of the JER draws.

    Returns:
        A :class:`HistArray` over ``cfg.fill_variations(process, variation)``.
    """
    variations = cfg.fill_variations(sample.process, sample.variation)
    b = cfg.binning
    hist = bh.Histogram(
        bh.axis.Regular(b.bins, b.low, b.high),
        bh.axis.Integer(0, len(variations), underflow=False, overflow=False),
        bh.axis.Integer(0, len(REGIONS), underflow=False, overflow=False),
        bh.axis.Integer(0, N_CLASSES, underflow=False, overflow=False),
        storage=bh.storage.Weight(),
    )
    w0 = sample.xsec_weight
    results = analyse_chunk(chunk, sample, cfg, seed)
    for pt_var, regions in results.items():
        for ir, region in enumerate(REGIONS):
            r = regions[region]
            if len(r.observable) == 0:
                continue
            cls = np.asarray(classifier.classify(region, r.features)).astype(np.int64)
            obs = np.asarray(r.observable, dtype=np.float64)

            def fill(name: str, weight: np.ndarray | float, obs=obs, cls=cls, ir=ir) -> None:
                hist.fill(obs, variations.index(name), ir, cls,
                          weight=np.broadcast_to(np.asarray(weight, dtype=np.float64),
                                                 obs.shape))

            if pt_var == "pt_nominal":
                fill(sample.variation, w0)
                if sample.variation == "nominal":
                    if sample.process == cfg.systematics.wjets_process:
                        f = wjets_scale_factors(cfg)
                        fill("scale_var_up", w0 * f[0])
                        fill("scale_var_down", w0 * f[1])
                    for i in range(cfg.systematics.btag_n_jets):
                        f = btag_weight_factors(r.jet_pt, i, cfg)
                        fill(f"btag_var_{i}_up", w0 * f[:, 0])
                        fill(f"btag_var_{i}_down", w0 * f[:, 1])
            else:
                fill(pt_var, w0)
    view = hist.view(flow=True)
    # (bin, variation, region, class) -> (variation, region, class, bin)
    sumw = np.ascontiguousarray(np.transpose(view.value, (1, 2, 3, 0)))
    sumw2 = np.ascontiguousarray(np.transpose(view.variance, (1, 2, 3, 0)))
    return HistArray(tuple(variations), sumw, sumw2)
