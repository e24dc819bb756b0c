"""The seed's hadronic-top candidate: the b-tagged trijet with the largest pt, its mass and dR.

Trijets are all (i < j < k) combinations of the selected jets in ``ak.combinations`` order;
four-vector sums are float32 in the order ``(j1 + j2) + j3``; the candidate is the first
trijet with the largest float32 ``sqrt(px^2 + py^2)`` among those whose max b-tag is above the
threshold (strict), like ``ak.argmax``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kinematics import delta_r, max_multiplicity, momentum_xyz


@njit(cache=True)
def transverse_momentum(px: np.float32, py: np.float32) -> np.float32:
    """``sqrt(px*px + py*py)`` in float32 (GeV)."""
    return np.float32(math.sqrt(px * px + py * py))


@njit(cache=True)
def invariant_mass(e: np.float32, px: np.float32, py: np.float32, pz: np.float32
                   ) -> np.float32:
    """``sqrt(e*e - ((px*px + py*py) + pz*pz))`` in float32 (GeV); NaN if the square is < 0."""
    m2 = e * e - ((px * px + py * py) + pz * pz)
    if m2 < 0:
        return np.float32(np.nan)
    return np.float32(math.sqrt(m2))


@njit(cache=True)
def best_trijet(px: np.ndarray, py: np.ndarray, btag_pass: np.ndarray, n: int
                ) -> tuple[int, int, int]:
    """Positions of the b-tagged trijet with the largest float32 pt among n jets.

    Args:
        px, py: float32 momentum components (GeV) of the selected jets, stored order.
        btag_pass: bool per selected jet, ``btag > threshold``.
        n: number of selected jets (the first n entries are used).

    Returns:
        (a, b, c) with a < b < c; (-1, -1, -1) if no trijet has a b-tag. Ties (and NaN) as
        ``ak.argmax``: the first trijet in ``ak.combinations`` order wins.
    """
    best_a = -1
    best_b = -1
    best_c = -1
    best_pt = np.float32(0.0)
    best_pt2 = np.float32(0.0)
    for a in range(n):
        for b in range(a + 1, n):
            x_ab = px[a] + px[b]
            y_ab = py[a] + py[b]
            tag_ab = btag_pass[a] | btag_pass[b]
            for c in range(b + 1, n):
                x = x_ab + px[c]
                y = y_ab + py[c]
                pt2 = x * x + y * y
                # one rarely taken branch (bitwise ops, no short circuit); sqrt is monotonic:
                # only a larger pt^2 can give a larger float32 pt
                if (tag_ab | btag_pass[c]) & ((best_a < 0) | (pt2 > best_pt2)):
                    pt = np.float32(math.sqrt(pt2))
                    if best_a < 0 or pt > best_pt:
                        best_pt = pt
                        best_pt2 = pt2
                        best_a = a
                        best_b = b
                        best_c = c
    return best_a, best_b, best_c


@njit(cache=True)
def trijet_mass(px: np.ndarray, py: np.ndarray, pz: np.ndarray, e: np.ndarray, i: int, j: int,
                k: int) -> np.float32:
    """float32 invariant mass (GeV) of jets i, j, k, four-vectors summed as ``(i + j) + k``.

    Args:
        px, py, pz: float32 momentum components (GeV), indexed like ``e``.
        e: float32 jet energies (GeV).
        i, j, k: positions of the three jets.
    """
    return invariant_mass((e[i] + e[j]) + e[k], (px[i] + px[j]) + px[k],
                          (py[i] + py[j]) + py[k], (pz[i] + pz[j]) + pz[k])


@njit(cache=True)
def trijet_avg_dr(eta: np.ndarray, phi: np.ndarray, i: int, j: int, k: int) -> np.float32:
    """The seed's average dR of jets (j1, j2, j3) = (i, j, k), as float32.

    The seed's ``ak.mean`` of the three float32 dR values works in float64:
    ``float32(((float64(dR(j1,j2)) + dR(j3,j2)) + dR(j3,j1)) / 3)``.
    """
    d0 = np.float64(delta_r(eta[i], phi[i], eta[j], phi[j]))
    d1 = np.float64(delta_r(eta[k], phi[k], eta[j], phi[j]))
    d2 = np.float64(delta_r(eta[k], phi[k], eta[i], phi[i]))
    return np.float32(((d0 + d1) + d2) / 3.0)


@njit(cache=True)
def best_trijet_events(offsets: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                       e: np.ndarray, btag: np.ndarray, btag_threshold: np.float32
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Mass and average dR of the best trijet of every event (pass the selected jets).

    Args:
        offsets: int64 offsets (n_events + 1) of the selected jets.
        pt, eta, phi, e, btag: float32 flat jet pt (GeV, unscaled), eta, phi, energy (GeV),
            b-tag score.
        btag_threshold: float32; a trijet needs a jet with ``btag > threshold``.

    Returns:
        (mass float32 GeV, avg_dR float32), per event; NaN where no trijet qualifies.
    """
    n_events = offsets.shape[0] - 1
    mass = np.empty(n_events, dtype=np.float32)
    avg_dr = np.empty(n_events, dtype=np.float32)
    m = max_multiplicity(offsets)
    px = np.empty(m, dtype=np.float32)
    py = np.empty(m, dtype=np.float32)
    pz = np.empty(m, dtype=np.float32)
    tag = np.empty(m, dtype=np.bool_)
    for i in range(n_events):
        start = offsets[i]
        n = offsets[i + 1] - start
        for a in range(n):
            k = start + a
            px[a], py[a], pz[a] = momentum_xyz(pt[k], eta[k], phi[k])
            tag[a] = btag[k] > btag_threshold
        a, b, c = best_trijet(px, py, tag, n)
        if a < 0:
            mass[i] = np.nan
            avg_dr[i] = np.nan
            continue
        mass[i] = trijet_mass(px, py, pz, e[start:], a, b, c)
        avg_dr[i] = trijet_avg_dr(eta[start:], phi[start:], a, b, c)
    return mass, avg_dr
