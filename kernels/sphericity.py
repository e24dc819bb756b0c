"""The seed's pair 'sphericity' tensor of the selected jets and its A = 1.5 * min |eigenvalue|.

The tensor is ``S_ab = sum_{i<j} p_a(i) p_b(j) / sum_i |p(i)|^2`` (a, b in x, y, z), computed
in float32 like the seed's awkward arithmetic (pairs in ``ak.combinations`` order, sequential
sums), filled symmetrically as ``[[Sxx,Sxy,Sxz],[Sxy,Syy,Syz],[Sxz,Syz,Szz]]``; its eigenvalues
are computed in float64 with a symmetric 3x3 solver (closed form, Jacobi rotations where two
eigenvalues nearly coincide).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kinematics import max_multiplicity, momentum_squared, momentum_xyz

_TWO_PI_3 = 2.0 * math.pi / 3.0


@njit(cache=True, error_model="numpy")
def jacobi_rotate(app: float, aqq: float, apq: float, arp: float, arq: float
                  ) -> tuple[float, float, float, float]:
    """One Jacobi rotation zeroing ``apq`` of a symmetric 3x3 matrix (float64).

    Args:
        app, aqq, apq: the (p, p), (q, q) and (p, q) elements.
        arp, arq: the (r, p) and (r, q) elements, r the third index.

    Returns:
        The new (app, aqq, arp, arq); the new apq is 0.
    """
    if apq == 0.0:
        return app, aqq, arp, arq
    theta = (aqq - app) / (2.0 * apq)
    if abs(theta) > 1e150:
        t = 0.5 / theta
    else:
        t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
        if theta < 0.0:
            t = -t
    c = 1.0 / math.sqrt(t * t + 1.0)
    s = t * c
    tau = s / (1.0 + c)
    return (app - t * apq, aqq + t * apq, arp - s * (arq + tau * arp),
            arq + s * (arp - tau * arq))


@njit(cache=True, error_model="numpy")
def sym3_eigenvalues_jacobi(a00: float, a11: float, a22: float, a01: float, a02: float,
                            a12: float) -> tuple[float, float, float]:
    """Eigenvalues of a real symmetric 3x3 matrix by cyclic Jacobi rotations (float64).

    Accurate to a few ulp of the matrix norm for any spectrum, degenerate ones included.

    Returns:
        The three eigenvalues, unordered.
    """
    for _ in range(50):
        off = a01 * a01 + a02 * a02 + a12 * a12
        diag = a00 * a00 + a11 * a11 + a22 * a22
        if not off > 1e-36 * diag:  # also stops on NaN
            break
        a00, a11, a02, a12 = jacobi_rotate(a00, a11, a01, a02, a12)  # (p, q, r) = (0, 1, 2)
        a01 = 0.0
        a00, a22, a01, a12 = jacobi_rotate(a00, a22, a02, a01, a12)  # (0, 2, 1)
        a02 = 0.0
        a11, a22, a01, a02 = jacobi_rotate(a11, a22, a12, a01, a02)  # (1, 2, 0)
        a12 = 0.0
    return a00, a11, a22


@njit(cache=True, error_model="numpy")
def sym3_eigenvalues(a00: float, a11: float, a22: float, a01: float, a02: float, a12: float
                     ) -> tuple[float, float, float]:
    """Eigenvalues of the real symmetric matrix [[a00,a01,a02],[a01,a11,a12],[a02,a12,a22]].

    Closed form (trigonometric solution of the characteristic cubic of ``B = (A - q I) / p``)
    where it is well conditioned; Jacobi rotations (:func:`sym3_eigenvalues_jacobi`) when two
    eigenvalues (nearly) coincide, where the closed form loses half the digits. float64.

    Returns:
        The three eigenvalues in decreasing order (float64).
    """
    off = a01 * a01 + a02 * a02 + a12 * a12
    q = (a00 + a11 + a22) / 3.0
    b00 = a00 - q
    b11 = a11 - q
    b22 = a22 - q
    p2 = b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off
    r = 1.0
    p = 0.0
    if p2 > 0.0 and p2 < np.inf:
        p = math.sqrt(p2 / 6.0)
        inv = 1.0 / p
        c00 = b00 * inv
        c11 = b11 * inv
        c22 = b22 * inv
        c01 = a01 * inv
        c02 = a02 * inv
        c12 = a12 * inv
        r = 0.5 * (c00 * (c11 * c22 - c12 * c12)
                   - c01 * (c01 * c22 - c12 * c02)
                   + c02 * (c01 * c12 - c11 * c02))
    if abs(r) > 0.999:  # (nearly) degenerate, or zero / non-finite p
        x, y, z = sym3_eigenvalues_jacobi(a00, a11, a22, a01, a02, a12)
        hi = max(x, max(y, z))
        lo = min(x, min(y, z))
        if x != hi and x != lo:
            mid = x
        elif y != hi and y != lo:
            mid = y
        elif z != hi and z != lo:
            mid = z
        else:  # at least two equal
            mid = hi if (x == hi) + (y == hi) + (z == hi) >= 2 else lo
        return hi, mid, lo
    phi = math.acos(r) / 3.0
    l0 = q + 2.0 * p * math.cos(phi)
    l2 = q + 2.0 * p * math.cos(phi + _TWO_PI_3)
    l1 = q + 2.0 * p * math.cos(phi - _TWO_PI_3)
    return l0, l1, l2


@njit(cache=True, error_model="numpy")
def min_abs_eigenvalue(a00: float, a11: float, a22: float, a01: float, a02: float,
                       a12: float) -> float:
    """Smallest |eigenvalue| of a real symmetric 3x3 matrix (float64, arguments as above)."""
    l0, l1, l2 = sym3_eigenvalues(a00, a11, a22, a01, a02, a12)
    return min(abs(l0), min(abs(l1), abs(l2)))


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def aplanarity(px: np.ndarray, py: np.ndarray, pz: np.ndarray, index: np.ndarray, n: int
               ) -> float:
    """The seed's A = 1.5 * min |eigenvalue| of :func:`pair_tensor` (float64)."""
    sxx, syy, szz, sxy, sxz, syz = pair_tensor(px, py, pz, index, n)
    return 1.5 * min_abs_eigenvalue(np.float64(sxx), np.float64(syy), np.float64(szz),
                                    np.float64(sxy), np.float64(sxz), np.float64(syz))


@njit(cache=True, error_model="numpy")
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
    m = max_multiplicity(offsets)
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
