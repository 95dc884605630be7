"""The flat ΛCDM cosmology bagpipes uses (H0 = 70, Ωm = 0.3): ages and luminosity distances."""

from __future__ import annotations

import numpy as np

__all__ = ["H0", "OMEGA_M", "age_gyr", "luminosity_distance_cm", "luminosity_distance_mpc"]

H0 = 70.0  # km/s/Mpc
OMEGA_M = 0.3
_C_KMS = 299_792.458
_MPC_CM = 3.0856775814913673e24
_HUBBLE_TIME_GYR = 977.792221 / H0  # 1/H0 in Gyr

_Z = np.linspace(0.0, 12.0, 24_001)
_INV_E = 1.0 / np.sqrt(OMEGA_M * (1 + _Z) ** 3 + (1 - OMEGA_M))
_DC = np.concatenate([[0.0], np.cumsum(0.5 * (_INV_E[1:] + _INV_E[:-1]) * np.diff(_Z))])


def age_gyr(z: np.ndarray | float) -> np.ndarray:
    """Age of the universe at redshift ``z`` in Gyr (closed form for flat ΛCDM).

    Example:
        >>> round(float(age_gyr(0.0)), 3)
        13.467
    """
    ol = 1.0 - OMEGA_M
    x = np.sqrt(ol / OMEGA_M) * (1.0 + np.asarray(z, dtype=np.float64)) ** -1.5
    return 2.0 / (3.0 * np.sqrt(ol)) * _HUBBLE_TIME_GYR * np.arcsinh(x)


def luminosity_distance_mpc(z: np.ndarray | float) -> np.ndarray:
    """Luminosity distance in Mpc for 0 <= z <= 12."""
    z = np.asarray(z, dtype=np.float64)
    if np.any((z < 0) | (z > _Z[-1])):
        raise ValueError(f"redshift must lie in [0, {_Z[-1]:g}]")
    return (1 + z) * _C_KMS / H0 * np.interp(z, _Z, _DC)


def luminosity_distance_cm(z: np.ndarray | float) -> np.ndarray:
    """Luminosity distance in cm."""
    return luminosity_distance_mpc(z) * _MPC_CM
