"""Metrics of a binary classifier with event weights: ROC curve and area, weighted accuracy,
class-balanced weights."""

from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC curve (tied scores grouped), from (0, 0) to (1, 1).

    Args:
        scores: (n,) classifier outputs, larger = more signal-like.
        labels: (n,) 1 for signal, 0 for background.
        weights: (n,) non-negative event weights (default 1).

    Returns:
        (fpr, tpr): background and signal efficiencies above each distinct threshold,
        float64, starting with 0 and ending with 1.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(np.where(y, w, 0.0))
    fp = np.cumsum(np.where(y, 0.0, w))
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, int)
    tp, fp = np.r_[0.0, tp[last]], np.r_[0.0, fp[last]]
    ps, ns = tp[-1], fp[-1]
    if ps <= 0 or ns <= 0:
        raise ValueError("ROC curve needs signal and background events with positive weight")
    return fp / ns, tp / ps


def roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
            ) -> float:
    """Area under the weighted ROC curve (trapezoids; ties count one half)."""
    fpr, tpr = roc_curve(scores, labels, weights)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def weighted_accuracy(predicted: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Weighted fraction of events whose 0/1 prediction equals the label."""
    correct = np.asarray(predicted).astype(np.int64) == np.asarray(labels).astype(np.int64)
    total = float(np.sum(weights))
    return float(np.sum(np.where(correct, weights, 0.0)) / total) if total > 0 else float("nan")


def balanced_weights(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rescale weights so that each class has total weight n / 2 (mean weight 1)."""
    y = np.asarray(labels).astype(bool)
    w = np.asarray(weights, dtype=np.float64)
    out = np.empty_like(w)
    half = w.size / 2.0
    for cls in (True, False):
        total = w[y == cls].sum()
        if total <= 0:
            raise ValueError(f"no {'signal' if cls else 'background'} events with positive "
                             f"weight")
        out[y == cls] = w[y == cls] * (half / total)
    return out
