"""`Posterior`: samples, normalised densities and summaries for one or many observations.

Every inference path in specsbi (flows, likelihood + MCMC, emulator + MCMC) ends
in this type, so any two can be overlaid and scored by the same diagnostics. It
also answers sbi's calls (``sample((n,), x=...)``, ``sample_batched``,
``log_prob(theta, x=...)``), so sbi's diagnostics such as ``run_sbc`` take it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ["Posterior", "PosteriorSource"]


class PosteriorSource(Protocol):
    """What a Posterior asks of the estimator behind it."""

    def draw(self, x: Tensor, n: int) -> Tensor:
        """(b, m) observations → (b, n, d) draws of the unrestricted density."""

    def log_density(self, theta: Tensor, x: Tensor) -> Tensor:
        """(b, k, d) θ and (b, m) x → (b, k) log density, normalised over ℝ^d."""

    def prepare_x(self, x: Any) -> Tensor:
        """Check and convert observations to a (b, m) tensor."""


class Posterior:
    """The posterior of one observation (``x`` of shape (m,)) or a batch ((b, m)).

    Draws are restricted to the prior's support; ``log_prob`` is normalised on
    that support (the mass the density puts outside it is estimated once per
    observation and divided out).

    Args:
        source: the estimator (a :class:`PosteriorSource`).
        x: the observation(s).
        names: parameter names, in θ order.
        prior: the prior whose support restricts θ (or None for ℝ^d).
        samples: precomputed draws (b, n, d) for sample-based posteriors (MCMC);
            then ``sample`` returns these and ``log_prob`` is unnormalised.
        diagnostics: anything worth keeping (MCMC acceptance, τ, ...).
    """

    def __init__(self, source: PosteriorSource | None, x: Tensor, names: Sequence[str],
                 prior: Any = None, samples: Tensor | None = None,
                 diagnostics: dict[str, Any] | None = None, single: bool | None = None) -> None:
        self.source, self.names, self.prior = source, list(names), prior
        self.single = x.ndim == 1 if single is None else single
        self.x = x[None] if x.ndim == 1 else x
        self._samples = samples
        self.diagnostics = dict(diagnostics or {})
        self._log_inside: Tensor | None = None
        self._summary_samples: np.ndarray | None = None

    def __repr__(self) -> str:
        kind = "one observation" if self.single else f"{len(self.x)} observations"
        return f"Posterior({kind}, parameters={self.names})"

    def __len__(self) -> int:
        return len(self.x)

    # --------------------------------------------------------------- sampling
    def _inside(self, theta: Tensor) -> Tensor:
        if self.prior is None:
            return torch.isfinite(theta).all(-1)
        lo, hi = self.prior.low.to(theta), self.prior.high.to(theta)
        return ((theta >= lo) & (theta <= hi)).all(-1)

    @torch.no_grad()
    def _draw(self, n: int) -> Tensor:
        """(b, n, d) draws inside the prior support, by rejection."""
        if self._samples is not None:
            have = self._samples.shape[1]
            if n > have:
                raise ValueError(f"this posterior holds {have} MCMC draws; ask for at most that")
            idx = torch.linspace(0, have - 1, n).round().long()
            return self._samples[:, idx]
        b = len(self.x)
        out = [[] for _ in range(b)]
        got = torch.zeros(b, dtype=torch.long)
        drawn = torch.zeros(b)
        accepted = torch.zeros(b)
        batch = torch.full((b,), n)
        for _ in range(100):
            need = (got < n).nonzero().flatten()
            if len(need) == 0:
                break
            # galaxies that need about as many draws go together (powers of two), so one
            # galaxy near the prior's edge does not multiply everyone's draws
            size = batch[need]  # n at first, then what each galaxy still lacks
            size = torch.where(size == n, size, 2 ** torch.ceil(torch.log2(size.float())).long())
            for k in size.unique().tolist():
                group = need[size == k]
                theta = self.source.draw(self.x[group], k)
                ok = self._inside(theta)
                drawn[group] += k
                accepted[group] += ok.sum(1).float()
                for j, i in enumerate(group.tolist()):
                    keep = theta[j][ok[j]][: n - got[i]]
                    out[i].append(keep)
                    got[i] += len(keep)
            rate = (accepted / drawn.clamp(min=1)).clamp(min=1e-3)
            batch = ((n - got) / rate * 1.2).clamp(min=16, max=50 * n).long()
        if (got < n).any():
            worst = float((accepted / drawn.clamp(min=1)).min())
            raise RuntimeError(
                f"only {worst:.2%} of posterior draws fall inside the prior: the observation "
                "is probably far outside the training data"
            )
        self._last_rate = accepted / drawn
        return torch.stack([torch.cat(o)[:n] for o in out])

    def sample(self, sample_shape: int | Sequence[int] = 1000, x: Any = None,
               show_progress_bars: bool = False) -> np.ndarray | Tensor:
        """Draw from the posterior.

        ``sample(n)`` → (n, d) for one observation, (b, n, d) for a batch (numpy).
        The sbi form ``sample((n,), x=x_o)`` returns a torch (n, d) tensor for ``x_o``.
        """
        n = _count(sample_shape)
        if x is not None:
            other = self._for(x)
            if len(other.x) != 1:
                raise ValueError("sample(x=...) takes one observation; use sample_batched")
            return other._draw(n)[0]
        theta = self._draw(n).cpu().numpy()
        return theta[0] if self.single else theta

    def sample_batched(self, sample_shape: int | Sequence[int], x: Any,
                       show_progress_bars: bool = False) -> Tensor:
        """sbi's batched form: (b, m) observations → (n, b, d) torch tensor."""
        return self._for(x)._draw(_count(sample_shape)).transpose(0, 1)

    # ---------------------------------------------------------------- density
    @torch.no_grad()
    def log_prob(self, theta: Any, x: Any = None) -> np.ndarray | Tensor:
        """Normalised log density on the prior's support.

        One observation: θ (k, d) → (k,). A batch of b: θ (b, d) → (b,), one θ
        per observation. The sbi form ``log_prob(theta, x=x_o)`` returns torch.

        Raises:
            ValueError: θ of the wrong shape, NaN, or outside the prior.
        """
        if x is not None:
            other = self._for(x)
            t = other._theta(theta, single=True)
            return other._log_prob(t[None])[0]
        t = self._theta(theta, single=self.single)
        lp = self._log_prob(t[None] if self.single else t[:, None])
        return (lp[0] if self.single else lp[:, 0]).cpu().numpy()

    def _log_prob(self, theta: Tensor) -> Tensor:
        if self.source is None:
            raise ValueError("this posterior has draws only; it cannot evaluate densities")
        lp = self.source.log_density(theta, self.x)
        if self._samples is not None or self.prior is None:
            return lp
        if self._log_inside is None:  # a fixed-seed estimate: the same answer every call
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._draw(4000)
            self._log_inside = torch.log(self._last_rate.clamp(min=1e-12))
        return lp - self._log_inside.to(lp)[:, None]

    def _theta(self, theta: Any, single: bool) -> Tensor:
        t = torch.as_tensor(np.asarray(theta, dtype=np.float32)
                            if not isinstance(theta, Tensor) else theta, dtype=torch.float32)
        d = len(self.names)
        if single:
            t = t[None] if t.ndim == 1 else t
            if t.ndim != 2 or t.shape[1] != d:
                raise ValueError(f"θ must have shape (k, {d}); got {tuple(t.shape)}")
        elif t.shape != (len(self.x), d):
            raise ValueError(
                f"for a batch of {len(self.x)} observations θ must have shape "
                f"({len(self.x)}, {d}), one θ per observation; got {tuple(t.shape)}"
            )
        if not torch.isfinite(t).all():
            raise ValueError("θ holds NaN or inf")
        inside = self._inside(t)
        if not inside.all():
            raise ValueError(
                f"{int((~inside).sum())} θ row(s) lie outside the prior, where the posterior "
                "density is 0; check the parameter order " + str(self.names)
            )
        return t.to(self.x.device)

    def _for(self, x: Any) -> Posterior:
        if self.source is None:
            raise ValueError("this posterior was sampled for fixed observations; refit for new x")
        return Posterior(self.source, self.source.prepare_x(x), self.names, self.prior)

    # ---------------------------------------------------------------- summary
    def summary(self, n: int = 2000) -> dict[str, dict[str, Any]]:
        """Median, 16th and 84th percentile per parameter (floats, or (b,) arrays for a batch)."""
        if self._samples is not None:
            n = min(n, self._samples.shape[1])
        if self._summary_samples is None or self._summary_samples.shape[-2] != n:
            s = self._draw(n).cpu().numpy()
            self._summary_samples = s
        s = self._summary_samples
        q = np.percentile(s, [50, 16, 84], axis=1)  # (3, b, d)
        out = {}
        for j, name in enumerate(self.names):
            vals = {"median": q[0, :, j], "p16": q[1, :, j], "p84": q[2, :, j]}
            out[name] = {k: float(v[0]) for k, v in vals.items()} if self.single else vals
        return out


def _count(sample_shape: int | Sequence[int]) -> int:
    if isinstance(sample_shape, (int, np.integer)):
        n = int(sample_shape)
    else:
        n = int(math.prod(sample_shape))
    if n < 1:
        raise ValueError(f"ask for at least one sample; got {sample_shape}")
    return n
