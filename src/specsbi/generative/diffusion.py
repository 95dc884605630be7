"""`Diffusion`: a denoising diffusion model (DDPM) over vectors, conditional on θ.

Training: x₀ is standardised, noised to x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε at a random
step t of a cosine schedule, and an MLP predicts v = √ᾱ_t ε − √(1 − ᾱ_t) x₀ from
(x_t, t, c) (v-prediction, Salimans & Ho 2022: no division by √ᾱ_t, so few-step
sampling stays stable); the loss is the mean squared error over unmasked elements
(the shared training loop). Sampling:
the full ancestral DDPM sampler (``steps`` network calls), or the deterministic
DDIM sampler on a sub-sequence of a few steps (Song et al. 2020), which is also
the differentiable map ``generate(cond, z)`` from initial noise to data, and whose
reverse (``encode``) maps data to that noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..training import TrainConfig
from .base import GenerativeModel, mlp

__all__ = ["Diffusion"]


class _Denoiser(nn.Module):
    """v̂(x_t, t, c): an MLP on [x_t, sinusoidal embedding of t, c]."""

    def __init__(self, dim: int, cond_dim: int, hidden: Sequence[int], time_dim: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.net = mlp([dim + time_dim + cond_dim, *hidden, dim])

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        half = self.time_dim // 2
        freq = torch.exp(-math.log(1000.0) * torch.arange(half, device=x.device) / half)
        arg = t[:, None].float() * freq[None]
        emb = torch.cat([arg.sin(), arg.cos()], -1)
        return self.net(torch.cat([x, emb, c], -1))


class Diffusion(GenerativeModel):
    """DDPM over vectors x (n, dim), optionally conditional on c (n, cond_dim).

    Args:
        steps: diffusion steps T of the full sampler.
        hidden: widths of the denoiser's hidden layers.
        time_dim: size of the time embedding.
        ddim_steps: default steps of the fast DDIM sampler.
        cond_dim, train_config, device, seed, progress: see `GenerativeModel`.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(400, 3)).astype("float32")
        >>> dm = Diffusion(steps=50, hidden=(32, 32), progress=False,
        ...                train_config=TrainConfig(max_epochs=2)).fit(x)
        >>> dm.sample(4).shape, dm.sample(4, method="ddpm").shape
        ((4, 3), (4, 3))
    """

    def __init__(self, steps: int = 200, hidden: Sequence[int] = (256, 256, 256),
                 time_dim: int = 32, ddim_steps: int = 20, cond_dim: int = 0,
                 train_config: TrainConfig | None = None, device: str = "cpu", seed: int = 0,
                 progress: bool = True) -> None:
        super().__init__(cond_dim, train_config, device, seed, progress)
        if not (isinstance(steps, int) and steps >= 2):
            raise ValueError(f"`steps` must be an integer >= 2; got {steps!r}")
        if not (isinstance(ddim_steps, int) and 1 <= ddim_steps <= steps):
            raise ValueError(f"`ddim_steps` must be an integer in [1, steps={steps}]; got "
                             f"{ddim_steps!r}")
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ValueError(f"`hidden` must be positive layer widths; got {hidden!r}")
        if not (isinstance(time_dim, int) and time_dim >= 2 and time_dim % 2 == 0):
            raise ValueError(f"`time_dim` must be an even integer >= 2; got {time_dim!r}")
        self.steps, self.hidden, self.time_dim, self.ddim_steps = steps, hidden, time_dim, \
            ddim_steps
        s = 0.008  # cosine schedule (Nichol & Dhariwal 2021), ᾱ clipped away from 0
        t = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        abar = (f / f[0]).clamp(min=1e-5)
        beta = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        self.alpha_bar = torch.cumprod(1 - beta, 0).float()  # ᾱ_t, t = 1..T at index t−1

    def _hparams(self) -> dict[str, Any]:
        return {"steps": self.steps, "hidden": list(self.hidden), "time_dim": self.time_dim,
                "ddim_steps": self.ddim_steps}

    def _build(self) -> nn.ModuleDict:
        return nn.ModuleDict({
            "denoiser": _Denoiser(self.dim, self.cond_dim, self.hidden, self.time_dim),
            **self._scalers()})

    def _loss(self, net: nn.ModuleDict, batch: Sequence[Tensor], gen: torch.Generator
              ) -> Tensor:
        x, c, w = batch
        good = (w > 0).float()
        u = net["x_scale"](x) * good
        cs = net["c_scale"](c) if self.cond_dim else c
        t = torch.randint(self.steps, (len(x),), generator=gen).to(x.device)
        eps = torch.randn(u.shape, generator=gen).to(u)
        ab = self.alpha_bar.to(u)[t][:, None]
        xt = ab.sqrt() * u + (1 - ab).sqrt() * eps
        v = ab.sqrt() * eps - (1 - ab).sqrt() * u
        err = (net["denoiser"](xt, t, cs) - v) ** 2
        return (err * good).sum(-1) / good.sum(-1).clamp(min=1)

    # -------------------------------------------------------------- sampling
    def _schedule(self, steps: int) -> list[int]:
        if not (isinstance(steps, int) and 1 <= steps <= self.steps):
            raise ValueError(f"`steps` must be an integer in [1, {self.steps}]; got {steps!r}")
        # plain Python (not np.linspace), so torch.compile can trace the sampler
        if steps == 1:
            return [0]
        step = (self.steps - 1) / (steps - 1)
        return sorted({round(i * step) for i in range(steps - 1)} | {self.steps - 1})

    def _ddim(self, z: Tensor, cs: Tensor, steps: int, reverse: bool = False) -> Tensor:
        """Deterministic DDIM (η = 0) from noise to data, or data to noise (``reverse``)."""
        den = self._require()["denoiser"]
        ts = self._schedule(steps)
        ab = self.alpha_bar.to(z)
        alphas, one = [ab[t] for t in ts], ab.new_tensor(1.0)

        def step(x: Tensor, t: int, a_from: Tensor, a_to: Tensor) -> Tensor:
            v = den(x, torch.full((len(x),), t, device=x.device, dtype=torch.long), cs)
            x0 = a_from.sqrt() * x - (1 - a_from).sqrt() * v
            eps = (1 - a_from).sqrt() * x + a_from.sqrt() * v
            return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps

        x = z
        if reverse:  # data → noise, ε evaluated at the step being left
            for i in range(len(ts)):
                x = step(x, ts[max(i - 1, 0)], alphas[i - 1] if i else one, alphas[i])
        else:
            for i in range(len(ts) - 1, -1, -1):
                x = step(x, ts[i], alphas[i], alphas[i - 1] if i else one)
        return x

    @torch.no_grad()
    def _ddpm(self, z: Tensor, cs: Tensor, gen: torch.Generator) -> Tensor:
        """The full ancestral sampler: T network calls."""
        den, ab = self._require()["denoiser"], self.alpha_bar.to(z)
        x = z
        for t in range(self.steps - 1, -1, -1):
            a_t = ab[t]
            a_prev = ab[t - 1] if t > 0 else ab.new_tensor(1.0)
            beta = 1 - a_t / a_prev
            v = den(x, torch.full((len(x),), t, device=x.device, dtype=torch.long), cs)
            eps = (1 - a_t).sqrt() * x + a_t.sqrt() * v
            mean = (x - beta / (1 - a_t).sqrt() * eps) / (1 - beta).sqrt()
            if t > 0:
                var = beta * (1 - a_prev) / (1 - a_t)
                x = mean + var.sqrt() * torch.randn(x.shape, generator=gen).to(x)
            else:
                x = mean
        return x

    def generate(self, cond: Tensor | None = None, z: Tensor | None = None,
                 steps: int | None = None) -> Tensor:
        """DDIM from initial noise ``z`` (b, dim) at conditions ``cond`` (b, cond_dim) to
        data (b, dim), differentiable; z=None: zeros; ``steps`` default ``ddim_steps``."""
        z = self._latents(cond, z, self.dim)
        cs = self._cond(cond, len(z))
        return self._to_data(self._ddim(z, cs, steps or self.ddim_steps))

    @torch.no_grad()
    def sample(self, n: int | None = None, cond: Any = None, seed: int | None = None,
               batch: int = 4096, method: str = "ddim", steps: int | None = None
               ) -> np.ndarray:
        """Draw data like `GenerativeModel.sample`; ``method`` "ddim" (fast, ``steps``
        calls, default ``ddim_steps``) or "ddpm" (the full T-step ancestral sampler)."""
        if method not in ("ddim", "ddpm"):
            raise ValueError(f"`method` must be 'ddim' or 'ddpm'; got {method!r}")
        return super().sample(n, cond, seed, batch, method=method, steps=steps)

    def _noise(self, b: int, gen: torch.Generator) -> Tensor:
        return torch.randn(b, self.dim, generator=gen)

    def _draw(self, cond: Tensor | None, z: Tensor, gen: torch.Generator,
              method: str = "ddim", steps: int | None = None) -> Tensor:
        if method == "ddpm":
            return self._to_data(self._ddpm(z, self._cond(cond, len(z)), gen))
        return self.generate(cond, z, steps)

    @torch.no_grad()
    def encode(self, x: Any, cond: Any = None, steps: int | None = None) -> np.ndarray:
        """The DDIM latent (initial noise) of data x: ``generate(cond, encode(x))`` ≈ x."""
        self._require()
        xt, ct, _ = self._check(x, cond)
        u = self._require()["x_scale"](xt.to(self.device))
        cs = self._cond(ct.to(self.device) if self.cond_dim else None, len(u))
        return self._ddim(u, cs, steps or self.ddim_steps, reverse=True).cpu().numpy()
