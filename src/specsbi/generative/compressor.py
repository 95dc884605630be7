"""`VAECompressor`: a VAE (or AE) encoder as the compressor slot of `SpectrumPosterior`.

The summary is the log10 median flux (the amplitude, which carries the mass) and
the latent means of the normalised spectrum. The VAE is trained first, on the
noiseless simulations with fresh noise of the posterior's noise model on the
encoder's input (``VAE(denoise=True)``), then frozen while the flow trains: a
density over a summary must not train the summary (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..noise import NoiseModel
from ..training import TrainConfig
from .preprocessing import normalise
from .vae import VAE

__all__ = ["VAECompressor"]


class VAECompressor(nn.Module):
    """Spectra (B, npix) with errors → [log10 amplitude, latent means] (B, 1 + latent_dim).

    Args:
        wavelength: the model grid (npix,).
        latent_dim: VAE latent size.
        autoencoder: an AE (z = μ) instead of a VAE.
        noise: the noise model whose S/N range the encoder is trained over.
        hidden, max_epochs, batch_size, lr, patience: the VAE's size and training.
        max_spectra: train on at most this many simulations.
        seed, progress: as everywhere.
    """

    def __init__(self, wavelength: Any, latent_dim: int = 12, autoencoder: bool = False,
                 noise: NoiseModel | None = None, hidden: Sequence[int] = (512, 256),
                 max_epochs: int = 40, batch_size: int = 256, lr: float = 1e-3,
                 patience: int = 8, max_spectra: int = 20_000, seed: int = 0,
                 progress: bool = True) -> None:
        super().__init__()
        self.npix = len(wavelength)
        self.noise = noise or NoiseModel()
        self.max_spectra = int(max_spectra)
        config = TrainConfig(max_epochs=max_epochs, batch_size=batch_size, lr=lr,
                             patience=patience)
        self.vae = VAE(latent_dim, hidden, autoencoder=autoencoder, denoise=True,
                       train_config=config, seed=seed, progress=progress)
        self.vae.dim, self.vae.weighted = self.npix, True
        self.vae.net = self.networks = self.vae._build()
        self.summary_names = ["log_amp"] + [f"m{i}" for i in range(latent_dim)]
        self.dim = len(self.summary_names)

    def fit(self, flux: Any, redshift: Any = None) -> VAECompressor:
        """Train the VAE on noiseless spectra (n, npix); ``redshift`` is not used."""
        f = np.asarray(flux, dtype=np.float64)[: self.max_spectra]
        if f.ndim != 2 or f.shape[1] != self.npix:
            raise ValueError(f"expected noiseless flux (n, {self.npix}); got {f.shape}")
        _, err, _ = self.noise.sample(f, seed=self.vae.seed)
        data = normalise(f, err)
        self.vae.fit(data.flux, weights=data.weights)
        self.networks = self.vae.net
        self.history = self.vae.history
        return self

    @torch.no_grad()
    def forward(self, flux: Tensor, err: Tensor) -> Tensor:
        """Summaries (B, 1 + latent_dim) of spectra with 1σ errors (0 or inf = masked)."""
        if flux.shape[-1] != self.npix or err.shape != flux.shape:
            raise ValueError(f"expected flux and err of shape (B, {self.npix}); got "
                             f"{tuple(flux.shape)} and {tuple(err.shape)}")
        good = torch.isfinite(err) & (err > 0) & torch.isfinite(flux)
        amp = torch.nanmedian(torch.where(good, flux, torch.nan), dim=1).values
        amp = torch.where(torch.isfinite(amp) & (amp > 0), amp, torch.ones_like(amp))
        x = torch.where(good, flux / amp[:, None], 0.0).float()
        mu = self.vae.encode_tensor(x, ~good)
        return torch.cat([torch.log10(amp).float()[:, None], mu], 1)
