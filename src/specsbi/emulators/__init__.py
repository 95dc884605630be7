"""Emulators θ → observed spectrum: a learned rest-frame shape through one shared physics layer.

``PCAEmulator`` (PCA of ln rest-frame spectra + an MLP) is the baseline;
``ConditionalVAE``, ``ConditionalGAN`` and ``ConditionalDiffusion`` put conditional generative
models of the same PCA coefficients in the MLP's place. Any module
mapping the shape features to an ln rest-frame spectrum plugs into
:class:`Emulator` and so into the same physics layer, MCMC and model files.
"""

from .base import EMULATORS, Emulator
from .generative import ConditionalDiffusion, ConditionalGAN, ConditionalVAE, GenerativeEmulator
from .pca import PCAEmulator
from .physics import RestFrame, bagpipes_rest_wavelength, log_rest_wavelength
from .simulator import EmulatorSimulator

#: `specsbi train emulator KIND` → class name in EMULATORS (generative models add theirs)
KINDS = {"pca": "PCAEmulator", "vae": "ConditionalVAE", "gan": "ConditionalGAN",
         "diffusion": "ConditionalDiffusion"}

__all__ = ["EMULATORS", "KINDS", "ConditionalDiffusion", "Emulator", "EmulatorSimulator",
           "ConditionalGAN", "GenerativeEmulator", "PCAEmulator", "RestFrame", "ConditionalVAE",
           "bagpipes_rest_wavelength", "log_rest_wavelength"]
