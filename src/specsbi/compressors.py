"""Compressors: spectrum → low-dimensional summary that feeds the flows.

`RestFramePCA` ("pca") fits rest-frame PCA templates to a spectrum at every trial
redshift (a χ² cross-correlation, done with FFTs since a redshift is a shift on a
log-λ grid) and returns the best redshift with its curvature error, the template
amplitudes there, the fit quality and the log amplitude of the spectrum. Redshift
is found at sub-pixel precision, and the amplitude (which carries the mass) is
kept apart from the shape. A second stage moves the spectrum to the rest frame at
the fitted redshift (gaps and masked pixels filled with the template fit) and
projects it on a longer rest-frame PCA basis: the fine shape that sets the
mass-to-light ratio, which a dozen templates miss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .cosmology import luminosity_distance_mpc

__all__ = ["RestFramePCA", "gappy_pca", "log_grid_step"]


def log_grid_step(wavelength: np.ndarray, rtol: float = 1e-6) -> float:
    """The constant log10 step of a log-uniform grid, or a ValueError naming the fix."""
    d = np.diff(np.log10(np.asarray(wavelength, dtype=np.float64)))
    if len(d) == 0 or np.any(np.abs(d - d.mean()) > rtol * 10 + rtol * abs(d.mean())):
        raise ValueError("the compressor needs a log-uniform wavelength grid; resample the "
                         "spectra onto one first (e.g. SpectraSet.resample(sdss_wavelength()))")
    return float(d.mean())


def gappy_pca(values: np.ndarray, observed: np.ndarray, n_components: int,
              n_refill: int | None = None, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """EM-PCA of rows with gaps: refill the gaps with the reconstruction, refit, repeat.

    Args:
        values: (n, m) rows; entries where ``observed`` is False are ignored.
        observed: (n, m) bool.
        n_components: principal components returned.
        n_refill: components used to refill the gaps (default all).
        iterations: EM iterations (fixed seeds: the same input gives the same basis).

    Returns:
        ``(mean (m,), basis (n_components, m))``; columns never observed are 0.
    """
    seen = observed.any(0)
    if n_components > min(len(values) - 1, int(seen.sum())):
        raise ValueError(f"need more than {n_components + 1} spectra for {n_components} "
                         "rest-frame components")
    n_refill = n_components if n_refill is None else n_refill
    mean = np.zeros(values.shape[1])
    mean[seen] = np.nanmean(np.where(observed, values, np.nan)[:, seen], axis=0)
    filled = np.where(observed, values, mean)
    gen = torch.Generator().manual_seed(0)
    for _ in range(iterations):
        centred = filled - mean
        basis = np.zeros((n_components, values.shape[1]))
        if n_components:
            x = torch.as_tensor(centred[:, seen])
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
            _, _, v = torch.svd_lowrank(x, q=min(n_components + 10, min(x.shape)), niter=4)
            basis[:, seen] = v[:, :n_components].T.numpy()
        comps = basis[:n_refill]
        filled = np.where(observed, values, mean + centred @ comps.T @ comps)
    return mean, basis


class RestFramePCA(nn.Module):
    """Rest-frame PCA templates, fitted at every trial redshift by FFT cross-correlation.

    Args:
        wavelength: the observed log-λ grid (npix,).
        n_components: templates (the mean spectrum and n_components − 1 components).
        z_range: redshifts searched.
        n_rest: rest-frame PCA coefficients of the second stage (0: none).

    The summary (``dim`` = n_components + n_rest + 6 columns, names in
    ``summary_names``):
    log10 amplitude (median flux), log10 of amplitude × d_L²(ẑ) (1 + ẑ) (a
    luminosity), best redshift ẑ (parabola-refined), log10 σ_ẑ
    from the χ² curvature, χ²/pixel at ẑ, log10(1 + Δχ²) to the best redshift more
    than 20 pixels away (ambiguity), the template amplitudes at ẑ (a0…), and the
    rest-frame PCA coefficients of the spectrum at ẑ (r0…).

    Example:
        >>> from specsbi import ToySimulator, default_prior, sdss_wavelength
        >>> prior = default_prior()
        >>> theta = prior.draw(300, seed=0)
        >>> flux, _ = ToySimulator().simulate(theta)
        >>> pca = RestFramePCA(sdss_wavelength(), 6).fit(flux, theta[:, 1])
        >>> s = pca(torch.as_tensor(flux[:5]), torch.as_tensor(flux[:5] / 50))
        >>> s.shape, bool(np.allclose(s[:, 2], theta[:5, 1], atol=3e-4))
        (torch.Size([5, 12]), True)
    """

    def __init__(self, wavelength: Any, n_components: int = 12,
                 z_range: tuple[float, float] = (0.0, 0.6), n_rest: int = 0) -> None:
        super().__init__()
        wl = np.asarray(wavelength, dtype=np.float64)
        self.step = log_grid_step(wl)
        if not 1 <= n_components <= 64:
            raise ValueError(f"`n_components` must lie in [1, 64]; got {n_components}")
        if not 0 <= n_rest <= 256:
            raise ValueError(f"`n_rest` must lie in [0, 256]; got {n_rest}")
        lo, hi = z_range
        if not 0 <= lo < hi <= 5:
            raise ValueError(f"`z_range` must satisfy 0 <= low < high <= 5; got {z_range}")
        self.npix, self.k, self.z_range = wl.size, n_components, (float(lo), float(hi))
        self.s_lo = int(math.floor(math.log10(1 + lo) / self.step))
        self.s_hi = int(math.ceil(math.log10(1 + hi) / self.step)) + 1
        self.n_rest = self.npix + self.s_hi + 1
        # lags 0..s_hi of a correlation with templates of length n_rest never wrap past n_rest
        self.n_fft = 1 << int(math.ceil(math.log2(self.n_rest)))
        # float64: χ² at neighbouring shifts differ by ~1e-6 of χ² itself, below float32
        self.dtype = torch.float64
        self.register_buffer("templates", torch.zeros(n_components, self.n_rest))
        self.n_basis = n_rest
        if n_rest:  # (no buffers without the stage: models saved before it still load)
            self.register_buffer("rest_mean", torch.zeros(self.n_rest))
            self.register_buffer("rest_basis", torch.zeros(n_rest, self.n_rest))
        self.summary_names = (["log_amp", "log_lum", "z_hat", "log_sigma_z", "chi2_pix",
                               "log_dchi2"]
                              + [f"a{i}" for i in range(n_components)]
                              + [f"r{i}" for i in range(n_rest)])
        self.dim = len(self.summary_names)

    # ---------------------------------------------------------------- fitting
    def fit(self, flux: Any, redshift: Any, iterations: int = 3,
            max_spectra: int = 3000) -> RestFramePCA:
        """Build the templates from noiseless spectra (n, npix) and their redshifts (n,)."""
        f = np.asarray(flux, dtype=np.float64)[:max_spectra]
        z = np.asarray(redshift, dtype=np.float64)[:max_spectra]
        if f.ndim != 2 or f.shape[1] != self.npix or len(z) != len(f):
            raise ValueError(f"expected flux (n, {self.npix}) and redshift (n,); got "
                             f"{f.shape} and {z.shape}")
        f = f / np.median(f, axis=1, keepdims=True)
        shift = np.log10(1 + z) / self.step  # observed pixel p ↔ rest index p + s_hi − shift
        j = np.arange(self.n_rest)
        p = j[None, :] - self.s_hi + shift[:, None]
        inside = (p >= 0) & (p <= self.npix - 1)
        p0 = np.clip(np.floor(p).astype(int), 0, self.npix - 2)
        frac = np.clip(p - p0, 0, 1)
        rows = np.arange(len(f))[:, None]
        rest = (1 - frac) * f[rows, p0] + frac * f[rows, p0 + 1]
        rest[~inside] = np.nan
        q = max(self.k - 1, self.n_basis)
        mean, basis = gappy_pca(rest, inside, q, n_refill=self.k - 1, iterations=iterations)
        comps = basis[: self.k - 1]
        self.templates = torch.as_tensor(np.vstack([mean, comps]), dtype=torch.float32)
        if self.n_basis:
            self.rest_mean = torch.as_tensor(mean, dtype=torch.float32)
            self.rest_basis = torch.as_tensor(basis[: self.n_basis], dtype=torch.float32)
        self._plan = None
        return self

    # ---------------------------------------------------------------- summary
    def _fourier(self, device: torch.device) -> dict[str, Tensor]:
        plan = getattr(self, "_plan", None)
        if plan is None or plan["T"].device != device:
            t = self.templates.to(device, self.dtype)
            idx = torch.triu_indices(self.k, self.k)
            prod = t[idx[0]] * t[idx[1]]
            T = torch.fft.rfft(t, self.n_fft)
            P = torch.fft.rfft(prod, self.n_fft)
            ones = torch.fft.rfft(torch.ones(self.npix, dtype=self.dtype, device=device),
                                  self.n_fft)
            m0 = self._unpack(torch.fft.irfft(ones.conj() * P, self.n_fft), idx)
            eye = torch.eye(self.k, dtype=m0.dtype, device=device)
            m0_inv = torch.linalg.inv(m0 + self._ridge(m0)[..., None, None] * eye)
            plan = {"T": T, "P": P, "idx": idx, "M0inv": m0_inv}
            self._plan = plan
        return plan

    def _unpack(self, corr: Tensor, idx: Tensor) -> Tensor:
        """(…, n_pairs, n_fft) correlations → (…, S, k, k) symmetric matrices over shifts."""
        n_shift = self.s_hi - self.s_lo + 1
        # shift s ↔ correlation lag s' = s_hi − s
        lags = corr[..., : n_shift].flip(-1)  # index 0 ↔ s = s_lo
        out = lags.new_zeros(*lags.shape[:-2], n_shift, self.k, self.k)
        out[..., idx[0], idx[1]] = lags.transpose(-1, -2)
        out[..., idx[1], idx[0]] = lags.transpose(-1, -2)
        return out

    @staticmethod
    def _ridge(M: Tensor) -> Tensor:
        """A tiny ridge (1e-9 of the trace) that keeps near-empty overlaps solvable."""
        return 1e-9 * M.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=1e-12)

    @torch.no_grad()
    def forward(self, flux: Tensor, err: Tensor, chunk: int = 128) -> Tensor:
        """Summaries (B, dim) of spectra (B, npix) with 1σ errors (inf = masked)."""
        if flux.shape[-1] != self.npix or err.shape != flux.shape:
            raise ValueError(f"expected flux and err of shape (B, {self.npix}); got "
                             f"{tuple(flux.shape)} and {tuple(err.shape)}")
        return torch.cat([self._summary(flux[i : i + chunk], err[i : i + chunk])
                          for i in range(0, len(flux), chunk)]).float()

    def _summary(self, flux: Tensor, err: Tensor) -> Tensor:
        dev = flux.device
        plan = self._fourier(dev)
        f, e = flux.to(self.dtype), err.to(self.dtype)
        good = torch.isfinite(e) & (e > 0)
        amp = torch.nanmedian(torch.where(good, f, torch.nan), dim=1).values
        amp = torch.where(torch.isfinite(amp) & (amp > 0), amp, torch.ones_like(amp))
        fn = torch.where(good, f / amp[:, None], 0.0)
        w = torch.where(good, (amp[:, None] / e) ** 2, 0.0)
        g = torch.fft.rfft(w * fn, self.n_fft)
        b = torch.fft.irfft(g.conj()[:, None] * plan["T"][None], self.n_fft)  # (B, k, n_fft)
        n_shift = self.s_hi - self.s_lo + 1
        b = b[..., :n_shift].flip(-1).transpose(1, 2)  # (B, S, k)
        w0 = w.amax(1)
        uniform = (w == w0[:, None]).all(1)
        # equal weights (no mask, σ ∝ 1): one precomputed inverse serves every spectrum
        a = torch.einsum("sij,bsj->bsi", plan["M0inv"], b) / w0[:, None, None]
        if not uniform.all():  # masks or shaped errors: the full weighted normal matrices
            W = torch.fft.rfft(w[~uniform], self.n_fft)
            corr = torch.fft.irfft(W.conj()[:, None] * plan["P"][None], self.n_fft)
            M = self._unpack(corr, plan["idx"])
            eye = torch.eye(self.k, dtype=M.dtype, device=dev)
            M = M + self._ridge(M)[..., None, None] * eye
            a[~uniform] = torch.linalg.solve(M, b[~uniform][..., None])[..., 0]
        chi2 = (w * fn**2).sum(1)[:, None] - (a * b).sum(-1)  # (B, S)
        z_lo, z_hi = self.z_range
        s_grid = torch.arange(self.s_lo, self.s_hi + 1, device=dev, dtype=torch.float64)
        z_grid = 10 ** (s_grid * self.step) - 1
        allowed = (z_grid >= z_lo) & (z_grid <= z_hi)
        chi2 = torch.where(allowed[None], chi2, torch.inf)
        best = chi2.argmin(1).clamp(1, n_shift - 2)
        rows = torch.arange(len(f), device=dev)
        c_m, c_0, c_p = chi2[rows, best - 1], chi2[rows, best], chi2[rows, best + 1]
        curv = (c_p - 2 * c_0 + c_m)
        ok = torch.isfinite(curv) & (curv > 0)
        offset = torch.where(ok, -0.5 * (c_p - c_m) / curv.clamp(min=1e-30), 0.0).clamp(-1, 1)
        s_best = s_grid[best] + offset
        z_hat = 10 ** (s_best * self.step) - 1
        sigma_s = torch.where(ok, torch.sqrt(2 / curv.clamp(min=1e-30)), torch.ones_like(curv))
        sigma_z = sigma_s * self.step * math.log(10) * (1 + z_hat)
        far = (torch.arange(n_shift, device=dev)[None] - best[:, None]).abs() > 20
        second = torch.where(far, chi2, torch.inf).amin(1)
        dchi2 = torch.where(torch.isfinite(second), second - c_0, torch.full_like(c_0, 1e6))
        n_good = good.sum(1).clamp(min=1)
        # log10 of median flux × 4π d_L² (1+z): the luminosity that, with M/L, gives the mass
        d_l = luminosity_distance_mpc(z_hat.clamp(min=0).cpu().numpy())
        log_lum = torch.log10(amp) + torch.as_tensor(
            2 * np.log10(np.maximum(d_l, 1e-3)), device=dev) + torch.log10(1 + z_hat)
        a_best = a[rows, best]
        return torch.cat([
            torch.log10(amp)[:, None], log_lum[:, None], z_hat[:, None],
            torch.log10(sigma_z)[:, None],
            (c_0 / n_good)[:, None], torch.log10(1 + dchi2.clamp(min=0))[:, None],
            a_best, self._rest_coefficients(fn, good, s_best, a_best),
        ], dim=1)

    def _rest_coefficients(self, fn: Tensor, good: Tensor, s_best: Tensor, a: Tensor
                           ) -> Tensor:
        """Rest-frame PCA coefficients of flux/amplitude at the fitted shift.

        The spectrum is interpolated onto the rest grid; rest pixels it does not reach,
        or that touch a masked pixel, take the template fit instead.
        """
        if self.n_basis == 0:
            return fn.new_zeros(len(fn), 0)
        t = self.templates.to(fn.device, fn.dtype)
        j = torch.arange(self.n_rest, device=fn.device, dtype=fn.dtype)
        p = j[None] - self.s_hi + s_best[:, None]  # observed pixel of each rest pixel
        p0 = p.floor().clamp(0, self.npix - 2).long()
        frac = (p - p0).clamp(0, 1)
        value = (1 - frac) * fn.gather(1, p0) + frac * fn.gather(1, p0 + 1)
        usable = (p >= 0) & (p <= self.npix - 1) & good.gather(1, p0) & good.gather(1, p0 + 1)
        rest = torch.where(usable, value, a @ t) - self.rest_mean.to(fn.device, fn.dtype)
        return rest @ self.rest_basis.to(fn.device, fn.dtype).T
