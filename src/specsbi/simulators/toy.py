"""`ToySimulator`: a fast analytic galaxy spectrum for tests and teaching (never the default)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cosmology import age_gyr, luminosity_distance_cm
from .base import PHYSICAL_PARAMETERS, Simulator

__all__ = ["ToySimulator"]

_C_KMS = 299_792.458
_INSTRUMENT_KMS = 60.0  # intrinsic line width added in quadrature to the velocity dispersion
# rest-frame (vacuum-ish) wavelengths in Å
_ABSORPTION = {3934.8: 0.35, 3969.6: 0.30, 4305.0: 0.10, 5176.7: 0.12, 5895.6: 0.10}
_BALMER = (4102.9, 4341.7, 4862.7, 6564.6)
_EMISSION_LOW_U = {3728.5: 2.0, 6585.3: 0.45, 6718.3: 0.25, 6732.7: 0.18}  # [OII], [NII], [SII]
_EMISSION_HIGH_U = {4960.3: 0.33, 5008.2: 1.0}  # [OIII]
_L_PER_MSUN = 1.2e30  # erg/s/Å per M☉ at 5500 Å for a 1 Gyr population


def _calzetti_k(lam_um: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) k(λ) with R_V = 4.05 (λ in μm), extrapolated smoothly."""
    lam = np.clip(lam_um, 0.12, 2.2)
    blue = 2.659 * (-2.156 + 1.509 / lam - 0.198 / lam**2 + 0.011 / lam**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 / lam) + 4.05
    return np.where(lam < 0.63, blue, red)


class ToySimulator(Simulator):
    """An analytic spectrum with the bagpipes parameters: continuum, 4000 Å break, lines.

    A smooth continuum whose colour follows the light-weighted age and metallicity,
    a 4000 Å break that grows with age, Ca H&K, G-band, Mg b and Na D absorption,
    Balmer absorption in intermediate-age populations, and [OII], Hβ, [OIII], Hα,
    [NII], [SII] emission scaled by youth and ionisation parameter, all broadened
    by the velocity dispersion, attenuated by Calzetti dust, redshifted exactly and
    dimmed by the luminosity distance. Not a physical model: fast (≈ 10 μs per
    spectrum), smooth in θ, with the same interface and parameters as bagpipes.

    Example:
        >>> from specsbi.priors import default_prior
        >>> flux, derived = ToySimulator().simulate(default_prior().sample((3,)))
        >>> flux.shape, sorted(derived)
        ((3, 3841), ['age', 'log_mstar'])
    """

    param_names = PHYSICAL_PARAMETERS
    derived_names = ("log_mstar", "age")
    limits = {
        "log_mformed": (0.0, 15.0),
        "redshift": (1e-3, 10.0),
        "age_frac": (1e-3, 1.0),
        "log_tau": (-3.0, 2.0),
        "metallicity": (1e-3, 5.0),
        "av": (0.0, 10.0),
        "veldisp": (1.0, 2000.0),
        "log_u": (-4.0, 0.0),
    }

    def __init__(self, wavelength: Any | None = None) -> None:
        super().__init__(wavelength)

    def _simulate(
        self, params: dict[str, np.ndarray], progress: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        p = {k: v[:, None] for k, v in params.items()}
        z = p["redshift"]
        age = p["age_frac"] * age_gyr(z)
        tau = 10.0 ** p["log_tau"]
        # light-weighted age of a delayed-τ history, roughly
        age_w = np.maximum(age * (1 - 0.6 * tau / (tau + age)), 0.01)
        youth = np.exp(-age_w / 1.0)
        log_mstar = p["log_mformed"] + np.log10(1 - 0.4 * (1 - np.exp(-age_w / 2.0)))

        lam = self.wavelength[None, :] / (1 + z)  # rest frame, Å
        x = lam / 5500.0
        # continuum: a blackbody-like shape whose temperature falls with age
        temp = 4500.0 + 9000.0 * youth
        hc_k = 1.4388e8  # Å K
        planck = x**-5 / np.expm1(hc_k / (lam * temp))
        planck /= (1 / np.expm1(hc_k / (5500.0 * temp)))
        cont = planck * x ** (0.3 * np.log10(p["metallicity"]))
        depth = (0.55 - 0.45 * youth) * (0.6 + 0.2 * p["metallicity"])
        cont *= 1 - depth / (1 + np.exp((lam - 4000.0) / 25.0))

        sigma_v = np.sqrt(p["veldisp"] ** 2 + _INSTRUMENT_KMS**2)
        shape = np.ones_like(lam)
        metal = np.clip(p["metallicity"], 0.1, 3.0) ** 0.5 * (1 - youth)
        for line, strength in _ABSORPTION.items():
            shape -= strength * metal * _gauss(lam, line, sigma_v)
        balmer_abs = 0.3 * np.exp(-((np.log10(age_w) + 0.3) ** 2) / 0.3)  # peaks near 0.5 Gyr
        for line in _BALMER:
            shape -= balmer_abs * _gauss(lam, line, sigma_v)
        cont *= np.clip(shape, 0.05, None)

        sf = youth * (1.0 + 0.0 * lam)  # emission strength tracks recent star formation
        u = (p["log_u"] + 4.0) / 2.0  # 0 at logU=-4, 1 at -2
        emit = np.zeros_like(lam)
        hbeta = 8.0 * sf
        for line, ratio in ((4862.7, 1.0), (6564.6, 2.86), (4341.7, 0.47)):
            emit += hbeta * ratio * _area_gauss(lam, line, sigma_v)
        for line, ratio in _EMISSION_LOW_U.items():
            emit += hbeta * ratio * (1.2 - 0.7 * u) * _area_gauss(lam, line, sigma_v)
        for line, ratio in _EMISSION_HIGH_U.items():
            emit += hbeta * ratio * (0.2 + 3.0 * u**2) * _area_gauss(lam, line, sigma_v)

        atten = 10 ** (-0.4 * p["av"] * _calzetti_k(lam / 1e4) / 4.05)
        m_to_l = _L_PER_MSUN * age_w**-0.8
        lum = 10.0**log_mstar * m_to_l * (cont + emit) * atten
        d_l = luminosity_distance_cm(z)
        flux = lum / (4 * np.pi * d_l**2 * (1 + z)) * 1e17
        return flux, {"log_mstar": log_mstar[:, 0], "age": age[:, 0]}


def _gauss(lam: np.ndarray, centre: float, sigma_kms: np.ndarray) -> np.ndarray:
    """Unit-height Gaussian at ``centre`` Å with velocity width ``sigma_kms``."""
    s = centre * sigma_kms / _C_KMS
    return np.exp(-0.5 * ((lam - centre) / s) ** 2)


def _area_gauss(lam: np.ndarray, centre: float, sigma_kms: np.ndarray) -> np.ndarray:
    """Gaussian of unit area (per Å) at ``centre`` with velocity width ``sigma_kms``."""
    s = centre * sigma_kms / _C_KMS
    return np.exp(-0.5 * ((lam - centre) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
