"""`load`: open any saved specsbi model folder by what its card says it holds."""

from __future__ import annotations

import os
from typing import Any

from .serialization import read_model

__all__ = ["load"]

SHIPPED = {"default": "default_model", "default-emulator": "default_emulator"}


def load(path: str | os.PathLike, device: str = "cpu") -> Any:
    """Load a model folder written by ``.save()`` (never a pickle).

    Args:
        path: the folder; ``"default"`` names the pretrained posterior model shipped
            with specsbi, ``"default-emulator"`` the pretrained emulator.
        device: "cpu" or "cuda".

    Raises:
        FileNotFoundError, ValueError: no such model, or not a specsbi model.
    """
    if str(path) in SHIPPED:
        from importlib import resources

        folder = resources.files("specsbi") / SHIPPED[str(path)]
        if not folder.is_dir():
            raise FileNotFoundError(f"this specsbi has no pretrained {path!r} model installed; "
                                    "pass a model folder trained with `specsbi train`")
        path = str(folder)
    card, state = read_model(path)
    kind = card.get("class")
    if kind == "SpectrumPosterior":
        from .spectrum_posterior import SpectrumPosterior

        return SpectrumPosterior.from_card(card, state, device)
    if kind == "SpectrumLikelihood":
        from .spectrum_likelihood import SpectrumLikelihood

        return SpectrumLikelihood.from_card(card, state, device)
    if kind in ("PosteriorEstimator", "LikelihoodEstimator"):
        from .estimators import _CLASSES

        return _CLASSES[kind].from_card(card, state, device)
    if kind in ("VAE", "GAN", "Diffusion", "Density"):
        from . import generative

        return getattr(generative, kind).from_card(card, state, device)
    from .emulators import EMULATORS

    if kind in EMULATORS:
        return EMULATORS[kind].from_card(card, state, device)
    raise ValueError(f"{path} holds an unknown model class {kind!r}")
