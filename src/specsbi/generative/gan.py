"""`GAN`: a generative adversarial network over vectors, unconditional or conditional on θ.

Generator G(z, c) and discriminator D(x, c) are MLPs trained in turn with the
non-saturating loss (the lecture's L = log D(x) + log(1 − D(G(z)))). Two
optimisers do not fit the shared training loop, so this module has its own short
one, with the shared `TrainConfig`, validation split and seed handling; it records
both losses and D's mean output on real and generated data every epoch
(`GANHistory`), the curves that show instability. Stability options: spectral
normalisation of D's layers, or a gradient penalty on D (R1: ‖∇ₓ D(x)‖² on real data).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..training import History, TrainConfig, split
from .base import GenerativeModel, _tensor, mlp

__all__ = ["GAN", "GANHistory", "STABILITY"]

STABILITY = ("none", "spectral_norm", "gradient_penalty")


@dataclass
class GANHistory(History):
    """`History` plus the adversarial curves, one value per epoch.

    ``train_loss``/``val_loss`` hold the discriminator loss on training and
    validation data; ``generator_loss`` the generator's; ``d_real`` and ``d_fake``
    D's mean probability that real and generated data are real (0.5 and 0.5 at
    the ideal equilibrium).
    """

    generator_loss: list[float] = field(default_factory=list)
    d_real: list[float] = field(default_factory=list)
    d_fake: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.generator_loss:
            out.update(final_generator_loss=self.generator_loss[-1],
                       final_d_real=self.d_real[-1], final_d_fake=self.d_fake[-1])
        return out


class GAN(GenerativeModel):
    """A GAN over vectors x (n, dim), optionally conditional on c (n, cond_dim).

    Args:
        latent_dim: size of the generator's input noise.
        hidden: generator hidden widths (the discriminator mirrors them).
        stability: "spectral_norm" (default), "gradient_penalty" or "none".
        penalty: weight of the R1 gradient penalty.
        d_steps: discriminator updates per generator update.
        cond_dim, train_config (batch size, lr, ``max_epochs`` = the epochs run; no early
            stopping: a GAN's losses do not measure quality), device, seed, progress.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(400, 3)).astype("float32")
        >>> gan = GAN(latent_dim=2, hidden=(16,), progress=False,
        ...           train_config=TrainConfig(max_epochs=2)).fit(x)
        >>> gan.sample(5).shape, len(gan.history.generator_loss)
        ((5, 3), 2)
    """

    def __init__(self, latent_dim: int = 32, hidden: Sequence[int] = (256, 512),
                 stability: str = "spectral_norm", penalty: float = 1.0, d_steps: int = 1,
                 cond_dim: int = 0, train_config: TrainConfig | None = None,
                 device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
        super().__init__(cond_dim, train_config or TrainConfig(lr=2e-4, max_epochs=50),
                         device, seed, progress)
        if not (isinstance(latent_dim, int) and latent_dim >= 1):
            raise ValueError(f"`latent_dim` must be a positive integer; got {latent_dim!r}")
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ValueError(f"`hidden` must be positive layer widths; got {hidden!r}")
        if stability not in STABILITY:
            raise ValueError(f"`stability` must be one of {STABILITY}; got {stability!r}")
        if not (penalty >= 0 and math.isfinite(penalty)):
            raise ValueError(f"`penalty` must be finite and >= 0; got {penalty!r}")
        if not (isinstance(d_steps, int) and d_steps >= 1):
            raise ValueError(f"`d_steps` must be a positive integer; got {d_steps!r}")
        self.latent_dim, self.hidden, self.stability = latent_dim, hidden, stability
        self.penalty, self.d_steps = float(penalty), d_steps

    def _hparams(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "hidden": list(self.hidden),
                "stability": self.stability, "penalty": self.penalty, "d_steps": self.d_steps}

    def _build(self) -> nn.ModuleDict:
        h, c = list(self.hidden), self.cond_dim
        wrap = nn.utils.parametrizations.spectral_norm if self.stability == "spectral_norm" \
            else None
        return nn.ModuleDict({
            "generator": mlp([self.latent_dim + c, *h, self.dim], act=_LeakyReLU),
            "discriminator": mlp([self.dim + c, *reversed(h), 1], act=_LeakyReLU, wrap=wrap),
            **self._scalers(),
        })

    def _logit(self, u: Tensor, c: Tensor) -> Tensor:
        return self._require()["discriminator"](torch.cat([u, c], -1))[:, 0]

    def _fake(self, z: Tensor, c: Tensor) -> Tensor:
        return self._require()["generator"](torch.cat([z, c], -1))

    def _d_loss(self, u: Tensor, c: Tensor, m: Tensor, gen: torch.Generator
                ) -> tuple[Tensor, Tensor, Tensor]:
        z = torch.randn(len(u), self.latent_dim, generator=gen).to(u)
        fake = (self._fake(z, c) * m).detach()
        if self.stability == "gradient_penalty":
            u = u.detach().requires_grad_(True)
        real_logit, fake_logit = self._logit(u, c), self._logit(fake, c)
        loss = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        if self.stability == "gradient_penalty" and torch.is_grad_enabled():
            grad = torch.autograd.grad(real_logit.sum(), u, create_graph=True)[0]
            loss = loss + 0.5 * self.penalty * grad.pow(2).sum(-1).mean()
        return loss, torch.sigmoid(real_logit).mean(), torch.sigmoid(fake_logit).mean()

    def fit(self, x: Any, cond: Any = None, weights: Any = None, checkpoint: Any = None) -> GAN:
        """Train G and D in turn for ``train_config.max_epochs`` epochs.

        ``weights`` only mark masked elements (0): the discriminator sees real and
        generated rows with the same elements set to the column mean, so gaps (e.g. rest
        pixels a spectrum does not reach) are neither learned nor penalised; a GAN has
        no per-element likelihood to weight. ``checkpoint`` is not supported.
        """
        if checkpoint is not None:
            raise ValueError("GAN.fit does not resume from checkpoints")
        from tqdm.auto import tqdm

        xt, ct, wt = self._check(x, cond, weights)
        if len(xt) < 10:
            raise ValueError(f"need at least 10 training vectors; got {len(xt)}")
        self.dim = xt.shape[1]
        torch.manual_seed(self.seed)
        self.net = net = self._build().to(self.device)
        self._standardise_from(xt, wt, ct)
        m = (wt > 0).float().to(self.device)
        u = torch.where(wt > 0, net["x_scale"](xt), 0.0).to(self.device)
        c = (net["c_scale"](ct) if self.cond_dim else ct).to(self.device)
        cfg = self.train_config
        gen = torch.Generator().manual_seed(self.seed)
        val_idx, train_idx = split(len(u), cfg, gen)
        betas = (0.5, 0.999)
        opt_g = torch.optim.Adam(net["generator"].parameters(), lr=cfg.lr, betas=betas)
        opt_d = torch.optim.Adam(net["discriminator"].parameters(), lr=cfg.lr, betas=betas)
        hist, t0 = GANHistory(), time.perf_counter()
        bar = tqdm(range(cfg.max_epochs), disable=not self.progress, desc="GAN", unit="epoch")
        for epoch in bar:
            net.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            sums = np.zeros(4)
            for step, i in enumerate(range(0, len(order), cfg.batch_size)):
                idx = order[i : i + cfg.batch_size].to(self.device)
                ub, cb, mb = u[idx], c[idx], m[idx]
                d_loss, p_real, p_fake = self._d_loss(ub, cb, mb, gen)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                nn.utils.clip_grad_norm_(net["discriminator"].parameters(), cfg.clip_norm)
                opt_d.step()
                g_loss = torch.tensor(0.0)
                if step % self.d_steps == 0:
                    z = torch.randn(len(idx), self.latent_dim, generator=gen).to(ub)
                    logit = self._logit(self._fake(z, cb) * mb, cb)
                    g_loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    nn.utils.clip_grad_norm_(net["generator"].parameters(), cfg.clip_norm)
                    opt_g.step()
                sums += [len(idx) * float(v.detach()) for v in (d_loss, g_loss, p_real, p_fake)]
            sums /= len(order)
            net.eval()
            vgen = torch.Generator().manual_seed(self.seed + 1)
            with torch.no_grad():
                vi = val_idx.to(self.device)
                val = float(self._d_loss(u[vi], c[vi], m[vi], vgen)[0])
            hist.train_loss.append(float(sums[0]))
            hist.generator_loss.append(float(sums[1] * self.d_steps))
            hist.d_real.append(float(sums[2]))
            hist.d_fake.append(float(sums[3]))
            hist.val_loss.append(val)
            hist.best_epoch, hist.best_val_loss = epoch, val  # the last epoch is kept
            bar.set_postfix(d=f"{sums[0]:.3f}", g=f"{hist.generator_loss[-1]:.3f}")
        hist.seconds = time.perf_counter() - t0
        self.history = hist
        net.eval()
        return self

    def generate(self, cond: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """Generator output (b, dim) in data units for noise ``z`` (b, latent_dim) at
        conditions ``cond`` (b, cond_dim); differentiable; z=None: zeros."""
        z = self._latents(cond, z, self.latent_dim)
        return self._to_data(self._fake(z, self._cond(cond, len(z))))

    def _noise(self, b: int, gen: torch.Generator) -> Tensor:
        return torch.randn(b, self.latent_dim, generator=gen)

    def invert(self, x: Any, cond: Any = None, weights: Any = None, steps: int = 300,
               lr: float = 0.05, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Project data onto the generator's range: z minimising ½ Σ w (x − G(z))² + ½ ‖z‖²
        (Adam from a random start; a GAN has no encoder).

        Returns:
            ``(z, G(z))``: (n, latent_dim) and the reconstructions (n, dim).
        """
        self._require()
        xt, ct, wt = (t.to(self.device) for t in self._check(x, cond, weights))
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        z = torch.randn(len(xt), self.latent_dim, generator=gen).to(self.device)
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        c = _tensor(cond, "cond").to(self.device) if cond is not None else None
        for _ in range(steps):
            fit = 0.5 * (wt * (xt - self.generate(c, z)) ** 2).sum(-1) + 0.5 * z.pow(2).sum(-1)
            opt.zero_grad(set_to_none=True)
            fit.sum().backward()
            opt.step()
        with torch.no_grad():
            return z.detach().cpu().numpy(), self.generate(c, z).cpu().numpy()


class _LeakyReLU(nn.LeakyReLU):
    def __init__(self) -> None:
        super().__init__(0.2)
