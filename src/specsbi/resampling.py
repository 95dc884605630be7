"""Flux-conserving resampling of spectra between wavelength grids, masks carried along."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._checks import as_numpy, require_ndim

__all__ = ["bin_edges", "overlap_matrix", "resample"]


def bin_edges(wavelength: np.ndarray) -> np.ndarray:
    """Pixel edges of a grid of pixel centres: midpoints inside, half a step outside.

    Example:
        >>> bin_edges(np.array([1.0, 2.0, 4.0]))
        array([0.5, 1.5, 3. , 5. ])
    """
    wl = np.asarray(wavelength, dtype=np.float64)
    mid = 0.5 * (wl[1:] + wl[:-1])
    return np.concatenate([[wl[0] - (mid[0] - wl[0])], mid, [wl[-1] + (wl[-1] - mid[-1])]])


def overlap_matrix(old: np.ndarray, new: np.ndarray) -> sparse.csr_matrix:
    """Sparse (len(new), len(old)) matrix of the wavelength overlap of each pixel pair, in Å."""
    e_old, e_new = bin_edges(old), bin_edges(new)
    lo = np.clip(np.searchsorted(e_old, e_new[:-1], side="right") - 1, 0, len(old) - 1)
    hi = np.clip(np.searchsorted(e_old, e_new[1:], side="left") - 1, 0, len(old) - 1)
    rows, cols, vals = [], [], []
    for k in range(int((hi - lo).max()) + 1):
        i = lo + k
        ok = i <= hi
        j = np.nonzero(ok)[0]
        i = i[ok]
        w = np.minimum(e_new[j + 1], e_old[i + 1]) - np.maximum(e_new[j], e_old[i])
        keep = w > 0
        rows.append(j[keep])
        cols.append(i[keep])
        vals.append(w[keep])
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(new), len(old)),
    )


def resample(
    wavelength: np.ndarray,
    flux: np.ndarray,
    new_wavelength: np.ndarray,
    err: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    min_coverage: float = 0.5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Resample flux densities onto ``new_wavelength``, conserving flux.

    Each new pixel is the overlap-weighted mean of the unmasked old pixels it
    covers; errors add in quadrature with the same weights. A new pixel whose
    width is covered less than ``min_coverage`` by unmasked old pixels (a mask,
    or the edge of the old grid) is masked, and its flux set to 0 and error to inf.

    Args:
        wavelength: old pixel centres, (npix,), increasing.
        flux: (npix,) or (n, npix).
        new_wavelength: new pixel centres, (m,), increasing.
        err: 1σ errors like ``flux``, or None.
        mask: True where an old pixel is masked, like ``flux``, or None.
        min_coverage: fraction of a new pixel that must be covered by good data.

    Returns:
        ``(flux, err, mask)`` on the new grid; ``err`` is None when not given.

    Example:
        >>> wl = np.arange(10.0)
        >>> f, _, m = resample(wl, np.ones(10), np.arange(1.0, 9.0, 2.0))
        >>> f.tolist(), m.any()
        ([1.0, 1.0, 1.0, 1.0], np.False_)
    """
    wl = as_numpy(wavelength, "wavelength")
    new = as_numpy(new_wavelength, "new_wavelength")
    for name, grid in (("wavelength", wl), ("new_wavelength", new)):
        require_ndim(grid, name, (1,), "(npix,)")
        if grid.size < 2 or np.any(np.diff(grid) <= 0):
            raise ValueError(f"`{name}` must be strictly increasing with at least 2 pixels")
    f = as_numpy(flux, "flux")
    require_ndim(f, "flux", (1, 2), "(npix,) or (n, npix)")
    if f.shape[-1] != wl.size:
        raise ValueError(
            f"`flux` has {f.shape[-1]} pixels but `wavelength` has {wl.size}: "
            "the grids do not match"
        )
    if not 0 < min_coverage <= 1:
        raise ValueError(f"`min_coverage` must lie in (0, 1]; got {min_coverage}")
    f2 = np.atleast_2d(f)
    bad = np.zeros(f2.shape, bool) if mask is None else np.atleast_2d(np.asarray(mask, bool))
    if bad.shape != f2.shape:
        raise ValueError(f"`mask` must have the shape of `flux` {f.shape}; got {bad.shape}")
    good = (~bad).astype(np.float64)
    W = overlap_matrix(wl, new)
    width = np.diff(bin_edges(new))
    cover = (W @ good.T).T  # Å of good data in each new pixel
    ok = cover >= min_coverage * width
    safe = np.where(ok, cover, 1.0)
    new_flux = np.where(ok, (W @ np.where(bad, 0.0, f2).T).T / safe, 0.0)
    new_err = None
    if err is not None:
        e2 = np.atleast_2d(as_numpy(err, "err"))
        if e2.shape != f2.shape:
            raise ValueError(f"`err` must have the shape of `flux` {f.shape}; got {e2.shape}")
        var = np.where(bad, 0.0, e2**2)
        new_var = (W.multiply(W) @ var.T).T / safe**2
        new_err = np.where(ok, np.sqrt(new_var), np.inf)
    new_mask = ~ok
    if f.ndim == 1:
        new_flux, new_mask = new_flux[0], new_mask[0]
        new_err = None if new_err is None else new_err[0]
    return new_flux, new_err, new_mask
