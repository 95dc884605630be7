"""Scores of posteriors against known truths: log q(θ_true), point errors, coverage."""

from __future__ import annotations

from typing import Any

import numpy as np

from .posterior import Posterior

__all__ = ["galaxy_metrics", "hpd_coverage", "interval_coverage", "score_galaxies"]


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
