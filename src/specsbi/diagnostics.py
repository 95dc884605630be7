"""Scores of posteriors against known truths: log q(θ_true), point errors, calibration
(SBC ranks, expected coverage) and the posterior-predictive χ² of observed spectra."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ._checks import as_numpy, require_finite
from .posterior import Posterior

__all__ = [
    "CoverageResult",
    "Emulator",
    "SBCResult",
    "draws_and_truth",
    "expected_coverage",
    "galaxy_metrics",
    "hpd_coverage",
    "interval_coverage",
    "predictive_chi2",
    "predictive_flux",
    "sbc",
    "score_galaxies",
]


def interval_coverage(samples: np.ndarray, truth: np.ndarray,
                      levels: tuple[float, ...] = (0.68, 0.95)) -> dict[float, np.ndarray]:
    """Fraction of truths inside central credible intervals, per parameter.

    Args:
        samples: (b, n, d) posterior draws; truth: (b, d).

    Returns:
        level → (d,) coverage.
    """
    out = {}
    for level in levels:
        lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=1)
        out[level] = np.mean((truth >= lo) & (truth <= hi), axis=0)
    return out


def hpd_coverage(post: Posterior, truth: np.ndarray, n: int = 500,
                 levels: tuple[float, ...] = (0.5, 0.68, 0.9, 0.95)) -> dict[float, float]:
    """Expected coverage of highest-density regions (the joint θ), from ``post.log_prob``."""
    samples = post.sample(n)
    lp_true = post.log_prob(truth)
    lp = np.stack([post.log_prob(samples[:, j]) for j in range(n)], 1)
    rank = (lp > lp_true[:, None]).mean(1)
    return {level: float(np.mean(rank < level)) for level in levels}


def galaxy_metrics(post: Posterior, truth: dict[str, np.ndarray],
                   n_samples: int = 1000) -> dict[str, Any]:
    """The galaxy figures of the flows issue for a batch posterior (see
    :func:`score_galaxies`)."""
    t = np.stack([truth[k] for k in post.names], 1)
    return score_galaxies(post.sample(n_samples), post.log_prob(t), post.names, truth)


def score_galaxies(samples: np.ndarray, log_q: np.ndarray, names: list[str],
                   truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Galaxy figures from posterior draws (b, n, d) and log q(θ_true | x) (b,).

    Mean log q(θ_true | x) over the targets (normalised), log M* RMSE and bias of the
    posterior median, redshift NMAD of Δz/(1+z) and outlier fraction (|Δz|/(1+z) >
    0.01), 68/95% central-interval coverage per target, median 68% half-widths. Any
    estimator's draws can be scored, so baselines share the definitions.
    """
    names = list(names)
    t = np.stack([truth[k] for k in names], 1)
    med = np.median(samples, axis=1)
    out: dict[str, Any] = {"n_galaxies": int(len(t))}
    out["mean_log_q"] = float(np.mean(log_q))
    out["median_log_q"] = float(np.median(log_q))
    cov = interval_coverage(samples, t)
    for j, name in enumerate(names):
        out[f"coverage68_{name}"] = float(cov[0.68][j])
        out[f"coverage95_{name}"] = float(cov[0.95][j])
        lo, hi = np.percentile(samples[:, :, j], [16, 84], axis=1)
        out[f"median_width68_{name}"] = float(np.median(hi - lo) / 2)
    if "log_mstar" in names:
        d = med[:, names.index("log_mstar")] - truth["log_mstar"]
        out["log_mstar_rmse"] = float(np.sqrt(np.mean(d**2)))
        out["log_mstar_bias"] = float(np.mean(d))
    if "redshift" in names:
        z = truth["redshift"]
        dz = (med[:, names.index("redshift")] - z) / (1 + z)
        out["redshift_nmad"] = float(1.4826 * np.median(np.abs(dz - np.median(dz))))
        out["redshift_outlier_fraction"] = float(np.mean(np.abs(dz) > 0.01))
    return out


# ----------------------------------------------------------------- calibration
def draws_and_truth(posterior: Posterior | Any, truth: Any, n_samples: int = 1000,
                    names: Sequence[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Posterior draws (b, n, d), truths (b, d) and names from a batch Posterior or arrays.

    ``posterior`` is a :class:`Posterior` over b observations, or draws (b, n, d);
    ``truth`` is (b, d) in the same parameter order, or a mapping name → (b,).
    """
    if isinstance(posterior, Posterior):
        names = list(posterior.names)
        samples = np.asarray(posterior.sample(n_samples), dtype=np.float64)
        if posterior.single:
            samples = samples[None]
    else:
        samples = as_numpy(posterior, "samples")
    if samples.ndim != 3:
        raise ValueError(f"posterior draws must have shape (b, n, d); got {samples.shape}")
    b, n, d = samples.shape
    names = list(names) if names is not None else [f"θ{j}" for j in range(d)]
    if isinstance(truth, dict):
        missing = [k for k in names if k not in truth]
        if missing:
            raise ValueError(f"truth lacks parameter(s) {missing}; it has {sorted(truth)}")
        truth = np.stack([np.asarray(truth[k], dtype=np.float64) for k in names], -1)
    t = as_numpy(truth, "truth")
    t = t[None] if t.ndim == 1 else t
    if t.shape != (b, d):
        raise ValueError(f"truth must have shape ({b}, {d}) for parameters {names}; "
                         f"got {t.shape}")
    require_finite(samples, "samples")
    require_finite(t, "truth")
    if n < 2 or len(names) != d:
        raise ValueError(f"need >= 2 draws and one name per parameter; got n={n}, "
                         f"names={names} for d={d}")
    return samples, t, names


def _pit(samples: np.ndarray, truth: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranks (b, d) of the truths among the draws (ties split at random), and the
    randomised probability integral transform u = (rank + U) / (n + 1), uniform under
    a calibrated posterior."""
    rng = np.random.default_rng(seed)
    below = (samples < truth[:, None]).sum(1)
    ties = (samples == truth[:, None]).sum(1)
    ranks = below + rng.integers(0, ties + 1)
    u = (ranks + rng.uniform(size=ranks.shape)) / (samples.shape[1] + 1)
    return ranks, u


@dataclass(frozen=True)
class SBCResult:
    """Simulation-based calibration over a held-out simulated set (Talts et al. 2018).

    Attributes:
        names: parameter names.
        ranks: (b, d) rank of each truth among the ``n_samples`` draws (0..n_samples).
        n_samples: draws per posterior.
        counts: (d, bins) rank histogram.
        expected: (bins,) expected count per bin when ranks are uniform.
        chi2_pvalue: (d,) χ² test of the histogram against uniform.
        ks_pvalue: (d,) Kolmogorov–Smirnov test of the randomised PIT against U(0, 1).
    """

    names: list[str]
    ranks: np.ndarray
    n_samples: int
    counts: np.ndarray
    expected: np.ndarray
    chi2_pvalue: np.ndarray
    ks_pvalue: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """The test statistics as JSON-able numbers."""
        return {"n_galaxies": int(len(self.ranks)), "n_samples": self.n_samples,
                "bins": int(self.counts.shape[1]),
                "chi2_pvalue": dict(zip(self.names, self.chi2_pvalue.tolist(), strict=True)),
                "ks_pvalue": dict(zip(self.names, self.ks_pvalue.tolist(), strict=True))}


def sbc(posterior: Posterior | Any, truth: Any, n_samples: int = 1000, bins: int | None = None,
        names: Sequence[str] | None = None, seed: int = 0) -> SBCResult:
    """Simulation-based calibration ranks and their uniformity tests, per parameter.

    For a calibrated posterior the rank of the true θ among posterior draws is
    uniform. Two tests of that, per parameter: χ² of the rank histogram, and KS of
    the randomised PIT. A p-value below ~1e-3 says the posterior is miscalibrated
    (∪-shaped ranks: overconfident; ∩-shaped: underconfident; skewed: biased).

    Args:
        posterior: a batch :class:`Posterior` over b held-out simulations, or their
            draws (b, n, d).
        truth: (b, d) true parameters, or name → (b,) (e.g. ``test.params``).
        n_samples: draws per posterior when ``posterior`` is a Posterior.
        bins: histogram bins (default: about b / 20, between 2 and 20).
        names: parameter names for arrays (a Posterior brings its own).
        seed: seeds the tie-breaking and the PIT jitter.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.normal(size=(500, 1))
        >>> r = sbc(rng.normal(size=(500, 200, 1)), truth)   # draws from the true posterior
        >>> bool(r.chi2_pvalue[0] > 0.01 and r.ks_pvalue[0] > 0.01)
        True
    """
    from scipy import stats

    samples, t, names = draws_and_truth(posterior, truth, n_samples, names)
    b, n, d = samples.shape
    if bins is None:
        bins = int(min(20, max(2, b // 20)))
    if not (isinstance(bins, (int, np.integer)) and 2 <= bins <= n + 1):
        raise ValueError(f"`bins` must be an integer in [2, {n + 1}]; got {bins!r}")
    ranks, u = _pit(samples, t, seed)
    edges = np.floor(np.arange(bins + 1) * (n + 1) / bins).astype(int)  # rank values per bin
    expected = b * np.diff(edges) / (n + 1)
    counts = np.stack([np.histogram(ranks[:, j], edges)[0] for j in range(d)])
    chi2 = np.array([stats.chisquare(c, expected).pvalue for c in counts])
    ks = np.array([stats.kstest(u[:, j], "uniform").pvalue for j in range(d)])
    return SBCResult(names, ranks, n, counts, expected, chi2, ks)


@dataclass(frozen=True)
class CoverageResult:
    """Expected coverage of credible regions at many levels, against the diagonal.

    Attributes:
        names: parameter names.
        levels: (k,) credibility levels in [0, 1].
        central: (k, d) fraction of truths inside the central interval of each
            level, per parameter.
        tarp: (k,) TARP expected coverage of the joint posterior (Lemos et al. 2023).
        n: number of held-out simulations.
    """

    names: list[str]
    levels: np.ndarray
    central: np.ndarray
    tarp: np.ndarray
    n: int

    @property
    def max_deviation(self) -> dict[str, float]:
        """Largest |coverage − level| of each curve: per parameter, then ``"tarp"``."""
        dev = {name: float(np.max(np.abs(self.central[:, j] - self.levels)))
               for j, name in enumerate(self.names)}
        dev["tarp"] = float(np.max(np.abs(self.tarp - self.levels)))
        return dev

    def band(self, z: float = 1.96) -> np.ndarray:
        """(k,) half-width of the pointwise binomial band a calibrated posterior stays in."""
        return z * np.sqrt(self.levels * (1 - self.levels) / self.n)

    def at(self, level: float) -> dict[str, float]:
        """Central-interval coverage of each parameter at one level (interpolated)."""
        return {name: float(np.interp(level, self.levels, self.central[:, j]))
                for j, name in enumerate(self.names)}

    def to_dict(self) -> dict[str, Any]:
        """The statistics as JSON-able numbers."""
        return {"n_galaxies": self.n, "max_deviation": self.max_deviation,
                "band95_max": float(self.band().max()),
                "coverage68": self.at(0.68), "coverage95": self.at(0.95)}


def expected_coverage(posterior: Posterior | Any, truth: Any, n_samples: int = 1000,
                      levels: int | Sequence[float] = 101, names: Sequence[str] | None = None,
                      seed: int = 0) -> CoverageResult:
    """Expected coverage curves: central intervals per parameter and TARP for the joint.

    A calibrated posterior puts the truth inside its level-α credible region a
    fraction α of the time, for every α: each curve lies on the diagonal within
    the binomial band (:meth:`CoverageResult.band`). Below the diagonal means
    overconfident. The statistic is the largest deviation from the diagonal.

    TARP draws one reference point per simulation uniformly over the box of the
    (standardised) truths and counts the fraction f of posterior draws nearer to it
    than the truth; coverage(α) = mean(f < α).

    Args:
        posterior: a batch :class:`Posterior`, or draws (b, n, d).
        truth: (b, d), or name → (b,).
        n_samples: draws per posterior when ``posterior`` is a Posterior.
        levels: number of evenly spaced levels in [0, 1], or the levels.
        names: parameter names for arrays.
        seed: seeds the TARP reference points and the PIT jitter.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.normal(size=(2000, 2))
        >>> cov = expected_coverage(0.5 * rng.normal(size=(2000, 300, 2)), truth)
        >>> round(cov.at(0.68)["θ0"], 1)   # an overconfident posterior covers too little
        0.4
    """
    samples, t, names = draws_and_truth(posterior, truth, n_samples, names)
    lv = np.linspace(0, 1, levels) if isinstance(levels, (int, np.integer)) else \
        np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or len(lv) < 2 or lv.min() < 0 or lv.max() > 1:
        raise ValueError("`levels` must be a count >= 2 or levels in [0, 1]")
    _, u = _pit(samples, t, seed)
    dist = np.abs(2 * u - 1)  # inside the central α interval ⇔ |2u − 1| ≤ α
    central = (dist[None] <= lv[:, None, None]).mean(1)
    # TARP on standardised parameters
    loc, scale = t.mean(0), t.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    zs, zt = (samples - loc) / scale, (t - loc) / scale
    rng = np.random.default_rng(seed + 1)
    ref = rng.uniform(zt.min(0), zt.max(0), size=zt.shape)
    d_samples = np.linalg.norm(zs - ref[:, None], axis=-1)
    d_truth = np.linalg.norm(zt - ref, axis=-1)
    f = (d_samples < d_truth[:, None]).mean(1)
    tarp = (f[None] < lv[:, None]).mean(1)
    tarp[lv >= 1] = 1.0
    return CoverageResult(names, lv, central, tarp, len(t))


# --------------------------------------------------------- posterior predictive
class Emulator(Protocol):
    """What the predictive checks ask of an emulator: θ (n, d) → flux (n, npix).

    θ columns follow ``param_names`` when the emulator has that attribute (the
    posterior's draws are matched by name), else the posterior's own order.
    """

    def predict(self, theta: np.ndarray) -> np.ndarray: ...


def _emulator_columns(emulator: Emulator, names: Sequence[str] | None, d: int) -> list[int]:
    """Which posterior columns, in which order, make the emulator's θ (unnamed draws are
    taken to be in the emulator's order)."""
    wanted = getattr(emulator, "param_names", None)
    if wanted is None or names is None:
        if wanted is not None and len(wanted) != d:
            raise ValueError(f"the emulator needs θ = {list(wanted)}; the draws have {d} "
                             "columns")
        return list(range(d))
    missing = [k for k in wanted if k not in names]
    if missing:
        raise ValueError(
            f"the emulator needs θ = {list(wanted)}, but the posterior is over {list(names)} "
            f"(missing {missing}); use a posterior over every emulator parameter, e.g. "
            "emulator + MCMC, or a model trained with --targets covering them")
    return [list(names).index(k) for k in wanted]


def predictive_flux(emulator: Emulator, posterior: Posterior | Any, n_draws: int = 100,
                    names: Sequence[str] | None = None) -> np.ndarray:
    """Posterior-predictive spectra: the emulator's flux at posterior draws.

    Args:
        emulator: an object with ``predict(theta) -> (n, npix)`` (see :class:`Emulator`).
        posterior: a Posterior (one galaxy or a batch), or draws (n, d) or (b, n, d).
        n_draws: draws per galaxy.
        names: parameter names of raw draws (a Posterior brings its own); without
            them raw draws are taken to be in the emulator's order.

    Returns:
        (n_draws, npix) for one galaxy, (b, n_draws, npix) for a batch.
    """
    if isinstance(posterior, Posterior):
        single, names = posterior.single, posterior.names
        draws = np.asarray(posterior.sample(n_draws), dtype=np.float64)
    else:
        draws = as_numpy(posterior, "posterior draws")
        single = draws.ndim == 2
        if draws.ndim not in (2, 3):
            raise ValueError(f"posterior draws must have shape (n, d) or (b, n, d); "
                             f"got {draws.shape}")
        draws = draws[:, :n_draws] if draws.ndim == 3 else draws[:n_draws]
    draws = draws[None] if single else draws
    b, n, d = draws.shape
    cols = _emulator_columns(emulator, names, d)
    flux = as_numpy(emulator.predict(draws[..., cols].reshape(b * n, len(cols))),
                    "emulator flux", np.float32)
    if flux.ndim != 2 or len(flux) != b * n:
        raise ValueError(f"emulator.predict must return (n, npix) flux; got {flux.shape}")
    flux = flux.reshape(b, n, -1)
    return flux[0] if single else flux


def predictive_chi2(emulator: Emulator, posterior: Posterior | Any, spectra: Any,
                    n_draws: int = 50, names: Sequence[str] | None = None,
                    statistic: str = "mean") -> np.ndarray:
    """Posterior-predictive χ² per pixel of each observed spectrum.

    χ²(θ) = Σ (f_obs − f_emu(θ))² / σ² over unmasked pixels, divided by their
    number, at posterior draws θ. ``statistic="mean"``: its mean over the draws,
    about 1 plus the posterior's own spread (in units of the noise) for a spectrum
    the model explains. ``"min"``: the best draw, about 1 whenever some θ explains
    the spectrum, so it isolates misfit from posterior width. ``"all"``: every
    draw's. Much larger than 1 flags a galaxy the simulator (or the emulator) does
    not describe.

    Args:
        emulator: ``predict(theta) -> (n, npix)`` on the spectra's grid.
        posterior: a Posterior of the same galaxies (one or a batch), or draws (b, n, d).
        spectra: the observed Spectrum or SpectraSet.
        n_draws: posterior draws per galaxy.
        names: parameter names of raw draws (see :func:`predictive_flux`).
        statistic: "mean", "min" or "all".

    Returns:
        (b,) χ²/pixel (a float array of one for a single galaxy); (b, n_draws) for "all".
    """
    if statistic not in ("mean", "min", "all"):
        raise ValueError(f"`statistic` must be 'mean', 'min' or 'all'; got {statistic!r}")
    flux = np.atleast_2d(np.asarray(spectra.flux, dtype=np.float64))
    err = np.atleast_2d(np.asarray(spectra.err, dtype=np.float64))
    good = np.isfinite(err) & (err > 0)
    if isinstance(posterior, Posterior):
        draws = np.asarray(posterior.sample(n_draws), dtype=np.float64)
        draws, names = (draws[None] if posterior.single else draws), posterior.names
    else:
        draws = as_numpy(posterior, "posterior draws")
    if len(draws) != len(flux):
        raise ValueError(f"{len(draws)} posteriors for {len(flux)} spectra")
    out = []
    step = max(1, 20_000 // n_draws)  # bounded memory: ≤ 20k emulated spectra at a time
    for i in range(0, len(flux), step):
        pred = predictive_flux(emulator, draws[i : i + step], n_draws, names)
        if pred.shape[-1] != flux.shape[1]:
            raise ValueError(f"the emulator gives {pred.shape[-1]} pixels; the spectra have "
                             f"{flux.shape[1]}")
        f, e, g = flux[i : i + step, None], err[i : i + step, None], good[i : i + step, None]
        chi2 = np.where(g, ((f - pred) / np.where(g, e, 1.0)) ** 2, 0.0).sum(-1)
        out.append(chi2 / g[:, 0].sum(-1, keepdims=True).clip(min=1))
    per_draw = np.concatenate(out)
    if statistic == "all":
        return per_draw
    return per_draw.mean(1) if statistic == "mean" else per_draw.min(1)
