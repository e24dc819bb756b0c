"""Short renderings of a run's and a fit's results: a few lines of text (``repr``) and a small
HTML table (``_repr_html_``, what a notebook shows), instead of a dataclass's long repr."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agc_core.api import FitSummary
    from agc_core.inference.results import FitResult
    from agc_core.results import RunResult

#: at most this many output names listed in a run's summary
OUTPUTS_SHOWN = 6


def _table(title: str, rows: list[tuple[str, str]]) -> str:
    """A two-column HTML table with a caption; the cells are escaped here."""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table><caption style='text-align:left'><b>{html.escape(title)}</b></caption>" \
           f"{body}</table>"


def _axes(h: Any) -> str:
    names = [getattr(a, "name", None) or (a.metadata if isinstance(a.metadata, str) else "?")
             for a in h.axes]
    return ", ".join(f"{n} ({len(a)})" for n, a in zip(names, h.axes, strict=True))


def _fit_line(result: RunResult) -> str | None:
    results = result.stage_results
    inference = results.get("fit_result")
    if inference is not None:
        return inference.summary_line()
    if results.get("fit_error"):
        return f"FIT FAILED: {results['fit_error']}"
    if results.get("fit_skipped"):
        return f"skipped: {results['fit_skipped']}"
    return None


def run_rows(result: RunResult) -> list[tuple[str, str]]:
    """The (name, value) rows of a run's summary."""
    state = "complete" if result.complete else (
        f"INCOMPLETE: {len(result.failures)} of {result.n_chunks} chunks failed"
        + (f", {len(result.skipped_events)} events skipped" if result.skipped_events else ""))
    workers = max(1, result.num_workers)
    rate = result.event_rate
    rows = [("state", state),
            ("events", f"{result.n_events:,} in {result.n_chunks} chunks"),
            ("processing", f"{result.walltime:.2f} s ({rate / 1e6:.2f} M events/s; "
                           f"{rate / workers / 1e3:.0f} kHz per worker, {result.num_workers} "
                           f"x {result.options.executor}); whole call "
                           f"{result.total_walltime:.2f} s"),
            ("read", f"{result.bytes_read / 1e6:,.1f} MB")]
    if result.options.io_only:
        rows.append(("mode", f"I/O only ({result.options.io_file_percent} % branch set)"))
    fit = _fit_line(result)
    if fit is not None:
        rows.append(("fit", fit))
    if result.accuracy:
        overall = {r: a["overall"] for r, a in result.accuracy.items() if "overall" in a}
        if overall:
            rows.append(("MLP accuracy", ", ".join(f"{r} {v:.4f}" for r, v in overall.items())))
    if result.hist is not None:
        rows.append(("hist", f"{type(result.hist).__name__}: {_axes(result.hist)}"))
    names = [n for n in result.outputs if not n.startswith("plots/") and n != "log"]
    plots = len(result.outputs) - len(names) - ("log" in result.outputs)
    shown = ", ".join(names[:OUTPUTS_SHOWN]) + (", ..." if len(names) > OUTPUTS_SHOWN else "")
    rows.append(("outputs", f"{result.output_dir}: {shown}"
                            + (f" and {plots} plots" if plots else "")))
    return rows


def run_text(result: RunResult) -> str:
    """A run in a few lines (``repr`` of a :class:`~agc_core.results.RunResult`)."""
    rows = run_rows(result)
    width = max(len(k) for k, _ in rows)
    return "RunResult\n" + "\n".join(f"  {k:<{width}} : {v}" for k, v in rows)


def run_html(result: RunResult) -> str:
    """A run as a small HTML table (a notebook's view of it)."""
    return _table("agc-core run", run_rows(result))


def poi_line(result: FitResult) -> str:
    """``ttbar_norm = 1.0482 +- 0.0454 (HESSE), -0.0445 / +0.0462 (MINOS)``."""
    value, err = result.value(result.poi)
    line = f"{result.poi} = {value:.4f} +- {err:.4f} (HESSE)"
    if result.poi in result.minos:
        lo, hi = result.minos[result.poi]
        line += f", {lo:+.4f} / {hi:+.4f} (MINOS)"
    return line


def _state(result: FitResult) -> str:
    d = result.diagnostics
    return (("valid" if d.valid else "INVALID") + f", EDM {d.edm:.2g}"
            + (f"; {'; '.join(d.warnings)}" if d.warnings else ""))


def result_rows(result: FitResult) -> list[tuple[str, str]]:
    """The (name, value) rows of a fit: the POI, the minimum's state, the named nuisance
    parameters (best fit +- HESSE); the per-bin ones (``staterror_...[i]``) only counted."""
    rows = [(result.poi, poi_line(result).split(" = ", 1)[1]), ("minimum", _state(result))]
    per_bin = 0
    for i, label in enumerate(result.labels):
        if i == result.poi_index:
            continue
        if label.endswith("]"):
            per_bin += 1
            continue
        rows.append((label, f"{result.bestfit[i]:+.3f} +- {result.uncertainty[i]:.3f}"))
    if per_bin:
        rows.append(("(per-bin parameters)", f"{per_bin} not shown"))
    return rows


def result_text(result: FitResult) -> str:
    """A ``FitResult`` in one line (its ``repr``)."""
    return (f"FitResult: {poi_line(result)}; minimum {_state(result)}; "
            f"{len(result.labels)} parameters")


def result_html(result: FitResult) -> str:
    """A ``FitResult`` as a small HTML table."""
    return _table("agc-core fit result", result_rows(result))


def fit_rows(summary: FitSummary) -> list[tuple[str, str]]:
    """The (name, value) rows of :func:`agc_core.fit`'s summary: :func:`result_rows` with the
    model (channels, parameters) after the minimum's state."""
    channels = [name for name, _ in summary.likelihood.channels]
    rows = result_rows(summary.result)
    model = ("model", f"{len(channels)} channels ({', '.join(channels)}), "
                      f"{len(summary.labels)} parameters")
    return [*rows[:2], model, *rows[2:]]


def fit_text(summary: FitSummary) -> str:
    """A fit in a few lines (``repr`` of a :class:`~agc_core.api.FitSummary`)."""
    d = summary.result.diagnostics
    channels = [name for name, _ in summary.likelihood.channels]
    return (f"FitSummary: {poi_line(summary.result)}\n  {'valid' if d.valid else 'INVALID'} "
            f"minimum, {len(channels)} channels ({', '.join(channels)}), "
            f"{len(summary.labels)} parameters")


def fit_html(summary: FitSummary) -> str:
    """A fit as a small HTML table (a notebook's view of it)."""
    return _table("agc-core fit", fit_rows(summary))


def inference_rows(inference: Any) -> list[tuple[str, str]]:
    """The (name, value) rows of the fit stage's result (``InferenceResult``)."""
    rows = [("fit", inference.summary_line())]
    if inference.fit is not None:
        d = inference.fit.diagnostics
        rows.append(("minimum", ("valid" if d.valid else "INVALID") + f", EDM {d.edm:.2g}"))
    if inference.gof is not None:
        g = inference.gof
        rows.append(("goodness of fit", f"p = {g.p_value:.3f} ({g.ndof} dof)"))
    rows.append(("channels", ", ".join(inference.channels)
                 + (" (split by MLP classification)" if inference.split else "")))
    if inference.study_errors:
        rows.append(("studies", f"{len(inference.study_errors)} fits did not converge"))
    rows.append(("outputs", f"{inference.workspace}, {inference.results_file.name} and "
                            f"{len(inference.plots)} plots"))
    return rows


def inference_text(inference: Any) -> str:
    """The fit stage's result in a few lines."""
    rows = inference_rows(inference)
    width = max(len(k) for k, _ in rows)
    return "InferenceResult\n" + "\n".join(f"  {k:<{width}} : {v}" for k, v in rows)


def inference_html(inference: Any) -> str:
    """The fit stage's result as a small HTML table."""
    return _table("agc-core fit stage", inference_rows(inference))
