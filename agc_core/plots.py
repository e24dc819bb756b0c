"""The seed notebook's plots, drawn from the full histogram into PNG files (matplotlib Agg)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import boost_histogram as bh
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from agc_core.accuracy import accuracy_by_process
from agc_core.config import AnalysisConfig
from agc_core.outputs import atomic_path

log = logging.getLogger(__name__)

Series = tuple[np.ndarray, np.ndarray]  # (edges, values)


def _has(hist: bh.Histogram, axis: int, name: str) -> bool:
    ax = hist.axes[axis]
    return any(ax[i] == name for i in range(len(ax)))


def observable(hist: bh.Histogram, cfg: AnalysisConfig, region: str, process: str | None,
               variation: str, classification: int | None = None,
               fit_binning: bool = False) -> Series:
    """Edges and values of one observable distribution.

    Args:
        hist: the seed's 5-axis histogram.
        cfg: the analysis configuration (fit slicing).
        region: ``4j1b`` or ``4j2b``.
        process: a process, or None for the sum over processes.
        variation: a variation name.
        classification: 0 or 1, or None for the sum over both.
        fit_binning: slice and rebin as for the fit (``[fit_low j :: rebin(fit_rebin)]``).

    Returns:
        (edges, values) without flow bins.
    """
    b = cfg.binning
    obs = slice(bh.loc(b.fit_low), None, bh.rebin(b.fit_rebin)) if fit_binning else slice(None)
    proc = bh.loc(process) if process is not None else slice(None)
    cls = bh.loc(classification) if classification is not None else slice(None)
    sub = hist[obs, bh.loc(region), proc, bh.loc(variation), cls]
    sub = sub.project(0) if sub.ndim > 1 else sub
    return sub.axes[0].edges, sub.values()


def _processes(hist: bh.Histogram) -> list[str]:
    ax = hist.axes[2]
    return [ax[i] for i in range(len(ax))]


def _stack(ax: plt.Axes, series: Sequence[tuple[str, Series]]) -> None:
    """Stacked filled histograms, first entry at the bottom, legend top-down like the seed."""
    baseline: np.ndarray | float = 0.0
    handles = []
    for label, (edges, values) in series:
        top = baseline + values
        handles.append(ax.stairs(top, edges, baseline=baseline, fill=True, label=label,
                                 edgecolor="grey", linewidth=1))
        baseline = top
    ax.legend(handles[::-1], [h.get_label() for h in handles[::-1]], frameon=False)


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _region_label(cfg: AnalysisConfig, region: str) -> tuple[str, str]:
    r = next(r for r in cfg.regions if r.name == region)
    return r.label, r.observable


def plot_stack(hist: bh.Histogram, cfg: AnalysisConfig, region: str, path: Path,
               fit_binning: bool) -> Path:
    """Nominal observable of a region stacked by process (the seed's first two plots)."""
    fig, ax = plt.subplots(figsize=(7, 5))
    # the seed stacks the process axis reversed: last process at the bottom
    series = [(p, observable(hist, cfg, region, p, "nominal", fit_binning=fit_binning))
              for p in _processes(hist)[::-1]]
    _stack(ax, series)
    title, xlabel = _region_label(cfg, region)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events")
    return _save(fig, path)


def plot_variations(hist: bh.Histogram, cfg: AnalysisConfig, region: str, process: str,
                    variations: Sequence[tuple[str, str]], title: str, path: Path,
                    fit_binning: bool) -> Path:
    """One process's observable for several variations (label, variation name)."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, name in variations:
        edges, values = observable(hist, cfg, region, process, name, fit_binning=fit_binning)
        ax.stairs(values, edges, label=label, linewidth=2)
    ax.legend(frameon=False)
    ax.set_xlabel(_region_label(cfg, region)[1])
    ax.set_ylabel("events")
    ax.set_title(title)
    return _save(fig, path)


def plot_classification_stack(hist: bh.Histogram, cfg: AnalysisConfig, region: str,
                              path: Path) -> Path:
    """Two panels: events predicted as background / as signal, stacked by process."""
    fig, axs = plt.subplots(2, 1, figsize=(8, 12), sharex=True)
    fig.suptitle(f"Signal vs Background Classification ({region})", fontsize=18)
    for ax, cls, title in ((axs[0], 0, "Events Predicted as Background"),
                           (axs[1], 1, "Events Predicted as Signal")):
        _stack(ax, [(p, observable(hist, cfg, region, p, "nominal", cls))
                    for p in _processes(hist)[::-1]])
        ax.set_title(title)
        ax.set_xlabel(_region_label(cfg, region)[1])
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    return _save(fig, path)


def plot_classification_overlay(hist: bh.Histogram, cfg: AnalysisConfig, region: str,
                                path: Path) -> Path:
    """Normalized observable of predicted signal and predicted background, all processes."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for cls, label in ((1, "Predicted as Signal"), (0, "Predicted as Background")):
        edges, values = observable(hist, cfg, region, None, "nominal", cls)
        area = (values * np.diff(edges)).sum()
        density = values / area if area > 0 else values
        ax.stairs(density, edges, label=label, linewidth=2)
    ax.legend(frameon=False)
    ax.set_title(f"{region} Events (All Processes)")
    ax.set_xlabel(_region_label(cfg, region)[1])
    ax.set_ylabel("Density")
    return _save(fig, path)


def plot_accuracy(hist: bh.Histogram, cfg: AnalysisConfig, region: str, path: Path) -> Path:
    """Per process: the observable split by classification, titled with the accuracy."""
    acc = accuracy_by_process(hist, region, cfg.signal_process)
    processes = [p for p in _processes(hist) if p in acc]
    fig, axs = plt.subplots(len(processes), 1, figsize=(8, 4.8 * len(processes)),
                            sharex=True, squeeze=False)
    if "overall" in acc:
        fig.suptitle(f"Total Accuracy ({region}) = {acc['overall']:.4f}", fontsize=18)
    for ax, process in zip(axs[:, 0], processes, strict=True):
        signal = process == cfg.signal_process
        labels = (("Background (Incorrect)", "Signal (Correct)") if signal
                  else ("Background (Correct)", "Signal (Incorrect)"))
        for cls in (0, 1):
            edges, values = observable(hist, cfg, region, process, "nominal", cls)
            ax.stairs(values, edges, label=labels[cls], linewidth=2)
        ax.legend(frameon=False)
        ax.set_title(f"{process} (Accuracy = {acc[process]:.4f})")
        ax.set_ylabel("Counts")
    axs[-1, 0].set_xlabel(_region_label(cfg, region)[1])
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    return _save(fig, path)


def draw_all(hist: bh.Histogram, cfg: AnalysisConfig, output_dir: str | Path,
             classification: bool = True) -> list[Path]:
    """Draw every plot whose inputs exist into ``output_dir``.

    Every plot reads the seed's 5-axis histogram (observable, region, process, variation,
    classification) and sums the classification unless it is about the classification:

    - ``stack_4j1b_ht.png``: 4j1b nominal HT stacked by process, fit binning (the seed's
      ``[120j::hist.rebin(2)]``);
    - ``stack_4j2b_mbjj.png``: 4j2b nominal m_bjj stacked by process, full binning;
    - ``btag_variations.png``: 4j1b ttbar nominal and ``btag_var_{0..3}_up``, fit binning;
    - ``jet_energy_variations.png``: 4j2b ttbar nominal, ``pt_scale_up``, ``pt_res_up``;
    - ``classification_{region}.png``: events predicted as background (0) / signal (1), stacked by
      process (nominal);
    - ``classification_overlay_{region}.png``: normalized observable of predicted signal vs
      predicted background, all processes (nominal; the seed sums every variation here and swaps
      the legend labels, we do neither);
    - ``accuracy_{region}.png``: per process, the observable split by classification, with the
      MLP accuracy per process and overall (:func:`agc_core.accuracy.accuracy_by_process`).

    A plot whose inputs are missing (e.g. no ttbar, or ``--systematics none``) is skipped.

    A plot that fails is logged and skipped: the histograms are already on disk.

    Args:
        hist: the seed's 5-axis histogram.
        cfg: the analysis configuration.
        output_dir: the folder of the PNG files (created).
        classification: also draw the MLP classification plots (pointless without an MLP).

    Returns:
        The PNG files written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    signal = cfg.signal_process
    has_nominal = _has(hist, 3, "nominal")
    has_signal = _has(hist, 2, signal)
    btag = [(f"NP {i + 1}", f"btag_var_{i}_up") for i in range(cfg.systematics.btag_n_jets)]
    jet = [("scale up", "pt_scale_up"), ("resolution up", "pt_res_up")]
    r1, r2 = (r.name for r in cfg.regions)
    jobs: list[tuple[str, bool, Callable[[], Path]]] = [
        ("stack_4j1b_ht.png", has_nominal,
         lambda: plot_stack(hist, cfg, r1, out / "stack_4j1b_ht.png", True)),
        ("stack_4j2b_mbjj.png", has_nominal,
         lambda: plot_stack(hist, cfg, r2, out / "stack_4j2b_mbjj.png", False)),
        ("btag_variations.png",
         has_nominal and has_signal and all(_has(hist, 3, v) for _, v in btag),
         lambda: plot_variations(hist, cfg, r1, signal, [("nominal", "nominal"), *btag],
                                 "b-tagging variations", out / "btag_variations.png", True)),
        ("jet_energy_variations.png",
         has_nominal and has_signal and all(_has(hist, 3, v) for _, v in jet),
         lambda: plot_variations(hist, cfg, r2, signal, [("nominal", "nominal"), *jet],
                                 "Jet energy variations", out / "jet_energy_variations.png",
                                 False)),
    ]
    for region in (r1, r2) if classification else ():
        jobs += [
            (f"classification_{region}.png", has_nominal,
             lambda region=region: plot_classification_stack(
                 hist, cfg, region, out / f"classification_{region}.png")),
            (f"classification_overlay_{region}.png", has_nominal,
             lambda region=region: plot_classification_overlay(
                 hist, cfg, region, out / f"classification_overlay_{region}.png")),
            (f"accuracy_{region}.png",
             has_nominal and bool(accuracy_by_process(hist, region, signal)),
             lambda region=region: plot_accuracy(hist, cfg, region,
                                                 out / f"accuracy_{region}.png")),
        ]
    written = []
    for name, possible, draw in jobs:
        if not possible:
            log.info("plot %s skipped: its histograms were not filled", name)
            continue
        try:
            written.append(draw())
        except Exception as exc:
            plt.close("all")
            log.warning("plot %s failed: %s: %s", name, type(exc).__name__, exc)
    log.info("drew %d plots in %s", len(written), out)
    return written
