"""MCMC with emcee for likelihood-based posteriors: learned likelihoods (NLE) and emulators.

:func:`run_emcee` is the sampler both paths share: it runs until the chain has
converged by emcee's autocorrelation-time rule (or a maximum number of steps, with a
warning). :func:`log_posterior` puts a likelihood and a prior together. :func:`sample`
is the emulator path: the Gaussian likelihood of an observed spectrum under an
emulator's prediction (:mod:`specsbi.emulator_likelihood`), started from a quick
optimisation (a redshift scan, a prior search, then gradient steps through the
differentiable emulator) or from an NPE posterior, returning the same
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
    adaptive: bool = True,
    check_every: int = 100,
    tau_factor: float = 50.0,
    tau_rtol: float = 0.01,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Sample ``log_prob`` with emcee's ensemble sampler, vectorised over walkers.

    With ``adaptive`` (the default) the chain runs until it has converged, by emcee's
    documented rule, checked every ``check_every`` steps: the integrated
    autocorrelation time τ of every parameter, estimated on the chain after the
    burn-in, is shorter than ``1 / tau_factor`` of that chain and changed by less
    than ``tau_rtol`` since the previous check. ``n_steps`` is then the maximum;
    reaching it unconverged logs a warning and sets ``converged`` to False.

    Args:
        log_prob: (W, d) → (W,) log density (−inf outside the support).
        init: (k, d) candidate starting points (prior draws, a ball around an
            optimum, posterior draws).
        n_samples: draws to return, thinned evenly from the post-burn-in chain.
        n_walkers: walkers (default max(32, 4 d)).
        n_steps: steps per walker: the maximum with ``adaptive``, else the length.
        burn_in: fraction of the chain discarded (from the draws and from τ).
        seed: seeds emcee's moves.
        progress: show emcee's progress bar (its total is the maximum).
        select: which candidates start: "best" (the ``n_walkers`` of highest
            density: for broad candidates such as prior draws) or "first" (the first
            ``n_walkers`` of finite density: for a ball or posterior draws, whose
            spread should be kept).
        moves: emcee moves (default: its stretch move).
        adaptive: stop once converged (see above) instead of running ``n_steps``.
        check_every: steps between convergence checks.
        tau_factor: the kept chain must be longer than ``tau_factor`` τ.
        tau_rtol: largest relative change of τ between checks that counts as stable
            (emcee's documented 1 %: at 3 % chains of the test galaxies stopped while
            their τ estimate was still a fifth below its long-chain value).

    Returns:
        ``(samples (n_samples, d), diagnostics)``: the acceptance fraction, τ per
        parameter, the effective sample size, the steps run and discarded, and
        ``converged`` (kept chain longer than ``tau_factor`` τ, τ stable when
        ``adaptive``, acceptance in [0.1, 0.9]); a warning is logged when not converged.

    Raises:
        ValueError: bad settings, or too few starting points of finite density.

    Example:
        >>> prec = np.array([[2.0, -1.0], [-1.0, 2.0]])
        >>> log_prob = lambda x: -0.5 * np.einsum("ni,ij,nj->n", x, prec, x)
        >>> init = np.random.default_rng(0).normal(size=(64, 2))
        >>> draws, diag = run_emcee(log_prob, init, n_samples=500, n_steps=20_000)
        >>> draws.shape, diag["converged"], diag["n_steps"] < 20_000
        ((500, 2), True, True)
    """
    import emcee

    if select not in ("best", "first"):
        raise ValueError(f"`select` must be 'best' or 'first'; got {select!r}")
    if not 0 <= burn_in < 1:
        raise ValueError(f"`burn_in` must lie in [0, 1); got {burn_in}")
    if not (isinstance(n_steps, int) and n_steps >= 1):
        raise ValueError(f"`n_steps` must be a positive integer; got {n_steps!r}")
    if not (isinstance(check_every, int) and check_every >= 1):
        raise ValueError(f"`check_every` must be a positive integer; got {check_every!r}")
    if not (tau_factor > 0 and tau_rtol > 0):
        raise ValueError(f"`tau_factor` and `tau_rtol` must be positive; got {tau_factor}, "
                         f"{tau_rtol}")
    init = np.asarray(init, dtype=np.float64)
    if init.ndim != 2:
        raise ValueError(f"`init` must be (k, d) starting points; got shape {init.shape}")
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
        keep = np.argsort(-np.where(finite, lp, -np.inf))[:n_walkers]
    else:
        keep = np.nonzero(finite)[0][:n_walkers]
    sampler = emcee.EnsembleSampler(n_walkers, d, log_prob, vectorize=True, moves=moves)
    sampler.random_state = np.random.RandomState(seed).get_state()
    state = emcee.State(init[keep], log_prob=lp[keep])
    stable, old = False, None
    for _ in sampler.sample(state, iterations=n_steps, progress=progress):
        it = sampler.iteration
        if not adaptive or it % check_every or it == n_steps:
            continue
        tau = _autocorr_time(sampler.get_chain(discard=int(burn_in * it)))
        stable = old is not None and bool(np.all(np.abs(tau - old) < tau_rtol * tau))
        if stable and np.all(it - int(burn_in * it) > tau_factor * tau):
            break
        old = tau
    steps = sampler.iteration
    burn = int(burn_in * steps)
    tau = _autocorr_time(sampler.get_chain(discard=burn))
    if adaptive and steps == n_steps:  # the last check, at the maximum
        stable = old is not None and bool(np.all(np.abs(tau - old) < tau_rtol * tau))
    accept = float(np.mean(sampler.acceptance_fraction))
    kept = steps - burn
    converged = bool(np.all(kept > tau_factor * tau) and (stable or not adaptive)
                     and 0.1 <= accept <= 0.9)
    diag = {
        "acceptance_fraction": accept,
        "autocorr_time": tau.tolist(),
        "effective_samples": float(n_walkers * kept / np.max(tau)),
        "n_walkers": n_walkers,
        "n_steps": steps,
        "max_steps": n_steps if adaptive else steps,
        "burn_in_steps": burn,
        "converged": converged,
    }
    if not converged:
        why = (f"stopped at the maximum of {steps} steps" if adaptive
               else f"ran {steps} steps")
        log.warning("MCMC may not have converged (%s): acceptance %.2f, τ = %s over %d kept "
                    "steps (want > %g τ%s); raise n_steps", why, accept,
                    np.round(tau, 1).tolist(), kept, tau_factor,
                    ", τ stable between checks" if adaptive else "")
    chain = sampler.get_chain(discard=burn, flat=True)
    idx = np.linspace(0, len(chain) - 1, n_samples).round().astype(int)
    rng = np.random.default_rng(seed)
    return chain[rng.permutation(idx)], diag


def _autocorr_time(chain: np.ndarray) -> np.ndarray:
    """emcee's integrated autocorrelation time per parameter of a (steps, walkers, d) chain,
    without its warning about short chains (run_emcee words its own)."""
    import emcee

    quiet = logging.getLogger("emcee.autocorr")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(emcee.autocorr.integrated_time(chain, quiet=True), dtype=float)
    finally:
        quiet.level = level


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
_ERROR_MODES = {True: "fixed", False: None, "fixed": "fixed", "diagonal": "diagonal",
                "model": "model", "none": None}


def sample(emulator: Any, spectrum: Any, prior: Any = None, init: Any = "optimize",
           n_samples: int = 1000, n_walkers: int | None = None, n_steps: int = 50_000,
           burn_in: float = 0.3, emulator_error: bool | str = True, seed: int = 0,
           progress: bool = True, moves: Any = None, reparametrize: bool = False,
           compile: bool = False, check_every: int = 100, threads: int | None = 1) -> Any:
    """Posterior of θ (and ``log_mstar``) for observed spectra under an emulator, by emcee.

    The likelihood is Gaussian with the spectrum's own errors over its unmasked
    pixels, plus, with ``emulator_error``, the emulator's validation error (taken at
    the starting redshift): a fractional variance per pixel and the error's correlated
    modes (:meth:`~specsbi.emulators.Emulator.error_model`), whose shared patterns
    along the spectrum per-pixel variances alone would treat as independent, and so
    trust too much. The chain runs until it
    has converged (every parameter's autocorrelation time τ, after the burn-in, below
    1/50 of the chain and stable to 1 % between checks) or ``n_steps``, whichever
    comes first; the diagnostics say which (``converged``) and a warning is logged when
    the maximum is reached first.

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
        n_samples: draws kept per galaxy, thinned evenly from the chain after burn-in.
        n_walkers: walkers (default max(32, 4 d)).
        n_steps: the most steps per walker (the chain stops earlier once converged).
        burn_in: fraction of the chain discarded (from the draws and from τ).
        emulator_error: add the emulator's error to the covariance: True or "fixed"
            (its fractional error × the model at the start, per pixel and along its
            correlated modes: a covariance that does not move with θ), "diagonal"
            (the same without the modes), "model" (per pixel × the current model, with
            the normalisation that brings), or False.
        seed: seeds the search and the sampler.
        progress: show a progress bar over galaxies (and emcee's for one galaxy).
        moves: emcee moves (default: differential evolution 80 %, its snooker variant
            20 %; on test galaxies their autocorrelation time is a third of the stretch
            move's, two thirds of differential evolution alone's).
        reparametrize: let the walkers move in u = logit of the position in the prior
            box (θ = low + (high − low) σ(u), the log Jacobian added: the same
            posterior). It shortened τ by a fifth on a galaxy whose posterior is in
            the prior's interior and lengthened it 3× on one against a wall (whose
            edge becomes a long tail in u), so it is off by default.
        compile: compile the emulator and the likelihood with ``torch.compile`` (once
            per process, 10-40 s on a CPU; then a few times faster per step): for
            more than a galaxy or two.
        check_every: steps between convergence checks.
        threads: torch threads while the chains run, restored afterwards (None: leave
            torch's setting). A chain evaluates a few dozen spectra at a time, where
            more threads only add synchronisation: with 2 threads one galaxy's chain
            took the same wall time on an idle 2-core machine and 8× longer beside
            another busy process.

    Returns:
        A sample-based Posterior over the prior's parameters and ``log_mstar``, with
        the MCMC diagnostics (``converged``, ``autocorr_time`` in the sampled
        coordinates, ``acceptance_fraction``, ``n_steps`` run, the starting point,
        ``wall_s`` and ``cpu_s``).

    Raises:
        ValueError: an unfitted emulator, a prior over other parameters, a bad
            ``init`` or ``emulator_error``, a spectrum with fewer than 10 good pixels.

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
    if not isinstance(emulator_error, (bool, str)) or emulator_error not in _ERROR_MODES:
        raise ValueError("`emulator_error` must be True, False, 'fixed', 'diagonal' or "
                         f"'model'; got {emulator_error!r}")
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
    settings = {"n_samples": n_samples, "n_walkers": n_walkers or max(32, 4 * len(prior.names)),
                "n_steps": n_steps, "burn_in": burn_in,
                "error": _ERROR_MODES[emulator_error], "moves": moves,
                "reparametrize": reparametrize, "compile": compile,
                "check_every": check_every}
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"`threads` must be a positive integer or None; got {threads!r}")
    draws, diags = [], []
    bar = tqdm(range(len(spectra)), disable=not progress or single, desc="mcmc", unit="gal")
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for i in bar:
            inits = init if single or isinstance(init, str) else _one(init, i)
            th, diag = _sample_one(emulator, spectra[i], prior, inits, seed + i,
                                   progress and single, **settings)
            with torch.no_grad():
                t = torch.as_tensor(th, dtype=torch.float32, device=emulator.device)
                mstar = emulator.log_mstar(t).double().cpu()
            draws.append(torch.cat([torch.as_tensor(th), mstar[:, None]], 1).float())
            diags.append(diag)
    finally:
        torch.set_num_threads(before)
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


def _sample_one(emulator: Any, spec: Any, prior: Any, init: Any, seed: int, progress: bool,
                n_samples: int, n_walkers: int, n_steps: int, burn_in: float,
                error: str | None, moves: Any, reparametrize: bool, compile: bool,
                check_every: int) -> tuple[np.ndarray, dict[str, Any]]:
    import emcee

    from .emulator_likelihood import BoxTransform, EmulatorLikelihood, optimize_start

    t0, c0 = time.perf_counter(), time.process_time()
    dev = emulator.device
    good = ~spec.mask & np.isfinite(spec.err) & (spec.err > 0)
    if good.sum() < 10:
        raise ValueError(f"the spectrum has only {int(good.sum())} unmasked pixels")
    idx = torch.as_tensor(np.nonzero(good)[0], device=dev)
    flux = torch.as_tensor(spec.flux[good], dtype=torch.float64, device=dev)
    var = torch.as_tensor(spec.err[good], dtype=torch.float64, device=dev) ** 2
    draws = None
    if not isinstance(init, str):
        draws = np.asarray(init.sample(max(4 * n_walkers, 256)), dtype=np.float64)
    lo, hi = prior.low.double().numpy(), prior.high.double().numpy()
    if draws is not None and set(prior.names) <= set(init.names):
        cols = [list(init.names).index(n) for n in prior.names]
        start, how = draws[:, cols], "posterior draws"
    else:
        z_window = None
        if draws is not None and "redshift" in init.names:
            z = draws[:, list(init.names).index("redshift")]
            z_window = (float(np.min(z)), float(np.max(z)))
        best, cov = optimize_start(
            emulator, prior,
            lambda t: gaussian_log_likelihood(emulator(t)[:, idx], flux, var),
            flux, var, idx, z_window, seed)
        start, how = _ball(best, cov, lo, hi, 4 * n_walkers, seed), "optimize"
    z0 = float(np.median(start[:, prior.names.index("redshift")]))
    frac = reference = modes = None
    if error is not None:
        with torch.no_grad():
            if error == "fixed":
                frac, modes = emulator.error_model(z0)
            else:
                frac = emulator.fractional_error(
                    torch.tensor([z0], dtype=torch.float64, device=dev))[0]
            if error != "model":
                ref = torch.as_tensor(start[:1], dtype=torch.float64, device=dev)
                reference = emulator(ref)[0]
    like = EmulatorLikelihood(emulator, spec.flux, spec.err, good, frac, reference, modes,
                              chunk=-(-n_walkers // 2), compile=compile)
    box = BoxTransform(prior.low, prior.high) if reparametrize else None
    # float64 θ: the redshift's posterior width (~1e-5) is a few hundred float32 steps
    x0 = start if box is None else box.to_u(torch.as_tensor(start)).numpy()
    if moves is None:
        moves = [(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)]
    x, diag = run_emcee(like.log_density(prior, box), x0, n_samples, n_walkers, n_steps,
                        burn_in, seed, progress, select="first", moves=moves,
                        check_every=check_every)
    theta = x if box is None else box.to_theta(torch.as_tensor(x)).numpy()
    diag.update({"init": how, "start": start[0].tolist(), "emulator_error": error,
                 "sampled": "logit of the prior box" if box is not None else "θ",
                 "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
    return theta, diag


def _ball(best: np.ndarray, cov: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int,
          seed: int) -> np.ndarray:
    """``n`` starting points from N(best, cov) inside the box (redrawn, then clipped), the
    first of them ``best``."""
    rng = np.random.default_rng(seed)
    pts = rng.multivariate_normal(best, cov, size=8 * n)
    inside = np.all((pts > lo) & (pts < hi), axis=1)
    pts = np.concatenate([pts[inside], pts[~inside]])[:n]
    pts = np.clip(pts, lo, hi)
    pts[0] = best
    return pts
