"""``report.html``: one self-contained page of a run or a fit (images embedded, works offline).

It opens with ttbar_norm and the pictures a physicist looks at first, the post-fit data/MC of
each channel and the pulls; then the fit diagnostics, the goodness
of fit and expected uncertainty, pre- and post-fit yields per channel and sample, the events
processed and the event rate, the MLP accuracies, any failure, and every plot (PNG files
embedded as base64 data URIs: the file opens in any browser without its folder).
"""

from __future__ import annotations

import base64
import html
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agc_core.outputs import write_text_atomic

if TYPE_CHECKING:
    from agc_core.inference.results import InferenceResult
    from agc_core.results import RunResult

log = logging.getLogger(__name__)

REPORT_FILE_NAME = "report.html"

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.poi { font-size: 1.4em; font-weight: bold; }
.bad { color: #b00; font-weight: bold; } .good { color: #070; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 32em; border: 1px solid #ddd; }
figcaption { font-size: .8em; color: #555; text-align: center; }
.headline figure img { max-width: 36em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(path.name)}</figcaption></figure>")


def _fit_section(inf: InferenceResult) -> list[str]:
    parts = ["<h2>Fit</h2>"]
    if inf.errors:
        parts.append("<p class='bad'>FIT FAILED (the exit code is non-zero):</p><ul>"
                     + "".join(f"<li class='bad'>{_e(m)}</li>" for m in inf.errors) + "</ul>")
    if inf.study_errors:
        parts.append("<p class='bad'>Fits of the studies that did not converge (their values "
                     "are left out, the measurement stands):</p><ul>"
                     + "".join(f"<li>{_e(m)}</li>" for m in inf.study_errors) + "</ul>")
    r = inf.fit
    if r is None:
        return parts
    value, err = r.value(r.poi)
    lo, hi = r.minos.get(r.poi, (float("nan"), float("nan")))
    parts.append(f"<p class='poi'>{_e(r.poi)} = {value:.4f} &plusmn; {err:.4f} (HESSE), "
                 f"{lo:+.4f} / {hi:+.4f} (MINOS)</p>")
    rows = []
    if inf.asimov is not None:
        a = inf.asimov
        rows.append(["expected (Asimov) uncertainty", f"{a.hesse:.4f} (HESSE), "
                     f"{a.minos_down:+.4f} / {a.minos_up:+.4f} (MINOS)"])
    if inf.gof is not None:
        g = inf.gof
        rows.append(["goodness of fit (saturated model)",
                     f"p = {g.p_value:.4f} (-2 &Delta;ln L = {g.twice_delta_nll:.2f}, "
                     f"{g.ndof} dof)"])
    d = r.diagnostics
    rows += [
        ["channels", ", ".join(inf.channels) + (" (split by MLP classification)"
                                                 if inf.split else "")],
        ["-2 ln L at the best fit", f"{r.best_twice_nll:.4f}"],
        ["MIGRAD valid / EDM", f"{d.valid} / {d.edm:.3g} (goal {d.edm_goal:.3g})"],
        ["strategies tried", ", ".join(map(str, d.strategies))],
        ["function / gradient calls", f"{d.nfcn} / {d.ngrad}"],
        ["HESSE accurate / forced pos-def", f"{d.hesse_accurate} / {d.hesse_forced_posdef}"],
        ["MINOS", ", ".join(f"{k}: {d.minos_method.get(k, '')}, valid {v}"
                            for k, v in d.minos_valid.items())],
        ["MINOS half width / HESSE", ", ".join(f"{k}: {v:.3f}"
                                               for k, v in d.hesse_minos_ratio.items())],
        ["parameters at a bound", ", ".join(d.at_limit) or "none"],
        ["likelihood", "numba -2 ln L with analytic gradient, analytic Hessian" if d.analytic
         else "pyhf logpdf (numerical derivatives)"],
        ["warnings", "; ".join(d.warnings) or "none"],
        ["time (s)", ", ".join(f"{k} {v:.2f}" for k, v in inf.seconds.items())],
    ]
    # rows hold pre-escaped HTML in a few cells: build this table by hand
    parts.append("<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>"
                                     for k, v in rows) + "</table>")
    parts.append("<h3>Parameters</h3>")
    parts.append(_table(["parameter", "best fit", "HESSE"],
                        [[lab, f"{b:.4f}", f"{u:.4f}"] for lab, b, u in
                         zip(r.labels, r.bestfit, r.uncertainty, strict=True)]))
    for label, tables in (("Pre-fit", inf.prefit), ("Post-fit", inf.postfit)):
        if not tables:
            continue
        parts.append(f"<h3>{label} yields</h3>")
        channels = list(tables)
        samples = list(next(iter(tables.values()))["samples"])
        rows = [[s] + [f"{sum(tables[c]['samples'][s]):,.1f}" for c in channels]
                for s in samples]
        rows.append(["total"] + [f"{tables[c]['sum']:,.1f} &plusmn; {tables[c]['sum_unc']:,.1f}"
                                 for c in channels])
        rows.append(["data"] + [f"{sum(tables[c]['data']):,.1f}" for c in channels])
        head = "".join(f"<th>{_e(h)}</th>" for h in ["sample", *channels])
        body = "".join("<tr>" + "".join(f"<td>{c if i else _e(c)}</td>"
                                        for i, c in enumerate(row)) + "</tr>" for row in rows)
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    if inf.ranking is not None:
        rk = inf.ranking
        parts.append("<h3>Ranking (impact on the POI, largest post-fit first)</h3>")
        parts.append(_table(["parameter", "pre-fit up", "pre-fit down", "post-fit up",
                             "post-fit down"],
                            [[lab, f"{a:+.4f}", f"{b:+.4f}", f"{c:+.4f}", f"{d_:+.4f}"]
                             for lab, a, b, c, d_ in list(zip(
                                 rk.labels, rk.prefit_up, rk.prefit_down, rk.postfit_up,
                                 rk.postfit_down, strict=True))[:15]]))
    return parts


def _run_section(run: RunResult, metrics: dict[str, Any]) -> list[str]:
    parts = ["<h2>Processing</h2>"]
    state = ("<span class='good'>complete</span>" if run.complete else
             f"<span class='bad'>INCOMPLETE: {len(run.failures)} of {run.n_chunks} chunks "
             "failed</span>")
    rate = run.event_rate
    rows = [
        ["state", state],
        ["fileset", _e(run.fileset)],
        ["events processed", f"{run.n_events:,}"],
        ["event rate", f"{rate:,.0f} events/s total, {rate / max(1, run.num_workers):,.0f} "
                       f"per worker ({run.num_workers} x {_e(run.options.executor)})"],
        ["processing wall time / whole run", f"{run.walltime:.2f} s / "
                                             f"{run.total_walltime:.2f} s"],
        ["data read", f"{run.bytes_read / 1e6:,.1f} MB"],
        ["inference", _e(run.inference)],
    ]
    if metrics.get("git_commit"):
        rows.append(["git commit", _e(metrics["git_commit"])])
    parts.append("<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>"
                                     for k, v in rows) + "</table>")
    for failure in run.failures:
        parts.append(f"<p class='bad'>FAILED chunk: {_e(failure.describe())}</p>")
    if run.accuracy:
        parts.append("<h3>MLP accuracy</h3>")
        processes = sorted({p for acc in run.accuracy.values() for p in acc})
        parts.append(_table(["region", *processes],
                            [[region] + [f"{acc[p]:.4f}" if p in acc else "" for p in processes]
                             for region, acc in run.accuracy.items()]))
    if run.yields:
        parts.append("<h3>Selected events</h3>")
        regions = list(run.yields[0].raw)
        parts.append(_table(["sample", *(f"{r} raw" for r in regions),
                             *(f"{r} weighted" for r in regions)],
                            [[f"{y.process} {y.variation}", *(f"{y.raw[r]:,}" for r in regions),
                              *(f"{y.weighted[r]:,.1f}" for r in regions)]
                             for y in run.yields]))
    return parts


def headline_plots(inference: InferenceResult) -> list[Path]:
    """The pictures a physicist looks at first, shown above the tables: the post-fit data/MC
    of every channel, then the pulls (those the fit stage drew)."""
    plots = [Path(p) for p in inference.plots]
    first = [p for p in plots if p.name.startswith("fit_postfit_")]
    first += [p for p in plots if p.name == "fit_pulls.png"]
    return [p for p in first if p.exists()]


def write_report(path: str | Path, inference: InferenceResult | None = None,
                 run: RunResult | None = None, metrics: dict[str, Any] | None = None,
                 plots: Iterable[Path] = ()) -> Path:
    """Write ``report.html`` atomically.

    Args:
        path: the file to write.
        inference: the fit stage's result (None: no fit section, or "fit skipped").
        run: the run (None for ``python -m agc_core fit``).
        metrics: the run's metrics.json record (git commit, ...).
        plots: PNG files to embed besides the fit's (e.g. the run's plots).

    Returns:
        The path written.
    """
    title = "agc-core report"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{title}: CMS 2015 Open Data ttbar (AGC)</h1>",
             f"<p>written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"]
    headline = headline_plots(inference) if inference is not None else []
    if inference is not None:
        section = _fit_section(inference)
        # the post-fit pictures right under the ttbar_norm line, above every table
        at = next((i + 1 for i, part in enumerate(section)
                   if part.startswith("<p class='poi'>")), len(section))
        section[at:at] = ["<div class='headline'>" + "".join(_img(p) for p in headline)
                          + "</div>"] if headline else []
        parts += section
    elif run is not None:
        reason = run.stage_results.get("fit_error") or run.stage_results.get("fit_skipped")
        if reason:
            cls = "bad" if run.stage_results.get("fit_error") else ""
            parts.append(f"<h2>Fit</h2><p class='{cls}'>"
                         f"{'FIT FAILED' if cls else 'fit skipped'}: {_e(reason)}</p>")
        elif not run.options.fit:
            parts.append("<h2>Fit</h2><p>not run (--no-fit)</p>")
    if run is not None:
        parts += _run_section(run, metrics or {})
    images = list(plots) + (list(inference.plots) if inference is not None else [])
    seen: set[Path] = set(headline)  # shown at the top already
    unique = [p for p in images if not (p in seen or seen.add(p)) and Path(p).exists()]
    if unique:
        parts.append("<h2>Plots</h2>")
        parts += [_img(Path(p)) for p in unique]
    parts.append("</body></html>")
    write_text_atomic(path, "\n".join(parts) + "\n")
    log.info("wrote %s (%d plots embedded)", path, len(unique) + len(headline))
    return Path(path)
