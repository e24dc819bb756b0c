"""Input sanity scans: non-finite and negative values in a flat column, in one pass."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def clean(values: np.ndarray, nonnegative: bool) -> bool:
    """True when every value is finite (and >= 0 if ``nonnegative``): one branch-free pass
    that LLVM vectorizes (``x - x`` is 0 exactly for finite x)."""
    n = 0
    if nonnegative:
        for i in range(values.shape[0]):
            x = values[i]
            n += (x - x != 0) | (x < 0)
    else:
        for i in range(values.shape[0]):
            x = values[i]
            n += x - x != 0
    return n == 0


@njit(cache=True)
def scan_values(values: np.ndarray, nonnegative: bool) -> tuple[int, int, int]:
    """Count the values the selection cannot treat as ordinary numbers.

    The seed's cuts silently drop NaN (``NaN > cut`` is False) and keep +inf, and a negative
    pt or energy fails every cut; these counts let the caller report such input instead.

    Args:
        values: flat float column (any float dtype), e.g. ``jet_pt``.
        nonnegative: also count values < 0 (for pt and energies).

    Returns:
        (number of NaN/inf values, number of finite negative values (0 unless
        ``nonnegative``), flat index of the first such value or -1).
    """
    if clean(values, nonnegative):
        return 0, 0, -1
    n_nonfinite = 0
    n_negative = 0
    first = -1
    for i in range(values.shape[0]):
        v = values[i]
        if not math.isfinite(v):
            n_nonfinite += 1
        elif nonnegative and v < 0:
            n_negative += 1
        else:
            continue
        if first < 0:
            first = i
    return n_nonfinite, n_negative, first
