"""The physics layer every emulator shares: rest-frame luminosity ⇄ observed flux, exactly.

An emulator learns only the rest-frame spectral shape per solar mass formed; this
layer applies what is known analytically and is differentiable in torch: the age
of the universe at z (age = age_frac × t(z)), the redshift (the rest-frame pixels
stretched by 1 + z and resampled onto the observed pixels, conserving flux, as
bagpipes does with spectres), the luminosity distance with bagpipes' constants
(flux = L × L☉ / (4π d_L² (1 + z))), and the mass scaling 10^log_mformed. The
inverse, used at fit time, turns noiseless observed spectra back into rest-frame
luminosities with a mask of the rest pixels each one covers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import as_numpy, require_ndim
from ..cosmology import age_gyr, luminosity_distance_mpc
from ..resampling import bin_edges

__all__ = ["FLUX_UNIT", "L_SUN", "MPC_CM", "RestFrame", "bagpipes_rest_wavelength",
           "log_rest_wavelength", "trim_rest_wavelength"]

L_SUN = 3.826e33  # erg/s: bagpipes' solar luminosity
MPC_CM = 3.086e24  # cm: bagpipes' megaparsec
FLUX_UNIT = 1e17  # specsbi fluxes are in 1e-17 erg/s/cm²/Å
_Z_STEP = 0.01  # bagpipes tabulates t(z) and d_L(z) every 0.01 and interpolates linearly
_Z_MAX = 10.0


def bagpipes_rest_wavelength(wavelength: Any, r_spec: float = 1000.0,
                             max_redshift: float = 10.0) -> np.ndarray:
    """bagpipes' internal rest-frame grid for spectra on ``wavelength`` (its R_spec part).

    bagpipes builds its model grid multiplicatively from 1 Å: steps of 1 + 0.5/20
    up to ``wavelength[0] / (1 + max_redshift)``, then 1 + 0.5/``r_spec`` up to
    ``wavelength[-1]``. Emulating on the same pixels makes the redshift resampling
    exact: an observed bagpipes spectrum is this grid's pixels, stretched.

    Example:
        >>> from specsbi.spectra import sdss_wavelength
        >>> w = bagpipes_rest_wavelength(sdss_wavelength())
        >>> round(float(w[1] / w[0]), 6), bool(w[-1] >= 9200)
        (1.0005, True)
    """
    wl = as_numpy(wavelength, "wavelength")
    if not 10 <= r_spec <= 1e5:
        raise ValueError(f"`r_spec` must lie in [10, 1e5]; got {r_spec}")
    x = [1.0]
    low, factor = wl[0] / (1.0 + max_redshift), 1.0 + 0.5 / 20.0
    while x[-1] * factor < low:  # the coarse part below the spectral range
        x.append(x[-1] * factor)
    factor = 1.0 + 0.5 / r_spec
    x.append(x[-1] * factor)
    first = len(x) - 1
    while x[-1] < wl[-1]:
        x.append(x[-1] * factor)
    return np.array(x[first:])


def log_rest_wavelength(wavelength: Any, z_range: tuple[float, float],
                        log10_step: float = 1e-4) -> np.ndarray:
    """A log-uniform rest-frame grid covering ``wavelength`` at every redshift of ``z_range``."""
    wl = as_numpy(wavelength, "wavelength")
    lo = math.log10(wl[0] / (1 + z_range[1])) - log10_step
    hi = math.log10(wl[-1] / (1 + z_range[0])) + log10_step
    return 10 ** np.arange(lo, hi + log10_step, log10_step)


def trim_rest_wavelength(rest_wavelength: Any, wavelength: Any,
                         z_range: tuple[float, float]) -> np.ndarray:
    """The rest pixels some redshift of ``z_range`` maps onto ``wavelength``, and two more
    on each side (so the outermost needed pixels keep their original edges)."""
    rest = as_numpy(rest_wavelength, "rest_wavelength")
    obs = bin_edges(as_numpy(wavelength, "wavelength"))
    edges = bin_edges(rest)
    need = (edges[1:] > obs[0] / (1 + z_range[1])) & (edges[:-1] < obs[-1] / (1 + z_range[0]))
    keep = np.nonzero(need)[0]
    if len(keep) == 0:
        raise ValueError("the rest-frame grid does not overlap the observed grid at any redshift")
    return rest[max(keep[0] - 2, 0) : keep[-1] + 3]


def _interp_uniform(x: Tensor, table: Tensor, step: float) -> Tensor:
    """Linear interpolation of ``table`` (values at 0, step, 2 step, ...) at ``x``."""
    pos = (x / step).clamp(0, len(table) - 1 - 1e-9)
    i = pos.detach().floor().long()
    frac = pos - i
    return table[i] * (1 - frac) + table[i + 1] * frac


class RestFrame(nn.Module):
    """Rest-frame luminosity per M☉ formed ⇄ observed flux, for one observed grid.

    Args:
        wavelength: the observed grid (npix,), Å.
        rest_wavelength: rest-frame pixel centres (increasing), Å, covering the
            observed grid at every redshift of ``z_range`` (see
            :func:`trim_rest_wavelength`). Pixels are bins between midpoints, as in
            spectres.
        z_range: redshifts the layer serves.

    Shapes: rest spectra (B, n_rest) in L☉/Å per M☉ formed; fluxes (B, npix) in
    1e-17 erg/s/cm²/Å. Computations are float64.

    Example:
        >>> from specsbi.spectra import sdss_wavelength
        >>> wl = sdss_wavelength()
        >>> layer = RestFrame(wl, bagpipes_rest_wavelength(wl))
        >>> rest = torch.ones(2, layer.n_rest, dtype=torch.float64)
        >>> flux = layer(rest.log(), torch.tensor([0.1, 0.2]), torch.tensor([10.0, 10.0]))
        >>> flux.shape, bool(flux[0, 0] > flux[1, 0])
        (torch.Size([2, 3841]), True)
    """

    def __init__(self, wavelength: Any, rest_wavelength: Any,
                 z_range: tuple[float, float] = (0.01, 0.5),
                 kms_per_pixel: float | None = None, max_veldisp: float = 0.0) -> None:
        super().__init__()
        wl = as_numpy(wavelength, "wavelength")
        rest = as_numpy(rest_wavelength, "rest_wavelength")
        for name, grid in (("wavelength", wl), ("rest_wavelength", rest)):
            require_ndim(grid, name, (1,), "(npix,)")
            if grid.size < 2 or np.any(np.diff(grid) <= 0) or grid[0] <= 0:
                raise ValueError(f"`{name}` must be positive and strictly increasing (Å)")
        lo, hi = (float(z) for z in z_range)
        if not 0 <= lo < hi <= _Z_MAX:
            raise ValueError(f"`z_range` must satisfy 0 <= low < high <= {_Z_MAX:g}; "
                             f"got {z_range}")
        obs_edges, edges = bin_edges(wl), bin_edges(rest)
        need_lo, need_hi = obs_edges[0] / (1 + hi), obs_edges[-1] / (1 + lo)
        if edges[0] > need_lo or edges[-1] < need_hi:
            raise ValueError(
                f"the rest-frame grid [{edges[0]:.1f}, {edges[-1]:.1f}] Å does not cover "
                f"[{need_lo:.1f}, {need_hi:.1f}] Å, the observed grid at z in {z_range}; "
                "widen it (e.g. log_rest_wavelength(wavelength, z_range))")
        self.z_range = (lo, hi)
        if kms_per_pixel is not None and not (kms_per_pixel > 0 and max_veldisp > 0):
            raise ValueError("velocity broadening needs kms_per_pixel > 0 and max_veldisp > 0; "
                             f"got {kms_per_pixel}, {max_veldisp}")
        self.kms_per_pixel = None if kms_per_pixel is None else float(kms_per_pixel)
        self.max_veldisp = float(max_veldisp)
        # the kernel reaches 4 int(σ + 1) pixels (bagpipes' rule): the margin it needs
        self.margin = 0 if kms_per_pixel is None else 4 * int(max_veldisp / kms_per_pixel + 1)
        self.npix, self.n_rest = wl.size, rest.size
        f64 = torch.float64
        self.register_buffer("wavelength", torch.as_tensor(wl, dtype=f64))
        self.register_buffer("rest_wavelength", torch.as_tensor(rest, dtype=f64))
        self.register_buffer("obs_edges", torch.as_tensor(obs_edges, dtype=f64),
                             persistent=False)
        self.register_buffer("_ln_obs_edges", torch.as_tensor(np.log(obs_edges), dtype=f64),
                             persistent=False)
        self.register_buffer("rest_edges", torch.as_tensor(edges, dtype=f64), persistent=False)
        # bin lookup: a table on a uniform ln λ grid finer than a third of the narrowest bin
        ln_e = np.log(edges)
        self._ln_step = float(np.diff(ln_e).min()) / 3
        grid = ln_e[0] + self._ln_step * np.arange(int((ln_e[-1] - ln_e[0]) / self._ln_step) + 2)
        table = np.clip(np.searchsorted(edges, np.exp(grid), side="right") - 1, 0, rest.size - 1)
        self.register_buffer("_table", torch.as_tensor(table), persistent=False)
        self._ln_e0 = float(ln_e[0])
        # Fast path: a geometric rest grid (bagpipes', log-uniform ones) whose pixels are
        # wider than the observed ones. Observed edge i sits at c_i − ln(1 + z)/Δ in rest
        # pixel units, and each observed pixel is a two-point mix of rest pixels.
        step = (ln_e[-2] - ln_e[1]) / max(len(ln_e) - 3, 1)
        ideal = ln_e[1] + step * np.arange(len(ln_e) - 2)
        geometric = len(ln_e) > 3 and np.abs(ln_e[1:-1] - ideal).max() < 1e-6 * step
        c = (np.log(obs_edges) - (ln_e[1] - step)) / step
        self.fast = bool(geometric and np.diff(c).max() <= 1.0)
        self._ln_rest_step = float(step)
        # c = whole + fraction, so the pixel arithmetic runs in float32 without losing the
        # 1e-7 pixel precision that float32 would lose on c itself (c reaches thousands)
        self.register_buffer("_c_int", torch.as_tensor(np.floor(c[:-1]), dtype=torch.long),
                             persistent=False)
        self._c_lo, self._c_hi = int(np.floor(c[:-1]).min()), int(np.floor(c[:-1]).max())
        self.register_buffer("_c_frac", torch.as_tensor(c[:-1] - np.floor(c[:-1]),
                                                        dtype=torch.float32), persistent=False)
        self.register_buffer("_inv_den", torch.as_tensor(step / np.expm1(np.diff(c) * step),
                                                         dtype=torch.float32), persistent=False)
        z = np.arange(0.0, _Z_MAX + _Z_STEP / 2, _Z_STEP)
        self.register_buffer("_age", torch.as_tensor(age_gyr(z), dtype=f64), persistent=False)
        d_l = np.maximum(luminosity_distance_mpc(z) * MPC_CM, 1.0)
        self.register_buffer("_d_l", torch.as_tensor(d_l, dtype=f64), persistent=False)

    # ------------------------------------------------------------ analytic parts
    def age(self, redshift: Tensor, age_frac: Tensor) -> Tensor:
        """Age in Gyr: ``age_frac`` × the age of the universe at ``redshift`` (bagpipes' table)."""
        t = _interp_uniform(redshift.to(self._age), self._age, _Z_STEP)
        return age_frac.to(t) * t

    def log_flux_scale(self, redshift: Tensor) -> Tensor:
        """ln of 1e17 L☉ / (4π d_L² (1 + z)): L☉/Å → 1e-17 erg/s/cm²/Å (bagpipes' units)."""
        z = redshift.to(self._d_l)
        d_l = _interp_uniform(z, self._d_l, _Z_STEP)
        return math.log(FLUX_UNIT * L_SUN / (4 * math.pi)) - 2 * torch.log(d_l) - torch.log1p(z)

    def check_redshift(self, redshift: np.ndarray) -> None:
        """Raise a ValueError naming the range when a redshift is outside the layer's."""
        lo, hi = self.z_range
        bad = (redshift < lo - 1e-9) | (redshift > hi + 1e-9)
        if np.any(bad):
            raise ValueError(f"redshift {float(redshift[bad][0]):g} is outside the emulator's "
                             f"range [{lo:g}, {hi:g}]")

    # ---------------------------------------------------------------- forward
    def _locate(self, redshift: Tensor) -> tuple[Tensor, Tensor]:
        """Rest-frame edges of the observed pixels (B, npix + 1) and the rest pixel of each."""
        z = redshift.to(self.rest_edges)
        e = self.rest_edges
        a = (self.obs_edges[None] / (1 + z[:, None])).clamp(e[0], e[-1])
        u = (self._ln_obs_edges[None] - torch.log1p(z.detach())[:, None] - self._ln_e0)
        k = (u / self._ln_step).long().sub(1).clamp(0, len(self._table) - 1)
        j = self._table[k]
        j = j + (a.detach() >= e[(j + 1).clamp(max=self.n_rest)]).long()
        return a, j.clamp(max=self.n_rest - 1)

    def _mix(self, redshift: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The fast path's two-point mix at ``redshift`` (B,).

        The left edge of observed pixel i sits at u = c_i − s rest pixels, s = ln(1 + z)/Δ;
        its pixel is rest pixel c_i − ⌊s⌋ − 1 or c_i − ⌊s⌋ ("below": frac(c_i) < frac(s)).

        Returns:
            ⌊s⌋ (B,) long; ``below`` (npix, B); the weight of each observed pixel's
            first rest pixel (npix, B), float32: the fraction (in λ) of the pixel inside
            it, expm1(vΔ) / expm1(δΔ) with v = left + 1 − u, expm1 by its series (vΔ <
            1e-3; compiled float32 expm1 is exp − 1, which loses 1e-4 here).
        """
        s = torch.log1p(redshift.to(torch.float64)) / self._ln_rest_step
        s_int = s.detach().floor()
        d = self._c_frac[:, None] - (s - s_int).to(torch.float32)[None]  # (npix, B)
        below = d.detach() < 0
        v = 1 - below.to(torch.float32) - d
        x = v * self._ln_rest_step
        w = (v * self._inv_den[:, None] * (1 + x * (0.5 + x / 6))).clamp(max=1)
        return s_int.long(), below, w

    def _two_point(self, table: Tensor, below: Tensor, w: Tensor) -> Tensor:
        """Observed pixels (npix, B) from ``table`` (rows, B): row r holds rest pixel
        c_lo − 1 + r − ⌊s⌋ of each spectrum. Whole rows are read, batch-major: per-pixel
        gathers from each spectrum were scalar loads."""
        c = self._c_int - (self._c_lo - 1)
        mid = table[c]
        r_l = torch.where(below, table[c - 1], mid)
        r_r = torch.where(below, mid, table[c + 1])
        return r_r + w.to(table.dtype) * (r_l - r_r)

    def _window(self, x: Tensor, s_int: Tensor, extra: int, span: tuple[int, int]) -> Tensor:
        """Columns c_lo − 1 − ⌊s⌋ … c_hi + 1 − ⌊s⌋ + ``extra`` of each row of ``x`` (the
        rest pixels its observed ones see, and ``extra`` beyond), indices clamped to
        ``span``: (B, c_hi − c_lo + 3 + extra)."""
        p = torch.arange(self._c_hi - self._c_lo + 3 + extra, device=x.device)
        return x.gather(1, ((self._c_lo - 1 - s_int)[:, None] + p[None]).clamp(*span))

    def shift(self, rest: Tensor, redshift: Tensor) -> Tensor:
        """Resample rest-frame spectra (B, n_rest) onto the observed pixels at ``redshift`` (B,).

        Each observed pixel gets the mean of the piecewise-constant rest spectrum over
        the rest-frame interval it sees, as spectres computes it: on a geometric rest
        grid coarser than the observed pixels a two-point mix (in the dtype of
        ``rest``); otherwise the difference of the cumulative integral at the pixel's
        edges (float64). Both are exact and differentiable in ``redshift``.
        """
        if self.fast:
            s_int, below, w = self._mix(redshift)
            table = self._window(rest, s_int, 0, (0, self.n_rest - 1))
            return self._two_point(table.T, below, w).T
        a, j = self._locate(redshift)
        e = self.rest_edges
        r = rest.to(e.dtype)
        cum = torch.cat([r.new_zeros(len(r), 1), torch.cumsum(r * e.diff(), 1)], 1)
        c = cum.gather(1, j) + (a - e[j]) * r.gather(1, j)
        return (c.diff(dim=1) / a.diff(dim=1)).to(rest.dtype)

    def _kernel(self, veldisp: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """bagpipes' broadening kernel, unnormalised (B, 2 margin + 1), and its norm (B,).

        σ = veldisp / ``kms_per_pixel`` pixels, the kernel cut at 4 int(σ + 1) pixels and
        normalised by its trapezoid sum (half of each end tap off).
        """
        m = self.margin
        x = torch.arange(-m, m + 1, device=veldisp.device, dtype=dtype)
        sigma = (veldisp.to(dtype) / self.kms_per_pixel).clamp(min=1e-3)[:, None]
        reach = 4 * torch.floor(sigma.detach() + 1)
        ker = torch.exp(-0.5 * (x / sigma) ** 2) * (x.abs() <= reach)
        return ker, ker.sum(1) - torch.exp(-0.5 * (reach[:, 0] / sigma[:, 0]) ** 2)

    def _taps(self, x: Tensor, ker: Tensor) -> Tensor:
        """Σ_k ker[:, k] x[:, k : k + n]: each row of x (B, n + 2 margin) convolved ("valid")
        with its own kernel (B, 2 margin + 1), unnormalised."""
        n = x.shape[1] - 2 * self.margin
        if torch.compiler.is_compiling():  # a sum over the taps: the compiler fuses it
            out = ker[:, :1] * x[:, :n]
            for k in range(1, 2 * self.margin + 1):
                out = out + ker[:, k : k + 1] * x[:, k : k + n]
            return out
        if len(x) == 0:
            return x[:, 2 * self.margin :]
        # eager: one grouped convolution, each spectrum its own kernel
        return F.conv1d(x[None], ker[:, None], groups=len(x))[0]

    def broaden(self, rest: Tensor, veldisp: Tensor) -> Tensor:
        """Gaussian velocity broadening, as bagpipes applies it on its rest-frame grid.

        Args:
            rest: (B, n_rest + 2 margin) spectra, ``margin`` pixels beyond each end.
            veldisp: (B,) km/s; σ = veldisp / ``kms_per_pixel`` pixels, the kernel cut
                at 4 int(σ + 1) pixels and normalised by its trapezoid sum.

        Returns:
            (B, n_rest): the broadened spectra on the rest grid (a "valid" convolution).
        """
        if self.margin == 0:
            raise ValueError("this physics layer has no velocity broadening (kms_per_pixel)")
        ker, norm = self._kernel(veldisp, rest.dtype)
        return self._taps(rest, ker) / norm[:, None]

    @staticmethod
    def pad(log_rest: Tensor, span: tuple[int, int]) -> Tensor:
        """``log_rest`` (B, n) with pixels before ``span[0]`` and after ``span[1]`` set to
        those two (an emulator's decoder is only trained on a span of the rest grid)."""
        idx = torch.arange(log_rest.shape[-1], device=log_rest.device).clamp(*span)
        return log_rest[:, idx]

    def forward(self, log_rest: Tensor, redshift: Tensor, log_mformed: Tensor,
                veldisp: Tensor | None = None, span: tuple[int, int] | None = None) -> Tensor:
        """ln rest-frame L_λ per M☉ formed → observed flux (B, npix).

        ``log_rest`` is (B, n_rest), or (B, n_rest + 2 margin) before the velocity
        broadening (then ``veldisp`` (B,) is needed). The result has the dtype of
        ``log_rest`` (float32 for speed, float64 for checks). With ``span`` the
        pixels of ``log_rest`` outside it are first replaced as :meth:`pad` does.

        On the fast path only the rest pixels the observed ones see are exponentiated
        and broadened: each spectrum's window, read at its whole-pixel shift.
        """
        z = redshift.to(self.rest_edges)
        broad = log_rest.shape[-1] != self.n_rest
        if broad and (veldisp is None or log_rest.shape[-1] != self.n_rest + 2 * self.margin):
            raise ValueError(f"expected (B, {self.n_rest}) rest spectra, or (B, "
                             f"{self.n_rest + 2 * self.margin}) with `veldisp`; got "
                             f"{tuple(log_rest.shape)}")
        log_amp = self.log_flux_scale(z) + math.log(10) * log_mformed.to(z)
        if not self.fast:
            rest = torch.exp(log_rest if span is None else self.pad(log_rest, span))
            if broad:
                rest = self.broaden(rest, veldisp)
            return self.shift(rest, z) * torch.exp(log_amp).to(log_rest.dtype)[:, None]
        s_int, below, w = self._mix(z)
        # padded pixel p holds rest pixel p − margin, and broadened rest pixel q sums the
        # padded q … q + 2 margin: the window reaches 2 margin further
        span = (0, log_rest.shape[-1] - 1) if span is None else span
        table = torch.exp(self._window(log_rest, s_int, 2 * self.margin if broad else 0, span))
        if broad:
            ker, norm = self._kernel(veldisp, log_rest.dtype)
            table = self._taps(table, ker)
            log_amp = log_amp - torch.log(norm).to(log_amp)
        amp = torch.exp(log_amp).to(log_rest.dtype)
        return (self._two_point(table.T, below, w) * amp[None]).T

    # ---------------------------------------------------------------- inverse
    @torch.no_grad()
    def to_rest(self, flux: Any, redshift: Any, log_mformed: Any, chunk: int = 2000
                ) -> tuple[np.ndarray, np.ndarray]:
        """Noiseless observed spectra → rest-frame L_λ per M☉ formed, and their coverage.

        A rest pixel that contains whole observed pixels takes their mean: exact for
        spectra that are resampled rest-frame pixels (bagpipes on its own grid). A
        covered rest pixel narrower than the observed ones takes the observed flux
        interpolated at its centre.

        Returns:
            ``(rest, covered)``: (n, n_rest) float64 and bool; uncovered pixels are 0.
        """
        f = np.atleast_2d(as_numpy(flux, "flux"))
        z = np.atleast_1d(as_numpy(redshift, "redshift"))
        m = np.atleast_1d(as_numpy(log_mformed, "log_mformed"))
        if f.ndim != 2 or f.shape[1] != self.npix or z.shape != (len(f),) or m.shape != z.shape:
            raise ValueError(f"expected flux (n, {self.npix}), redshift (n,) and log_mformed "
                             f"(n,); got {f.shape}, {z.shape}, {m.shape}")
        self.check_redshift(z)
        scale = np.exp(self.log_flux_scale(torch.as_tensor(z)).numpy()) * 10.0**m
        out = np.zeros((len(f), self.n_rest))
        covered = np.zeros((len(f), self.n_rest), bool)
        for s in range(0, len(f), chunk):
            sl = slice(s, s + chunk)
            out[sl], covered[sl] = self._to_rest(f[sl] / scale[sl, None], z[sl])
        return out, covered

    def _to_rest(self, lum: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, nr = len(lum), self.n_rest
        e = self.rest_edges.numpy()
        a = self.obs_edges.numpy()[None] / (1 + z[:, None])  # rest-frame observed edges
        j_lo = np.searchsorted(e, a[:, :-1], side="right") - 1
        j_hi = np.searchsorted(e, a[:, 1:], side="left") - 1
        whole = (j_lo == j_hi) & (j_lo >= 0) & (j_lo < nr)
        rows = np.broadcast_to(np.arange(n)[:, None], whole.shape)
        flat = (rows * nr + j_lo)[whole]
        total = np.bincount(flat, weights=lum[whole], minlength=n * nr).reshape(n, nr)
        count = np.bincount(flat, minlength=n * nr).reshape(n, nr)
        covered = (e[None, :-1] >= a[:, :1]) & (e[None, 1:] <= a[:, -1:])
        rest = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        thin = covered & (count == 0)
        centre = self.rest_wavelength.numpy()
        for i in np.nonzero(thin.any(1))[0]:  # rest pixels narrower than observed ones
            rest[i, thin[i]] = np.interp(centre[thin[i]], 0.5 * (a[i, 1:] + a[i, :-1]), lum[i])
        return rest, covered | (count > 0)
