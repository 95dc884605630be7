"""Priors over named parameters: `Prior` (a torch Distribution) and `default_prior()`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.distributions import Distribution, constraints

__all__ = ["DEFAULT_RANGES", "Prior", "default_prior"]

#: The default prior of DESIGN.md: name → (low, high) of a uniform distribution.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "log_mformed": (9.0, 12.0),
    "redshift": (0.01, 0.5),
    "age_frac": (0.05, 0.98),
    "log_tau": (-1.0, 1.0),
    "metallicity": (0.2, 2.0),
    "av": (0.0, 1.5),
    "veldisp": (50.0, 300.0),
    "log_u": (-4.0, -2.0),
}


class Prior(Distribution):
    """Independent uniform prior over named parameters, some of which may be fixed.

    Free parameters form θ, in ``names`` order; fixed ones are carried along so a
    simulator receives every parameter it needs (:meth:`to_dict`). It is a torch
    ``Distribution`` with ``sample``, ``log_prob`` and ``support``, so sbi takes it
    as a prior. For a non-uniform prior pass ``base``: a torch distribution over
    the free parameters (event shape ``(d,)``), bounded by ``ranges``.

    Args:
        ranges: name → (low, high) for each free parameter.
        fixed: name → value for parameters held fixed.
        base: optional torch Distribution replacing the uniform density.

    Example:
        >>> prior = default_prior().with_fixed(log_u=-3.0)
        >>> prior.names[:3], prior.sample((4,)).shape
        (['log_mformed', 'redshift', 'age_frac'], torch.Size([4, 7]))
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self,
        ranges: Mapping[str, Sequence[float]],
        fixed: Mapping[str, float] | None = None,
        base: Distribution | None = None,
    ) -> None:
        if not ranges:
            raise ValueError("a Prior needs at least one free parameter in `ranges`")
        self.ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()}
        for name, (lo, hi) in self.ranges.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"range of {name!r} must be finite with low < high; got {lo, hi}")
        self.fixed = {k: float(v) for k, v in (fixed or {}).items()}
        both = set(self.fixed) & set(self.ranges)
        if both:
            raise ValueError(f"parameters {sorted(both)} are both free and fixed")
        self.names = list(self.ranges)
        self.low = torch.tensor([lo for lo, _ in self.ranges.values()], dtype=torch.float32)
        self.high = torch.tensor([hi for _, hi in self.ranges.values()], dtype=torch.float32)
        if base is not None and tuple(base.event_shape) != (len(self.names),):
            raise ValueError(
                f"`base` must have event shape ({len(self.names)},); got {tuple(base.event_shape)}"
            )
        self.base = base
        self._uniform = torch.distributions.Independent(
            torch.distributions.Uniform(self.low, self.high), 1
        )
        super().__init__(event_shape=torch.Size([len(self.names)]), validate_args=False)

    # ---------------------------------------------------------- distribution
    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean if self.base is not None else (self.low + self.high) / 2

    @property
    def variance(self) -> torch.Tensor:
        if self.base is not None:
            return self.base.variance
        return (self.high - self.low) ** 2 / 12

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> torch.Tensor:
        """Draw θ of shape ``sample_shape + (d,)`` using torch's global generator."""
        shape = torch.Size(sample_shape)
        if self.base is None:
            return self._uniform.sample(shape)
        out = self.base.sample(shape)
        bad = ~self._inside(out)
        while bad.any():  # rejection onto the box
            out[bad] = self.base.sample((int(bad.sum()),))
            bad = ~self._inside(out)
        return out

    def draw(self, n: int, seed: int) -> np.ndarray:
        """``n`` draws as a (n, d) float64 numpy array, reproducible from ``seed`` alone
        (torch's global generator is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.sample((n,)).double().numpy()

    def log_prob(self, value: Any) -> torch.Tensor:
        """log p(θ); -inf outside the ranges. Accepts numpy or torch, shape (..., d)."""
        theta = torch.as_tensor(value, dtype=torch.float32)
        if theta.shape[-1:] != self.event_shape:
            raise ValueError(
                f"θ must have shape (..., {len(self.names)}) for parameters {self.names}; "
                f"got {tuple(theta.shape)}"
            )
        inside = self._inside(theta)
        if self.base is None:
            lp = -torch.log(self.high - self.low).sum().expand(theta.shape[:-1]).clone()
        else:
            lp = self.base.log_prob(theta)
        return torch.where(inside, lp, torch.full_like(lp, -torch.inf))

    def _inside(self, theta: torch.Tensor) -> torch.Tensor:
        return ((theta >= self.low) & (theta <= self.high)).all(-1)

    # ----------------------------------------------------------- named access
    def check(self, theta: Any) -> np.ndarray:
        """Return θ as a (n, d) float64 array, or raise ValueError naming what is out of range."""
        t = theta.detach().cpu().numpy() if hasattr(theta, "detach") else np.asarray(theta)
        t = np.atleast_2d(np.asarray(t, dtype=np.float64))
        if t.ndim != 2 or t.shape[1] != len(self.names):
            raise ValueError(
                f"θ must have shape (n, {len(self.names)}) for parameters {self.names}; "
                f"got {tuple(np.shape(theta))}"
            )
        if not np.isfinite(t).all():
            raise ValueError("θ holds NaN or inf")
        lo, hi = self.low.double().numpy(), self.high.double().numpy()
        out = (t < lo - 1e-6 * (hi - lo)) | (t > hi + 1e-6 * (hi - lo))
        if out.any():
            i, j = np.argwhere(out)[0]
            raise ValueError(
                f"{int(out.any(1).sum())} θ row(s) lie outside the prior; e.g. row {i}: "
                f"{self.names[j]} = {t[i, j]:g} is outside [{lo[j]:g}, {hi[j]:g}]"
            )
        return t

    def to_dict(self, theta: Any) -> dict[str, np.ndarray]:
        """θ (n, d) → name → (n,) array, fixed parameters included."""
        t = self.check(theta)
        out = {name: t[:, j] for j, name in enumerate(self.names)}
        out.update({k: np.full(len(t), v) for k, v in self.fixed.items()})
        return out

    def with_ranges(self, **ranges: Sequence[float]) -> Prior:
        """A copy with new (low, high) for the named parameters (freeing them if fixed)."""
        unknown = set(ranges) - set(self.ranges) - set(self.fixed)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known: {self.all_names}")
        new = {**self.ranges, **{k: tuple(v) for k, v in ranges.items()}}
        fixed = {k: v for k, v in self.fixed.items() if k not in ranges}
        return Prior(new, fixed, self.base if set(new) == set(self.ranges) else None)

    def with_fixed(self, **values: float) -> Prior:
        """A copy with the named parameters fixed at the given values."""
        unknown = set(values) - set(self.ranges) - set(self.fixed)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known: {self.all_names}")
        for k, v in values.items():
            if k in self.ranges and not self.ranges[k][0] <= v <= self.ranges[k][1]:
                raise ValueError(f"{k} = {v} lies outside its range {self.ranges[k]}")
        ranges = {k: v for k, v in self.ranges.items() if k not in values}
        return Prior(ranges, {**self.fixed, **values})

    @property
    def all_names(self) -> list[str]:
        """Free then fixed parameter names."""
        return self.names + [k for k in self.fixed if k not in self.ranges]

    def to_json(self) -> str:
        """JSON of the ranges and fixed values (a custom ``base`` is named, not serialised)."""
        doc: dict[str, Any] = {"ranges": self.ranges, "fixed": self.fixed}
        if self.base is not None:
            doc["base"] = type(self.base).__name__
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> Prior:
        """Rebuild a uniform Prior from :meth:`to_json` output."""
        doc = json.loads(text) if isinstance(text, str) else dict(text)
        if "base" in doc:
            raise ValueError(
                f"this prior used a custom base distribution ({doc['base']}); rebuild it in code"
            )
        return cls(doc["ranges"], doc.get("fixed"))

    def __repr__(self) -> str:
        free = ", ".join(f"{k}∈[{lo:g}, {hi:g}]" for k, (lo, hi) in self.ranges.items())
        fixed = "".join(f", {k}={v:g}" for k, v in self.fixed.items())
        return f"Prior({free}{fixed})"


def default_prior() -> Prior:
    """The default prior of DESIGN.md over the eight bagpipes parameters (uniform).

    Example:
        >>> default_prior().names
        ['log_mformed', 'redshift', 'age_frac', 'log_tau', 'metallicity', 'av', 'veldisp', 'log_u']
    """
    return Prior(DEFAULT_RANGES)
