"""bagpipes' star-formation-history binning: the mass fraction in each of its SSP age bins.

bagpipes builds a spectrum as a sum over simple stellar populations in age bins
0.1 dex wide (1 Myr to the age of the universe), weighted by the mass the star
formation history puts in each bin, which it sums from the SFR on a fine grid
(0.0025 dex). A narrow burst therefore gives a spectrum that is a staircase in
age: constant while the burst sits inside one bin, a blend while it crosses an
edge. A smooth network of (age, τ) rounds those steps off; the bin fractions
themselves carry them, so an emulator given them as features only has to learn a
smooth map. This module reproduces bagpipes' grids (its cosmology, H0 = 70 and
Ωm = 0.3, sets the last edge) without importing bagpipes, differentiably in torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..cosmology import age_gyr

__all__ = ["N_BINS", "bin_fractions", "bin_matrix"]

_BIN_STEP = 0.1  # bagpipes' config.age_sampling step, log10 yr
_FINE_STEP = 0.0025  # bagpipes' star_formation_history log_sampling


def _make_edges(log_mid: np.ndarray) -> np.ndarray:
    """bagpipes' ``utils.make_bins(mid, make_rhs=True)[0]``: edges halfway between midpoints."""
    edges = np.empty(len(log_mid) + 1)
    edges[0] = log_mid[0] - (log_mid[1] - log_mid[0]) / 2
    edges[-1] = log_mid[-1] + (log_mid[-1] - log_mid[-2]) / 2
    edges[1:-1] = (log_mid[1:] + log_mid[:-1]) / 2
    return edges


def _grids() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine ages (yr), their widths (yr), and the SSP bin edges (yr), as bagpipes sets them."""
    hubble = float(age_gyr(0.0))
    log_fine = np.arange(6.0, np.log10(hubble) + 9.0 + 2 * _FINE_STEP, _FINE_STEP)
    fine_edges = 10 ** _make_edges(log_fine)
    fine_edges[0], fine_edges[-1] = 0.0, 1e9 * hubble
    bins = 10 ** _make_edges(np.arange(6.0, np.log10(hubble) + 9.0, _BIN_STEP))
    bins[0], bins[-1] = 0.0, 1e9 * hubble
    return 10**log_fine, np.diff(fine_edges), bins


_FINE_AGES, _FINE_WIDTHS, _BIN_EDGES = _grids()
#: number of bagpipes' SSP age bins (42 for its default cosmology)
N_BINS = len(_BIN_EDGES) - 1


def bin_matrix() -> np.ndarray:
    """(N_BINS, n_fine) 0/1 matrix: which SSP bin each fine age falls in (numpy.histogram's)."""
    idx = np.searchsorted(_BIN_EDGES, _FINE_AGES, side="right") - 1
    idx[_FINE_AGES == _BIN_EDGES[-1]] = N_BINS - 1  # histogram's last bin is closed
    inside = (idx >= 0) & (idx < N_BINS)
    out = np.zeros((N_BINS, len(_FINE_AGES)))
    out[idx[inside], np.nonzero(inside)[0]] = 1.0
    return out


def _log_widths() -> np.ndarray:
    """ln of the fine widths in Gyr; −inf for the last fine ages, which bagpipes' last edge
    (the age of the universe) leaves with no width: no history reaches them."""
    w = _FINE_WIDTHS / 1e9
    return np.log(w, out=np.full_like(w, -np.inf), where=w > 0)


_MATRIX: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}


def _tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    key = (device, torch.float64)
    if key not in _MATRIX:
        f64 = dict(dtype=torch.float64, device=device)
        _MATRIX[key] = (torch.as_tensor(_FINE_AGES / 1e9, **f64),
                        torch.as_tensor(_log_widths(), **f64),
                        torch.as_tensor(bin_matrix(), **f64))
    return _MATRIX[key]


def bin_fractions(age: Tensor, tau: Tensor) -> Tensor:
    """Fraction of the mass formed in each SSP age bin, for a delayed-τ history.

    SFR(t) ∝ t e^(−t/τ), t the time since star formation began ``age`` ago, summed
    on bagpipes' fine age grid exactly as bagpipes does (rows sum to 1).

    Args:
        age: (B,) time since the onset of star formation, Gyr.
        tau: (B,) e-folding time, Gyr.

    Returns:
        (B, N_BINS) float64 fractions, youngest bin first.

    Example:
        >>> f = bin_fractions(torch.tensor([1.0, 8.0]), torch.tensor([0.1, 3.0]))
        >>> f.shape, [round(float(s), 6) for s in f.sum(1)]
        (torch.Size([2, 42]), [1.0, 1.0])
    """
    ages, log_widths, matrix = _tables(age.device)
    age, tau = age.double()[:, None], tau.double()[:, None]
    t = age - ages  # time since the onset at each fine lookback age (Gyr)
    alive = t > 0
    log_w = torch.where(alive, torch.log(t.clamp(min=1e-30)) - t / tau + log_widths,
                        torch.full_like(t, -torch.inf))
    w = torch.softmax(log_w, dim=1)  # normalised in log space: e^(−t/τ) spans 1e-57 here
    return w @ matrix.T
