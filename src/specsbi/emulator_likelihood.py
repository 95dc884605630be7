"""`EmulatorLikelihood`: one observed spectrum's Gaussian likelihood under an emulator.

What :func:`specsbi.mcmc.sample` evaluates millions of times: ln N(flux | emulator(θ),
σ² + emulator error) over the spectrum's good pixels (the emulator error diagonal, or
diagonal plus a few correlated modes, applied through the Woodbury identity), batched
in chunks of a fixed size (so ``torch.compile`` compiles one shape per emulator and
process), masked pixels weighted by zero rather than gathered (every spectrum has the
same shapes).
Also here: :class:`BoxTransform`, the exact bijection between ℝ^d and the prior's
box in which the chain moves, and :func:`optimize_start`, the quick maximum-likelihood
start (a redshift scan, a prior search, L-BFGS through the emulator, the Fisher
matrix).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["BoxTransform", "EmulatorLikelihood", "optimize_start"]

log = logging.getLogger(__name__)

_LOG_2PI = math.log(2 * math.pi)
_COMPILED: dict[str, Callable[..., Tensor]] = {}  # one torch.compile per kernel and process


class BoxTransform:
    """θ = low + (high − low) σ(u): an exact bijection from ℝ^d onto the open box.

    Sampling u instead of θ, with the log Jacobian added to the density, leaves the
    posterior of θ unchanged and takes the walls away: a walker near an edge of the
    prior (no dust, the oldest ages) moves as freely as one in the middle.

    Args:
        low, high: (d,) the box's corners.

    Example:
        >>> box = BoxTransform(torch.zeros(2), torch.tensor([1.0, 10.0]))
        >>> theta = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
        >>> torch.allclose(box.to_theta(box.to_u(theta)), theta)
        True
    """

    def __init__(self, low: Tensor, high: Tensor) -> None:
        self.low = torch.as_tensor(low, dtype=torch.float64)
        self.width = torch.as_tensor(high, dtype=torch.float64) - self.low
        if self.low.ndim != 1 or self.low.shape != self.width.shape or (self.width <= 0).any():
            raise ValueError("BoxTransform needs (d,) corners with low < high")
        self._log_width = float(torch.log(self.width).sum())

    def to_theta(self, u: Tensor) -> Tensor:
        """(B, d) unbounded coordinates → (B, d) θ inside the box."""
        return self.low + self.width * torch.sigmoid(u)

    def to_u(self, theta: Tensor, inset: float = 1e-9) -> Tensor:
        """(B, d) θ → u; points on or beyond a wall are moved ``inset`` × the width inside."""
        x = ((theta.double() - self.low) / self.width).clamp(inset, 1 - inset)
        return torch.logit(x)

    def log_det(self, u: Tensor) -> Tensor:
        """ln |dθ/du| (B,): Σ ln(high − low) + ln σ(u) + ln σ(−u)."""
        # = −|u| − 2 ln(1 + e^−|u|); torch's logsigmoid runs threaded even on a few
        # numbers, which costs milliseconds a call on a busy machine
        a = u.abs()
        return self._log_width - (a + 2 * torch.log1p(torch.exp(-a))).sum(-1)


class EmulatorLikelihood:
    """ln N(flux | emulator(θ), σ² + emulator error²) of one spectrum: θ (B, d) → (B,).

    Args:
        emulator: a fitted :class:`~specsbi.emulators.Emulator`.
        flux, err: (npix,) the observed spectrum and its 1σ errors on the emulator's grid.
        good: (npix,) bool, the pixels that count (masked and zero-error ones do not).
        frac_err: (npix,) the emulator's fractional 1σ error, or None for none.
        reference: (npix,) a model spectrum at which the emulator-error variance
            (frac_err · reference)² is frozen; None lets it follow the model,
            (frac_err · emulator(θ))², with its normalisation term.
        modes: (k, npix) correlated fractional error modes e_k (see
            :meth:`~specsbi.emulators.Emulator.error_model`), or None. They need
            ``reference``: the covariance is then D + B Bᵀ with D = σ² + (frac_err ·
            reference)² and B = reference · e_k, and the quadratic form and determinant
            come from the Woodbury identity (k extra dot products per spectrum).
        chunk: rows per emulator call; calls are padded to whole chunks when compiled.
        compile: run the emulator and the likelihood through ``torch.compile``
            (one compilation per chunk size and process, 10-40 s on a CPU; then a few
            times faster per call).

    All arithmetic after the emulator is float64; θ should be float64 so the redshift
    keeps its precision.
    """

    def __init__(self, emulator: Any, flux: np.ndarray, err: np.ndarray, good: np.ndarray,
                 frac_err: Tensor | None = None, reference: Tensor | None = None,
                 modes: Tensor | None = None, chunk: int = 16, compile: bool = False) -> None:
        dev, f64 = emulator.device, torch.float64
        good = np.asarray(good, bool)
        if good.sum() < 10:
            raise ValueError(f"the spectrum has only {int(good.sum())} unmasked pixels")
        self.emulator, self.chunk, self.compiled = emulator, int(chunk), bool(compile)
        self.good = torch.as_tensor(good, dtype=f64, device=dev)
        self.flux = torch.as_tensor(np.where(good, flux, 0.0), dtype=f64, device=dev)
        self.var = torch.as_tensor(np.where(good, err, 1.0), dtype=f64, device=dev) ** 2
        self.frac2 = None if frac_err is None else frac_err.to(dev, f64) ** 2
        self.proj = None
        if modes is not None and len(modes) and reference is None:
            raise ValueError("correlated error `modes` need a `reference` model spectrum")
        if self.frac2 is not None and reference is None:
            self.mode = "model"
        else:
            self.mode = "fixed"
            ref = None if reference is None else reference.detach().to(dev, f64)
            v = self.var if self.frac2 is None else self.var + self.frac2 * ref**2
            self.weight = self.good / v
            self.const = float(-0.5 * ((torch.log(v) + _LOG_2PI) * self.good).sum())
            if modes is not None and len(modes):
                # Woodbury: (D + BBᵀ)⁻¹ = D⁻¹ − D⁻¹B C⁻¹ BᵀD⁻¹ with C = I + BᵀD⁻¹B = LLᵀ,
                # so rᵀ(D + BBᵀ)⁻¹r = rᵀD⁻¹r − |L⁻¹BᵀD⁻¹r|² and ln|D + BBᵀ| = ln|D| + ln|C|
                b = modes.to(dev, f64) * ref * self.good  # Bᵀ: (k, npix)
                bw = b * self.weight
                chol = torch.linalg.cholesky(torch.eye(len(b), dtype=f64, device=dev)
                                             + bw @ b.T)
                # float32, like the emulator's flux: the projection is the likelihood's
                # largest matrix product, and its rounding (~1e-6 nats) is far below the
                # flux's own
                self.proj = torch.linalg.solve_triangular(chol, bw, upper=False).float()
                self.const -= float(torch.log(torch.diagonal(chol)).sum())
        if self.compiled:
            with torch.no_grad():  # an eager call first: the emulator caches python ints
                emulator(torch.as_tensor(emulator.prior.mean, dtype=f64, device=dev)[None])
        self._fn = _kernel(self.mode, self.compiled)
        self._tried = not self.compiled  # a compiled kernel's first call may fail

    @torch.no_grad()
    def __call__(self, theta: Tensor) -> Tensor:
        """(B, d) float64 θ inside the prior → (B,) float64 log likelihood."""
        n = len(theta)
        if not self.compiled:
            return self._eval(theta)
        pad = -n % self.chunk
        if pad:
            theta = torch.cat([theta, theta[-1:].expand(pad, -1)])
        chunks = theta.split(self.chunk)
        if not self._tried:
            self._tried = True
            try:
                first = self._eval(chunks[0])
            except Exception as err:  # no C++ compiler, an unsupported op, ...: run eagerly
                log.warning("torch.compile failed (%s: %s); the likelihood runs uncompiled",
                            type(err).__name__, str(err).splitlines()[0] if str(err) else "")
                self.compiled, self._fn = False, _kernel(self.mode, False)
                return self._eval(theta[:n])
            return torch.cat([first, *(self._eval(t) for t in chunks[1:])])[:n]
        return torch.cat([self._eval(t) for t in chunks])[:n]

    def _eval(self, theta: Tensor) -> Tensor:
        if self.mode == "fixed":
            return self._fn(self.emulator, theta, self.flux, self.weight, self.proj) + self.const
        return self._fn(self.emulator, theta, self.flux, self.var, self.good, self.frac2)

    def log_density(self, prior: Any, transform: BoxTransform | None = None
                    ) -> Callable[[np.ndarray], np.ndarray]:
        """The log posterior for emcee: (W, d) numpy → (W,), in u if ``transform`` is given
        (its log Jacobian added), else in θ; −inf where the prior is, without running the
        emulator there."""
        dev = self.emulator.device

        @torch.no_grad()
        def fn(x: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(np.atleast_2d(x), dtype=torch.float64)
            theta = x if transform is None else transform.to_theta(x)
            lp = prior.log_prob(theta).double()
            if transform is not None:
                lp = lp + transform.log_det(x)
            ok = torch.isfinite(lp)
            out = torch.full_like(lp, -math.inf)
            if ok.all():
                out = lp + self(theta.to(dev)).cpu()
            elif ok.any():
                out[ok] = lp[ok] + self(theta[ok].to(dev)).cpu()
            return out.numpy()

        return fn


def _fixed(emulator: Any, theta: Tensor, flux: Tensor, weight: Tensor,
           proj: Tensor | None) -> Tensor:
    """−½ rᵀC⁻¹r, r = flux − model: the covariance C fixed (diagonal weights w, and the
    Woodbury projection of its low-rank part when given); the caller adds −½ ln|2πC|."""
    r = flux - emulator(theta).double()
    quad = (r**2 * weight).sum(-1)
    if proj is not None:
        quad = quad - ((r.to(proj.dtype) @ proj.T).double() ** 2).sum(-1)
    return -0.5 * quad


def _model(emulator: Any, theta: Tensor, flux: Tensor, var: Tensor, good: Tensor,
           frac2: Tensor) -> Tensor:
    """ln N with the variance var + frac² model², normalisation included, good pixels only."""
    m = emulator(theta).double()
    v = var + frac2 * m**2
    return -0.5 * ((((flux - m) ** 2) / v + torch.log(v) + _LOG_2PI) * good).sum(-1)


def _kernel(mode: str, compile_: bool) -> Callable[..., Tensor]:
    fn = _fixed if mode == "fixed" else _model
    if not compile_:
        return fn
    if mode not in _COMPILED:
        log.info("compiling the emulator likelihood with torch.compile (once per process)")
        _COMPILED[mode] = torch.compile(fn, dynamic=False)
    return _COMPILED[mode]


# --------------------------------------------------------------- the quick start
def optimize_start(emulator: Any, prior: Any, like: Callable[[Tensor], Tensor],
                   flux: Tensor, var: Tensor, idx: Tensor,
                   z_window: tuple[float, float] | None, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A quick maximum-likelihood start: a redshift scan with the amplitude profiled out,
    a prior search at that redshift, L-BFGS through the emulator, and the Fisher matrix.

    Args:
        emulator, prior: as :func:`specsbi.mcmc.sample`.
        like: θ (B, d) → (B,) log likelihood, differentiable (no emulator error).
        flux, var, idx: the good pixels' flux and variance (n,) and their indices.
        z_window: a redshift range to scan (e.g. an NPE's), or None for the prior's.
        seed: seeds the prior search.

    Returns:
        The optimum (d,) and a covariance (d, d) for the walkers' ball.
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
    box = BoxTransform(lo, hi)
    results = []
    for t0 in top:
        u = box.to_u(t0[None], inset=1e-6)[0].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([u], lr=1, max_iter=100, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure(u=u, opt=opt):
            opt.zero_grad()
            loss = -like(box.to_theta(u[None]))[0]
            loss.backward()
            return loss

        try:
            opt.step(closure)
        except RuntimeError:  # a failed line search keeps the last point
            pass
        with torch.no_grad():
            theta = box.to_theta(u[None])
            results.append((float(like(theta)[0]), theta[0].detach()))
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
