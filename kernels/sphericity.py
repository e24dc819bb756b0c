"""The seed's pair 'sphericity' tensor of the selected jets and its A = 1.5 * min |eigenvalue|.

The tensor is ``S_ab = sum_{i<j} p_a(i) p_b(j) / sum_i |p(i)|^2`` (a, b in x, y, z), computed
in float32 like the seed's awkward arithmetic (pairs in ``ak.combinations`` order, sequential
sums), filled symmetrically as ``[[Sxx,Sxy,Sxz],[Sxy,Syy,Syz],[Sxz,Syz,Szz]]``; its eigenvalues
are computed in float64 with a closed-form symmetric 3x3 solver.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.kinematics import momentum_squared, momentum_xyz

_TWO_PI_3 = 2.0 * math.pi / 3.0


@njit(cache=True)
def sym3_eigenvalues(a00: float, a11: float, a22: float, a01: float, a02: float, a12: float
                     ) -> tuple[float, float, float]:
    """Eigenvalues of the real symmetric matrix [[a00,a01,a02],[a01,a11,a12],[a02,a12,a22]].

    Closed form (trigonometric solution of the characteristic cubic on the shifted and scaled
    matrix ``B = (A - q I) / p``), float64 throughout.

    Returns:
        The three eigenvalues in decreasing order (float64).
    """
    off = a01 * a01 + a02 * a02 + a12 * a12
    q = (a00 + a11 + a22) / 3.0
    b00 = a00 - q
    b11 = a11 - q
    b22 = a22 - q
    p2 = b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off
    if p2 == 0.0 or not np.isfinite(p2):
        if off == 0.0:  # diagonal (or zero) matrix: the eigenvalues are the diagonal
            lo = min(a00, min(a11, a22))
            hi = max(a00, max(a11, a22))
            return hi, a00 + a11 + a22 - lo - hi, lo
        return np.nan, np.nan, np.nan
    p = math.sqrt(p2 / 6.0)
    inv = 1.0 / p
    c00 = b00 * inv
    c11 = b11 * inv
    c22 = b22 * inv
    c01 = a01 * inv
    c02 = a02 * inv
    c12 = a12 * inv
    det = (c00 * (c11 * c22 - c12 * c12)
           - c01 * (c01 * c22 - c12 * c02)
           + c02 * (c01 * c12 - c11 * c02))
    r = 0.5 * det
    if r <= -1.0:
        phi = math.pi / 3.0
    elif r >= 1.0:
        phi = 0.0
    else:
        phi = math.acos(r) / 3.0
    l0 = q + 2.0 * p * math.cos(phi)
    l2 = q + 2.0 * p * math.cos(phi + _TWO_PI_3)
    l1 = q + 2.0 * p * math.cos(phi - _TWO_PI_3)
    return l0, l1, l2


@njit(cache=True)
def min_abs_eigenvalue(a00: float, a11: float, a22: float, a01: float, a02: float,
                       a12: float) -> float:
    """Smallest |eigenvalue| of a real symmetric 3x3 matrix (float64, arguments as above)."""
    l0, l1, l2 = sym3_eigenvalues(a00, a11, a22, a01, a02, a12)
    return min(abs(l0), min(abs(l1), abs(l2)))


@njit(cache=True)
def pair_tensor(px: np.ndarray, py: np.ndarray, pz: np.ndarray, index: np.ndarray, n: int
                ) -> tuple[np.float32, np.float32, np.float32, np.float32, np.float32,
                           np.float32]:
    """The seed's pair tensor of the jets ``index[:n]`` (in that order), in float32.

    Args:
        px, py, pz: float32 momentum components (GeV) of an event's jets.
        index: int64 positions in px/py/pz of the selected jets, stored order.
        n: number of selected jets.

    Returns:
        (Sxx, Syy, Szz, Sxy, Sxz, Syz), float32, dimensionless: pair sums over i<j in
        lexicographic order divided by the float32 sum of ``|p|^2``.
    """
    den = np.float32(0.0)
    for a in range(n):
        k = index[a]
        den += momentum_squared(px[k], py[k], pz[k])
    sxx = np.float32(0.0)
    syy = np.float32(0.0)
    szz = np.float32(0.0)
    sxy = np.float32(0.0)
    sxz = np.float32(0.0)
    syz = np.float32(0.0)
    for a in range(n):
        i = index[a]
        xi = px[i]
        yi = py[i]
        for b in range(a + 1, n):
            j = index[b]
            sxx += xi * px[j]
            syy += yi * py[j]
            szz += pz[i] * pz[j]
            sxy += xi * py[j]
            sxz += xi * pz[j]
            syz += yi * pz[j]
    return sxx / den, syy / den, szz / den, sxy / den, sxz / den, syz / den


@njit(cache=True)
def aplanarity(px: np.ndarray, py: np.ndarray, pz: np.ndarray, index: np.ndarray, n: int
               ) -> float:
    """The seed's A = 1.5 * min |eigenvalue| of :func:`pair_tensor` (float64)."""
    sxx, syy, szz, sxy, sxz, syz = pair_tensor(px, py, pz, index, n)
    return 1.5 * min_abs_eigenvalue(np.float64(sxx), np.float64(syy), np.float64(szz),
                                    np.float64(sxy), np.float64(sxz), np.float64(syz))


@njit(cache=True)
def sphericity_a_events(offsets: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray
                        ) -> np.ndarray:
    """A for every event, using all of its jets (pass the already-selected jets).

    Args:
        offsets: int64 offsets (n_events + 1) of the selected jets.
        pt, eta, phi: float32 flat jet pt (GeV, unscaled), eta, phi.

    Returns:
        float64 A per event (NaN for events without jets, like 0/0 in the seed).
    """
    n_events = offsets.shape[0] - 1
    out = np.empty(n_events, dtype=np.float64)
    m = 0
    for i in range(n_events):
        m = max(m, offsets[i + 1] - offsets[i])
    px = np.empty(m, dtype=np.float32)
    py = np.empty(m, dtype=np.float32)
    pz = np.empty(m, dtype=np.float32)
    index = np.arange(m)
    for i in range(n_events):
        n = offsets[i + 1] - offsets[i]
        for a in range(n):
            k = offsets[i] + a
            px[a], py[a], pz[a] = momentum_xyz(pt[k], eta[k], phi[k])
        out[i] = aplanarity(px, py, pz, index, n)
    return out
