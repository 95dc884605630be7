"""The interface every generative model shares: checked arrays in, scaling, sampling, safe files.

A model works on generic vectors x (n, dim), optionally conditioned on c (n, cond_dim)
(e.g. θ), with optional per-element inverse-variance weights (0 = masked). Data and
condition are standardised per column inside the network (saved with it), so
``generate(cond, z)`` maps raw conditions to raw data differentiably: the hook
emulators use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..flows import Standardize
from ..serialization import read_model, write_model
from ..training import History, TrainConfig, train

__all__ = ["GenerativeModel", "mlp"]


def mlp(sizes: Sequence[int], act: type[nn.Module] = nn.SiLU, wrap: Any = None) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``act`` between them (none after the last);
    ``wrap`` (e.g. spectral normalisation) is applied to every linear layer."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        lin = nn.Linear(a, b)
        layers.append(wrap(lin) if wrap is not None else lin)
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _tensor(a: Any, name: str) -> Tensor:
    t = a.detach().float().cpu() if isinstance(a, Tensor) else torch.as_tensor(
        np.asarray(a, dtype=np.float32))
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, dim); got {tuple(t.shape)}")
    return t


class GenerativeModel:
    """Shared machinery of `VAE`, `GAN`, `Diffusion` and `Density`.

    Subclasses implement ``_build`` (the networks, given ``self.dim``), ``_loss``
    (per-sample losses for :func:`specsbi.training.train`), ``_hparams`` and
    ``generate``; ``fit``, ``sample``, ``save`` and ``load`` come from here.

    Args:
        cond_dim: size of the condition vector (0: unconditional).
        train_config: settings of the shared training loop.
        device: "cpu" or "cuda"; seed: seeds initialisation, training and sampling;
        progress: show a progress bar.
    """

    def __init__(self, cond_dim: int = 0, train_config: TrainConfig | None = None,
                 device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
        if not (isinstance(cond_dim, int) and cond_dim >= 0):
            raise ValueError(f"`cond_dim` must be an integer >= 0; got {cond_dim!r}")
        if train_config is not None and not isinstance(train_config, TrainConfig):
            raise ValueError("`train_config` must be a specsbi.TrainConfig")
        self.cond_dim = cond_dim
        self.train_config = train_config or TrainConfig(patience=10)
        self.device, self.seed, self.progress = torch.device(device), seed, progress
        self.dim: int | None = None
        self.net: nn.ModuleDict | None = None
        self.history: History | None = None

    # ------------------------------------------------------------ subclass API
    def _hparams(self) -> dict[str, Any]:
        raise NotImplementedError

    def _build(self) -> nn.ModuleDict:
        raise NotImplementedError

    def _loss(self, net: nn.ModuleDict, batch: Sequence[Tensor], gen: torch.Generator
              ) -> Tensor:
        raise NotImplementedError

    def generate(self, cond: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """Condition batch (b, cond_dim) and/or latents → data batch (b, dim), differentiable."""
        raise NotImplementedError

    def _latents(self, cond: Tensor | None, z: Tensor | None, width: int) -> Tensor:
        """``z`` checked to be (b, width), or zeros (the latent prior's mode) for each
        condition row when ``z`` is None."""
        if z is None:
            if cond is None:
                raise ValueError("generate needs `cond` or `z`")
            z = torch.zeros(len(cond), width, device=self.device)
        if z.ndim != 2 or z.shape[1] != width:
            raise ValueError(f"`z` must have shape (b, {width}); got {tuple(z.shape)}")
        return z

    def _noise(self, b: int, gen: torch.Generator) -> Tensor:
        """Latent draws for ``sample``: (b, latent)."""
        raise NotImplementedError

    def _draw(self, cond: Tensor | None, z: Tensor, gen: torch.Generator) -> Tensor:
        """Data from latents for ``sample`` (a model with several samplers overrides it)."""
        return self.generate(cond, z)

    # ------------------------------------------------------------------ data
    def _check(self, x: Any, cond: Any = None, weights: Any = None
               ) -> tuple[Tensor, Tensor, Tensor]:
        """x (n, dim), cond (n, cond_dim) or an empty (n, 0), weights (n, dim) (ones if None)."""
        xt = _tensor(x, "x")
        n = len(xt)
        if self.dim is not None and xt.shape[1] != self.dim:
            raise ValueError(f"`x` must have {self.dim} columns (as in training); got "
                             f"{xt.shape[1]}")
        if self.cond_dim:
            if cond is None:
                raise ValueError(f"this model is conditional (cond_dim={self.cond_dim}); "
                                 "pass `cond` of shape (n, cond_dim)")
            ct = _tensor(cond, "cond")
            if ct.shape != (n, self.cond_dim):
                raise ValueError(f"`cond` must have shape ({n}, {self.cond_dim}); got "
                                 f"{tuple(ct.shape)}")
        else:
            if cond is not None:
                raise ValueError("this model is unconditional (cond_dim=0); build it with "
                                 "cond_dim=... to pass `cond`")
            ct = xt.new_zeros(n, 0)
        if weights is None:
            wt = torch.ones_like(xt)
        else:
            wt = _tensor(weights, "weights")
            if wt.shape != xt.shape:
                raise ValueError(f"`weights` must have the shape of x {tuple(xt.shape)}; got "
                                 f"{tuple(wt.shape)}")
            if not (torch.isfinite(wt).all() and (wt >= 0).all()):
                raise ValueError("`weights` must be finite and >= 0 (0 masks an element)")
        masked = wt == 0
        if not torch.isfinite(xt[~masked]).all() or not torch.isfinite(ct).all():
            raise ValueError("`x` and `cond` must be finite where not masked (weights > 0)")
        xt = torch.where(masked, 0.0, xt)
        return xt, ct, wt

    def _standardise_from(self, x: Tensor, w: Tensor, c: Tensor) -> None:
        """Per-column mean and std of the unmasked data and of the condition."""
        net = self._require()
        m = (w > 0).float()
        count = m.sum(0).clamp(min=1)
        mean = (x * m).sum(0) / count
        std = (((x - mean) ** 2 * m).sum(0) / count).sqrt()
        net["x_scale"].mean.copy_(mean)
        net["x_scale"].std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
        if self.cond_dim:
            cs = c.std(0)
            net["c_scale"].mean.copy_(c.mean(0))
            net["c_scale"].std.copy_(torch.where(cs > 1e-12, cs, torch.ones_like(cs)))

    def _scalers(self) -> dict[str, nn.Module]:
        return {"x_scale": Standardize(torch.zeros(self.dim), torch.ones(self.dim)),
                "c_scale": Standardize(torch.zeros(self.cond_dim), torch.ones(self.cond_dim))}

    def _to_data(self, u: Tensor) -> Tensor:
        s = self._require()["x_scale"]
        return s.mean + s.std * u

    def _cond(self, cond: Tensor | None, b: int | None = None) -> Tensor:
        """Standardised condition (b, cond_dim), or an empty (b, 0) for unconditional models."""
        net = self._require()
        if not self.cond_dim:
            if cond is not None:
                raise ValueError("this model is unconditional; `cond` must be None")
            return torch.zeros(b or 0, 0, device=self.device)
        if cond is None:
            raise ValueError(f"this model needs `cond` of shape (b, {self.cond_dim})")
        cond = torch.as_tensor(cond, dtype=torch.float32, device=self.device)
        if cond.ndim != 2 or cond.shape[1] != self.cond_dim:
            raise ValueError(f"`cond` must have shape (b, {self.cond_dim}); got "
                             f"{tuple(cond.shape)}")
        return net["c_scale"](cond)

    def _require(self) -> nn.ModuleDict:
        if self.net is None:
            raise RuntimeError(f"this {type(self).__name__} is not trained; call fit or load")
        return self.net

    # ------------------------------------------------------------- training
    def fit(self, x: Any, cond: Any = None, weights: Any = None,
            checkpoint: str | os.PathLike | None = None) -> GenerativeModel:
        """Train on data x (n, dim), numpy or torch, with the shared training loop.

        Args:
            x: training vectors (e.g. normalised spectra or their PCA coefficients).
            cond: conditions (n, cond_dim), e.g. θ, for a conditional model.
            weights: per-element inverse variances (n, dim), 0 where masked.
            checkpoint: file to resume an interrupted fit from.
        """
        xt, ct, wt = self._check(x, cond, weights)
        if len(xt) < 10:
            raise ValueError(f"need at least 10 training vectors; got {len(xt)}")
        self.dim = xt.shape[1]
        torch.manual_seed(self.seed)
        self.net = self._build().to(self.device)
        self._standardise_from(xt, wt, ct)
        data = [t.to(self.device) for t in (xt, ct, wt)]
        self.history = train(self.net, self._loss, data, self.train_config, seed=self.seed,
                             progress=self.progress, checkpoint=checkpoint)
        self._after_fit(*data)
        return self

    def _after_fit(self, x: Tensor, c: Tensor, w: Tensor) -> None:
        """Anything computed from the trained model and its data (e.g. latent statistics)."""

    # ------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int | None = None, cond: Any = None, seed: int | None = None,
               batch: int = 4096, **options: Any) -> np.ndarray:
        """Draw new data: ``n`` vectors (n, dim), or one per condition row (b, dim).

        Args:
            n: number of draws (unconditional models; for conditional ones, None or b).
            cond: (b, cond_dim) conditions; repeat a row for several draws at one θ.
            seed: seed of the draws (default: the model's seed).
        """
        self._require()
        if self.cond_dim:
            c = _tensor(cond, "cond") if cond is not None else None
            if c is None or (n is not None and n != len(c)):
                raise ValueError(f"a conditional model draws one vector per `cond` row: pass "
                                 f"cond of shape (b, {self.cond_dim}) (and n=None or b)")
            n = len(c)
        else:
            if cond is not None:
                raise ValueError("this model is unconditional; pass n, not cond")
            if not (isinstance(n, int) and n >= 1):
                raise ValueError(f"`n` must be a positive integer; got {n!r}")
            c = None
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        out = []
        for i in range(0, n, batch):
            b = min(batch, n - i)
            z = self._noise(b, gen).to(self.device)
            ci = None if c is None else c[i : i + b].to(self.device)
            out.append(self._draw(ci, z, gen, **options).cpu())
        return torch.cat(out).numpy()

    # ------------------------------------------------------------ save/load
    def card(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "hparams": self._hparams(), "dim": self.dim,
                "cond_dim": self.cond_dim, "seed": self.seed,
                "validation": None if self.history is None else self.history.summary()}

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save as a model folder: weights (safetensors) + JSON card; ``ss.load`` reads it."""
        return write_model(path, self.card(), self._require().state_dict(), overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> GenerativeModel:
        card, state = read_model(path)
        if card.get("class") != cls.__name__:
            raise ValueError(f"{path} holds a {card.get('class')!r}, not a {cls.__name__}")
        return cls.from_card(card, state, device)

    @classmethod
    def from_card(cls, card: dict[str, Any], state: dict[str, Tensor],
                  device: str = "cpu") -> GenerativeModel:
        model = cls(**card["hparams"], cond_dim=card["cond_dim"], device=device,
                    seed=card.get("seed", 0), progress=False)
        model.dim = card["dim"]
        net = model._build()
        net.load_state_dict(state)
        model.net = net.to(model.device).eval()
        return model
