"""Jet four-vector components and angular distances in the seed's float32 precision."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .fastmath import GUARD, same_float32, sincos_fast, sinh_fast


@njit(cache=True)
def momentum_xy(pt: np.float32, phi: np.float32) -> tuple[np.float32, np.float32]:
    """Transverse momentum components ``float32(float64(pt) * cos|sin(float64(phi)))`` (GeV).

    Computed with :func:`kernels.fastmath.sincos_fast`; where the float32 rounding is not
    certain the C library's cos/sin decide, so the result is that of the plain formula.

    Args:
        pt: transverse momentum (GeV, float32, unscaled).
        phi: azimuth (rad, float32).

    Returns:
        (px, py) as float32 (GeV), each rounded once from float64.
    """
    pt64 = np.float64(pt)
    phi64 = np.float64(phi)
    s, c, ok = sincos_fast(phi64)
    x = pt64 * c
    y = pt64 * s
    if ok and same_float32(x, GUARD) and same_float32(y, GUARD):
        return np.float32(x), np.float32(y)
    return np.float32(pt64 * math.cos(phi64)), np.float32(pt64 * math.sin(phi64))


@njit(cache=True)
def momentum_z(pt: np.float32, eta: np.float32) -> np.float32:
    """Longitudinal momentum ``float32(float64(pt) * sinh(float64(eta)))`` (GeV, float32).

    Fast path and guard as in :func:`momentum_xy`.
    """
    pt64 = np.float64(pt)
    eta64 = np.float64(eta)
    sh, ok = sinh_fast(eta64)
    z = pt64 * sh
    if ok and same_float32(z, GUARD):
        return np.float32(z)
    return np.float32(pt64 * math.sinh(eta64))


@njit(cache=True)
def momentum_xyz(pt: np.float32, eta: np.float32, phi: np.float32
                 ) -> tuple[np.float32, np.float32, np.float32]:
    """Cartesian momentum of a jet, trigonometry in float64, each component rounded once.

    Args:
        pt: transverse momentum (GeV, float32, unscaled).
        eta: pseudorapidity (float32).
        phi: azimuth (rad, float32).

    Returns:
        (px, py, pz) as float32 (GeV): ``float32(float64(pt) * cos(float64(phi)))``,
        ``float32(float64(pt) * sin(float64(phi)))``, ``float32(float64(pt) * sinh(float64(eta)))``.
    """
    px, py = momentum_xy(pt, phi)
    return px, py, momentum_z(pt, eta)


@njit(cache=True)
def momentum_squared(px: np.float32, py: np.float32, pz: np.float32) -> np.float32:
    """``(px*px + py*py) + pz*pz`` in float32 (GeV^2), the seed's order of operations."""
    return (px * px + py * py) + pz * pz


@njit(cache=True)
def delta_r(eta1: np.float32, phi1: np.float32, eta2: np.float32, phi2: np.float32
            ) -> np.float32:
    """The seed's ``sqrt((eta1 - eta2)**2 + (phi1 - phi2)**2)`` in float32, dphi NOT wrapped."""
    deta = eta1 - eta2
    dphi = phi1 - phi2
    return np.float32(math.sqrt(deta * deta + dphi * dphi))


@njit(cache=True)
def max_multiplicity(offsets: np.ndarray) -> int:
    """Largest number of objects in one event (int64 offsets of length n_events + 1)."""
    m = 0
    for i in range(offsets.shape[0] - 1):
        m = max(m, offsets[i + 1] - offsets[i])
    return m
