"""`VAECompressor`: rest-frame templates for redshift, a VAE (or AE) for the shape.

The compressor slot of `SpectrumPosterior(compressor="vae"|"ae")`. Its first stage
is the "pca" compressor's (`RestFramePCA` without its second stage): rest-frame
templates fitted at every trial redshift give ẑ at sub-pixel precision, σ_ẑ, the fit
quality, the log amplitude and luminosity (which carry the mass). The spectrum,
divided by its median, is then moved to the rest frame by the whole number of pixels
nearest ẑ (`RestFrame`) and encoded by a VAE conditioned on the fractional
remainder; its latent means replace the rest-frame PCA coefficients. The VAE is
trained first, on noiseless simulations at their true redshifts with fresh noise of
the posterior's noise model on the encoder's input (``VAE(denoise=True)``), then
frozen while the flow trains: a density over a summary must not train the summary
(DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..compressors import RestFramePCA
from ..noise import NoiseModel
from ..training import TrainConfig
from .preprocessing import RestFrame, normalise
from .vae import VAE

__all__ = ["VAECompressor"]


class VAECompressor(nn.Module):
    """Spectra (B, npix) with errors → [template-fit summary, VAE latent means].

    Args:
        wavelength: the model grid (npix,), log-uniform.
        n_templates: rest-frame templates of the redshift fit.
        latent_dim: VAE latent size.
        autoencoder: an AE (z = μ) instead of a VAE.
        noise: the noise model whose S/N range the encoder is trained over.
        hidden, max_epochs, batch_size, lr, patience: the VAE's size and training.
        max_spectra: train on at most this many simulations.
        seed, progress: as everywhere.
    """

    def __init__(self, wavelength: Any, n_templates: int = 12, latent_dim: int = 16,
                 autoencoder: bool = False, noise: NoiseModel | None = None,
                 hidden: Sequence[int] = (512, 256), max_epochs: int = 40,
                 batch_size: int = 256, lr: float = 1e-3, patience: int = 8,
                 max_spectra: int = 20_000, seed: int = 0, progress: bool = True) -> None:
        super().__init__()
        self.templates = RestFramePCA(wavelength, n_templates)
        self.rest = RestFrame(wavelength, z_max=self.templates.z_range[1])
        self.npix = len(wavelength)
        self.noise = noise or NoiseModel()
        self.max_spectra = int(max_spectra)
        config = TrainConfig(max_epochs=max_epochs, batch_size=batch_size, lr=lr,
                             patience=patience)
        self.vae = VAE(latent_dim, hidden, autoencoder=autoencoder, denoise=True, cond_dim=1,
                       train_config=config, seed=seed, progress=progress)
        self.vae.dim, self.vae.weighted = self.rest.n_rest, True
        self.vae.net = self.networks = self.vae._build()
        self.summary_names = (self.templates.summary_names
                              + [f"m{i}" for i in range(latent_dim)])
        self.dim = len(self.summary_names)

    def fit(self, flux: Any, redshift: Any) -> VAECompressor:
        """Fit the templates and train the VAE on noiseless spectra (n, npix) at their
        redshifts (n,)."""
        f = np.asarray(flux, dtype=np.float64)[: self.max_spectra]
        z = np.asarray(redshift, dtype=np.float64)[: self.max_spectra]
        if f.ndim != 2 or f.shape[1] != self.npix or z.shape != (len(f),):
            raise ValueError(f"expected noiseless flux (n, {self.npix}) and redshift (n,); "
                             f"got {f.shape} and {z.shape}")
        self.templates.fit(f, z)
        _, err, _ = self.noise.sample(f, seed=self.vae.seed)
        data = normalise(f, err)
        xr, wr, frac = self.rest.to_rest(data.flux, data.weights, z)
        del f, err, data
        self.vae.fit(xr, cond=frac, weights=wr)
        self.networks = self.vae.net
        self.history = self.vae.history
        return self

    @torch.no_grad()
    def forward(self, flux: Tensor, err: Tensor) -> Tensor:
        """Summaries (B, dim) of spectra with 1σ errors (0 or inf = masked)."""
        s = self.templates(flux, err)  # checks the shapes
        good = torch.isfinite(err) & (err > 0) & torch.isfinite(flux)
        amp = (10 ** s[:, 0].double()).to(flux.dtype)
        x = torch.where(good, flux / amp[:, None], 0.0).float()
        xr, mr, frac = self.rest.to_rest_tensor(x, good, s[:, 2])
        net = self.vae.net
        u = torch.where(mr, net["x_scale"](xr), 0.0)
        mu, _ = self.vae._encode_std(u, net["c_scale"](frac.float()))
        return torch.cat([s, mu], 1)
