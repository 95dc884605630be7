"""`Density`: a normalizing flow over compressed spectra: exact log-density, samples, outlier score.

The flow is specsbi's own (`specsbi.flows`: nflows autoregressive transforms with
built-in standardisation). Unconditional q(x) by default; with ``cond_dim`` it is
the conditional flow q(x | c) of the flows issue. A flow's latent has the data's
dimension, so on spectra it works on compressed vectors (PCA coefficients or VAE
latents); ``log_prob`` per spectrum is an out-of-distribution score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from nflows.flows import Flow
from torch import Tensor, nn

from ..flows import FLOW_KINDS, ConditionalFlow, TemperedNormal, _transform
from ..training import TrainConfig
from .base import GenerativeModel

__all__ = ["Density"]


class Density(GenerativeModel):
    """An autoregressive flow q(x) (or q(x | c)) over vectors x (n, dim).

    Args:
        flow: "nsf" (neural spline) or "maf".
        hidden, transforms, bins: flow size.
        cond_dim, train_config, device, seed, progress: see `GenerativeModel`.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(500, 2)).astype("float32")
        >>> q = Density(hidden=16, transforms=2, progress=False,
        ...             train_config=TrainConfig(max_epochs=3)).fit(x)
        >>> q.log_prob(x[:3]).shape, q.sample(4).shape
        ((3,), (4, 2))
    """

    def __init__(self, flow: str = "nsf", hidden: int = 64, transforms: int = 5, bins: int = 8,
                 cond_dim: int = 0, train_config: TrainConfig | None = None,
                 device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
        super().__init__(cond_dim, train_config, device, seed, progress)
        if flow not in FLOW_KINDS:
            raise ValueError(f"`flow` must be one of {FLOW_KINDS}; got {flow!r}")
        for key, value in (("hidden", hidden), ("transforms", transforms), ("bins", bins)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"`{key}` must be a positive integer; got {value!r}")
        self.flow_kind, self.hidden, self.transforms, self.bins = flow, hidden, transforms, bins

    def _hparams(self) -> dict[str, Any]:
        return {"flow": self.flow_kind, "hidden": self.hidden, "transforms": self.transforms,
                "bins": self.bins}

    def _build(self) -> nn.ModuleDict:
        if self.cond_dim:
            flow: nn.Module = ConditionalFlow(self.dim, self.cond_dim, self.flow_kind,
                                              self.hidden, self.transforms, self.bins)
        else:
            transform = _transform(self.flow_kind, self.dim, self.hidden, self.transforms, None,
                                   self.bins, 4.0, torch.zeros(self.dim), torch.ones(self.dim),
                                   [self.dim])
            flow = Flow(transform, TemperedNormal([self.dim]))
        return nn.ModuleDict({"flow": flow, **self._scalers()})

    def _standardise_from(self, x: Tensor, w: Tensor, c: Tensor) -> None:
        super()._standardise_from(x, w, c)  # the flow standardises its own input, too
        net = self._require()
        s = net["x_scale"]
        flow = net["flow"].flow if self.cond_dim else net["flow"]
        affine = flow._transform._transforms[0]
        affine._shift.copy_(-s.mean / s.std)
        affine._scale.copy_(1 / s.std)
        if self.cond_dim:
            embed = flow._embedding_net[0]
            embed.mean.copy_(net["c_scale"].mean)
            embed.std.copy_(net["c_scale"].std)

    def _log_prob(self, x: Tensor, c: Tensor) -> Tensor:
        flow = self._require()["flow"]
        return flow.log_prob(x, c) if self.cond_dim else flow.log_prob(x)

    def _loss(self, net: nn.ModuleDict, batch: Sequence[Tensor], gen: torch.Generator
              ) -> Tensor:
        x, c, w = batch
        return -self._log_prob(x, c)

    def fit(self, x: Any, cond: Any = None, weights: Any = None, checkpoint: Any = None
            ) -> Density:
        """Maximum likelihood on x (n, dim); a density has no use for masks, so
        ``weights`` must be None (mask before compressing)."""
        if weights is not None:
            raise ValueError("Density takes no `weights`: compress masked spectra first "
                             "(PCA or VAE latents), then fit the flow on the summaries")
        super().fit(x, cond, None, checkpoint)
        return self

    @torch.no_grad()
    def log_prob(self, x: Any, cond: Any = None) -> np.ndarray:
        """log q(x) (or log q(x | c)) per row, (n,): low values flag outliers."""
        self._require()
        xt, ct, _ = self._check(x, cond)
        out = [self._log_prob(xt[i : i + 8192].to(self.device), ct[i : i + 8192].to(self.device))
               for i in range(0, len(xt), 8192)]
        return torch.cat(out).cpu().numpy()

    def _base(self) -> tuple[Any, Tensor]:
        net = self._require()
        flow = net["flow"].flow if self.cond_dim else net["flow"]
        return flow, flow._distribution.temperature

    def generate(self, cond: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """Invert the flow: base draws ``z`` (b, dim) (standard normal) at conditions
        ``cond`` → data (b, dim), differentiable; z=None: zeros (the base's mode)."""
        z = self._latents(cond, z, self.dim)
        flow, temp = self._base()
        context = None
        if self.cond_dim:
            if cond is None:
                raise ValueError(f"this flow is conditional: pass `cond` (b, {self.cond_dim})")
            context = flow._embedding_net(torch.as_tensor(cond, dtype=torch.float32,
                                                          device=self.device))
        return flow._transform.inverse(z * temp, context=context)[0]

    @torch.no_grad()
    def encode(self, x: Any, cond: Any = None) -> np.ndarray:
        """The flow's base-space image of x (n, dim): its exact, invertible latent."""
        self._require()
        xt, ct, _ = self._check(x, cond)
        flow, temp = self._base()
        context = flow._embedding_net(ct.to(self.device)) if self.cond_dim else None
        return (flow._transform(xt.to(self.device), context=context)[0] / temp).cpu().numpy()

    def _noise(self, b: int, gen: torch.Generator) -> Tensor:
        return torch.randn(b, self.dim, generator=gen)
