"""Spectrum preprocessing shared by the generative models: the flows pipeline's normalisation.

A spectrum is split into a robust log amplitude (log10 of the median flux over
unmasked pixels, as in :class:`specsbi.compressors.RestFramePCA`, which carries
the mass) and its shape, flux / median. Errors scale with the flux, and a pixel
is masked where its error is 0, inf or NaN: its inverse-variance weight is 0.
`PCA` is a saved, torch-side principal-component basis for models that work on
coefficients instead of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import as_numpy, require_ndim

__all__ = ["Normalised", "PCA", "normalise", "chi2_per_pixel"]


@dataclass(frozen=True)
class Normalised:
    """Normalised spectra: ``flux`` = flux / amplitude, its inverse-variance ``weights``
    (0 where masked) and ``log_amp`` = log10 amplitude; numpy float32, (n, npix) and (n,)."""

    flux: np.ndarray
    weights: np.ndarray
    log_amp: np.ndarray

    @property
    def err(self) -> np.ndarray:
        """1σ errors of ``flux`` (inf where masked)."""
        with np.errstate(divide="ignore"):
            return np.where(self.weights > 0, 1 / np.sqrt(self.weights), np.inf).astype(
                np.float32)


def normalise(flux: Any, err: Any = None, amplitude_from: Any = None) -> Normalised:
    """Divide spectra by their median unmasked flux; scale the errors alike.

    Args:
        flux: (n, npix) or (npix,) flux.
        err: matching 1σ errors (0, inf or NaN masks a pixel); None: unit weights.
        amplitude_from: spectra to take the median from instead of ``flux`` (e.g. the
            noiseless flux of a simulation, when ``flux`` is its noisy realisation).

    Returns:
        A :class:`Normalised`; spectra without a positive median keep amplitude 1.

    Example:
        >>> n = normalise(np.array([[2.0, 4.0, 6.0]]), np.array([[1.0, np.inf, 1.0]]))
        >>> n.flux.tolist(), n.weights.tolist(), round(float(n.log_amp[0]), 4)
        ([[0.5, 0.0, 1.5]], [[16.0, 0.0, 16.0]], 0.6021)
    """
    f = np.atleast_2d(as_numpy(flux, "flux"))
    require_ndim(f, "flux", (2,), "(n, npix)")
    if err is None:
        e = np.ones_like(f)
    else:
        e = np.atleast_2d(as_numpy(err, "err"))
        if e.shape != f.shape:
            raise ValueError(f"`err` must have the shape of `flux` {f.shape}; got {e.shape}")
    good = np.isfinite(e) & (e > 0) & np.isfinite(f)
    ref = f if amplitude_from is None else np.atleast_2d(as_numpy(amplitude_from, "amplitude"))
    if ref.shape != f.shape:
        raise ValueError(f"`amplitude_from` must have the shape of `flux` {f.shape}")
    amp = np.nanmedian(np.where(good, ref, np.nan), axis=1)
    amp = np.where(np.isfinite(amp) & (amp > 0), amp, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(good, (amp[:, None] / e) ** 2, 0.0)
    x = np.where(good, f / amp[:, None], 0.0)
    return Normalised(x.astype(np.float32), weights.astype(np.float32),
                      np.log10(amp).astype(np.float32))


def chi2_per_pixel(model: Any, data: Any, weights: Any) -> np.ndarray:
    """χ² per unmasked pixel of ``model`` against ``data``: Σ w (d − m)² / Σ [w > 0], per row.

    Example:
        >>> chi2_per_pixel([[1.0, 2.0]], [[2.0, 2.0]], [[4.0, 0.0]]).tolist()
        [4.0]
    """
    m, d, w = (np.atleast_2d(as_numpy(a, n)) for a, n in
               ((model, "model"), (data, "data"), (weights, "weights")))
    good = w > 0
    r = np.where(good, w * (d - m) ** 2, 0.0)
    return r.sum(1) / np.maximum(good.sum(1), 1)


class PCA(nn.Module):
    """A principal-component basis (buffers, so it saves with a model): x ↔ coefficients.

    Args:
        dim: data dimension; components: number of components kept.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(200, 5)) @ np.diag([3, 2, 1, .1, .1])
        >>> pca = PCA(5, 3).fit(x)
        >>> c = pca.transform(torch.as_tensor(x, dtype=torch.float32))
        >>> c.shape, float(((pca.inverse(c) - torch.as_tensor(x)) ** 2).mean()) < 0.02
        (torch.Size([200, 3]), True)
    """

    def __init__(self, dim: int, components: int) -> None:
        super().__init__()
        if not 1 <= components <= dim:
            raise ValueError(f"`components` must lie in [1, {dim}]; got {components}")
        self.dim, self.components = dim, components
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("basis", torch.zeros(components, dim))
        self.register_buffer("scale", torch.ones(components))

    def fit(self, x: Any, seed: int = 0) -> PCA:
        """Fit on (n, dim) data (numpy or torch); a randomised SVD for large data."""
        t = torch.as_tensor(as_numpy(x, "x", np.float32))
        if t.ndim != 2 or t.shape[1] != self.dim or len(t) <= self.components:
            raise ValueError(f"PCA.fit needs (n > {self.components}, {self.dim}) data; "
                             f"got {tuple(t.shape)}")
        mean = t.mean(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            q = min(self.components + 10, *t.shape)
            _, s, v = torch.svd_lowrank(t - mean, q=q, niter=4)
        self.mean = mean
        self.basis = v[:, : self.components].T.contiguous()
        self.scale = (s[: self.components] / np.sqrt(len(t) - 1)).clamp(min=1e-12)
        return self

    def transform(self, x: Tensor) -> Tensor:
        """Coefficients (…, components) of data (…, dim)."""
        return (x - self.mean) @ self.basis.T

    def inverse(self, c: Tensor) -> Tensor:
        """Data (…, dim) from coefficients (…, components): differentiable."""
        return self.mean + c @ self.basis
