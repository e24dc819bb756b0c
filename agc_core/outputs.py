"""Histogram files of a run: ``histograms.root`` for the fit and the lossless full histogram.

``histograms.root`` (cabinetry-compatible, as the seed's ``utils.save_histograms``): a copy of
the full histogram gets ``cfg.binning.fit_bin_offset`` (1e-6) added to every cell (flow cells
included; value + x, variance + x**2, boost-histogram's scalar addition), then for each region
and each filled (process, variation) the observable is sliced from the bin containing
``cfg.binning.fit_low`` and rebinned by ``cfg.binning.fit_rebin`` (the seed's
``[120j::hist.rebin(2)]``: 11 bins from 110 to 550 GeV, the cut-away bins go to the underflow),
then summed over the classification axis. Names: ``{region}_{process}`` (nominal) and
``{region}_{process}_{variation}``, plus ``{region}_pseudodata`` = mean of the signal process's
``cfg.pseudodata_ttbar_variations`` + sum of the nominal ``cfg.pseudodata_backgrounds`` (the
seed: (ttbar ME_var + ttbar PS_var) / 2 + wjets nominal), written only when all its inputs
were filled. Every histogram is a TH1D with its sum of squared weights.

``histograms_full.npz`` (lossless, every axis, flow cells included): a NumPy ``.npz`` archive
that loads without pickle, with the keys

- ``format``: the string ``"agc-core-histogram/1"``;
- ``axes``: a JSON string, a list with one object per axis, in order: ``{"type": "regular",
  "bins", "low", "high", "underflow", "overflow", "name"}``, ``{"type": "str_category",
  "categories", "overflow", "growth", "name"}`` or ``{"type": "int_category", "categories",
  "overflow", "growth", "name"}``;
- ``values`` and ``variances``: float64 arrays of ``hist.view(flow=True)``, i.e. the shape is
  (bins + 2, regions + 1, processes + 1, variations + 1, classifications + 1) for the seed's
  5-axis histogram (every axis with its flow cells as boost-histogram lays them out).

:func:`load_full_histogram` turns it back into the identical ``boost_histogram.Histogram``.

``histograms_full.uhi.json``: the same histogram in the UHI serialization (JSON), readable by
``hist`` and ``boost-histogram`` (``uhi.io.json``) without agc-core; its axes carry the seed's
names and labels. :func:`to_hist` gives the ``hist.Hist`` of the seed's notebook (axes
``observable``, ``region``, ``process``, ``variation``, ``classification``), so its idioms work
on our output: ``h[:, "4j1b", "ttbar", "nominal", 0]``, ``h.project("classification",
"observable")``, ``h[:, "4j2b", :, "nominal", 0].stack("process")``; :func:`load_uhi_histogram`
reads the JSON back into one.

All files are written to a temporary name in the target folder and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boost_histogram as bh
import numpy as np

from agc_core.config import REGIONS, AnalysisConfig
from agc_core.errors import InputError

log = logging.getLogger(__name__)

FULL_FORMAT = "agc-core-histogram/1"
FIT_FILE_NAME = "histograms.root"
FULL_FILE_NAME = "histograms_full.npz"
FULL_UHI_FILE_NAME = "histograms_full.uhi.json"

#: the seed's axis labels (``TtbarAnalysis.__init__``), by axis name
SEED_AXIS_LABELS = {"observable": "observable [GeV]", "region": "Region",
                    "process": "Process", "variation": "Systematic variation",
                    "classification": "ML Classification (Sig/Bkg)"}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    The file appears complete or not at all; on an exception the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _categories(axis: Any) -> list[Any]:
    return [axis[i] for i in range(len(axis))]


def filled_pairs(hist: bh.Histogram) -> list[tuple[str, str]]:
    """(process, variation) pairs of the full histogram with any non-zero cell."""
    values = hist.view(flow=True).value
    processes = _categories(hist.axes[2])
    variations = _categories(hist.axes[3])
    return [(p, v) for ip, p in enumerate(processes) for iv, v in enumerate(variations)
            if np.any(values[:, :, ip, iv, :] != 0)]


def _fit_slice(h: bh.Histogram, cfg: AnalysisConfig, region: str) -> bh.Histogram:
    """``h[fit_low j :: rebin(fit_rebin), region, ...]`` summed over what is left but the
    observable (the classification), for a histogram whose first two axes are observable,
    region."""
    b = cfg.binning
    index: list[Any] = [slice(bh.loc(b.fit_low), None, bh.rebin(b.fit_rebin)), bh.loc(region)]
    index += [slice(None)] * (h.ndim - 2)
    sub = h[tuple(index)]
    return sub.project(0) if sub.ndim > 1 else sub


def fit_histograms(hist: bh.Histogram, cfg: AnalysisConfig,
                   filled: Iterable[tuple[str, str]] | None = None) -> dict[str, bh.Histogram]:
    """The 1-D histograms of ``histograms.root``, by name (see the module docstring).

    Args:
        hist: the seed's 5-axis histogram (observable, region, process, variation,
            classification), as built by :func:`agc_core.histograms.to_boost`.
        cfg: the analysis configuration (fit slicing, offset, pseudodata recipe).
        filled: the (process, variation) pairs that were filled; default: those with any
            non-zero cell.

    Returns:
        Name -> 1-D Weight histogram, per region: pseudodata first (when available), then each
        process's nominal and its variations in the order of the histogram's axes.
    """
    pairs = list(filled) if filled is not None else filled_pairs(hist)
    processes = _categories(hist.axes[2])
    variations = _categories(hist.axes[3])
    wanted = set(pairs)
    pairs = [(p, v) for p in processes for v in variations if (p, v) in wanted]

    shifted = hist.copy()
    shifted += cfg.binning.fit_bin_offset

    def cell(process: str, variation: str) -> bh.Histogram:
        return shifted[:, :, bh.loc(process), bh.loc(variation), :]

    signal = cfg.signal_process
    pd_inputs = [(signal, v) for v in cfg.pseudodata_ttbar_variations]
    pd_inputs += [(p, "nominal") for p in cfg.pseudodata_backgrounds]
    missing = [f"{p} {v}" for p, v in pd_inputs if (p, v) not in pairs]
    pseudo = None
    if missing:
        log.warning("no pseudodata: its inputs %s were not filled", ", ".join(missing))
    else:
        parts = [cell(signal, v) for v in cfg.pseudodata_ttbar_variations]
        mean = parts[0]
        for part in parts[1:]:
            mean = mean + part
        pseudo = mean / len(parts)
        for process in cfg.pseudodata_backgrounds:
            pseudo = pseudo + cell(process, "nominal")

    out: dict[str, bh.Histogram] = {}
    for region in REGIONS:
        if pseudo is not None:
            out[f"{region}_pseudodata"] = _fit_slice(pseudo, cfg, region)
        for process, variation in pairs:
            suffix = "" if variation == "nominal" else f"_{variation}"
            out[f"{region}_{process}{suffix}"] = _fit_slice(cell(process, variation), cfg,
                                                            region)
    return out


def write_fit_histograms(hist: bh.Histogram, cfg: AnalysisConfig, path: str | Path,
                         filled: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """Write ``histograms.root`` (TH1D with sumw2) atomically; see :func:`fit_histograms`.

    Returns:
        The names written, in order.
    """
    import uproot

    hists = fit_histograms(hist, cfg, filled)
    with atomic_path(path) as tmp, uproot.recreate(tmp) as f:
        for name, h in hists.items():
            f[name] = h
    log.info("wrote %d histograms to %s", len(hists), path)
    return list(hists)


def _axis_to_json(axis: Any) -> dict[str, Any]:
    traits = axis.traits
    meta = axis.metadata if isinstance(axis.metadata, str | type(None)) else str(axis.metadata)
    if isinstance(axis, bh.axis.Regular):
        if traits.circular or axis.transform is not None:
            raise ValueError("only linear, non-circular Regular axes are supported")
        return {"type": "regular", "bins": len(axis), "low": float(axis.edges[0]),
                "high": float(axis.edges[-1]), "underflow": traits.underflow,
                "overflow": traits.overflow, "name": meta}
    if isinstance(axis, bh.axis.StrCategory):
        kind = "str_category"
    elif isinstance(axis, bh.axis.IntCategory):
        kind = "int_category"
    else:
        raise ValueError(f"unsupported axis type {type(axis).__name__}")
    return {"type": kind, "categories": _categories(axis), "overflow": traits.overflow,
            "growth": traits.growth, "name": meta}


def _axis_from_json(spec: dict[str, Any]) -> Any:
    kind = spec["type"]
    if kind == "regular":
        return bh.axis.Regular(spec["bins"], spec["low"], spec["high"],
                               underflow=spec["underflow"], overflow=spec["overflow"],
                               metadata=spec["name"])
    cls = {"str_category": bh.axis.StrCategory, "int_category": bh.axis.IntCategory}[kind]
    return cls(spec["categories"], overflow=spec["overflow"], growth=spec["growth"],
               metadata=spec["name"])


def save_full_histogram(hist: bh.Histogram, path: str | Path) -> Path:
    """Write the full histogram losslessly to ``path`` (``.npz``, format in the module doc).

    Args:
        hist: a Weight-storage histogram of Regular / StrCategory / IntCategory axes.
        path: the target file.

    Returns:
        The path written.
    """
    view = hist.view(flow=True)
    axes = json.dumps([_axis_to_json(a) for a in hist.axes])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, format=np.array(FULL_FORMAT), axes=np.array(axes),
                            values=np.ascontiguousarray(view.value),
                            variances=np.ascontiguousarray(view.variance))
    log.info("wrote the full histogram to %s", path)
    return Path(path)


def load_full_histogram(path: str | Path) -> bh.Histogram:
    """Read a file written by :func:`save_full_histogram` back into a boost-histogram.

    Raises:
        InputError: the file is missing, not such an archive, or inconsistent.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            fmt = str(data["format"])
            axes_json = str(data["axes"])
            values = data["values"]
            variances = data["variances"]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a readable agc-core full histogram ({exc})") from exc
    if fmt != FULL_FORMAT:
        raise InputError(f"{path}: unknown format '{fmt}' (expected '{FULL_FORMAT}')")
    hist = bh.Histogram(*[_axis_from_json(a) for a in json.loads(axes_json)],
                        storage=bh.storage.Weight())
    view = hist.view(flow=True)
    if view.shape != values.shape or values.shape != variances.shape:
        raise InputError(f"{path}: array shape {values.shape} does not match its axes "
                         f"{view.shape}")
    view.value[...] = values
    view.variance[...] = variances
    return hist


def to_hist(h: bh.Histogram) -> Any:
    """The histogram as a ``hist.Hist`` with named, labelled axes (the seed's notebook object).

    Axis names come from the boost-histogram axes' metadata (``observable``, ``region``, ...),
    labels from :data:`SEED_AXIS_LABELS`; every cell, flow cells included, is copied.
    """
    import hist

    axes = []
    for axis in h.axes:
        name = axis.metadata if isinstance(axis.metadata, str) else None
        label = SEED_AXIS_LABELS.get(name or "", name or "")
        traits = axis.traits
        if isinstance(axis, bh.axis.Regular):
            axes.append(hist.axis.Regular(len(axis), float(axis.edges[0]),
                                          float(axis.edges[-1]), name=name, label=label,
                                          underflow=traits.underflow,
                                          overflow=traits.overflow))
        elif isinstance(axis, bh.axis.StrCategory | bh.axis.IntCategory):
            cls = hist.axis.StrCategory if isinstance(axis, bh.axis.StrCategory) \
                else hist.axis.IntCategory
            axes.append(cls(_categories(axis), name=name, label=label,
                            overflow=traits.overflow, growth=traits.growth))
        else:
            raise ValueError(f"unsupported axis type {type(axis).__name__}")
    out = hist.Hist(*axes, storage=hist.storage.Weight())
    view, source = out.view(flow=True), h.view(flow=True)
    view.value[...] = source.value
    view.variance[...] = source.variance
    return out


def save_uhi_histogram(h: bh.Histogram, path: str | Path) -> Path:
    """Write the histogram in the UHI JSON serialization (``uhi.io.json``), atomically."""
    import hist.serialization
    import uhi.io.json

    data = hist.serialization.to_uhi(to_hist(h))
    write_text_atomic(path, json.dumps(data, default=uhi.io.json.default))
    log.info("wrote the full histogram (UHI JSON) to %s", path)
    return Path(path)


def load_uhi_histogram(path: str | Path) -> Any:
    """Read a UHI JSON histogram (e.g. :func:`save_uhi_histogram`'s) into a ``hist.Hist``.

    Raises:
        InputError: the file is missing or not a UHI histogram.
    """
    import hist
    import hist.serialization
    import uhi.io.json

    try:
        data = json.loads(Path(path).read_text(), object_hook=uhi.io.json.object_hook)
        return hist.Hist(hist.serialization.from_uhi(data))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable UHI histogram ({exc})") from exc
