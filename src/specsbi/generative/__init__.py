"""Generative models of spectra (VAE/AE, GAN, flow, diffusion) on one interface, and their tools.

Every model works on vectors (normalised spectra, or their PCA coefficients),
optionally conditioned on θ: ``fit(x, cond=None, weights=None)``, ``sample``,
``generate(cond, z)`` (differentiable, for emulators), ``save``/``ss.load``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GenerativeModel": "base",
    "VAE": "vae",
    "GAN": "gan",
    "GANHistory": "gan",
    "Diffusion": "diffusion",
    "Density": "density",
    "PCA": "preprocessing",
    "normalise": "preprocessing",
    "chi2_per_pixel": "preprocessing",
    "RestFrame": "preprocessing",
    "VAECompressor": "compressor",
    "example_set": "examples",
    "notebook_fast": "examples",
    "latent_scatter": "latent",
    "traversal": "latent",
    "correlation_table": "latent",
    "correlation_markdown": "latent",
    "compare_generators": "comparison",
    "Budget": "comparison",
}

__all__ = sorted(_EXPORTS)

#: model card class name → class, for ``ss.load``
MODEL_CLASSES = ("VAE", "GAN", "Diffusion", "Density")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'specsbi.generative' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
