"""Emulators θ → observed spectrum: a learned rest-frame shape through one shared physics layer.

``PCAEmulator`` (PCA of ln rest-frame spectra + an MLP) is the baseline;
``VAEEmulator``, ``GANEmulator`` and ``DiffusionEmulator`` put conditional generative
models of the same PCA coefficients in the MLP's place. Any module
mapping the shape features to an ln rest-frame spectrum plugs into
:class:`Emulator` and so into the same physics layer, MCMC and model files.
"""

from .base import EMULATORS, Emulator
from .generative import DiffusionEmulator, GANEmulator, GenerativeEmulator, VAEEmulator
from .pca import PCAEmulator
from .physics import RestFrame, bagpipes_rest_wavelength, log_rest_wavelength
from .simulator import EmulatorSimulator

#: `specsbi train emulator KIND` → class name in EMULATORS (generative models add theirs)
KINDS = {"pca": "PCAEmulator", "vae": "VAEEmulator", "gan": "GANEmulator",
         "diffusion": "DiffusionEmulator"}

__all__ = ["EMULATORS", "KINDS", "DiffusionEmulator", "Emulator", "EmulatorSimulator",
           "GANEmulator", "GenerativeEmulator", "PCAEmulator", "RestFrame", "VAEEmulator",
           "bagpipes_rest_wavelength", "log_rest_wavelength"]
