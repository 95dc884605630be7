"""The noise model: Gaussian errors at a per-galaxy S/N, optionally shaped like real errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_numpy, require_ndim

__all__ = ["NoiseModel"]


class NoiseModel:
    """σ(λ) = median(flux) / snr, snr ~ U(snr_min, snr_max) per galaxy; flux + N(0, σ²).

    With ``error_library`` (a (k, npix) array of real 1σ error spectra, or a
    SpectraSet), each galaxy draws one library row for the *shape* of σ(λ),
    rescaled so that its median is median(flux) / snr; pixels the library masks
    (error 0 or inf) come out masked (error inf, flux 0).

    Works on numpy arrays (with a numpy seed or Generator) and on torch tensors
    (with a torch.Generator, on the tensor's device), so training can draw fresh
    noise every epoch from noiseless simulations.

    Args:
        snr: (min, max) of the uniform per-galaxy signal-to-noise.
        error_library: optional real error spectra on the same grid as the flux.

    Example:
        >>> flux = np.full((2, 100), 10.0)
        >>> noisy, err, snr = NoiseModel(snr=(10, 10)).sample(flux, seed=0)
        >>> float(err[0, 0]), noisy.shape
        (1.0, (2, 100))
    """

    def __init__(self, snr: tuple[float, float] = (5.0, 30.0), error_library: Any = None) -> None:
        lo, hi = (float(s) for s in snr)
        if not (0 < lo <= hi and np.isfinite(hi)):
            raise ValueError(f"`snr` must be (min, max) with 0 < min <= max; got {snr}")
        self.snr = (lo, hi)
        self.library = None
        if error_library is not None:
            lib = getattr(error_library, "err", error_library)
            lib = as_numpy(lib, "error_library")
            require_ndim(lib, "error_library", (2,), "(k, npix)")
            if np.isnan(lib).any() or (lib < 0).any():
                raise ValueError("`error_library` must hold errors >= 0 (0 or inf masks a pixel)")
            good = np.isfinite(lib) & (lib > 0)
            if not good.any(1).all():
                raise ValueError("every error spectrum in `error_library` needs unmasked pixels")
            med = np.array([np.median(row[g]) for row, g in zip(lib, good, strict=True)])
            self.library = np.where(good, lib / med[:, None], np.inf)

    def config(self) -> dict[str, Any]:
        """JSON-able description (the library is described by its size only)."""
        cfg: dict[str, Any] = {"snr": list(self.snr)}
        if self.library is not None:
            cfg["error_library_rows"] = int(len(self.library))
        return cfg

    def sample(self, flux: Any, seed: Any = None) -> tuple[Any, Any, Any]:
        """Draw noisy flux, 1σ errors and S/N for noiseless ``flux`` (n, npix).

        Args:
            flux: numpy array or torch tensor, (n, npix) or (npix,).
            seed: for numpy an int or ``np.random.Generator``; for torch a
                ``torch.Generator`` (or None for torch's global generator).

        Returns:
            ``(noisy, err, snr)`` in the input's type: (n, npix), (n, npix), (n,).
        """
        if hasattr(flux, "detach"):
            return self._sample_torch(flux, seed)
        f = as_numpy(flux, "flux")
        one = f.ndim == 1
        f = np.atleast_2d(f)
        self._check(f)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        snr = rng.uniform(*self.snr, size=len(f))
        scale = np.median(f, axis=1) / snr
        shape = 1.0
        if self.library is not None:
            shape = self.library[rng.integers(len(self.library), size=len(f))]
        err = shape * scale[:, None] * np.ones_like(f)
        noisy = f + np.where(np.isfinite(err), err, 0.0) * rng.standard_normal(f.shape)
        noisy = np.where(np.isfinite(err), noisy, 0.0)
        return (noisy[0], err[0], snr[0]) if one else (noisy, err, snr)

    def _sample_torch(self, flux: Any, generator: Any) -> tuple[Any, Any, Any]:
        import torch

        one = flux.ndim == 1
        f = flux[None] if one else flux
        self._check(f)
        n, dev = len(f), f.device
        u = torch.rand(n, generator=generator, device=generator.device if generator else dev)
        snr = (self.snr[0] + (self.snr[1] - self.snr[0]) * u).to(dev, f.dtype)
        scale = f.median(dim=1).values / snr
        if self.library is None:
            err = scale[:, None].expand_as(f)
        else:
            lib = torch.as_tensor(self.library, dtype=f.dtype, device=dev)
            idx = torch.randint(len(lib), (n,), generator=generator,
                                device=generator.device if generator else dev).to(dev)
            err = lib[idx] * scale[:, None]
        eps = torch.randn(f.shape, generator=generator,
                          device=generator.device if generator else dev).to(dev, f.dtype)
        finite = torch.isfinite(err)
        noisy = torch.where(finite, f + torch.where(finite, err, 0.0) * eps, 0.0)
        return (noisy[0], err[0], snr[0]) if one else (noisy, err, snr)

    def _check(self, f: Any) -> None:
        if f.ndim != 2:
            raise ValueError(f"`flux` must have shape (n, npix); got {tuple(f.shape)}")
        if self.library is not None and f.shape[1] != self.library.shape[1]:
            raise ValueError(
                f"`flux` has {f.shape[1]} pixels but the error library has "
                f"{self.library.shape[1]}: the grids do not match"
            )
        med = f.median(dim=1).values if hasattr(f, "detach") else np.median(f, axis=1)
        if not bool((med > 0).all()):
            raise ValueError("every spectrum needs a positive median flux to set σ = median / snr")
