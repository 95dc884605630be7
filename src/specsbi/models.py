"""`load`: open any saved specsbi model folder by what its card says it holds."""

from __future__ import annotations

import os
from typing import Any

from .serialization import read_model

__all__ = ["load"]


def load(path: str | os.PathLike, device: str = "cpu") -> Any:
    """Load a model folder written by ``.save()`` (never a pickle).

    Args:
        path: the folder; ``"default"`` names the pretrained model shipped with
            specsbi once one is installed.
        device: "cpu" or "cuda".

    Raises:
        FileNotFoundError, ValueError: no such model, or not a specsbi model.
    """
    if str(path) == "default":
        from importlib import resources

        folder = resources.files("specsbi") / "default_model"
        if not folder.is_dir():
            raise FileNotFoundError("this specsbi has no pretrained default model installed; "
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
