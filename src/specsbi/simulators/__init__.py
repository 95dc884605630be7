"""Simulators: parameters → noiseless observed-frame spectra (bagpipes, and a fast toy model)."""

from .bagpipes import BagpipesSimulator
from .base import Simulator, from_config
from .toy import ToySimulator

__all__ = ["BagpipesSimulator", "Simulator", "ToySimulator", "from_config"]
