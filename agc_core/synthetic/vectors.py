"""Four-vectors on arrays of any shape: :class:`P4`, boosts, two-body decays, random
directions and line shapes."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class P4(NamedTuple):
    """Four-momenta (GeV) as arrays of equal shape."""

    e: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray

    @property
    def pt(self) -> np.ndarray:
        """Transverse momentum."""
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        """Pseudorapidity (0 where pt is 0)."""
        pt = self.pt
        return np.arcsinh(self.pz / np.where(pt > 0, pt, 1.0)) * (pt > 0)

    @property
    def phi(self) -> np.ndarray:
        """Azimuth in [-pi, pi]."""
        return np.arctan2(self.py, self.px)

    def scaled(self, factor: np.ndarray) -> P4:
        """Every component times ``factor``."""
        return P4(self.e * factor, self.px * factor, self.py * factor, self.pz * factor)


def boost(p: P4, bx: np.ndarray, by: np.ndarray, bz: np.ndarray) -> P4:
    """Lorentz-boost ``p`` by the velocity (bx, by, bz)."""
    b2 = bx * bx + by * by + bz * bz
    gamma = 1.0 / np.sqrt(np.maximum(1.0 - b2, 1e-12))
    bp = bx * p.px + by * p.py + bz * p.pz
    g2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    k = g2 * bp + gamma * p.e
    return P4(gamma * (p.e + bp), p.px + k * bx, p.py + k * by, p.pz + k * bz)


def two_body(parent: P4, m1: Any, m2: Any, cos_t: np.ndarray, phi: np.ndarray
             ) -> tuple[P4, P4]:
    """Decay ``parent`` into two daughters of masses m1, m2 at rest-frame angles (cos_t, phi).

    Returns:
        The daughters' lab-frame four-momenta.
    """
    m2p = np.maximum(parent.e ** 2 - parent.px ** 2 - parent.py ** 2 - parent.pz ** 2, 0.0)
    mp = np.sqrt(m2p)
    m1 = np.broadcast_to(np.asarray(m1, dtype=np.float64), mp.shape)
    m2 = np.broadcast_to(np.asarray(m2, dtype=np.float64), mp.shape)
    q2 = (m2p - (m1 + m2) ** 2) * (m2p - (m1 - m2) ** 2)
    q = np.sqrt(np.maximum(q2, 0.0)) / (2.0 * np.where(mp > 0, mp, 1.0))
    sin_t = np.sqrt(np.maximum(1.0 - cos_t * cos_t, 0.0))
    nx, ny, nz = sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t
    d1 = P4(np.sqrt(q * q + m1 * m1), q * nx, q * ny, q * nz)
    d2 = P4(np.sqrt(q * q + m2 * m2), -q * nx, -q * ny, -q * nz)
    e = np.where(parent.e > 0, parent.e, 1.0)
    bx, by, bz = parent.px / e, parent.py / e, parent.pz / e
    return boost(d1, bx, by, bz), boost(d2, bx, by, bz)


def _isotropic(rng: np.random.Generator, shape: Any) -> tuple[np.ndarray, np.ndarray]:
    """Uniform directions: (cos theta, phi)."""
    return rng.uniform(-1.0, 1.0, shape), rng.uniform(-np.pi, np.pi, shape)


def _breit_wigner(rng: np.random.Generator, m0: float, width: float, shape: Any,
                  lo: Any, hi: Any) -> np.ndarray:
    """Masses from a Breit-Wigner (Cauchy) truncated to [lo, hi], by inverse CDF."""
    a = np.arctan(2.0 * (np.asarray(lo) - m0) / width)
    b = np.arctan(2.0 * (np.asarray(hi) - m0) / width)
    return m0 + 0.5 * width * np.tan(a + rng.random(shape) * (b - a))


def _pareto(u: np.ndarray, pt_min: float, index: float, cap: float = 3000.0) -> np.ndarray:
    """Pareto (power-law) values from uniforms: density ~ x^-index above pt_min."""
    return np.minimum(pt_min * (1.0 - u) ** (-1.0 / (index - 1.0)), cap)


def _wrap(phi: np.ndarray) -> np.ndarray:
    """Azimuth wrapped into [-pi, pi)."""
    return (phi + np.pi) % (2.0 * np.pi) - np.pi


def _kinematics(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: Any
                ) -> dict[str, np.ndarray]:
    """Consistent float32 kinematics: px, py, pz from the stored pt, eta, phi; E >= |p|."""
    pt32, eta32, phi32 = (np.asarray(x, dtype=np.float32) for x in (pt, eta, phi))
    pt64, eta64, phi64 = (x.astype(np.float64) for x in (pt32, eta32, phi32))
    p = pt64 * np.cosh(eta64)
    e32 = np.sqrt(p * p + np.square(np.asarray(mass, dtype=np.float64))).astype(np.float32)
    e32 = np.where(e32.astype(np.float64) < p, np.nextafter(e32, np.float32(np.inf)), e32)
    return {
        "pt": pt32, "eta": eta32, "phi": phi32, "e": e32,
        "px": (pt64 * np.cos(phi64)).astype(np.float32),
        "py": (pt64 * np.sin(phi64)).astype(np.float32),
        "pz": (pt64 * np.sinh(eta64)).astype(np.float32),
    }
