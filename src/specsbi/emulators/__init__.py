"""Emulators θ → observed spectrum: a learned rest-frame shape through one shared physics layer.

``PCAEmulator`` (PCA of ln rest-frame spectra + an MLP) is the baseline; any module
mapping the shape features to an ln rest-frame spectrum plugs into
:class:`Emulator` and so into the same physics layer, MCMC and model files.
"""

from .base import EMULATORS, Emulator
from .pca import PCAEmulator
from .physics import RestFrame, bagpipes_rest_wavelength, log_rest_wavelength
from .simulator import EmulatorSimulator

#: `specsbi train emulator KIND` → class name in EMULATORS (generative models add theirs)
KINDS = {"pca": "PCAEmulator"}

__all__ = ["EMULATORS", "KINDS", "Emulator", "EmulatorSimulator", "PCAEmulator", "RestFrame",
           "bagpipes_rest_wavelength", "log_rest_wavelength"]
