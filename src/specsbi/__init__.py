"""specsbi: simulation-based inference on galaxy spectra with conditional normalizing flows.

Heavy modules (torch, bagpipes, dask) load on first use, so ``import specsbi`` is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SpectraSet": "spectra",
    "Spectrum": "spectra",
    "sdss_wavelength": "spectra",
    "read_sdss_fits": "sdss",
    "Prior": "priors",
    "default_prior": "priors",
    "BagpipesSimulator": "simulators",
    "ToySimulator": "simulators",
    "NoiseModel": "noise",
    "simulate": "simulation",
    "resample": "resampling",
    "PosteriorEstimator": "estimators",
    "LikelihoodEstimator": "estimators",
    "SpectrumPosterior": "spectrum_posterior",
    "SpectrumLikelihood": "spectrum_likelihood",
    "Posterior": "posterior",
    "TrainConfig": "training",
    "load": "models",
}

_SUBMODULES = ("plots", "diagnostics", "emulators", "mcmc")  # ss.plots.corner, ss.mcmc.sample, ...

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'specsbi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
