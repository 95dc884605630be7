"""Example spectra for the notebooks and tutorials: a bagpipes file if given, else the toy model."""

from __future__ import annotations

import os

from ..spectra import SpectraSet

__all__ = ["example_set", "notebook_fast"]


def notebook_fast() -> bool:
    """True when ``SPECSBI_NB_FAST=1``: notebooks shrink data and epochs (for the tests)."""
    return os.environ.get("SPECSBI_NB_FAST", "") == "1"


def example_set(n: int, seed: int = 0, path: str | os.PathLike | None = None) -> SpectraSet:
    """``n`` simulated spectra with noiseless flux, one noisy realisation and θ.

    Args:
        n: number of spectra.
        seed: seed of the toy simulation.
        path: an HDF5 file of simulations (e.g. from ``specsbi simulate``) to read the
            first ``n`` rows of; default ``$SPECSBI_NB_DATA`` if set, else the fast
            `ToySimulator` (an analytic spectrum with the bagpipes parameters, about
            10 μs per spectrum) simulated in memory.

    Example:
        >>> example_set(5).flux.shape
        (5, 3841)
    """
    path = path or os.environ.get("SPECSBI_NB_DATA")
    if path:
        data = SpectraSet.read(path, rows=slice(0, n))
        if data.flux_noiseless is None:
            raise ValueError(f"{path} holds no noiseless flux; pass simulations")
        return data
    from ..priors import default_prior
    from ..simulation import simulate
    from ..simulators import ToySimulator

    return simulate(ToySimulator(), default_prior(), n=n, seed=seed, progress=False)
