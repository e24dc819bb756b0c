"""The seed notebook's plots, drawn from the full histogram into PNG files (matplotlib Agg).

Plots are jobs (a module-level function and picklable arguments) run by a :class:`PlotPool`:
in this process, or in background processes while the caller goes on (the run draws its plots
while the fit runs).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boost_histogram as bh
import numpy as np

from agc_core.accuracy import accuracy_by_process
from agc_core.config import AnalysisConfig
from agc_core.outputs import atomic_path

log = logging.getLogger(__name__)

Series = tuple[np.ndarray, np.ndarray]  # (edges, values)


@functools.cache
def _pyplot() -> Any:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a notebook's pyplot keeps its (inline)
        matplotlib.use("Agg")                   # backend: these figures are saved and closed
    import matplotlib.pyplot

    return matplotlib.pyplot


class _Pyplot:
    """``matplotlib.pyplot`` (Agg backend), imported on first use: a process that only
    submits plots to a background :class:`PlotPool` never loads matplotlib (0.35 s)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_pyplot(), name)


plt: Any = _Pyplot()


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


#: PNG zlib level: 1 writes the plots ~2x faster than PIL's default 6, files ~25 % larger
PNG_COMPRESS_LEVEL = 1
#: width of a character of the default font, in units of its size (for label margins)
CHAR_WIDTH = 0.5


#: matplotlib settings while a plot is rendered: unhinted glyphs (FreeType's hinting costs
#: ~10 % of drawing these plots; at 100 dpi the text looks the same)
RENDER_RC = {"text.hinting": "none"}
#: ... and while a plot job builds its figure: titles at the top of their axes, not moved
#: above whatever is drawn there (nothing is: placing them measured every tick label)
BUILD_RC = {"axes.titley": 1.0}


#: at most this many major ticks on an axis matplotlib places itself (its default goes up to
#: ~9; every tick label is laid out and drawn: 6 make the run's plots ~10 % cheaper). Axes
#: with set ticks (parameter names) keep every one.
MAX_AUTO_TICKS = 6


def _fewer_ticks(fig: plt.Figure) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            locator = axis.get_major_locator()
            if isinstance(locator, MaxNLocator):  # (AutoLocator is one; FixedLocator not)
                locator.set_params(nbins=MAX_AUTO_TICKS)


def _save(fig: plt.Figure, path: Path) -> Path:
    _fewer_ticks(fig)
    with atomic_path(path) as tmp, plt.rc_context(RENDER_RC):
        fig.savefig(tmp, format="png", dpi=100,
                    pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    plt.close(fig)
    return path


def text_inches(labels: Sequence[str], fontsize: float) -> float:
    """Estimated width in inches of the longest label (for a margin that fits it)."""
    return max((len(s) for s in labels), default=0) * fontsize * CHAR_WIDTH / 72


def fixed_layout(fig: plt.Figure, left: float = 0.9, right: float = 0.25, top: float = 0.45,
                 bottom: float = 0.6, gap: float = 0.0, rows: int = 1) -> None:
    """Margins in inches, and ``gap`` inches between ``rows`` rows of axes.

    Used instead of ``tight_layout``, which measures every tick label's text and costs
    ~0.1 s a figure (a third of drawing the run's plots); these plots' labels are known, so
    margins in inches (independent of the figure's size) fit them.
    """
    w, h = fig.get_size_inches()
    axis_h = (h - top - bottom - (rows - 1) * gap) / rows
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h,
                        bottom=bottom / h, hspace=gap / axis_h if rows > 1 else None)


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
    fixed_layout(fig, top=1.0, bottom=0.7, gap=0.9, rows=2)
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
    fixed_layout(fig, top=1.0 if "overall" in acc else 0.45, bottom=0.7, gap=0.5,
                 rows=len(processes))
    return _save(fig, path)


def draw_all(hist: bh.Histogram, cfg: AnalysisConfig, output_dir: str | Path,
             classification: bool = True, pool: PlotPool | None = None) -> list[Path]:
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
        pool: where to draw: None draws here and now; with a background :class:`PlotPool`
            the plots are only submitted (``pool.wait`` or ``pool.finish`` give the files).

    Returns:
        The PNG files written (with a pool: the files it will write, failures left out by
        its ``wait``/``finish``).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plot_jobs(hist, cfg, out, classification)
    if pool is None:
        inline = PlotPool(0)
        names = inline.submit_all(jobs)
        written = inline.wait(names)
        log.info("drew %d plots in %s", len(written), out)
        return written
    names = pool.submit_all(jobs)
    return [out / name for name in names]


Job = tuple[str, bool, Callable[..., Path], tuple[Any, ...]]  # (file name, possible, fn, args)


def plot_jobs(hist: bh.Histogram, cfg: AnalysisConfig, out: Path,
              classification: bool = True) -> list[Job]:
    """The plots of :func:`draw_all` as jobs: (file name, inputs exist, function, arguments)."""
    signal = cfg.signal_process
    has_nominal = _has(hist, 3, "nominal")
    has_signal = _has(hist, 2, signal)
    btag = [(f"NP {i + 1}", f"btag_var_{i}_up") for i in range(cfg.systematics.btag_n_jets)]
    jet = [("scale up", "pt_scale_up"), ("resolution up", "pt_res_up")]
    r1, r2 = (r.name for r in cfg.regions)
    jobs: list[Job] = [
        ("stack_4j1b_ht.png", has_nominal,
         plot_stack, (hist, cfg, r1, out / "stack_4j1b_ht.png", True)),
        ("stack_4j2b_mbjj.png", has_nominal,
         plot_stack, (hist, cfg, r2, out / "stack_4j2b_mbjj.png", False)),
        ("btag_variations.png",
         has_nominal and has_signal and all(_has(hist, 3, v) for _, v in btag),
         plot_variations, (hist, cfg, r1, signal, [("nominal", "nominal"), *btag],
                           "b-tagging variations", out / "btag_variations.png", True)),
        ("jet_energy_variations.png",
         has_nominal and has_signal and all(_has(hist, 3, v) for _, v in jet),
         plot_variations, (hist, cfg, r2, signal, [("nominal", "nominal"), *jet],
                           "Jet energy variations", out / "jet_energy_variations.png", False)),
    ]
    for region in (r1, r2) if classification else ():
        jobs += [
            (f"classification_{region}.png", has_nominal, plot_classification_stack,
             (hist, cfg, region, out / f"classification_{region}.png")),
            (f"classification_overlay_{region}.png", has_nominal, plot_classification_overlay,
             (hist, cfg, region, out / f"classification_overlay_{region}.png")),
            (f"accuracy_{region}.png",
             has_nominal and bool(accuracy_by_process(hist, region, signal)), plot_accuracy,
             (hist, cfg, region, out / f"accuracy_{region}.png")),
        ]
    return jobs


def _draw_job(fn: Callable[..., Path], args: tuple[Any, ...]) -> tuple[Path | None, str]:
    """Run one plot job: (its file, "") or (None, the error) -- a failure never propagates."""
    try:
        with plt.rc_context(BUILD_RC):
            return fn(*args), ""
    except Exception as exc:
        plt.close("all")
        return None, f"{type(exc).__name__}: {exc}"


def _plot_worker_init() -> None:
    """A plot process: matplotlib loaded before the first job arrives."""
    _pyplot()


class PlotPool:
    """Draws plot jobs here (``workers=0``) or in background processes.

    :meth:`submit` returns at once with a background pool; :meth:`wait` gives the files of
    some jobs in submission order and :meth:`finish` those of all the others, logging each
    failed plot by name (a failed plot is skipped: the histograms are on disk). If the
    processes cannot start or die, the jobs not done are drawn in this process: the same
    files either way.

    Args:
        workers: background processes (0: draw in this process, at submission).
        start_method: multiprocessing start method (default ``forkserver`` on Linux, sharing
            the run's server; ``spawn`` elsewhere).
    """

    def __init__(self, workers: int = 0, start_method: str | None = None) -> None:
        self._pool: Any = None
        self._jobs: dict[str, tuple[Callable[..., Path], tuple[Any, ...]]] = {}
        self._pending: dict[str, Any] = {}  # name -> future or (path, error)
        #: names of the jobs that failed (logged), once waited for
        self.failed: list[str] = []
        if workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            method = start_method or ("forkserver" if sys.platform.startswith("linux")
                                      else "spawn")
            try:
                self._pool = ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context(method),
                    initializer=_plot_worker_init)
                # start the processes (and their matplotlib import) now, not at the first plot
                for _ in range(workers):
                    self._pool.submit(int)
            except (OSError, ValueError) as exc:
                log.warning("plots drawn in the main process: no plot processes (%s)", exc)
                self._pool = None

    @classmethod
    def background(cls) -> PlotPool:
        """A pool of one process per core, at most two (the fit keeps the main process).

        Called from the top level of a script without ``if __name__ == "__main__":`` (which
        new processes would run again, :mod:`agc_core.mainguard`), it draws here instead.
        """
        from agc_core import mainguard

        if mainguard.unguarded_call_site() is not None:
            log.debug("plots drawn in the main process: the script has no __main__ guard")
            return cls(0)
        return cls(min(2, os.cpu_count() or 1))

    def submit(self, name: str, fn: Callable[..., Path], *args: Any) -> None:
        """Draw ``fn(*args)`` (a module-level function returning the file it wrote)."""
        self._jobs[name] = (fn, args)
        if self._pool is not None:
            try:
                self._pending[name] = self._pool.submit(_draw_job, fn, args)
                return
            except Exception as exc:  # a broken pool: this process draws from now on
                log.warning("plot processes unavailable (%s): drawing here", exc)
                self.close()
        self._pending[name] = _draw_job(fn, args)

    def submit_all(self, jobs: Sequence[Job]) -> list[str]:
        """Submit the possible jobs (the others logged as skipped); returns their names."""
        names = []
        for name, possible, fn, args in jobs:
            if not possible:
                log.info("plot %s skipped: its histograms were not filled", name)
                continue
            self.submit(name, fn, *args)
            names.append(name)
        return names

    def wait(self, names: Sequence[str]) -> list[Path]:
        """The files of these jobs (submission order), once drawn; failures logged, left out."""
        written = []
        for name in names:
            outcome = self._pending.pop(name)
            if not isinstance(outcome, tuple):
                try:
                    outcome = outcome.result()
                except Exception as exc:  # the process died: draw it here
                    log.warning("plot process failed on %s (%s): drawing it here", name,
                                type(exc).__name__)
                    self.close()
                    outcome = _draw_job(*self._jobs[name])
            path, error = outcome
            if path is None:
                log.warning("plot %s failed: %s", name, error)
                self.failed.append(name)
            else:
                written.append(path)
        return written

    def finish(self) -> list[Path]:
        """Wait for every job not waited for yet; returns their files; stops the processes."""
        try:
            return self.wait(list(self._pending))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the processes (after their current jobs)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._pool = None

    def __enter__(self) -> PlotPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
