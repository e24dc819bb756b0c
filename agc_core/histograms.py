"""Histogram containers: dense per-sample arrays and the seed's boost-histogram with all axes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import boost_histogram as bh
import numpy as np

from agc_core.config import REGIONS, AnalysisConfig

log = logging.getLogger(__name__)

N_CLASSES = 2


@dataclass
class HistArray:
    """Dense histogram of one sample: sums of weights and of squared weights.

    Both arrays are float64 of shape (n_variations, 2 regions [4j1b, 4j2b],
    2 classifications [0, 1], bins + 2 [underflow, bins..., overflow]).
    """

    variations: tuple[str, ...]
    sumw: np.ndarray
    sumw2: np.ndarray

    @classmethod
    def empty(cls, variations: Sequence[str], cfg: AnalysisConfig) -> HistArray:
        """An all-zero histogram for the given variation names."""
        shape = (len(variations), len(REGIONS), N_CLASSES, cfg.binning.bins + 2)
        return cls(tuple(variations), np.zeros(shape), np.zeros(shape))

    def __add__(self, other: HistArray) -> HistArray:
        if self.variations != other.variations or self.sumw.shape != other.sumw.shape:
            raise ValueError("cannot add HistArrays with different variations or shapes")
        return HistArray(self.variations, self.sumw + other.sumw, self.sumw2 + other.sumw2)

    def variation_index(self, name: str) -> int:
        """Index of a variation name on the first axis."""
        return self.variations.index(name)


def observable_axis(cfg: AnalysisConfig) -> bh.axis.Regular:
    """The seed's observable axis, Reg(25, 50, 550) with flow bins."""
    b = cfg.binning
    return bh.axis.Regular(b.bins, b.low, b.high, metadata="observable")


def empty_boost_histogram(
    cfg: AnalysisConfig, processes: Sequence[str], variations: Sequence[str]
) -> bh.Histogram:
    """The seed's 5-axis histogram (observable, region, process, variation, classification)."""
    return bh.Histogram(
        observable_axis(cfg),
        bh.axis.StrCategory(list(REGIONS), metadata="region"),
        bh.axis.StrCategory(list(processes), metadata="process"),
        bh.axis.StrCategory(list(variations), metadata="variation"),
        bh.axis.IntCategory(list(range(N_CLASSES)), metadata="classification"),
        storage=bh.storage.Weight(),
    )


def to_boost(
    results: Iterable[tuple[str, HistArray]],
    cfg: AnalysisConfig,
) -> bh.Histogram:
    """Merge per-sample dense histograms into one boost-histogram with the seed's axes.

    Args:
        results: (process, HistArray) pairs; several samples of one process (e.g. ttbar
            nominal and ttbar scaleup) add into the same process slice, each in its own
            variation names.
        cfg: the analysis configuration (binning).

    Returns:
        A ``bh.Histogram`` with Weight storage; flow bins of the observable are kept.
        Category order: processes and variations in order of first appearance.
    """
    results = list(results)
    processes: list[str] = []
    variations: list[str] = []
    for process, arr in results:
        if process not in processes:
            processes.append(process)
        for v in arr.variations:
            if v not in variations:
                variations.append(v)
    hist = empty_boost_histogram(cfg, processes, variations)
    # view(flow=True) axes: observable (bins+2), region (+1 overflow), process (+1),
    # variation (+1), classification (+1 overflow)
    view = hist.view(flow=True)
    for process, arr in results:
        ip = processes.index(process)
        for iv, name in enumerate(arr.variations):
            jv = variations.index(name)
            # arr: (region, class, bin) -> view: (bin, region, process, variation, class)
            vals = np.transpose(arr.sumw[iv], (2, 0, 1))
            var2 = np.transpose(arr.sumw2[iv], (2, 0, 1))
            view.value[:, : len(REGIONS), ip, jv, :N_CLASSES] += vals
            view.variance[:, : len(REGIONS), ip, jv, :N_CLASSES] += var2
    return hist


def from_boost(hist: bh.Histogram, process: str) -> HistArray:
    """Extract the dense histogram of one process from the seed's 5-axis histogram.

    Inverse of :func:`to_boost` for one process (all its variations).
    """
    proc_axis = hist.axes[2]
    var_axis = hist.axes[3]
    ip = proc_axis.index(process)
    variations = tuple(var_axis[i] for i in range(len(var_axis)))
    view = hist.view(flow=True)
    # (bin, region, variation, class) -> (variation, region, class, bin)
    sumw = np.transpose(view.value[:, : len(REGIONS), ip, : len(variations), :N_CLASSES],
                        (2, 1, 3, 0)).copy()
    sumw2 = np.transpose(view.variance[:, : len(REGIONS), ip, : len(variations), :N_CLASSES],
                         (2, 1, 3, 0)).copy()
    return HistArray(variations, sumw, sumw2)


class _Task(Protocol):
    """What the merger needs of a chunk task (:class:`agc_core.planning.ChunkTask`)."""

    sample_id: int


class OrderedMerger:
    """Adds chunk histograms per sample strictly in task-index order, whatever the arrival.

    Results that arrive early wait in a buffer (bounded by how far completion runs ahead).
    """

    def __init__(self, tasks: Sequence[_Task]) -> None:
        self.tasks = tasks
        self.next = 0
        self.pending: dict[int, HistArray | None] = {}
        self.sums: dict[int, HistArray] = {}  # sample_id -> sum

    def add(self, index: int, hist: HistArray | None) -> None:
        """Accept the result of task ``index`` (None: failed or no histogram)."""
        self.pending[index] = hist
        while self.next in self.pending:
            h = self.pending.pop(self.next)
            if h is not None:
                sid = self.tasks[self.next].sample_id
                self.sums[sid] = h if sid not in self.sums else self.sums[sid] + h
            self.next += 1

    @property
    def done(self) -> bool:
        """Every task has been accepted."""
        return self.next == len(self.tasks)


def histogram_digest(hist: bh.Histogram) -> str:
    """sha256 of a histogram's axes and of every sum of weights and of squares (flow bins)."""
    digest = hashlib.sha256()
    for axis in hist.axes:
        digest.update(repr(axis).encode())
    view = hist.view(flow=True)
    for array in (view.value, view.variance):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    return digest.hexdigest()
