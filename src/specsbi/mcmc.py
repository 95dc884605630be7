"""MCMC with emcee for likelihood-based posteriors (learned likelihoods and emulators)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["run_emcee"]

log = logging.getLogger(__name__)


def run_emcee(
    log_prob: Callable[[np.ndarray], np.ndarray],
    init: np.ndarray,
    n_samples: int = 1000,
    n_walkers: int | None = None,
    n_steps: int = 3000,
    burn_in: float = 0.3,
    seed: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Sample ``log_prob`` with emcee's ensemble sampler, vectorised over walkers.

    Args:
        log_prob: (W, d) → (W,) log density (−inf outside the support).
        init: (k, d) candidate starting points (e.g. prior draws); the walkers
            start at the ``n_walkers`` candidates of highest density.
        n_samples: draws to return, thinned evenly from the post-burn-in chain.
        n_walkers: walkers (default max(32, 4 d)).
        n_steps: steps per walker.
        burn_in: fraction of the chain discarded.
        seed: seeds emcee's moves.
        progress: show emcee's progress bar.

    Returns:
        ``(samples (n_samples, d), diagnostics)`` with the acceptance fraction,
        the integrated autocorrelation time τ per parameter, the effective sample
        size and ``converged`` (chain longer than 50 τ after burn-in, acceptance
        in [0.1, 0.9]); a warning is logged when not converged.
    """
    import emcee

    init = np.asarray(init, dtype=np.float64)
    d = init.shape[1]
    n_walkers = n_walkers or max(32, 4 * d)
    lp = log_prob(init)
    order = np.argsort(-np.where(np.isfinite(lp), lp, -np.inf))
    if not np.isfinite(lp[order[0]]):
        raise ValueError("no starting point has a finite log density")
    if len(init) < n_walkers or not np.isfinite(lp[order[n_walkers - 1]]):
        raise ValueError(f"need {n_walkers} starting points of finite log density")
    start = init[order[:n_walkers]]
    sampler = emcee.EnsembleSampler(n_walkers, d, log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(start, n_steps, progress=progress)
    burn = int(burn_in * n_steps)
    chain = sampler.get_chain(discard=burn, flat=True)
    tau = emcee.autocorr.integrated_time(sampler.get_chain(discard=burn), quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = np.asarray(tau, dtype=float)
    accept = float(np.mean(sampler.acceptance_fraction))
    kept = n_steps - burn
    converged = bool(np.all(kept > 50 * tau) and 0.1 <= accept <= 0.9)
    diag = {
        "acceptance_fraction": accept,
        "autocorr_time": tau.tolist(),
        "effective_samples": float(n_walkers * kept / np.max(tau)),
        "n_walkers": n_walkers,
        "n_steps": n_steps,
        "converged": converged,
    }
    if not converged:
        log.warning("MCMC may not have converged: acceptance %.2f, τ = %s over %d kept steps",
                    accept, np.round(tau, 1).tolist(), kept)
    idx = np.linspace(0, len(chain) - 1, n_samples).round().astype(int)
    rng = np.random.default_rng(seed)
    return chain[rng.permutation(idx)], diag


def torch_log_prob(fn: Callable[[torch.Tensor], torch.Tensor],
                   device: str | torch.device = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a torch (W, d) → (W,) function as a numpy one for emcee, without gradients."""

    @torch.no_grad()
    def wrapped(theta: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.atleast_2d(theta), dtype=torch.float32, device=device)
        return fn(t).double().cpu().numpy()

    return wrapped
