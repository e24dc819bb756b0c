"""Fit plots: pulls, correlations, pre- and post-fit data/MC per channel, scan, ranking."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agc_core.plots import Job, PlotPool, _save, fixed_layout, plt, text_inches

if TYPE_CHECKING:
    from agc_core.config import AnalysisConfig, FitConfig
    from agc_core.inference.likelihood import Likelihood
    from agc_core.inference.results import FitResult, RankingResult, ScanResult

log = logging.getLogger(__name__)

#: ranking plot: this many parameters, largest post-fit impact first
RANKING_SHOWN = 20


def _nuisance(lh: Likelihood) -> list[int]:
    """Indices of the free constrained parameters, normsys/histosys first."""
    sig = lh.constrained_sigma()
    return [i for i in sorted(sig) if not lh.fixed[i]]


def plot_pulls(lh: Likelihood, best: FitResult, path: Path) -> Path:
    """(best fit - nominal) / pre-fit width of every nuisance parameter, with the post-fit
    uncertainty in the same unit (cabinetry's pull plot)."""
    sig = lh.constrained_sigma()
    idx = _nuisance(lh)
    pull = np.array([(best.bestfit[i] - lh.init[i]) / sig[i] for i in idx])
    err = np.array([best.uncertainty[i] / sig[i] for i in idx])
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(idx) + 1.5))
    y = np.arange(len(idx))[::-1]
    ax.fill_betweenx([-0.5, len(idx) - 0.5], -2, 2, color="yellow", alpha=0.4)
    ax.fill_betweenx([-0.5, len(idx) - 0.5], -1, 1, color="limegreen", alpha=0.4)
    ax.errorbar(pull, y, xerr=err, fmt="o", color="black")
    ax.set_yticks(y, [lh.labels[i] for i in idx], fontsize=8)
    ax.set_xlim(-3, 3)
    ax.set_xticks(range(-3, 4))  # every sigma
    ax.set_ylim(-0.5, len(idx) - 0.5)
    ax.axvline(0, color="grey", linestyle="dotted")
    ax.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
    fixed_layout(fig, left=text_inches([lh.labels[i] for i in idx], 8) + 0.25, top=0.2)
    return _save(fig, path)


def plot_correlations(best: FitResult, path: Path, min_abs: float = 0.1) -> Path:
    """Correlation matrix of the parameters with any correlation above ``min_abs``."""
    corr = best.corr_mat
    off = np.abs(corr - np.diag(np.diag(corr)))
    keep = [i for i in range(len(best.labels)) if off[i].max() >= min_abs or i == best.poi_index]
    sub = corr[np.ix_(keep, keep)]
    fig, ax = plt.subplots(figsize=(0.3 * len(keep) + 3, 0.3 * len(keep) + 2.5))
    image = ax.imshow(sub, vmin=-1, vmax=1, cmap="RdBu")
    names = [best.labels[i] for i in keep]
    ax.set_xticks(range(len(keep)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(keep)), names, fontsize=7)
    if len(keep) <= 25:
        for (a, b), v in np.ndenumerate(sub):
            ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=5,
                    color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    margin = text_inches(names, 7) + 0.2
    fixed_layout(fig, left=margin, bottom=margin, top=0.2, right=0.7)
    return _save(fig, path)


def _edges(cfg: AnalysisConfig, n: int) -> np.ndarray:
    b = cfg.binning
    width = b.width * b.fit_rebin
    start = b.low + b.width * np.floor((b.fit_low - b.low) / b.width)
    edges = start + width * np.arange(n + 1)
    return edges if np.isclose(edges[-1], b.high) else np.arange(n + 1, dtype=float)


def plot_data_mc(channel: str, table: dict[str, Any], label: str, path: Path,
                 cfg: AnalysisConfig, xlabel: str) -> Path:
    """Stacked samples, the total's uncertainty band, the data, and data / model below."""
    data = np.asarray(table["data"])
    total = np.asarray(table["total"])
    unc = np.asarray(table["total_unc"])
    edges = _edges(cfg, len(data))
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    base = np.zeros_like(total)
    for name, values in reversed(list(table["samples"].items())):
        v = np.asarray(values)
        ax.stairs(base + v, edges, baseline=base, fill=True, label=name, edgecolor="grey",
                  linewidth=1)
        base = base + v
    ax.stairs(total + unc, edges, baseline=total - unc, fill=True, hatch="////",
              facecolor="none", edgecolor="black", linewidth=0, label="uncertainty")
    centers = 0.5 * (edges[1:] + edges[:-1])
    ax.errorbar(centers, data, yerr=np.sqrt(np.clip(data, 0, None)), fmt="o", color="black",
                label="data")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], frameon=False, fontsize=8)
    ax.set_ylabel("events")
    ax.set_title(f"{channel} ({label})")
    safe = np.where(total > 0, total, 1.0)
    rax.stairs(1 + unc / safe, edges, baseline=1 - unc / safe, fill=True, hatch="////",
               facecolor="none", edgecolor="black", linewidth=0)
    rax.errorbar(centers, data / safe, yerr=np.sqrt(np.clip(data, 0, None)) / safe, fmt="o",
                 color="black")
    rax.axhline(1, color="grey", linestyle="dotted")
    rax.set_ylim(0.5, 1.5)
    rax.set_ylabel("data / model")
    rax.set_xlabel(xlabel)
    fixed_layout(fig, left=1.0, right=0.2, top=0.4, bottom=0.6, gap=0.1, rows=2)
    return _save(fig, path)


def plot_scan(scan: ScanResult, path: Path) -> Path:
    """``-2 Delta ln L`` of the POI scan with the 1 and 2 sigma levels."""
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(scan.values, scan.delta_twice_nll, "o-", color="black")
    for level in (1, 4):
        ax.axhline(level, color="grey", linestyle="dashed", linewidth=1)
    ax.axvline(scan.bestfit, color="grey", linestyle="dotted")
    ax.set_xlabel(scan.name)
    ax.set_ylabel(r"$-2\,\Delta\ln L$")
    ax.set_ylim(bottom=0)
    fixed_layout(fig, left=0.8, right=0.2, top=0.2)
    return _save(fig, path)


def plot_ranking(rank: RankingResult, path: Path, shown: int = RANKING_SHOWN) -> Path:
    """Pre-fit (open) and post-fit (filled) impacts of the top parameters on the POI."""
    n = min(shown, len(rank.labels))
    y = np.arange(n)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * n + 1.5))
    ax.barh(y, rank.prefit_up[:n], fill=False, edgecolor="C0", label="pre-fit impact, up")
    ax.barh(y, rank.prefit_down[:n], fill=False, edgecolor="C1", label="pre-fit impact, down")
    ax.barh(y, rank.postfit_up[:n], color="C0", alpha=0.7, label="post-fit impact, up")
    ax.barh(y, rank.postfit_down[:n], color="C1", alpha=0.7, label="post-fit impact, down")
    ax.set_yticks(y, rank.labels[:n], fontsize=8)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_xlabel(rf"$\Delta$ {rank.poi}")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    fixed_layout(fig, left=text_inches(rank.labels[:n], 8) + 0.25, right=0.2, top=0.2)
    return _save(fig, path)


def plot_jobs(out_dir: str | Path, lh: Likelihood, best: FitResult | None,
              prefit: dict[str, Any], postfit: dict[str, Any], scan: ScanResult | None,
              rank: RankingResult | None, cfg: AnalysisConfig, fit_cfg: FitConfig
              ) -> list[Job]:
    """The fit plots whose inputs exist, as :class:`agc_core.plots.PlotPool` jobs, in the
    order of :func:`draw_all`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    region_of = {ch.name: ch.region for ch in fit_cfg.channels}
    xlabels = {r.name: r.observable for r in cfg.regions}

    def xlabel(channel: str) -> str:
        region = next((r for name, r in region_of.items() if channel.startswith(name)), None)
        return xlabels.get(region, "observable") if region else "observable"

    jobs: list[Job] = []
    if best is not None:
        jobs += [("fit_pulls.png", True, plot_pulls, (lh, best, out / "fit_pulls.png")),
                 ("fit_correlations.png", True, plot_correlations,
                  (best, out / "fit_correlations.png"))]
    for label, tables in (("pre-fit", prefit), ("post-fit", postfit)):
        for channel, table in tables.items():
            name = f"fit_{label.replace('-', '')}_{channel.replace(' ', '_')}.png"
            jobs.append((name, True, plot_data_mc,
                         (channel, table, label, out / name, cfg, xlabel(channel))))
    if scan is not None:
        jobs.append(("fit_scan.png", True, plot_scan, (scan, out / "fit_scan.png")))
    if rank is not None:
        jobs.append(("fit_ranking.png", True, plot_ranking, (rank, out / "fit_ranking.png")))
    return jobs


def draw_all(out_dir: str | Path, lh: Likelihood, best: FitResult | None,
             prefit: dict[str, Any], postfit: dict[str, Any], scan: ScanResult | None,
             rank: RankingResult | None, cfg: AnalysisConfig, fit_cfg: FitConfig
             ) -> list[Path]:
    """Draw every fit plot whose inputs exist; a plot that fails is logged and skipped.

    Files: ``fit_pulls.png``, ``fit_correlations.png``, ``fit_{prefit,postfit}_<channel>.png``
    (spaces as ``_``), ``fit_scan.png``, ``fit_ranking.png``.
    """
    pool = PlotPool(0)
    written = pool.wait(pool.submit_all(plot_jobs(out_dir, lh, best, prefit, postfit, scan,
                                                  rank, cfg, fit_cfg)))
    log.info("drew %d fit plots in %s", len(written), out_dir)
    return written
