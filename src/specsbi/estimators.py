"""Neural posterior and likelihood estimators on arrays: both flow variants, one interface.

``variant="dependent"``: a conditional flow whose transforms are networks of the
conditioning variable, q(θ | x) (posterior) or q(x | θ) (likelihood).
``variant="augmented"``: one autoregressive flow over [x, θ]; its posterior is
sampled exactly (θ after x) and its likelihood is log q(x, θ) − log p(θ).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .flows import FLOW_KINDS, ConditionalFlow, JointFlow, calibrate
from .mcmc import run_emcee, torch_log_prob
from .posterior import Posterior
from .priors import Prior
from .serialization import read_model, write_model
from .training import History, TrainConfig, split, train

__all__ = ["LikelihoodEstimator", "PosteriorEstimator", "load_estimator"]

log = logging.getLogger(__name__)
VARIANTS = ("dependent", "augmented")


def _tensor(a: Any, name: str, width: int | None = None) -> Tensor:
    t = a.detach().float().cpu() if isinstance(a, Tensor) else torch.as_tensor(
        np.asarray(a, dtype=np.float32))
    if t.ndim == 1 and width is not None:
        t = t[None] if t.numel() == width else t[:, None]
    if t.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, {width or 'dim'}); got {tuple(t.shape)}")
    if width is not None and t.shape[1] != width:
        raise ValueError(
            f"`{name}` must have {width} columns (as in training); got {t.shape[1]}"
        )
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).any(1).sum())
        raise ValueError(f"`{name}` holds NaN or inf in {bad} row(s); remove or fix them")
    return t


class _FlowEstimator:
    """Shared machinery: hyper-parameters, fit, save/load, device and seed.

    ``regression=True`` (the default) starts the flow at the least-squares
    linear-Gaussian model of the target given the condition (a
    :class:`~specsbi.flows.LinearShift` after the standardisation); models saved
    without it load as they were trained.
    """

    role = ""

    def __init__(self, variant: str = "dependent", flow: str = "nsf", hidden: int = 64,
                 transforms: int = 5, bins: int = 8, train_config: TrainConfig | None = None,
                 device: str = "cpu", seed: int = 0, progress: bool = True,
                 regression: bool = True) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}; got {variant!r}")
        if flow not in FLOW_KINDS:
            raise ValueError(f"`flow` must be one of {FLOW_KINDS}; got {flow!r}")
        for key, value in (("hidden", hidden), ("transforms", transforms), ("bins", bins)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{key}` must be a positive integer; got {value!r}")
        if not isinstance(regression, bool):
            raise ValueError(f"`regression` must be True or False; got {regression!r}")
        self.variant, self.flow_kind, self.regression = variant, flow, regression
        self.hidden, self.transforms, self.bins = hidden, transforms, bins
        self.train_config = train_config or TrainConfig()
        self.device, self.seed, self.progress = torch.device(device), seed, progress
        self.net: nn.Module | None = None
        self.prior: Prior | None = None
        self.names: list[str] = []
        self.theta_dim = self.x_dim = 0
        self.history: History | None = None
        self.data_info: dict[str, Any] = {}

    # -------------------------------------------------------------- building
    def _build(self, theta: Tensor | None = None, x: Tensor | None = None) -> nn.Module:
        common = dict(kind=self.flow_kind, hidden=self.hidden, transforms=self.transforms,
                      bins=self.bins, regression=self.regression)
        if self.variant == "augmented":
            return JointFlow(self.x_dim, self.theta_dim, x=x, theta=theta, **common)
        if self.role == "posterior":
            return ConditionalFlow(self.theta_dim, self.x_dim, y=theta, c=x, **common)
        return ConditionalFlow(self.x_dim, self.theta_dim, y=x, c=theta, **common)

    def _loss(self, net: nn.Module, batch: Sequence[Tensor], gen: torch.Generator) -> Tensor:
        theta, x = batch
        if self.variant == "augmented":
            return -net.log_prob(x, theta)
        if self.role == "posterior":
            return -net.log_prob(theta, x)
        return -net.log_prob(x, theta)

    def fit(self, theta: Any, x: Any, prior: Prior | None = None,
            names: Sequence[str] | None = None,
            checkpoint: str | os.PathLike | None = None) -> _FlowEstimator:
        """Train on simulated pairs θ (n, d) and x (n, m); numpy or torch.

        Args:
            theta: parameters drawn from ``prior``.
            x: simulated data (or summaries) of each θ.
            prior: the prior θ was drawn from: it bounds the posterior and
                gives log p(θ) to the augmented likelihood. Default: a box
                around the training θ (with a warning for the augmented likelihood).
            names: parameter names (default ``prior.names`` or theta_0, ...).
            checkpoint: file to resume an interrupted fit from.

        Raises:
            ValueError: empty, mismatched, or non-finite training data.
        """
        theta_t, x_t = _tensor(theta, "theta"), _tensor(x, "x")
        if len(theta_t) == 0:
            raise ValueError("the training set is empty")
        if len(theta_t) != len(x_t):
            raise ValueError(f"theta has {len(theta_t)} rows but x has {len(x_t)}")
        if len(theta_t) < 10:
            raise ValueError(f"need at least 10 simulations to train; got {len(theta_t)}")
        self.theta_dim, self.x_dim = theta_t.shape[1], x_t.shape[1]
        if prior is None:
            lo, hi = theta_t.min(0).values, theta_t.max(0).values
            pad = 1e-6 * (hi - lo + 1)
            prior = Prior({f"theta_{j}": (float(lo[j] - pad[j]), float(hi[j] + pad[j]))
                           for j in range(self.theta_dim)})
        if len(prior.names) != self.theta_dim:
            raise ValueError(f"the prior has {len(prior.names)} parameters; theta has "
                             f"{self.theta_dim} columns")
        self.prior = prior
        self.names = list(names) if names is not None else list(prior.names)
        torch.manual_seed(self.seed)
        self.net = self._build(theta_t, x_t).to(self.device)
        data = [theta_t.to(self.device), x_t.to(self.device)]
        self.history = train(self.net, self._loss, data, self.train_config, seed=self.seed,
                             progress=self.progress, checkpoint=checkpoint)
        if self.role == "posterior":  # widen the base to fit the held-out simulations
            val, _ = split(len(theta_t), self.train_config, self.seed)
            temp = calibrate(self.net, data[0][val], data[1][val])
            self.history.temperature = [round(float(v), 4) for v in temp]
        digest = hashlib.sha1(theta_t.numpy().tobytes() + x_t.numpy().tobytes()).hexdigest()
        self.data_info = {"n": len(theta_t), "sha1": digest}
        return self

    def _require_fit(self) -> nn.Module:
        if self.net is None:
            raise RuntimeError(f"this {type(self).__name__} is not trained; call fit first")
        return self.net

    def prepare_x(self, x: Any) -> Tensor:
        """Check observations against the training width: (m,) or (b, m) → (b, m) tensor."""
        self._require_fit()
        t = x.detach().float().cpu() if isinstance(x, Tensor) else torch.as_tensor(
            np.asarray(x, dtype=np.float32))
        if t.ndim == 1:
            t = t[None]
        return _tensor(t, "x", self.x_dim).to(self.device)

    # ------------------------------------------------------------- save/load
    def card(self) -> dict[str, Any]:
        """The JSON model card."""
        return {
            "class": type(self).__name__,
            "variant": self.variant,
            "flow": self.flow_kind,
            "hidden": self.hidden,
            "transforms": self.transforms,
            "bins": self.bins,
            "regression": self.regression,
            "theta_dim": self.theta_dim,
            "x_dim": self.x_dim,
            "names": self.names,
            "prior": None if self.prior is None else self.prior.to_json(),
            "seed": self.seed,
            "training_data": self.data_info,
            "validation": None if self.history is None else self.history.summary(),
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save as a model folder (weights as safetensors + JSON card)."""
        net = self._require_fit()
        return write_model(path, self.card(), net.state_dict(), overwrite)

    @classmethod
    def from_card(cls, card: dict[str, Any], state: dict[str, Tensor],
                  device: str = "cpu") -> _FlowEstimator:
        """Rebuild an estimator from a card and its weights."""
        est = cls(card["variant"], card["flow"], card["hidden"], card["transforms"],
                  card["bins"], device=device, seed=card.get("seed", 0), progress=False,
                  regression=card.get("regression", False))  # absent: saved before it
        est.theta_dim, est.x_dim, est.names = card["theta_dim"], card["x_dim"], card["names"]
        est.prior = Prior.from_json(card["prior"]) if card.get("prior") else None
        est.data_info = card.get("training_data", {})
        est.net = est._build().to(est.device)
        est.net.load_state_dict(state)
        est.net.eval()
        return est


class PosteriorEstimator(_FlowEstimator):
    """Neural posterior estimation: q(θ | x) from (θ, x) pairs.

    Example:
        >>> theta = torch.rand(2000, 1) * 4 - 2
        >>> x = theta + 0.1 * torch.randn_like(theta)
        >>> npe = PosteriorEstimator(progress=False, hidden=16, transforms=2,
        ...     train_config=TrainConfig(max_epochs=30)).fit(theta, x)
        >>> post = npe.posterior([0.5])
        >>> abs(float(post.sample(2000).mean()) - 0.5) < 0.05
        True
    """

    role = "posterior"

    def draw(self, x: Tensor, n: int) -> Tensor:
        net = self._require_fit()
        with torch.no_grad():
            if self.variant == "augmented":
                return _chunked(lambda xx: net.conditional_sample(n, xx), x, n)
            return _chunked(lambda xx: net.sample(n, xx), x, n)

    def log_density(self, theta: Tensor, x: Tensor) -> Tensor:
        net = self._require_fit()
        b, k, d = theta.shape
        flat_t = theta.reshape(b * k, d).to(self.device)
        flat_x = x.repeat_interleave(k, dim=0)
        with torch.no_grad():
            if self.variant == "augmented":
                log_qx = self._marginal(net, x).repeat_interleave(k)
                lp = net.conditional_log_prob(flat_t, flat_x, log_qx)
            else:
                lp = net.log_prob(flat_t, flat_x)
        return lp.reshape(b, k)

    def _marginal(self, net: JointFlow, x: Tensor) -> Tensor:
        """log q(x) of the joint flow, remembered for the last x (a Posterior reuses its x)."""
        cached = getattr(self, "_marginal_cache", None)
        if cached is None or cached[0] is not x:
            cached = (x, net.marginal_log_prob(x))
            self._marginal_cache = cached
        return cached[1]

    def posterior(self, x: Any) -> Posterior:
        """The posterior of one observation (m,) or a batch (b, m)."""
        xt = self.prepare_x(x)
        single = np.ndim(x) == 1 if not isinstance(x, Tensor) else x.ndim == 1
        return Posterior(self, xt, self.names, self.prior, single=single)


class LikelihoodEstimator(_FlowEstimator):
    """Neural likelihood estimation: q(x | θ) from (θ, x) pairs; posteriors by MCMC."""

    role = "likelihood"

    def log_likelihood(self, theta: Any, x: Any) -> np.ndarray:
        """log q(x | θ) for paired rows: θ (k, d), x (k, m) or (m,) → (k,)."""
        t = _tensor(theta, "theta", self.theta_dim).to(self.device)
        xt = self.prepare_x(x)
        if len(xt) == 1:
            xt = xt.expand(len(t), -1)
        with torch.no_grad():
            return self._log_lik(t, xt).cpu().numpy()

    def _log_lik(self, theta: Tensor, x: Tensor) -> Tensor:
        net = self._require_fit()
        if self.variant == "augmented":
            log_p = self.prior.log_prob(theta.cpu()).to(theta)
            return net.log_prob(x, theta) - log_p
        return net.log_prob(x, theta)

    def log_density(self, theta: Tensor, x: Tensor) -> Tensor:
        """Unnormalised log posterior log q(x | θ) + log p(θ), (b, k, d) → (b, k)."""
        b, k, d = theta.shape
        flat = theta.reshape(b * k, d).to(self.device)
        with torch.no_grad():
            lp = self._log_lik(flat, x.repeat_interleave(k, dim=0))
            lp = lp + self.prior.log_prob(flat.cpu()).to(lp)
        return lp.reshape(b, k)

    def posterior(self, x: Any, prior: Prior | None = None, n_samples: int = 1000,
                  n_steps: int = 20_000, seed: int | None = None) -> Posterior:
        """MCMC (emcee) under the learned likelihood for one observation or each of a batch.

        Each chain runs until converged (:func:`~specsbi.mcmc.run_emcee`'s rule) or
        ``n_steps``, the maximum; ``diagnostics`` says which.
        """
        self._require_fit()
        if prior is not None and len(prior.names) != self.theta_dim:
            raise ValueError(f"the prior has {len(prior.names)} parameters; expected "
                             f"{self.theta_dim}")
        prior = prior or self.prior
        xt = self.prepare_x(x)
        seed = self.seed if seed is None else seed
        draws, diags = [], []
        for i in range(len(xt)):
            xi = xt[i : i + 1]

            def log_post(t: Tensor, xi=xi) -> Tensor:
                lp = prior.log_prob(t.cpu()).to(t)
                ok = torch.isfinite(lp)
                out = torch.full_like(lp, -torch.inf)
                if ok.any():
                    out[ok] = self._log_lik(t[ok], xi.expand(int(ok.sum()), -1)) + lp[ok]
                return out

            init = prior.draw(4000, seed + i)
            s, diag = run_emcee(torch_log_prob(log_post, self.device), init, n_samples,
                                n_steps=n_steps, seed=seed + i, progress=self.progress)
            draws.append(torch.as_tensor(s, dtype=torch.float32))
            diags.append(diag)
        single = np.ndim(x) == 1 if not isinstance(x, Tensor) else x.ndim == 1
        diagnostics = diags[0] if single else {"per_observation": diags}
        return Posterior(self, xt, self.names, prior, samples=torch.stack(draws),
                         diagnostics=diagnostics, single=single)


def _chunked(fn, x: Tensor, n: int, budget: int = 2_000_000) -> Tensor:
    """Apply ``fn`` to row chunks of ``x`` so that chunk × n stays within ``budget`` rows."""
    step = max(1, budget // max(n, 1))
    return torch.cat([fn(x[i : i + step]) for i in range(0, len(x), step)])


_CLASSES = {"PosteriorEstimator": PosteriorEstimator, "LikelihoodEstimator": LikelihoodEstimator}


def load_estimator(path: str | os.PathLike, device: str = "cpu") -> _FlowEstimator:
    """Load a saved PosteriorEstimator or LikelihoodEstimator folder."""
    card, state = read_model(path)
    cls = _CLASSES.get(card.get("class"))
    if cls is None:
        raise ValueError(f"{path} holds a {card.get('class')!r}, not an array estimator")
    return cls.from_card(card, state, device)
