"""`EmulatorSimulator`: an emulator behind the Simulator interface, for emulated training sets."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from ..simulators.base import Simulator

__all__ = ["EmulatorSimulator"]


class EmulatorSimulator(Simulator):
    """Noiseless spectra from a fitted emulator, so ``ss.simulate`` and ``specsbi simulate
    --emulator`` write emulated sets in the same layout, noise model and atomic way.

    Args:
        emulator: a fitted :class:`~specsbi.emulators.base.Emulator`.
        model: the folder it was loaded from (recorded in the file's attributes).
        error: multiply each spectrum by exp(δ), δ a draw of the emulator's own error
            (:meth:`~specsbi.emulators.base.Emulator.draw_error`), so that a flow trained
            on the set learns to discount the emulator's error rather than trust its
            details. Each chunk's draws are seeded by its θ: a resumed or repeated run
            writes the same file.

    Example:
        >>> sim = emu.as_simulator()                                   # doctest: +SKIP
        >>> emulated = ss.simulate(sim, emu.prior, n=200_000, path="emulated.h5")  # doctest: +SKIP
    """

    derived_names = ("log_mstar", "age")

    def __init__(self, emulator: Any, model: str | None = None, error: bool = False) -> None:
        emulator._require()
        super().__init__(emulator.physics.wavelength.cpu().numpy())
        self.emulator, self.model, self.error = emulator, model, bool(error)
        prior = emulator.prior
        self.param_names = tuple(prior.all_names)
        self.limits = {**prior.ranges, **{k: (v, v) for k, v in prior.fixed.items()}}

    def _simulate(self, params: dict[str, np.ndarray], progress: bool
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        theta = np.stack([params[n] for n in self.emulator.prior.names], 1)
        flux = self.emulator.predict(theta)
        if self.error:
            digest = hashlib.sha256(np.ascontiguousarray(theta, np.float64).tobytes()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
            z = torch.as_tensor(params["redshift"], dtype=torch.float64)
            flux = flux * np.exp(self.emulator.draw_error(z, gen).cpu().numpy())
        return flux, self.emulator.predict_derived(theta)

    def _config(self) -> dict[str, Any]:
        return {"emulator": type(self.emulator).__name__, "model": self.model,
                "emulator_error": self.error}
