"""`SpectrumLikelihood`: a learned likelihood of spectrum summaries, posteriors by MCMC.

The likelihood q(s | θ) is learned over the simulator's own parameters θ (whose
prior is known and uniform), either as a conditional flow (``variant="dependent"``)
or as one flow over [s, θ] (``variant="augmented"``, log q(s | θ) = log q(s, θ) −
log p(θ)). The summary is the same fixed rest-frame PCA compressor as
SpectrumPosterior (a density over a learned summary would collapse it). A posterior
over θ comes from emcee; targets that are not parameters (``log_mstar``, a derived
output of the simulator) come from a small network fitted to the simulator's
mapping θ → target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .flows import ConditionalFlow, JointFlow, robust_stats, set_standardization
from .mcmc import log_posterior, run_emcee, torch_log_prob
from .posterior import Posterior
from .priors import Prior, default_prior
from .spectra import SpectraSet, Spectrum
from .spectrum_posterior import SpectrumPosterior
from .training import History, TrainConfig, train

__all__ = ["SpectrumLikelihood"]

log = logging.getLogger(__name__)


class _Derived(nn.Module):
    """A small MLP for a deterministic simulator output, e.g. θ → log_mstar."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 128) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, d_out))

    def forward(self, theta: Tensor) -> Tensor:
        return self.net((theta - self.mean) / self.std)

    def fit(self, x: Tensor, y: Tensor, seed: int = 0, progress: bool = False,
            config: TrainConfig | None = None) -> History:
        """Fit (n, d_in) → (n, d_out) by least squares with the shared loop; inputs standardised."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-6))
        config = config or TrainConfig(batch_size=256, lr=2e-3, max_epochs=150, patience=10)
        return train(self, lambda m, b, g: (m(b[0]) - b[1]).pow(2).sum(-1), [x, y], config,
                     seed=seed, progress=progress)


class SpectrumLikelihood(SpectrumPosterior):
    """Neural likelihood of spectra (via their summary) given the simulator parameters.

    Same arguments as :class:`SpectrumPosterior`; ``posterior`` runs emcee per galaxy
    (until converged, at most ``n_steps`` per walker) and returns a sample-based
    :class:`Posterior` over the targets, with the MCMC diagnostics.
    """

    def _build(self, wavelength: np.ndarray) -> nn.ModuleDict:
        net = super()._build(wavelength)
        d, s_dim = len(self.theta_names), net["compressor"].dim
        common = dict(kind=self.flow_kind, hidden=self.hidden, transforms=self.transforms,
                      bins=self.bins)
        net["flow"] = (JointFlow(s_dim, d, **common) if self.variant == "augmented"
                       else ConditionalFlow(s_dim, d, **common))
        derived = [t for t in self.targets if t not in self.theta_names]
        net["derived"] = _Derived(d, max(len(derived), 1))
        return net

    def fit(self, train_set: SpectraSet, checkpoint: Any = None) -> SpectrumLikelihood:
        """Train on a simulated SpectraSet (noiseless flux, every prior parameter)."""
        prior_doc = train_set.attrs.get("prior")
        self.theta_prior = Prior.from_json(prior_doc) if prior_doc else default_prior()
        self.theta_names = list(self.theta_prior.names)
        net, noiseless, s0 = self._prepare(train_set, self.theta_names + self.targets)
        theta = torch.as_tensor(np.stack([train_set.params[k] for k in self.theta_names], 1),
                                dtype=torch.float32)
        # the likelihood's features are s; its condition θ (standardised by mean and std)
        set_standardization(net["flow"], robust_stats(s0),
                            (theta.mean(0), theta.std(0).clamp(min=1e-6)))
        derived = [t for t in self.targets if t not in self.theta_names]
        if derived:  # the deterministic map θ → derived targets (e.g. log_mstar)
            y = torch.as_tensor(np.stack([train_set.params[k] for k in derived], 1),
                                dtype=torch.float32)
            net["derived"].fit(theta, y, self.seed, self.progress)
        self.prior = self.theta_prior
        self.net = net.to(self.device)
        self.history = train(self.net, self._loss, [theta.to(self.device),
                                                    self._training_x(noiseless)],
                             self.train_config, seed=self.seed, progress=self.progress,
                             checkpoint=checkpoint, params=list(net["flow"].parameters()))
        self.data_info = {"n": len(train_set)}
        return self

    def _loss(self, net: nn.ModuleDict, batch: Sequence[Tensor], gen: torch.Generator
              ) -> Tensor:
        theta, x = batch
        s = self._batch_summary(net, x, gen)
        return -net["flow"].log_prob(s, theta)  # both flow kinds take (features s, θ)

    def log_likelihood(self, s: Tensor, theta: Tensor) -> Tensor:
        """log q(s | θ) for paired rows."""
        flow = self._require()["flow"]
        if self.variant == "augmented":
            return flow.log_prob(s, theta) - self.theta_prior.log_prob(theta.cpu()).to(s)
        return flow.log_prob(s, theta)

    def targets_of(self, theta: Tensor) -> Tensor:
        """Map θ draws to the targets (parameters directly, derived ones by the MLP)."""
        derived = [t for t in self.targets if t not in self.theta_names]
        extra = self._require()["derived"](theta) if derived else None
        cols = []
        for t in self.targets:
            if t in self.theta_names:
                cols.append(theta[:, self.theta_names.index(t)])
            else:
                cols.append(extra[:, derived.index(t)])
        return torch.stack(cols, 1)

    @torch.no_grad()
    def posterior(self, spectra: SpectraSet | Spectrum, n_samples: int = 1000,
                  n_steps: int = 20_000) -> Posterior:
        """emcee under the learned likelihood for each galaxy; a sample-based Posterior."""
        s = self.summarize(spectra)
        draws, diags = [], []
        for i in range(len(s)):
            si = s[i : i + 1]
            log_post = log_posterior(
                lambda theta, si=si: self.log_likelihood(si.expand(len(theta), -1), theta),
                self.theta_prior)
            init = self.theta_prior.draw(4000, self.seed + i)
            th, diag = run_emcee(torch_log_prob(log_post, self.device), init, n_samples,
                                 n_steps=n_steps, seed=self.seed + i, progress=False)
            draws.append(self.targets_of(torch.as_tensor(th, dtype=torch.float32)))
            diags.append(diag)
        single = isinstance(spectra, Spectrum)
        return Posterior(None, s, self.targets, None, samples=torch.stack(draws),
                         diagnostics=diags[0] if single else {"per_observation": diags},
                         single=single)

    def card(self) -> dict[str, Any]:
        card = super().card()
        card.update({"class": "SpectrumLikelihood", "theta_prior": self.theta_prior.to_json()})
        return card

    def _restore(self, card: dict[str, Any]) -> None:
        self.theta_prior = Prior.from_json(card["theta_prior"])
        self.theta_names = list(self.theta_prior.names)
