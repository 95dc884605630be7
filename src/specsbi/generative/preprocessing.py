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

__all__ = ["Normalised", "PCA", "RestFrame", "chi2_per_pixel", "normalise"]


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

    def fit(self, x: Any, weights: Any = None, seed: int = 0, iterations: int = 2) -> PCA:
        """Fit on (n, dim) data (numpy or torch) by randomised SVD; elements with weight 0
        (gaps) are filled with the column mean, then with the reconstruction (EM-PCA)."""
        t = torch.as_tensor(as_numpy(x, "x", np.float32))
        if t.ndim != 2 or t.shape[1] != self.dim or len(t) <= self.components:
            raise ValueError(f"PCA.fit needs (n > {self.components}, {self.dim}) data; "
                             f"got {tuple(t.shape)}")
        good = torch.ones_like(t, dtype=torch.bool) if weights is None else \
            torch.as_tensor(as_numpy(weights, "weights", np.float32)) > 0
        mean = (t * good).sum(0) / good.sum(0).clamp(min=1)
        filled = torch.where(good, t, mean)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(iterations if weights is not None else 1):
                mean = filled.mean(0)
                q = min(self.components + 10, *t.shape)
                _, s, v = torch.svd_lowrank(filled - mean, q=q, niter=4)
                basis = v[:, : self.components].T.contiguous()
                filled = torch.where(good, t, mean + (filled - mean) @ basis.T @ basis)
        self.mean, self.basis = mean, basis
        self.scale = (s[: self.components] / np.sqrt(len(t) - 1)).clamp(min=1e-12)
        return self

    def project(self, x: Any, weights: Any, chunk: int | None = None) -> Tensor:
        """Weighted least-squares coefficients: argmin_c Σ w (x − mean − c·basis)², so
        masked elements (w = 0) are ignored; (n, components)."""
        xt = torch.as_tensor(as_numpy(x, "x", np.float32))
        wt = torch.as_tensor(as_numpy(weights, "weights", np.float32))
        eye = 1e-6 * torch.eye(self.components)
        chunk = chunk or max(1, int(2e7 // (self.components * self.dim)))  # ≤ 80 MB a chunk
        out = []
        for i in range(0, len(xt), chunk):
            w, r = wt[i : i + chunk], xt[i : i + chunk] - self.mean
            bw = self.basis[None] * w[:, None, :]  # (b, k, dim)
            m = bw @ self.basis.T  # (b, k, k)
            scale = m.diagonal(dim1=1, dim2=2).mean(1).clamp(min=1e-30)[:, None, None]
            rhs = (bw @ r[:, :, None])[..., 0]
            out.append(torch.linalg.solve(m / scale + eye, (rhs / scale[:, :, 0])))
        return torch.cat(out)

    def transform(self, x: Tensor) -> Tensor:
        """Coefficients (…, components) of data (…, dim)."""
        return (x - self.mean) @ self.basis.T

    def inverse(self, c: Tensor) -> Tensor:
        """Data (…, dim) from coefficients (…, components): differentiable."""
        return self.mean + c @ self.basis


class RestFrame:
    """Observed log-λ spectra ↔ a longer rest-frame array, by whole-pixel shifts.

    On a log-λ grid a redshift is a shift of log10(1 + z) / step pixels. The
    spectrum moves by the nearest whole number of pixels k, so no interpolation
    blurs its lines and the way back is exact; rest pixels it does not reach get
    weight 0 (masked), and the fractional remainder, in [−½, ½], is returned as a
    condition for models that must place lines to a fraction of a pixel.

    Args:
        wavelength: the observed log-uniform grid (npix,).
        z_max: the largest redshift to hold.

    Example:
        >>> from specsbi import sdss_wavelength
        >>> rf = RestFrame(sdss_wavelength(), z_max=0.5)
        >>> x = np.random.default_rng(0).random((2, 3841), dtype=np.float32)
        >>> xr, wr, frac = rf.to_rest(x, np.ones_like(x), [0.1, 0.3])
        >>> xr.shape, bool(np.array_equal(rf.to_observed(xr, [0.1, 0.3]), x))
        ((2, 5603), True)
    """

    def __init__(self, wavelength: Any, z_max: float = 0.6) -> None:
        from ..compressors import log_grid_step

        self.step = log_grid_step(wavelength)
        if not 0 < z_max <= 5:
            raise ValueError(f"`z_max` must lie in (0, 5]; got {z_max}")
        self.npix = len(wavelength)
        self.s_max = int(np.ceil(np.log10(1 + z_max) / self.step))
        self.n_rest = self.npix + self.s_max + 1
        self.rest_wavelength = (np.asarray(wavelength, dtype=np.float64)[0]
                                * 10 ** (self.step * (np.arange(self.n_rest) - self.s_max - 1)))

    def shift(self, z: Any) -> tuple[np.ndarray, np.ndarray]:
        """Whole-pixel shift k and fractional remainder of each redshift."""
        zz = as_numpy(z, "redshift").reshape(-1)
        if np.any(zz < -0.01) or np.any(np.log10(1 + zz) / self.step > self.s_max + 0.5):
            raise ValueError(f"redshifts must lie in [0, z_max]; got {zz.min()}..{zz.max()}")
        s = np.log10(1 + zz) / self.step
        k = np.rint(s).astype(int)
        return k, (s - k).astype(np.float32)

    def _index(self, k: np.ndarray) -> np.ndarray:
        return np.arange(self.npix)[None] + (self.s_max + 1 - k)[:, None]

    def to_rest(self, x: Any, weights: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rest-frame flux and weights (n, n_rest) and the fractional shifts (n, 1)."""
        xx, ww = as_numpy(x, "x", np.float32), as_numpy(weights, "weights", np.float32)
        k, frac = self.shift(z)
        if xx.shape != (len(k), self.npix) or ww.shape != xx.shape:
            raise ValueError(f"expected x and weights of shape ({len(k)}, {self.npix})")
        rows = np.arange(len(k))[:, None]
        xr = np.zeros((len(k), self.n_rest), np.float32)
        wr = np.zeros_like(xr)
        idx = self._index(k)
        xr[rows, idx], wr[rows, idx] = xx, ww
        return xr, wr, frac[:, None]

    def to_rest_tensor(self, x: Tensor, good: Tensor, z: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """`to_rest` on torch tensors (B, npix), with a boolean mask of usable pixels:
        rest flux, rest mask and fractional shifts (B, 1); redshifts are clamped to
        [0, z_max]."""
        s = torch.log10(1 + z.double().clamp(0, 10 ** (self.s_max * self.step) - 1)) / self.step
        k = torch.round(s)
        idx = (torch.arange(self.npix, device=x.device)[None]
               + (self.s_max + 1 - k.long())[:, None])
        xr = x.new_zeros(len(x), self.n_rest).scatter_(1, idx, x)
        mr = torch.zeros(len(x), self.n_rest, dtype=torch.bool, device=x.device)
        mr = mr.scatter_(1, idx, good)
        return xr, mr, (s - k).to(x.dtype)[:, None]

    def to_observed(self, xr: Any, z: Any) -> np.ndarray:
        """Rest-frame arrays (n, n_rest) back onto the observed grid (n, npix)."""
        a = as_numpy(xr, "rest-frame x", np.float32)
        k, _ = self.shift(z)
        return a[np.arange(len(k))[:, None], self._index(k)]
