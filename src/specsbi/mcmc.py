"""MCMC with emcee for likelihood-based posteriors: learned likelihoods (NLE) and emulators.

:func:`run_emcee` is the sampler both paths share; :func:`log_posterior` puts a
likelihood and a prior together; :func:`sample` is the emulator path: a Gaussian
likelihood of an observed spectrum under an emulator's prediction, started from a
quick optimisation (a redshift scan, a prior search, then gradient steps through
the differentiable emulator) or from an NPE posterior, returning the same
:class:`~specsbi.posterior.Posterior` as the flows.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaussian_log_likelihood", "log_posterior", "run_emcee", "sample",
           "torch_log_prob"]

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
    select: str = "best",
    moves: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Sample ``log_prob`` with emcee's ensemble sampler, vectorised over walkers.

    Args:
        log_prob: (W, d) → (W,) log density (−inf outside the support).
        init: (k, d) candidate starting points (prior draws, a ball around an
            optimum, posterior draws).
        n_samples: draws to return, thinned evenly from the post-burn-in chain.
        n_walkers: walkers (default max(32, 4 d)).
        n_steps: steps per walker.
        burn_in: fraction of the chain discarded.
        seed: seeds emcee's moves.
        progress: show emcee's progress bar.
        select: which candidates start: "best" (the ``n_walkers`` of highest
            density: for broad candidates such as prior draws) or "first" (the first
            ``n_walkers`` of finite density: for a ball or posterior draws, whose
            spread should be kept).
        moves: emcee moves (default: its stretch move).

    Returns:
        ``(samples (n_samples, d), diagnostics)`` with the acceptance fraction,
        the integrated autocorrelation time τ per parameter, the effective sample
        size and ``converged`` (chain longer than 50 τ after burn-in, acceptance
        in [0.1, 0.9]); a warning is logged when not converged.
    """
    import emcee

    if select not in ("best", "first"):
        raise ValueError(f"`select` must be 'best' or 'first'; got {select!r}")
    if not 0 <= burn_in < 1:
        raise ValueError(f"`burn_in` must lie in [0, 1); got {burn_in}")
    init = np.asarray(init, dtype=np.float64)
    d = init.shape[1]
    n_walkers = n_walkers or max(32, 4 * d)
    lp = log_prob(init)
    finite = np.isfinite(lp)
    if not finite.any():
        raise ValueError("no starting point has a finite log density")
    if finite.sum() < n_walkers:
        raise ValueError(f"need {n_walkers} starting points of finite log density; "
                         f"got {int(finite.sum())}")
    if select == "best":
        start = init[np.argsort(-np.where(finite, lp, -np.inf))[:n_walkers]]
    else:
        start = init[np.nonzero(finite)[0][:n_walkers]]
    sampler = emcee.EnsembleSampler(n_walkers, d, log_prob, vectorize=True, moves=moves)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(start, n_steps, progress=progress)
    burn = int(burn_in * n_steps)
    chain = sampler.get_chain(discard=burn, flat=True)
    quiet = logging.getLogger("emcee.autocorr")  # its own warning repeats ours below
    level, quiet.level = quiet.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tau = np.asarray(emcee.autocorr.integrated_time(sampler.get_chain(discard=burn),
                                                            quiet=True), dtype=float)
    finally:
        quiet.level = level
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
        log.warning("MCMC may not have converged: acceptance %.2f, τ = %s over %d kept steps "
                    "(want > 50 τ); run more steps", accept, np.round(tau, 1).tolist(), kept)
    idx = np.linspace(0, len(chain) - 1, n_samples).round().astype(int)
    rng = np.random.default_rng(seed)
    return chain[rng.permutation(idx)], diag


def torch_log_prob(fn: Callable[[torch.Tensor], torch.Tensor],
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a torch (W, d) → (W,) function as a numpy one for emcee, without gradients."""

    @torch.no_grad()
    def wrapped(theta: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.atleast_2d(theta), dtype=dtype, device=device)
        return fn(t).double().cpu().numpy()

    return wrapped


def log_posterior(log_likelihood: Callable[[Tensor], Tensor], prior: Any
                  ) -> Callable[[Tensor], Tensor]:
    """θ (W, d) → log prior + log likelihood, the likelihood evaluated only inside the prior."""

    def fn(theta: Tensor) -> Tensor:
        lp = prior.log_prob(theta.detach().cpu()).to(theta.device, torch.float64)
        out = torch.full_like(lp, -math.inf)
        ok = torch.isfinite(lp)
        if ok.any():
            out[ok] = log_likelihood(theta[ok]).double() + lp[ok]
        return out

    return fn


def gaussian_log_likelihood(model: Tensor, flux: Tensor, var: Tensor,
                            frac_err: Tensor | None = None) -> Tensor:
    """ln N(flux | model, var + (frac_err · model)²) summed over pixels: (B, n) → (B,).

    ``flux`` and ``var`` are (n,) over the unmasked pixels; ``frac_err`` (n,) is an
    optional fractional model error (e.g. an emulator's), whose variance grows with
    the model, so the normalisation term is kept.
    """
    m = model.double()
    v = var.double()[None].expand_as(m)
    if frac_err is not None:
        v = v + (frac_err.double() * m) ** 2
    return -0.5 * (((flux.double() - m) ** 2) / v + torch.log(2 * math.pi * v)).sum(-1)


# ---------------------------------------------------------------- emulator path
def sample(emulator: Any, spectrum: Any, prior: Any = None, init: Any = "optimize",
           n_samples: int = 1000, n_walkers: int | None = None, n_steps: int = 5000,
           burn_in: float = 0.3, emulator_error: bool = True, seed: int = 0,
           progress: bool = True) -> Any:
    """Posterior of θ (and ``log_mstar``) for observed spectra under an emulator, by emcee.

    The likelihood is Gaussian with the spectrum's own errors over its unmasked
    pixels, plus, with ``emulator_error``, the emulator's validation error as a
    fractional variance (taken at the starting redshift).

    Args:
        emulator: a fitted :class:`~specsbi.emulators.Emulator`.
        spectrum: a :class:`~specsbi.spectra.Spectrum` or a SpectraSet (each galaxy
            in turn); resampled onto the emulator's grid if needed.
        prior: a Prior over the emulator's parameters (default: its training prior).
        init: "optimize" (redshift scan, prior search, L-BFGS through the emulator,
            walkers drawn from the inverse Fisher matrix there) or a
            :class:`~specsbi.posterior.Posterior` (e.g.
            an NPE's for the same galaxy): its draws start the walkers when it covers
            every parameter, else its redshift range narrows the scan.
        n_samples, n_walkers, n_steps, burn_in: as :func:`run_emcee`; the moves are
            emcee's differential evolution (80 %) and its snooker variant (20 %), whose
            autocorrelation times on these posteriors are about half the stretch move's.
        emulator_error: add the emulator's error to the variance.
        seed: seeds the search and the sampler.
        progress: show a progress bar over galaxies (and emcee's for one galaxy).

    Returns:
        A sample-based Posterior over the prior's parameters and ``log_mstar``, with
        the MCMC diagnostics (``converged``, ``autocorr_time``, ``acceptance_fraction``,
        the starting point and the wall time).

    Example:
        >>> post = ss.mcmc.sample(emu, obs[17], init=npe.posterior(obs[17]))  # doctest: +SKIP
        >>> post.summary()["log_mstar"]                                         # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from .posterior import Posterior
    from .spectra import SpectraSet, Spectrum

    emulator._require()
    prior = emulator.prior if prior is None else prior
    if list(prior.names) != list(emulator.prior.names):
        raise ValueError(f"the prior's parameters {prior.names} differ from the emulator's "
                         f"{emulator.prior.names}")
    if not (isinstance(init, str) and init == "optimize") and not hasattr(init, "sample"):
        raise ValueError("`init` must be 'optimize' or a Posterior (e.g. npe.posterior(x))")
    if isinstance(spectrum, Spectrum):
        spectra, single = spectrum.as_set(), True
    elif isinstance(spectrum, SpectraSet):
        spectra, single = spectrum, False
    else:
        raise ValueError("`spectrum` must be a Spectrum (obs[17]) or a SpectraSet (obs[10:20])")
    wl = emulator.physics.wavelength.cpu().numpy()
    if spectra.npix != len(wl) or not np.allclose(spectra.wavelength, wl, rtol=1e-7):
        log.info("resampling the spectra onto the emulator's grid")
        spectra = spectra.resample(wl)
    names = [*prior.names, "log_mstar"]
    draws, diags = [], []
    bar = tqdm(range(len(spectra)), disable=not progress or single, desc="mcmc", unit="gal")
    for i in bar:
        inits = init if single or isinstance(init, str) else _one(init, i)
        th, diag = _sample_one(emulator, spectra[i], prior, inits, n_samples, n_walkers,
                               n_steps, burn_in, emulator_error, seed + i,
                               progress and single)
        with torch.no_grad():
            t = torch.as_tensor(th, dtype=torch.float32, device=emulator.device)
            mstar = emulator.log_mstar(t).double().cpu()
        draws.append(torch.cat([torch.as_tensor(th), mstar[:, None]], 1).float())
        diags.append(diag)
    x = torch.as_tensor(spectra.flux)
    return Posterior(None, x[0] if single else x, names, None, samples=torch.stack(draws),
                     diagnostics=diags[0] if single else {"per_observation": diags},
                     single=single)


def _one(post: Any, i: int) -> Any:
    """The i-th observation of a batch Posterior, as a one-observation draw source."""

    class _Row:
        names = post.names

        @staticmethod
        def sample(n: int) -> np.ndarray:
            return post.sample(n)[i]

    return _Row()


def _sample_one(emulator, spec, prior, init, n_samples, n_walkers, n_steps, burn_in,
                emulator_error, seed, progress) -> tuple[np.ndarray, dict[str, Any]]:
    t0 = time.perf_counter()
    dev = emulator.device
    good = ~spec.mask & np.isfinite(spec.err) & (spec.err > 0)
    if good.sum() < 10:
        raise ValueError(f"the spectrum has only {int(good.sum())} unmasked pixels")
    idx = torch.as_tensor(np.nonzero(good)[0], device=dev)
    flux = torch.as_tensor(spec.flux[good], dtype=torch.float64, device=dev)
    var = torch.as_tensor(spec.err[good], dtype=torch.float64, device=dev) ** 2
    d = len(prior.names)
    n_walkers = n_walkers or max(32, 4 * d)
    draws = None
    if not isinstance(init, str):
        draws = np.asarray(init.sample(max(4 * n_walkers, 256)), dtype=np.float64)
    z_window = None
    if draws is not None and "redshift" in init.names:
        z = draws[:, list(init.names).index("redshift")]
        z_window = (float(np.min(z)), float(np.max(z)))

    def like(theta: Tensor, frac: Tensor | None) -> Tensor:
        return gaussian_log_likelihood(emulator(theta)[:, idx], flux, var, frac)

    if draws is not None and set(prior.names) <= set(init.names):
        cols = [list(init.names).index(n) for n in prior.names]
        start, how = draws[:, cols], "posterior draws"
        z0 = float(np.median(start[:, prior.names.index("redshift")]))
    else:
        best, cov = _optimize(emulator, prior, lambda t: like(t, None), flux, var, idx,
                              z_window, seed)
        rng = np.random.default_rng(seed)
        start = rng.multivariate_normal(best, cov, size=4 * n_walkers)
        start = np.clip(start, prior.low.double().numpy(), prior.high.double().numpy())
        start[0] = best
        how, z0 = "optimize", float(best[prior.names.index("redshift")])
    frac = None
    if emulator_error:
        with torch.no_grad():
            frac = emulator.fractional_error(torch.tensor([z0], device=dev))[0, idx]
    log_post = log_posterior(lambda t: like(t, frac), prior)
    # float64 θ: the redshift's posterior width (~1e-5) is a few hundred float32 steps
    import emcee

    moves = [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)]
    theta, diag = run_emcee(torch_log_prob(log_post, dev, torch.float64), start, n_samples,
                            n_walkers, n_steps, burn_in, seed, progress, select="first",
                            moves=moves)
    diag.update({"init": how, "start": start[0].tolist(),
                 "wall_s": time.perf_counter() - t0})
    return theta, diag


def _optimize(emulator, prior, like, flux, var, idx, z_window, seed
              ) -> tuple[np.ndarray, np.ndarray]:
    """A quick maximum-likelihood start: a redshift scan with the amplitude profiled out,
    a prior search at that redshift, L-BFGS through the emulator, and the Fisher matrix.

    Returns the optimum (d,) and a covariance (d, d) for the walkers' ball.
    """
    names = prior.names
    lo, hi = prior.low.double(), prior.high.double()
    j_z, j_m = names.index("redshift"), names.index("log_mformed")
    gen = torch.Generator().manual_seed(seed)
    z_lo, z_hi = float(lo[j_z]), float(hi[j_z])
    if z_window is not None:  # an NPE's redshift range, with a margin
        pad = max(0.2 * (z_window[1] - z_window[0]), 5e-4)
        z_lo, z_hi = max(z_lo, z_window[0] - pad), min(z_hi, z_window[1] + pad)
    wl = emulator.physics.wavelength
    step = 1.5 * float(torch.log(wl[1] / wl[0]))  # 1.5 observed pixels
    z_grid = (torch.exp(torch.arange(math.log1p(z_lo), math.log1p(z_hi) + step, step,
                                     dtype=torch.float64)) - 1).clamp(z_lo, z_hi)
    with torch.no_grad():
        # 1. redshift scan: rest spectra of a few prior shapes, shifted to every z
        shapes = lo + (hi - lo) * torch.rand(16, len(names), generator=gen, dtype=torch.float64)
        rest = emulator.log_rest(shapes)
        chi = torch.cat([_profile_chi2(emulator.physics(
            rest.repeat_interleave(len(zs), 0), zs.repeat(len(rest)),
            torch.zeros(len(rest) * len(zs)))[:, idx], flux, var)[0].reshape(len(rest), -1)
            for zs in z_grid.split(128)], 1)
        k = int(chi.argmin())
        k_best, z_best = k // len(z_grid), float(z_grid[k % len(z_grid)])
        # 2. prior search around that redshift, the amplitude fitted exactly
        n = 1024
        t = lo + (hi - lo) * torch.rand(n, len(names), generator=gen, dtype=torch.float64)
        t[0] = shapes[k_best]
        jitter = 2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1
        t[:, j_z] = (z_best + step * (1 + z_best) * jitter).clamp(lo[j_z], hi[j_z])
        m = emulator(t)[:, idx].double()
        chi, amp = _profile_chi2(m, flux, var)
        t[:, j_m] = (t[:, j_m] + torch.log10(amp)).clamp(lo[j_m], hi[j_m])
        top = t[torch.argsort(chi)[:3]]
    # 3. L-BFGS through the emulator on the best three, in the prior box mapped to ℝ^d
    box = lambda u: lo + (hi - lo) * torch.sigmoid(u)  # noqa: E731
    results = []
    for t0 in top:
        u = torch.logit(((t0 - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)).requires_grad_(True)
        opt = torch.optim.LBFGS([u], lr=1, max_iter=100, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure(u=u, opt=opt):
            opt.zero_grad()
            loss = -like(box(u)[None])[0]
            loss.backward()
            return loss

        try:
            opt.step(closure)
        except RuntimeError:  # a failed line search keeps the last point
            pass
        with torch.no_grad():
            results.append((float(like(box(u)[None])[0]), box(u).detach()))
    best = max(results, key=lambda r: r[0])[1]
    # 4. the walkers' ball: the inverse Fisher matrix JᵀWJ at the optimum
    jac = _jacobian(lambda t: emulator(t[None])[0, idx].double(), best.detach())
    fisher = (jac.T / var) @ jac
    width = (hi - lo).numpy()
    try:
        cov = np.linalg.inv(fisher.numpy() + np.diag(1e-12 / width**2))
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        cov = np.diag((1e-3 * width) ** 2)
    return best.numpy(), cov


@torch.no_grad()
def _jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """(n, d) Jacobian of ``fn`` at ``x`` (d,) by forward-mode AD: d passes, not n."""
    import torch.autograd.forward_ad as fwd

    cols = []
    for k in range(len(x)):
        with fwd.dual_level(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch's jvp rules, loaded once
            out = fn(fwd.make_dual(x, torch.eye(len(x), dtype=x.dtype)[k]))
            cols.append(fwd.unpack_dual(out).tangent)
    return torch.stack(cols, 1)


def _profile_chi2(model: Tensor, flux: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """χ² of flux against amplitude × model with the best amplitude, and that amplitude."""
    w = 1 / var
    mf = (model * flux * w).sum(1)
    mm = (model * model * w).sum(1).clamp(min=1e-300)
    amp = (mf / mm).clamp(min=1e-30)
    return (flux**2 * w).sum() - mf * amp, amp
