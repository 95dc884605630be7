"""Shared fixtures: small simulated sets from the fast toy simulator."""

from __future__ import annotations

import numpy as np
import pytest

from specsbi import SpectraSet, ToySimulator, default_prior, simulate


@pytest.fixture(scope="session")
def toy_set() -> SpectraSet:
    """40 toy galaxies with noise, simulated in memory with a fixed seed."""
    return simulate(ToySimulator(), default_prior(), n=40, seed=1, progress=False)


@pytest.fixture
def small_set() -> SpectraSet:
    """A tiny hand-made set on a short grid, with named parameters."""
    wl = np.linspace(4000.0, 5000.0, 50)
    rng = np.random.default_rng(0)
    flux = 10 + rng.normal(size=(5, 50))
    return SpectraSet(
        wl, flux, np.full((5, 50), 0.5),
        params={"redshift": np.linspace(0.1, 0.5, 5), "log_mstar": np.arange(5.0) + 9},
    )
