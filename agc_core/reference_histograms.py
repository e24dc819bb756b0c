"""The AGC's published real-CMS reference histograms as a full histogram (input of a real fit).

``../shared/agc/reference_v1.2.0_histos_10_files_per_process.json`` holds the 124 histograms of
the real analysis (CMS 2015 Open Data, 10 files per process, weighted to the luminosity), each
``{region}_{process}[_{variation}]`` with ``contents`` = underflow, the observable bins, overflow,
but no sums of squared weights. :func:`reference_histogram` puts them into the seed's 5-axis
boost-histogram (every event in classification 0, there is no MLP output) with the variance of
a sample of constant per-event weight ``w = xsec * lumi / nevts``: ``variance = value * w``,
``nevts`` summed over the sample's first ``n_files`` files of an AGC fileset
(``ntuples_merged.json``). :func:`agc_core.outputs.write_fit_histograms` then makes the
cabinetry-style ``histograms.root`` from it exactly as for a run (offset, slice, rebin,
pseudodata), and :func:`agc_core.workspace.build` takes either. :func:`with_mc_precision`
gives it the MC statistical precision of another histogram (a fit with per-bin MC
uncertainties compares two inputs' physics only at equal precision).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import boost_histogram as bh
import numpy as np

from agc_core.config import REGIONS, AnalysisConfig, load_analysis_config
from agc_core.errors import InputError
from agc_core.histograms import empty_boost_histogram

log = logging.getLogger(__name__)

SHARED_AGC = Path(__file__).resolve().parent.parent.parent / "shared" / "agc"
REFERENCE_FILE = SHARED_AGC / "reference_v1.2.0_histos_10_files_per_process.json"
FILESET_FILE = SHARED_AGC / "ntuples_merged.json"
REFERENCE_N_FILES = 10


def _split_name(name: str, cfg: AnalysisConfig) -> tuple[str, str, str] | None:
    """``{region}_{process}[_{variation}]`` -> (region, process, variation), or None (data)."""
    region, _, rest = name.partition("_")
    for process in sorted(cfg.xsec_pb, key=len, reverse=True):
        if rest == process:
            return region, process, "nominal"
        if rest.startswith(process + "_"):
            return region, process, rest[len(process) + 1:]
    return None


def sample_weights(fileset: str | Path, cfg: AnalysisConfig,
                   n_files: int = REFERENCE_N_FILES) -> dict[tuple[str, str], float]:
    """Per-event weight ``xsec * lumi / nevts`` of every (process, variation) of a fileset.

    Args:
        fileset: an AGC fileset JSON (``ntuples_merged.json``).
        cfg: the analysis configuration (cross sections, luminosity, samples).
        n_files: files per sample whose ``nevts`` are summed (as the reference used).

    Raises:
        InputError: the fileset is unreadable or lacks a sample.
    """
    try:
        raw = json.loads(Path(fileset).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{fileset}: cannot read the fileset ({exc})") from exc
    out = {}
    for process, variation in cfg.samples:
        try:
            files = raw[process][variation]["files"][:n_files]
            nevts = sum(int(f["nevts"]) for f in files)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{fileset}: no nevts for sample '{process}' '{variation}'"
                             ) from exc
        if nevts <= 0:
            raise InputError(f"{fileset}: sample '{process}' '{variation}' has nevts {nevts}")
        out[(process, variation)] = cfg.xsec_pb[process] * cfg.luminosity_pb / nevts
    return out


def reference_histogram(path: str | Path = REFERENCE_FILE, fileset: str | Path = FILESET_FILE,
                        cfg: AnalysisConfig | None = None,
                        n_files: int = REFERENCE_N_FILES) -> bh.Histogram:
    """The reference histograms as the seed's 5-axis histogram (see the module docstring).

    Histograms of a sample's own variation come from that sample (e.g. ``ttbar_scaleup`` from
    the ttbar scaleup files), every other variation (b-tag, jet energy, W+jets scale) from the
    nominal sample; ``pseudodata`` entries are skipped (it is rebuilt from its recipe).

    Args:
        path: the reference JSON.
        fileset: the AGC fileset whose ``nevts`` give the per-event weights.
        cfg: the analysis configuration (default: the packaged one).
        n_files: files per sample of the reference (10).

    Returns:
        A Weight-storage histogram with axes observable, region, process, variation,
        classification; processes and variations in config order.

    Raises:
        InputError: a file is unreadable, or a histogram's binning differs from the config.
    """
    cfg = cfg or load_analysis_config()
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the reference histograms ({exc})") from exc
    weights = sample_weights(fileset, cfg, n_files)
    processes = list(cfg.xsec_pb)
    variations = cfg.all_variations()
    hist = empty_boost_histogram(cfg, processes, variations)
    view = hist.view(flow=True)
    n_cells = cfg.binning.bins + 2
    for name, entry in raw.items():
        parts = _split_name(name, cfg)
        if parts is None:
            continue
        region, process, variation = parts
        if region not in REGIONS or variation not in variations:
            raise InputError(f"{path}: histogram '{name}' has an unknown region or variation")
        contents = np.asarray(entry["contents"], dtype=float)
        if contents.shape != (n_cells,):
            raise InputError(f"{path}: histogram '{name}' has {contents.size} cells, expected "
                             f"{n_cells} ({cfg.binning.bins} bins + flow)")
        own = variation if (process, variation) in weights else "nominal"
        w = weights[(process, own)]
        cell = (slice(None), REGIONS.index(region), processes.index(process),
                variations.index(variation), 0)
        view.value[cell] = contents
        view.variance[cell] = contents * w
    log.info("read %d reference histograms from %s", len(raw), path)
    return hist


def effective_events(hist: bh.Histogram) -> dict[tuple[str, str], float]:
    """Effective number of MC events ``(sum w)^2 / sum w^2`` of every nominal (region, process).

    Summed over the observable (flow bins included) and the classification; a cell without
    events is left out.

    Args:
        hist: a 5-axis histogram (observable, region, process, variation, classification).
    """
    view = hist.view(flow=True)
    regions, processes = list(hist.axes[1]), list(hist.axes[2])
    nominal = list(hist.axes[3]).index("nominal")
    out = {}
    for i, region in enumerate(regions):
        for j, process in enumerate(processes):
            cell = view[:, i, j, nominal, :]
            total, variance = float(cell.value.sum()), float(cell.variance.sum())
            if total > 0 and variance > 0:
                out[(region, process)] = total * total / variance
    return out


def with_mc_precision(hist: bh.Histogram, like: bh.Histogram) -> bh.Histogram:
    """``hist`` with the MC statistical precision of ``like``: the same values, the variances
    it would have had with as many effective MC events as ``like`` has.

    Per (region, process), every variance of ``hist`` is multiplied by
    ``n_eff(hist) / n_eff(like)`` (:func:`effective_events`), so that relative statistical
    uncertainties scale as ``1 / sqrt(n_eff)``; (region, process) cells missing from either
    are left as they are. A fit with per-bin MC statistical uncertainties (``staterror``)
    depends on their size, so two fits of different MC statistics compare their physics only
    at equal precision: the reference's ``ttbar_norm`` moves from 0.976 to ~1.02 given the
    embedded dataset's (issue 11).

    Args:
        hist: the histogram to rescale (e.g. :func:`reference_histogram`).
        like: the histogram whose MC precision it gets (e.g. a run's full histogram).

    Raises:
        InputError: ``like`` lacks a region or process of ``hist``.
    """
    mine, theirs = effective_events(hist), effective_events(like)
    missing = sorted({r for r, _ in mine} - set(like.axes[1])
                     | {p for _, p in mine} - set(like.axes[2]))
    if missing:
        raise InputError(f"MC precision: the histogram to match has no region or process "
                         f"{', '.join(missing)}")
    out = hist.copy()
    view = out.view(flow=True)
    regions, processes = list(hist.axes[1]), list(hist.axes[2])
    for (region, process), n in mine.items():
        n_like = theirs.get((region, process))
        if n_like:
            view.variance[:, regions.index(region), processes.index(process)] *= n / n_like
    return out
