"""`VAE`: a (conditional) variational autoencoder, or a plain autoencoder with one switch.

The lecture's hands-on in one flag: ``autoencoder=False`` samples the latent with
the reparameterisation z = μ + σ ε and adds the KL term; ``autoencoder=True``
uses z = μ and no KL. The reconstruction term is the Gaussian negative
log-likelihood of the data: with ``weights`` (inverse variances, e.g. from the
per-pixel errors; 0 masks a pixel) it is ½ Σ w (x − x̂)², so a well-fitted model
reaches χ²/pixel ≈ 1 at the noise level; without them a per-column variance is
learned. ``denoise=True`` treats x as noiseless and gives the encoder a fresh
noisy copy, x + ε/√w, every batch (the flows pipeline's fresh noise), so the
encoder serves noisy observations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..training import TrainConfig
from .base import GenerativeModel, _tensor, mlp

__all__ = ["VAE"]


class _Stats(nn.Module):
    """The learned per-column noise scale (standardised units) and the training latents'
    mean and Cholesky factor (an AE samples from that Gaussian)."""

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.full((dim,), math.log(0.1)))
        self.register_buffer("latent_mean", torch.zeros(k))
        self.register_buffer("latent_chol", torch.eye(k))


class VAE(GenerativeModel):
    """A variational (or plain) autoencoder over vectors, optionally conditional on ``cond``.

    Args:
        latent_dim: size of the latent space.
        hidden: widths of the encoder's hidden layers (the decoder mirrors them).
        autoencoder: True: z = μ, no KL (an AE); False: a VAE.
        beta: weight of the KL term (VAE only).
        denoise: x is noiseless; the encoder sees x + N(0, 1/weights) afresh each batch.
        cond_dim, train_config, device, seed, progress: see `GenerativeModel`.

    Sampling draws z ~ N(0, I) for a VAE; an AE has no prior, so it draws from a
    Gaussian fitted to its training latents (what the lecture shows it lacks).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(500, 6)).astype("float32")
        >>> vae = VAE(latent_dim=2, hidden=(32,), progress=False,
        ...           train_config=TrainConfig(max_epochs=3)).fit(x)
        >>> vae.encode(x[:4]).shape, vae.decode(np.zeros((4, 2))).shape, vae.sample(5).shape
        ((4, 2), (4, 6), (5, 6))
    """

    def __init__(self, latent_dim: int = 16, hidden: Sequence[int] = (512, 256),
                 autoencoder: bool = False, beta: float = 1.0, denoise: bool = False,
                 cond_dim: int = 0, train_config: TrainConfig | None = None,
                 device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
        super().__init__(cond_dim, train_config, device, seed, progress)
        if not (isinstance(latent_dim, int) and latent_dim >= 1):
            raise ValueError(f"`latent_dim` must be a positive integer; got {latent_dim!r}")
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ValueError(f"`hidden` must be positive layer widths; got {hidden!r}")
        if not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"`beta` must be finite and >= 0; got {beta!r}")
        self.latent_dim, self.hidden = latent_dim, hidden
        self.autoencoder, self.beta, self.denoise = bool(autoencoder), float(beta), bool(denoise)
        self.weighted = False

    def _hparams(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "hidden": list(self.hidden),
                "autoencoder": self.autoencoder, "beta": self.beta, "denoise": self.denoise,
                "weighted": self.weighted}

    @classmethod
    def from_card(cls, card, state, device="cpu"):
        hp = dict(card["hparams"])
        weighted = hp.pop("weighted", False)
        card = {**card, "hparams": hp}
        model = super().from_card(card, state, device)
        model.weighted = weighted
        return model

    def _build(self) -> nn.ModuleDict:
        k, c, h = self.latent_dim, self.cond_dim, list(self.hidden)
        return nn.ModuleDict({
            "encoder": mlp([self.dim + c, *h, 2 * k]),
            "decoder": mlp([k + c, *reversed(h), self.dim]),
            "stats": _Stats(self.dim, k),
            **self._scalers(),
        })

    # ------------------------------------------------------------- networks
    def _encode_std(self, u: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        h = self._require()["encoder"](torch.cat([u, c], -1))
        mu, logvar = h.chunk(2, -1)
        return mu, logvar.clamp(-12, 8)

    def _decode_std(self, z: Tensor, c: Tensor) -> Tensor:
        return self._require()["decoder"](torch.cat([z, c], -1))

    def _loss(self, net: nn.ModuleDict, batch: Sequence[Tensor], gen: torch.Generator
              ) -> Tensor:
        x, c, w = batch
        return -self._elbo(x, c, w, gen)

    def _elbo(self, x: Tensor, c: Tensor, w: Tensor, gen: torch.Generator | None) -> Tensor:
        """Per-row evidence lower bound (log-likelihood of the AE's reconstruction for an AE)."""
        net = self._require()
        xs, good = net["x_scale"], w > 0
        inp = x
        if self.denoise and self.weighted and net.training:
            eps = torch.randn(x.shape, generator=gen).to(x)
            inp = x + eps * torch.where(good, w, 1.0).rsqrt()
        u = torch.where(good, xs(inp), 0.0)
        cs = net["c_scale"](c) if self.cond_dim else c
        mu, logvar = self._encode_std(u, cs)
        if self.autoencoder:
            z, kl = mu, torch.zeros(len(x), device=x.device)
        else:
            eps = torch.randn(mu.shape, generator=gen).to(mu) if net.training else 0.0
            z = mu + torch.exp(0.5 * logvar) * eps
            kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
        x_hat = self._to_data(self._decode_std(z, cs))
        if self.weighted:
            wg = torch.where(good, w, 1.0)
            nll = 0.5 * (w * (x - x_hat) ** 2 - torch.where(good, torch.log(wg / (2 * math.pi)),
                                                            0.0))
        else:  # learned per-column σ, in data units
            log_s = net["stats"].log_sigma + torch.log(xs.std)
            nll = 0.5 * ((x - x_hat) / log_s.exp()) ** 2 + log_s + 0.5 * math.log(2 * math.pi)
            nll = torch.where(good, nll, 0.0)
        return -(nll.sum(-1) + self.beta * kl)

    # ---------------------------------------------------------------- public
    def fit(self, x: Any, cond: Any = None, weights: Any = None, checkpoint: Any = None) -> VAE:
        """Train on x (n, dim); ``weights`` (inverse variances, 0 = masked) fix the noise
        level of the reconstruction term, otherwise a per-column variance is learned."""
        self.weighted = weights is not None
        if self.denoise and not self.weighted:
            raise ValueError("`denoise=True` needs `weights` (inverse noise variances of x)")
        super().fit(x, cond, weights, checkpoint)
        return self

    @torch.no_grad()
    def _after_fit(self, x: Tensor, c: Tensor, w: Tensor) -> None:
        z = torch.cat([self._encode_std(torch.where(w[i:i + 4096] > 0,
                                                    self.net["x_scale"](x[i:i + 4096]), 0.0),
                                        self._cond_std(c[i:i + 4096]))[0]
                       for i in range(0, len(x), 4096)])
        cov = torch.cov(z.T).reshape(self.latent_dim, self.latent_dim)
        eye = torch.eye(self.latent_dim, device=z.device)
        self.net["stats"].latent_mean.copy_(z.mean(0))
        self.net["stats"].latent_chol.copy_(torch.linalg.cholesky(cov + 1e-6 * eye))

    def _cond_std(self, c: Tensor) -> Tensor:
        return self.net["c_scale"](c) if self.cond_dim else c

    def _prepare(self, x: Any, cond: Any, weights: Any) -> tuple[Tensor, Tensor, Tensor]:
        self._require()
        xt, ct, wt = self._check(x, cond, weights)
        return xt.to(self.device), ct.to(self.device), wt.to(self.device)

    @torch.no_grad()
    def encode(self, x: Any, cond: Any = None, weights: Any = None,
               return_logvar: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Latent means (n, latent_dim) of x; masked elements (weights 0) are ignored."""
        xt, ct, wt = self._prepare(x, cond, weights)
        net = self._require()
        mu, logvar = self._encode_std(torch.where(wt > 0, net["x_scale"](xt), 0.0),
                                      self._cond_std(ct))
        if return_logvar:
            return mu.cpu().numpy(), logvar.cpu().numpy()
        return mu.cpu().numpy()

    def encode_tensor(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Latent means of a torch batch (b, dim) (unconditional models; masked: True)."""
        u = self._require()["x_scale"](x)
        if mask is not None:
            u = torch.where(mask, 0.0, u)
        return self._encode_std(u, u.new_zeros(len(u), 0))[0]

    @torch.no_grad()
    def decode(self, z: Any, cond: Any = None) -> np.ndarray:
        """Data (n, dim) decoded from latents (n, latent_dim)."""
        zt = _tensor(z, "z").to(self.device)
        return self.generate(None if cond is None else _tensor(cond, "cond"), zt).cpu().numpy()

    @torch.no_grad()
    def reconstruct(self, x: Any, cond: Any = None, weights: Any = None) -> np.ndarray:
        """decode(encode(x)): the model's reconstruction of x."""
        return self.decode(self.encode(x, cond, weights), cond)

    @torch.no_grad()
    def elbo(self, x: Any, cond: Any = None, weights: Any = None) -> np.ndarray:
        """Evidence lower bound per row, a lower bound on log p(x) (a VAE's density, △)."""
        xt, ct, wt = self._prepare(x, cond, weights)
        if self.weighted and weights is None:
            raise ValueError("this VAE was trained with weights; pass the data's `weights`")
        return self._elbo(xt, ct, wt, None).cpu().numpy()

    def generate(self, cond: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """Decode latents ``z`` (b, latent_dim) at conditions ``cond`` (b, cond_dim), raw
        units in and out, differentiably; z=None: the latent prior's mode (zeros)."""
        z = self._latents(cond, z, self.latent_dim)
        return self._to_data(self._decode_std(z, self._cond(cond, len(z))))

    def _noise(self, b: int, gen: torch.Generator) -> Tensor:
        eps = torch.randn(b, self.latent_dim, generator=gen)
        if not self.autoencoder:
            return eps
        stats = self._require()["stats"]
        return stats.latent_mean.cpu() + eps @ stats.latent_chol.cpu().T
