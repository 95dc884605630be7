"""`EmulatorSimulator`: an emulator behind the Simulator interface, for emulated training sets."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..simulators.base import Simulator

__all__ = ["EmulatorSimulator"]


class EmulatorSimulator(Simulator):
    """Noiseless spectra from a fitted emulator, so ``ss.simulate`` and ``specsbi simulate
    --emulator`` write emulated sets in the same layout, noise model and atomic way.

    Args:
        emulator: a fitted :class:`~specsbi.emulators.base.Emulator`.
        model: the folder it was loaded from (recorded in the file's attributes).

    Example:
        >>> sim = emu.as_simulator()                                   # doctest: +SKIP
        >>> emulated = ss.simulate(sim, emu.prior, n=200_000, path="emulated.h5")  # doctest: +SKIP
    """

    derived_names = ("log_mstar", "age")

    def __init__(self, emulator: Any, model: str | None = None) -> None:
        emulator._require()
        super().__init__(emulator.physics.wavelength.cpu().numpy())
        self.emulator, self.model = emulator, model
        prior = emulator.prior
        self.param_names = tuple(prior.all_names)
        self.limits = {**prior.ranges, **{k: (v, v) for k, v in prior.fixed.items()}}

    def _simulate(self, params: dict[str, np.ndarray], progress: bool
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        theta = np.stack([params[n] for n in self.emulator.prior.names], 1)
        return self.emulator.predict(theta), self.emulator.predict_derived(theta)

    def _config(self) -> dict[str, Any]:
        return {"emulator": type(self.emulator).__name__, "model": self.model}
