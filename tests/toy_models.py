"""A tiny SpectrumPosterior on toy spectra, trained once per test session (a few seconds),
for the tests of catalog inference, the demo and the examples."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from specsbi import SpectraSet, SpectrumPosterior, ToySimulator, default_prior, simulate
from specsbi.training import TrainConfig


@functools.cache
def toy_data(n: int = 300, seed: int = 1) -> SpectraSet:
    """Toy simulations with noise, in memory."""
    return simulate(ToySimulator(), default_prior(), n=n, seed=seed, progress=False)


@functools.cache
def tiny_model_dir() -> Path:
    """A saved tiny SpectrumPosterior over (log_mstar, redshift) (2 epochs, small flow)."""
    model = SpectrumPosterior(hidden=16, transforms=1, embed=16, n_components=4, n_rest=4,
                              noise_draws=1, train_config=TrainConfig(max_epochs=2,
                                                                      batch_size=128),
                              progress=False).fit(toy_data())
    folder = Path(tempfile.mkdtemp(prefix="specsbi-tiny-"))
    atexit.register(shutil.rmtree, folder, True)
    return model.save(folder / "model")
