"""The seed's MLP classification outputs from the filled histogram: stacks and accuracies.

The seed reads everything from its 5-axis histogram (observable, region, process, variation,
classification) at the ``nominal`` variation: the observable of events predicted as background
(class 0) and as signal (class 1), stacked by process, and the accuracy per process, where the
signal process is correct in class 1 and every other process in class 0, plus the overall
accuracy over all processes. All are cross-section weighted sums. The seed's
``hist[...].sum()`` leaves out the underflow and overflow bins (hist's default
``flow=False``), so by default so does :func:`classification_summary`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import boost_histogram as bh
import numpy as np

from agc_core.config import AnalysisConfig

log = logging.getLogger(__name__)

AXIS_OBSERVABLE, AXIS_REGION, AXIS_PROCESS, AXIS_VARIATION, AXIS_CLASS = range(5)


@dataclass(frozen=True, eq=False)
class ClassificationSummary:
    """Classification outputs of one region at one variation.

    Attributes:
        region: region name.
        variation: histogram variation used (the seed: ``nominal``).
        signal_process: the process whose correct class is 1.
        edges: observable bin edges of the arrays below (flow bins, if included, are the
            first and last entries of the arrays and have no edges here).
        predicted_background: process -> weighted events per bin predicted as class 0.
        predicted_signal: process -> weighted events per bin predicted as class 1.
        accuracy: process -> weighted fraction classified correctly (processes without
            events in the region are left out).
        overall: weighted fraction of all events of the region classified correctly (NaN if
            the region is empty).
        flow: whether the under/overflow bins are included.
    """

    region: str
    variation: str
    signal_process: str
    edges: np.ndarray
    predicted_background: Mapping[str, np.ndarray]
    predicted_signal: Mapping[str, np.ndarray]
    accuracy: Mapping[str, float]
    overall: float
    flow: bool = False

    def counts(self, process: str) -> tuple[float, float]:
        """(weighted events in class 0, in class 1) of a process."""
        return (float(self.predicted_background[process].sum()),
                float(self.predicted_signal[process].sum()))

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly accuracies and counts."""
        return {
            "region": self.region, "variation": self.variation, "flow": self.flow,
            "accuracy": dict(self.accuracy), "overall": self.overall,
            "counts": {p: list(self.counts(p)) for p in self.predicted_signal},
        }


def _category_index(axis: bh.axis.Axis, value: str) -> int | None:
    try:
        idx = int(axis.index(value))
    except KeyError:
        return None
    return idx if 0 <= idx < len(axis) else None


def classification_summary(hist: bh.Histogram, region: str, signal_process: str,
                           variation: str = "nominal", flow: bool = False
                           ) -> ClassificationSummary:
    """Stacks of predicted signal / background and the accuracies of one region.

    Args:
        hist: the seed's 5-axis histogram (``agc_core.histograms.to_boost``).
        region: region name.
        signal_process: process counted correct in class 1 (``cfg.signal_process``).
        variation: histogram variation (the seed uses ``nominal``).
        flow: include the observable's under/overflow bins (the seed does not).

    Returns:
        The summary; processes appear in the histogram's category order.

    Raises:
        KeyError: unknown region or variation.
    """
    ir = _category_index(hist.axes[AXIS_REGION], region)
    iv = _category_index(hist.axes[AXIS_VARIATION], variation)
    if ir is None:
        raise KeyError(f"region {region!r} not in the histogram")
    if iv is None:
        raise KeyError(f"variation {variation!r} not in the histogram")
    values = hist.view(flow=True).value
    bins = slice(None) if flow else slice(1, -1)
    background: dict[str, np.ndarray] = {}
    signal: dict[str, np.ndarray] = {}
    accuracy: dict[str, float] = {}
    correct_all = total_all = 0.0
    proc_axis = hist.axes[AXIS_PROCESS]
    for ip in range(len(proc_axis)):
        name = proc_axis[ip]
        per_bin = values[bins, ir, ip, iv, :2]
        background[name] = per_bin[:, 0].copy()
        signal[name] = per_bin[:, 1].copy()
        n0, n1 = float(per_bin[:, 0].sum()), float(per_bin[:, 1].sum())
        total = n0 + n1
        if total <= 0:
            continue
        correct = n1 if name == signal_process else n0
        accuracy[name] = correct / total
        correct_all += correct
        total_all += total
    overall = correct_all / total_all if total_all > 0 else float("nan")
    return ClassificationSummary(region, variation, signal_process,
                                 np.asarray(hist.axes[AXIS_OBSERVABLE].edges), background,
                                 signal, accuracy, overall, flow)


def classification_summaries(hist: bh.Histogram, cfg: AnalysisConfig,
                             variation: str = "nominal", flow: bool = False
                             ) -> dict[str, ClassificationSummary]:
    """:func:`classification_summary` of every region of the configuration."""
    return {r.name: classification_summary(hist, r.name, cfg.signal_process, variation, flow)
            for r in cfg.regions}


def accuracy_by_process(hist: bh.Histogram, region: str, signal_process: str,
                        variation: str = "nominal") -> dict[str, float]:
    """The seed's MLP accuracy per process in a region, and ``overall``.

    Correct means classification 1 for the signal process and 0 for the others; weighted
    event counts of ``variation`` over the observable bins without under/overflow, as the
    seed (see :func:`classification_summary`).

    Returns:
        ``{process: accuracy, ..., "overall": accuracy}``; processes without events in the
        region are left out; empty when the region or the variation is not in ``hist``.
    """
    try:
        summary = classification_summary(hist, region, signal_process, variation)
    except KeyError:
        return {}
    out = dict(summary.accuracy)
    if out:
        out["overall"] = summary.overall
    return out
