"""Standard SBI problems: C2ST of specsbi's posteriors and of sbi's NPE against references.

Three problems as defined in sbibm (Lueckmann et al. 2021); simulators, likelihoods
and reference posteriors are written here (nothing is downloaded):

  gaussian_linear  θ ∈ R^10 ~ N(0, 0.1 I), x ~ N(θ, 0.1 I). Reference: the exact
                   posterior N(x/2, 0.05 I); checked by regressing θ on x over 10^6
                   joint draws (slope I/2, residual covariance 0.05 I).
  two_moons        θ ~ U(-1, 1)^2; x = (r cos a + 0.25, r sin a) + (-|θ1+θ2|/√2,
                   (θ2-θ1)/√2), a ~ U(-π/2, π/2), r ~ N(0.1, 0.01). Reference: exact
                   draws (draw a, r; invert the piecewise-linear map with either sign
                   of θ1+θ2, |det| = 1; keep those inside the prior); checked by C2ST
                   against draws from the exact likelihood on a 1000² grid.
  slcp             θ ~ U(-3, 3)^5; x ∈ R^8 = 4 iid 2-D Gaussian draws with mean
                   (θ1, θ2), scales s1 = θ3², s2 = θ4², correlation tanh(θ5).
                   Reference: emcee on the exact likelihood in the orthant θ3, θ4 > 0,
                   then random signs of θ3 and θ4 (the likelihood depends on them only
                   through θ3², θ4²: four mirror modes). Checked by C2ST between two
                   independent chains (one started around the true θ, one from
                   likelihood-weighted prior draws anywhere in the orthant).

For each problem, --n-sims simulations (one seed) train every method: specsbi's
PosteriorEstimator (variant "dependent" and "augmented", package defaults: nsf, unless
--flow/--hidden/--transforms are given) and sbi's NPE with density_estimator "maf" and "nsf"
(sbi defaults otherwise). For each of --n-obs observations (θ drawn from the prior),
C2ST accuracy (sbi.utils.metrics.c2st: MLP classifier with two hidden layers of 10·dim,
5-fold CV, z-scored by the reference; 0.5 = indistinguishable) between --n-samples
posterior draws and as many reference draws. "floor" is the C2ST between two
independent reference draws: what a perfect method would score at this sample size.

Run from the repository root; prints one JSON object to stdout, writes it to --out,
and a Markdown table to stderr:

    nice -n 10 python benchmarks/standard_problems.py           # 21 to 40 min on 2 busy cores
    nice -n 10 python benchmarks/standard_problems.py --quick   # smoke test, about 2 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from specsbi import PosteriorEstimator, Prior
from specsbi.training import TrainConfig

SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------ problems
class GaussianLinear:
    name, dim, x_dim = "gaussian_linear", 10, 10
    var = 0.1  # prior and noise variance

    def prior_sample(self, n, rng):
        return rng.normal(0, math.sqrt(self.var), (n, self.dim))

    def simulate(self, theta, rng):
        return theta + rng.normal(0, math.sqrt(self.var), theta.shape)

    def reference(self, x, n, rng, theta_true, quick, run=0):
        """Exact: precision 1/0.1 + 1/0.1 = 20, so N(x/2, 0.05 I)."""
        return x / 2 + rng.normal(0, math.sqrt(self.var / 2), (n, self.dim)), {}

    def check(self, x, theta_true, ref, rng, quick):
        """The closed form against the simulator: regress θ on x over joint draws.

        θ and x are jointly Gaussian, so E[θ | x] = B x and Cov[θ | x] = R exactly,
        with B and R estimated by least squares; the closed form says B = I/2 and
        R = 0.05 I. Also: the reference draws' mean against x/2.
        """
        m = 100_000 if quick else 1_000_000
        th = self.prior_sample(m, rng)
        xs = self.simulate(th, rng)
        coef = np.linalg.lstsq(xs, th, rcond=None)[0]  # (x_dim, dim)
        resid = th - xs @ coef
        cov = resid.T @ resid / (m - self.dim)
        exact_sd = math.sqrt(self.var / 2)
        return {"joint_draws": m,
                "max_abs_slope_error": round(float(np.abs(coef - np.eye(self.dim) / 2).max()), 4),
                "max_abs_residual_cov_error": round(float(np.abs(
                    cov - np.eye(self.dim) * self.var / 2).max()), 5),
                "reference_max_abs_mean_error_in_sd": round(float(
                    np.abs(ref.mean(0) - x / 2).max() / exact_sd), 3)}

    def box(self):  # specsbi's posterior support: the N(0, 0.1) prior to ±7.3σ
        return [(-2.3, 2.3)] * self.dim

    def sbi_prior(self):
        from torch.distributions import MultivariateNormal

        return MultivariateNormal(torch.zeros(self.dim), self.var * torch.eye(self.dim))


def _moons_offset(theta):
    a = -np.abs(theta[..., 0] + theta[..., 1]) / SQRT2
    b = (-theta[..., 0] + theta[..., 1]) / SQRT2
    return np.stack([a, b], -1)


class TwoMoons:
    name, dim, x_dim = "two_moons", 2, 2

    def prior_sample(self, n, rng):
        return rng.uniform(-1, 1, (n, 2))

    @staticmethod
    def _crescent(n, rng):
        a = rng.uniform(-math.pi / 2, math.pi / 2, n)
        r = rng.normal(0.1, 0.01, n)
        return np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], 1)

    def simulate(self, theta, rng):
        return self._crescent(len(theta), rng) + _moons_offset(theta)

    def log_likelihood(self, theta, x):
        """Exact density of x: N(r; 0.1, 0.01²) / π in polar coordinates, over the Jacobian r."""
        p = x - _moons_offset(theta)
        u, v = p[..., 0] - 0.25, p[..., 1]
        rho = np.hypot(u, v)
        lp = -0.5 * ((rho - 0.1) / 0.01) ** 2 - np.log(0.01 * math.sqrt(2 * math.pi))
        lp = lp - math.log(math.pi) - np.log(np.maximum(rho, 1e-300))
        return np.where(u > 0, lp, -np.inf)

    def reference(self, x, n, rng, theta_true, quick, run=0):
        """Exact draws: offset(θ) = x − crescent draw, then both preimages, inside the prior."""
        out, have = [], 0
        for _ in range(1000):
            q = x - self._crescent(4 * n, rng)  # = (-|θ1+θ2|/√2, (θ2-θ1)/√2)
            s = -SQRT2 * q[:, 0] * rng.choice([-1.0, 1.0], len(q))  # θ1 + θ2, either sign
            d = SQRT2 * q[:, 1]  # θ2 − θ1
            th = np.stack([(s - d) / 2, (s + d) / 2], 1)
            keep = (q[:, 0] <= 0) & np.all(np.abs(th) <= 1, 1)
            out.append(th[keep])
            have += int(keep.sum())
            if have >= n:
                break
        else:
            raise RuntimeError("two moons reference: too few draws inside the prior")
        return np.concatenate(out)[:n], {}

    def grid_reference(self, x, n, rng, cells=1000):
        """Independent check: draws from the exact likelihood on a cells² grid of the prior."""
        edges = np.linspace(-1, 1, cells + 1)
        mid = (edges[:-1] + edges[1:]) / 2
        g = np.stack(np.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 2)
        lp = self.log_likelihood(g, x[None])
        w = np.exp(lp - lp.max())
        idx = rng.choice(len(g), n, p=w / w.sum())
        return g[idx] + rng.uniform(-1, 1, (n, 2)) / cells

    def check(self, x, theta_true, ref, rng, quick):
        # the likelihood integrates to 1 over x (at the true θ): midpoint rule on a 0.0005
        # grid with a cell edge on the crescent's straight edge u = 0, out to r = 0.17 (7σ)
        h = 5e-4
        c = _moons_offset(theta_true) + np.array([0.25, 0.0])
        gx, gy = np.meshgrid(np.arange(c[0] + h / 2, c[0] + 0.17, h),
                             np.arange(c[1] - 0.17 + h / 2, c[1] + 0.17, h), indexing="ij")
        xs = np.stack([gx.ravel(), gy.ravel()], 1)
        norm = float(np.exp(self.log_likelihood(theta_true[None], xs)).sum() * h * h)
        grid = self.grid_reference(x, len(ref), rng, cells=200 if quick else 1000)
        return {"likelihood_integral_over_x": round(norm, 4),
                "reference_loglik_all_finite": bool(np.isfinite(
                    self.log_likelihood(ref, x[None])).all()),
                "_grid": grid}

    def box(self):
        return [(-1.0, 1.0)] * 2

    def sbi_prior(self):
        from sbi.utils import BoxUniform

        return BoxUniform(-torch.ones(2), torch.ones(2))


class SLCP:
    name, dim, x_dim = "slcp", 5, 8

    def prior_sample(self, n, rng):
        return rng.uniform(-3, 3, (n, 5))

    @staticmethod
    def _params(theta):
        return theta[..., :2], theta[..., 2] ** 2, theta[..., 3] ** 2, np.tanh(theta[..., 4])

    def simulate(self, theta, rng):
        m, s1, s2, rho = self._params(theta)
        e = rng.normal(size=(len(theta), 4, 2))
        x1 = m[:, None, 0] + s1[:, None] * e[..., 0]
        x2 = m[:, None, 1] + s2[:, None] * (rho[:, None] * e[..., 0]
                                            + np.sqrt(1 - rho[:, None] ** 2) * e[..., 1])
        return np.stack([x1, x2], -1).reshape(len(theta), 8)  # (x11, x12, x21, ...)

    def log_likelihood(self, theta, x):
        m, s1, s2, rho = self._params(theta)
        pts = x.reshape(*x.shape[:-1], 4, 2)
        z1 = (pts[..., 0] - m[..., None, 0]) / s1[..., None]
        z2 = (pts[..., 1] - m[..., None, 1]) / s2[..., None]
        one_m = 1 - rho**2
        quad = ((z1**2 - 2 * rho[..., None] * z1 * z2 + z2**2).sum(-1)) / one_m
        with np.errstate(divide="ignore"):
            logdet = 2 * np.log(s1 * s2) + np.log(one_m)  # log det Σ
        out = -0.5 * quad - 2 * logdet - 4 * math.log(2 * math.pi)
        return np.where(np.isfinite(out), out, -np.inf)

    def _log_post_orthant(self, th, x):
        inside = np.all(np.abs(th) <= 3, 1) & (th[:, 2] > 0) & (th[:, 3] > 0)
        out = np.full(len(th), -np.inf)
        if inside.any():
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                out[inside] = self.log_likelihood(th[inside], x)
        return out

    def reference(self, x, n, rng, theta_true, quick, run=0):
        """emcee in the orthant θ3, θ4 > 0, then random signs of θ3, θ4 (exact symmetry).

        run 0 starts the walkers around the true θ (folded into the orthant); run 1
        from likelihood-weighted prior draws anywhere in the orthant.
        """
        import emcee

        walkers, steps = (32, 2000) if quick else (64, 16_000)
        burn = steps // 4
        if run == 0:
            start = np.abs(theta_true) * [0, 0, 1, 1, 0] + theta_true * [1, 1, 0, 0, 1]
            p0 = start + 1e-2 * rng.normal(size=(walkers, 5))
        else:
            th = self.prior_sample(200_000, rng)
            th[:, 2:4] = np.abs(th[:, 2:4])
            lw = self._log_post_orthant(th, x)
            w = np.exp(lw - lw.max())
            idx = rng.choice(len(th), walkers, p=w / w.sum())
            p0 = th[idx] + 1e-3 * rng.normal(size=(walkers, 5))
        p0 = np.clip(p0, -2.999, 2.999)
        p0[:, 2:4] = np.clip(np.abs(p0[:, 2:4]), 1e-3, None)
        sampler = emcee.EnsembleSampler(walkers, 5, self._log_post_orthant, args=(x,),
                                        vectorize=True)
        sampler.random_state = np.random.RandomState(int(rng.integers(2**31))).get_state()
        sampler.run_mcmc(p0, steps)
        chain = sampler.get_chain(discard=burn, flat=True)
        tau = sampler.get_autocorr_time(discard=burn, tol=0)
        draws = chain[rng.choice(len(chain), n, replace=False)]
        draws[:, 2:4] *= rng.choice([-1.0, 1.0], size=(n, 2))
        info = {"walkers": walkers, "steps": steps, "burn_in": burn,
                "acceptance": round(float(sampler.acceptance_fraction.mean()), 3),
                "max_autocorr_steps": round(float(np.max(tau)), 1),
                "effective_draws": int(walkers * (steps - burn) / np.max(tau))}
        return draws, info

    def check(self, x, theta_true, ref, rng, quick):
        from scipy.stats import multivariate_normal

        # the likelihood against scipy's Gaussian, and its θ3, θ4 sign symmetry
        th = self.prior_sample(20, rng)
        m, s1, s2, rho = self._params(th)
        exact = np.array([multivariate_normal(
            m[i], [[s1[i] ** 2, rho[i] * s1[i] * s2[i]], [rho[i] * s1[i] * s2[i], s2[i] ** 2]],
            allow_singular=True).logpdf(x.reshape(4, 2)).sum() for i in range(len(th))])
        flipped = th * [1, 1, -1, 1, 1]
        # every mirror of the true θ sits in a mode of the reference: the orthant's share of
        # the draws, and the Mahalanobis distance of the mirrored θ from that orthant's draws
        modes = {}
        for a in (1, -1):
            for b in (1, -1):
                t = theta_true * [1, 1, 0, 0, 1] + np.abs(theta_true) * [0, 0, a, b, 0]
                sel = ref[(np.sign(ref[:, 2]) == a) & (np.sign(ref[:, 3]) == b)]
                d = t - sel.mean(0)
                maha = float(np.sqrt(d @ np.linalg.solve(np.cov(sel.T), d)))
                modes[f"{'+' if a > 0 else '-'}θ3{'+' if b > 0 else '-'}θ4"] = {
                    "share": round(len(sel) / len(ref), 3), "mahalanobis_of_true": round(maha, 2)}
        return {"max_abs_loglik_error_vs_scipy": float(np.abs(
                    self.log_likelihood(th, x[None]) - exact).max()),
                "loglik_sign_symmetric": bool(np.allclose(
                    self.log_likelihood(th, x[None]), self.log_likelihood(flipped, x[None]))),
                "modes": modes}

    def box(self):
        return [(-3.0, 3.0)] * 5

    def sbi_prior(self):
        from sbi.utils import BoxUniform

        return BoxUniform(-3 * torch.ones(5), 3 * torch.ones(5))


PROBLEMS = {p.name: p for p in (GaussianLinear(), TwoMoons(), SLCP())}


# ------------------------------------------------------------------ methods
def fit_specsbi(theta, x, problem, variant, args):
    prior = Prior({f"theta_{j}": b for j, b in enumerate(problem.box())})
    config = TrainConfig(max_epochs=args.max_epochs) if args.max_epochs else TrainConfig()
    sizes = {k: v for k, v in (("flow", args.flow), ("hidden", args.hidden),
                                ("transforms", args.transforms)) if v is not None}
    est = PosteriorEstimator(variant=variant, seed=args.seed, progress=False,
                             train_config=config, **sizes)
    est.fit(theta, x, prior=prior)

    def sample(xo, n):
        return est.posterior(xo).sample(n)

    return sample, len(est.history.val_loss)


def fit_sbi(theta, x, problem, kind, args):
    from sbi.inference import NPE
    from sbi.utils.tracking import TensorBoardTracker
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(args.seed)
    # sbi's TensorBoard logs go to a temporary folder, its convergence message to stderr
    with tempfile.TemporaryDirectory() as logs, contextlib.redirect_stdout(sys.stderr):
        writer = SummaryWriter(logs)
        inference = NPE(prior=problem.sbi_prior(), density_estimator=kind,
                        show_progress_bars=False, tracker=TensorBoardTracker(writer))
        inference.append_simulations(torch.as_tensor(theta), torch.as_tensor(x))
        extra = {"max_num_epochs": args.max_epochs} if args.max_epochs else {}
        inference.train(**extra)
        writer.close()
        print(file=sys.stderr)
    post = inference.build_posterior()

    def sample(xo, n):
        xo = torch.as_tensor(xo, dtype=torch.float32)
        return post.sample((n,), x=xo, show_progress_bars=False).numpy()

    return sample, int(inference.summary["epochs_trained"][-1])


METHODS = {
    "specsbi-dependent": lambda th, x, p, a: fit_specsbi(th, x, p, "dependent", a),
    "specsbi-augmented": lambda th, x, p, a: fit_specsbi(th, x, p, "augmented", a),
    "sbi-npe-maf": lambda th, x, p, a: fit_sbi(th, x, p, "maf", a),
    "sbi-npe-nsf": lambda th, x, p, a: fit_sbi(th, x, p, "nsf", a),
}


def c2st(reference, samples, seed):
    """sbi's C2ST (the sbibm metric), z-scored by the reference."""
    from sbi.utils.metrics import c2st as sbi_c2st

    return round(float(sbi_c2st(torch.as_tensor(reference, dtype=torch.float32),
                                torch.as_tensor(samples, dtype=torch.float32),
                                seed=seed, classifier="mlp")), 4)


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _table(result, methods):
    head = ["problem", "floor", *methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pname, entry in result["problems"].items():
        cells = [pname, f"{entry['c2st_floor']['mean']:.3f}"]
        for m in methods:
            e = entry["methods"].get(m)
            cells.append("" if e is None else
                         f"{e['c2st_mean']:.3f} ({e['train_seconds']:.0f} s, {e['epochs']} ep)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_problem(problem, args):
    seq = np.random.SeedSequence([args.seed, zlib.crc32(problem.name.encode())])
    sim_rng, obs_rng, ref_rng, check_rng = (np.random.default_rng(s) for s in seq.spawn(4))
    theta = problem.prior_sample(args.n_sims, sim_rng)
    x = problem.simulate(theta, sim_rng)
    theta_o = problem.prior_sample(args.n_obs, obs_rng)
    x_o = problem.simulate(theta_o, obs_rng)

    t0 = time.perf_counter()
    refs, floors, infos, checks = [], [], [], []
    for i in range(args.n_obs):
        ref, info = problem.reference(x_o[i], args.n_samples, ref_rng, theta_o[i], args.quick)
        ref2, info2 = problem.reference(x_o[i], args.n_samples, ref_rng, theta_o[i], args.quick,
                                        run=1)
        chk = problem.check(x_o[i], theta_o[i], ref, check_rng, args.quick)
        grid = chk.pop("_grid", None)
        if grid is not None:
            chk["c2st_reference_vs_grid"] = c2st(ref, grid, args.seed + i)
        floors.append(c2st(ref, ref2, args.seed + i))
        refs.append(ref)
        infos.append({"run_0": info, "run_1": info2} if info else {})
        checks.append(chk)
    ref_s = time.perf_counter() - t0
    _log(f"{problem.name:16s} reference       C2ST floor {np.mean(floors):.3f} ({ref_s:.0f} s)")
    entry = {"theta_dim": problem.dim, "x_dim": problem.x_dim,
             "observations": {"theta": np.round(theta_o, 4).tolist(),
                              "x": np.round(x_o, 4).tolist()},
             "reference": {"seconds": round(ref_s, 1), "checks": checks,
                           **({"mcmc": infos} if any(infos) else {})},
             "c2st_floor": {"mean": round(float(np.mean(floors)), 4), "per_obs": floors},
             "methods": {}}
    theta32, x32 = theta.astype(np.float32), x.astype(np.float32)
    for mname in args.methods.split(","):
        t0 = time.perf_counter()
        sample, epochs = METHODS[mname](theta32, x32, problem, args)
        train_s = time.perf_counter() - t0
        scores, sample_s = [], 0.0
        for i in range(args.n_obs):
            torch.manual_seed(args.seed + i)
            t1 = time.perf_counter()
            draws = sample(x_o[i].astype(np.float32), args.n_samples)
            sample_s += time.perf_counter() - t1
            scores.append(c2st(refs[i], draws, args.seed + i))
        entry["methods"][mname] = {"c2st_mean": round(float(np.mean(scores)), 4),
                                   "c2st": scores, "train_seconds": round(train_s, 1),
                                   "sample_seconds": round(sample_s, 2), "epochs": epochs}
        _log(f"{problem.name:16s} {mname:18s} C2ST {np.mean(scores):.3f} "
             f"({train_s:.0f} s, {epochs} epochs)")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sims", type=int, default=10_000)
    parser.add_argument("--n-obs", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=2000,
                        help="posterior and reference draws per observation for C2ST")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--flow", choices=["maf", "nsf"], help="specsbi flow (default: its own)")
    parser.add_argument("--hidden", type=int, help="specsbi hidden units (default: its own)")
    parser.add_argument("--transforms", type=int, help="specsbi flow layers (default: its own)")
    parser.add_argument("--max-epochs", type=int, default=0,
                        help="cap on epochs for every method (0: each one's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2,000 sims, 1 obs, 500 draws, 20 epochs, short MCMC")
    parser.add_argument("--out", default="benchmarks/results/standard_problems.json")
    args = parser.parse_args()
    if args.quick:
        args.n_sims, args.n_obs, args.n_samples, args.max_epochs = 2000, 1, 500, 20
    for name in args.problems.split(","):
        if name not in PROBLEMS:
            parser.error(f"unknown problem {name!r}; choose from {list(PROBLEMS)}")
    for name in args.methods.split(","):
        if name not in METHODS:
            parser.error(f"unknown method {name!r}; choose from {list(METHODS)}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*prior has no support property.*")
    warnings.filterwarnings("ignore", message=".*triangular_solve is deprecated.*")
    from importlib.metadata import version

    from threadpoolctl import threadpool_limits

    load_start = round(os.getloadavg()[0], 2)
    t_start = time.perf_counter()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "threads": args.threads,
        "command": shlex.join(["python", *sys.argv]),
        "versions": {k: version(k) for k in ("specsbi", "sbi", "torch", "scikit-learn")},
        "settings": {
            "n_sims": args.n_sims, "n_obs": args.n_obs, "n_samples": args.n_samples,
            "seed": args.seed, "quick": args.quick, "max_epochs": args.max_epochs or None,
            "specsbi": {**{k: v for k, v in PosteriorEstimator().card().items()
                           if k in ("flow", "hidden", "transforms", "bins", "regression")},
                        **{k: getattr(args, k) for k in ("flow", "hidden", "transforms")
                           if getattr(args, k) is not None},
                        "train": asdict(TrainConfig())},
            "sbi": "NPE(prior, density_estimator=maf|nsf) and .train(), all else sbi defaults",
            "c2st": "sbi.utils.metrics.c2st(reference, samples, classifier='mlp', "
                    "n_folds=5), z-scored by the reference",
        },
        "problems": {},
    }
    methods = args.methods.split(",")
    with threadpool_limits(args.threads):
        for pname in args.problems.split(","):
            result["problems"][pname] = run_problem(PROBLEMS[pname], args)
    result["summary_c2st_mean"] = {
        p: {"floor": e["c2st_floor"]["mean"],
            **{m: v["c2st_mean"] for m, v in e["methods"].items()}}
        for p, e in result["problems"].items()}
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    result["load_average_1min"] = {"start": load_start, "end": round(os.getloadavg()[0], 2)}
    result["notes"] = [
        "C2ST: 0.5 = indistinguishable from the reference; 'floor' is the C2ST between two "
        "independent reference draws of the same size (for SLCP: two independent MCMC runs).",
        "Seconds are wall time on a shared machine (see load_average_1min) with "
        f"torch.set_num_threads({args.threads}); they include specsbi's base calibration.",
        "Every method trains on the same simulations; specsbi's posterior is restricted to "
        "the prior box (for gaussian_linear ±2.3, > 7 prior σ), sbi's to the prior's support.",
    ]
    text = json.dumps(result, indent=1, ensure_ascii=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    _log("\n" + _table(result, methods) + f"\n\ntotal {result['total_seconds']:.0f} s")
    print(text)


if __name__ == "__main__":
    main()
