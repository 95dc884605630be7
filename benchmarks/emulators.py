"""Emulators against bagpipes: accuracy, speed, and MCMC posteriors on held-out galaxies.

Accuracy: each emulator predicts the noiseless spectra of the --n-test held-out
prior draws of the test file from their θ; the per-pixel fractional error
|Δf|/f = |f_emu / f_bagpipes − 1| over all pixels (50/68/95/99th percentiles), and
the RMS of the derived log_mstar.

Speed: bagpipes' ``model_galaxy.update`` (through BagpipesSimulator, model built
before timing) on --n-bagpipes draws, against the emulator's batched ``predict``
on --n-speed draws, both on one thread in this process: a ratio of spectra/s.
With --compile the emulator is also timed after ``torch.compile``. The draws are
split over --rounds rounds, bagpipes and the emulators in turn, and the median of
the rounds' ratios is reported (with their range): a drift in the machine's speed
moves both sides of a round.

MCMC (--mcmc N): ss.mcmc.sample with the first emulator on the first N test
galaxies (S/N 5-30 noise as stored), started from the NPE posterior of --npe if
given (its redshift range narrows the quick optimisation, whose Fisher ball starts
the walkers), else from the optimisation alone. Each chain runs until converged
(τ < 1/50 of the kept chain and stable) or --mcmc-steps. Per galaxy: wall and CPU
time, steps, τ, acceptance, convergence, medians and 68 % intervals against the
truth, and the C2ST (sbi's classifier two-sample test; 0.5 = indistinguishable) on
(log_mstar, redshift) against the NPE's draws. --bagpipes-fits adds the same
against bagpipes' own fits (benchmarks/bagpipes_fit.py output) and their wall
times. --oracle reruns each chain on the galaxy's own noise added to the
emulator's spectrum at the true θ: the intervals a perfect emulator would give, so
the emulator's error and the sampler's can be told apart. With --compile the
chains run compiled (compilation timed once, before them). --mcmc-only skips the
accuracy and speed parts.

Every --model is measured (accuracy and speed); the MCMC uses the first.

Reproduce (the budgets of the committed run, one core each):
    specsbi train emulator pca --data data/train50k.h5 --out models/emu-pca-50k \\
        --components 64 --epochs 70 --patience 15                          # ~35 min
    specsbi train emulator vae --data data/train50k.h5 --n 20000 --out models/emu-vae-20k \\
        --epochs 80 --patience 20                                          # ~5 min
    specsbi train emulator gan --data data/train50k.h5 --n 20000 --out models/emu-gan-20k \\
        --epochs 15 --lr 2e-4                                              # ~3 min
    specsbi train emulator diffusion --data data/train50k.h5 --out models/emu-diffusion-50k \\
        --epochs 300 --patience 30                                         # ~15 min
    python benchmarks/emulators.py --model models/emu-pca-50k --model models/emu-vae-20k \\
        --model models/emu-gan-20k --model models/emu-diffusion-50k --test data/test1k.h5 \\
        --compile --keep-mcmc          # or --npe models/npe-dep --mcmc 20 for the MCMC part
    python benchmarks/emulators.py --model default-emulator --test data/test1k.h5 --n-test 20 \\
        --npe default --mcmc 20 --mcmc-only --compile --oracle \\
        --bagpipes-fits fits/fit3_n200.json --out results/emulators_mcmc.json   # MCMC alone
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import specsbi as ss

TARGETS = ["log_mstar", "redshift"]
QUANTILES = [50, 68, 95, 99]


def accuracy(emu, test: ss.SpectraSet) -> dict:
    theta = np.stack([test.params[n] for n in emu.prior.names], 1)
    t0 = time.perf_counter()
    pred = emu.predict(theta)
    frac = np.abs(pred / test.flux_noiseless.astype(np.float64) - 1)
    d_mstar = emu.predict_derived(theta)["log_mstar"] - test.params["log_mstar"]
    per_spec = np.median(frac, axis=1)
    return {
        "n_spectra": len(test),
        "frac_error_percentiles": dict(zip([f"p{q}" for q in QUANTILES],
                                           np.percentile(frac, QUANTILES).tolist(),
                                           strict=True)),
        "per_spectrum_median_frac_error_p50_p95": np.percentile(per_spec, [50, 95]).tolist(),
        "log_mstar_rms_dex": float(np.sqrt(np.mean(d_mstar**2))),
        "log_mstar_max_abs_dex": float(np.abs(d_mstar).max()),
        "predict_s": time.perf_counter() - t0,
    }


def _bagpipes_timer(test: ss.SpectraSet):
    """bagpipes through BagpipesSimulator, its model built (and bagpipes imported) untimed."""
    sim = ss.BagpipesSimulator(wavelength=test.wavelength,
                               R_spec=float((test.attrs.get("simulator") or {})
                                            .get("R_spec", 1000.0)))
    t0 = time.perf_counter()
    sim.simulate(ss.default_prior().draw(1, seed=122))
    setup = time.perf_counter() - t0

    def timed(theta: np.ndarray) -> float:
        t0 = time.perf_counter()
        sim.simulate(theta)
        return time.perf_counter() - t0

    return timed, setup


def _emulator_timers(emu, batch: int, compile_: bool) -> tuple[dict, dict]:
    """Timers of ``emu``'s batched prediction (eager ``predict``; compiled forward)."""
    def eager(theta: np.ndarray) -> float:
        t0 = time.perf_counter()
        emu.predict(theta, batch_size=batch)
        return time.perf_counter() - t0

    timers, info = {"eager": eager}, {}
    if compile_:
        fast = torch.compile(emu, dynamic=False)
        t = torch.as_tensor(emu.prior.draw(batch, seed=6), dtype=torch.float32)
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = fast(t)
        info["compile_s"] = time.perf_counter() - t0
        with torch.no_grad():
            np.testing.assert_allclose(ref.numpy(), emu(t).numpy(), rtol=1e-4)

        @torch.no_grad()
        def compiled(theta: np.ndarray) -> float:
            tt = torch.as_tensor(theta, dtype=torch.float32)
            t0 = time.perf_counter()
            for i in range(0, len(tt), batch):
                fast(tt[i : i + batch]).numpy()
            return time.perf_counter() - t0

        timers["compiled"] = compiled
    return timers, info


def speed(emus: dict, test: ss.SpectraSet, n_bagpipes: int, n_speed: int, batch: int,
          compile_: bool, rounds: int) -> tuple[dict, dict]:
    """bagpipes and each emulator timed in turn, ``rounds`` times over: each round's
    ratio compares spectra/s measured within seconds of each other, so a machine whose
    speed drifts (a shared one) moves both. Medians over the rounds are reported."""
    bp_timer, setup = _bagpipes_timer(test)
    per_bp = max(n_bagpipes // rounds, 1)
    per_emu = max(n_speed // rounds // batch, 1) * batch
    timers, out = {}, {}
    for name, emu in emus.items():
        emu.predict(emu.prior.draw(batch, seed=5), batch_size=batch)  # warm-up
        timers[name], out[name] = _emulator_timers(emu, batch, compile_)
        out[name].update({"n": per_emu * rounds, "batch": batch, "rounds": []})
    prior = ss.default_prior()
    bp_rounds = []
    for r in range(rounds):
        bp_rate = per_bp / bp_timer(prior.draw(per_bp, seed=1000 + r))
        bp_rounds.append(bp_rate)
        for name, emu in emus.items():
            theta = emu.prior.draw(per_emu, seed=2000 + r)
            row = {"bagpipes_spectra_per_s": bp_rate}
            for kind, timer in timers[name].items():
                rate = per_emu / timer(theta)
                row[f"{kind}_spectra_per_s"] = rate
                row[f"{kind}_speedup"] = rate / bp_rate
            out[name]["rounds"].append(row)
    for name in emus:
        rows = out[name]["rounds"]
        for kind in timers[name]:
            rate = float(np.median([r[f"{kind}_spectra_per_s"] for r in rows]))
            ratio = float(np.median([r[f"{kind}_speedup"] for r in rows]))
            prefix = "" if kind == "eager" else "compiled_"
            out[name].update({f"{prefix}spectra_per_s": rate,
                              f"{prefix}us_per_spectrum": 1e6 / rate,
                              f"{prefix}speedup_vs_bagpipes": ratio,
                              f"{prefix}speedup_min_max": [
                                  float(min(r[f"{kind}_speedup"] for r in rows)),
                                  float(max(r[f"{kind}_speedup"] for r in rows))]})
    rate = float(np.median(bp_rounds))
    bp = {"n": per_bp * rounds, "rounds": rounds, "setup_s": setup,
          "ms_per_spectrum": 1e3 / rate, "spectra_per_s": rate}
    return bp, out


def _c2st(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    from sbi.utils.metrics import c2st

    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    return float(c2st(torch.as_tensor(a, dtype=torch.float32),
                      torch.as_tensor(b, dtype=torch.float32), seed=seed))


def _warm_compile(emu, n_walkers: int, error: str | None) -> float:
    """Compile the emulator likelihood once for the chains' chunk size: its wall time."""
    from specsbi.emulator_likelihood import EmulatorLikelihood

    spec = np.ones(emu.physics.npix)
    ref = torch.ones(emu.physics.npix, dtype=torch.float64)
    frac = None if error is None else torch.zeros(emu.physics.npix, dtype=torch.float64)
    modes = (torch.zeros(len(emu.error_modes), emu.physics.npix, dtype=torch.float64)
             if error == "fixed" else None)  # the chains' kernel: with the modes' projection
    like = EmulatorLikelihood(emu, spec, spec, spec > 0, frac,
                              ref if error in ("fixed", "diagonal") else None, modes,
                              chunk=-(-n_walkers // 2), compile=True)
    t0 = time.perf_counter()
    like(torch.as_tensor(emu.prior.draw(2, seed=0)))
    return time.perf_counter() - t0


def _oracle(emu, spec: ss.Spectrum) -> ss.Spectrum:
    """The same galaxy and noise, the noiseless bagpipes flux replaced by the emulator's at
    the true θ: what the chain would give with a perfect emulator."""
    theta = np.array([spec.params[n] for n in emu.prior.names])
    flux = spec.flux - spec.flux_noiseless + emu.predict(theta)
    return ss.Spectrum(spec.wavelength, flux, spec.err, spec.mask, spec.params)


def _intervals(row: dict, draws: np.ndarray, truth: dict, prefix: str = "") -> None:
    for j, t in enumerate(TARGETS):
        lo, med, hi = np.percentile(draws[:, j], [16, 50, 84])
        row[f"{prefix}{t}_median"], row[f"{prefix}{t}_width68"] = med, (hi - lo) / 2
        row[f"{prefix}{t}_pull"] = (med - truth[t]) / max((hi - lo) / 2, 1e-12)
        row[f"{prefix}{t}_within68"] = bool(lo <= truth[t] <= hi)


def mcmc(emu, test: ss.SpectraSet, n_gal: int, npe_path: str | None, n_steps: int,
         bagpipes_fits: str | None, compile_: bool = False, oracle: bool = False,
         n_walkers: int | None = None, error: str = "fixed") -> dict:
    npe = ss.load(npe_path) if npe_path else None
    fits = json.loads(Path(bagpipes_fits).read_text()) if bagpipes_fits else None
    error = None if error == "none" else error
    n_walkers = n_walkers or max(32, 4 * len(emu.prior.names))
    compile_s = _warm_compile(emu, n_walkers, error) if compile_ else None
    rows = []
    for i in range(n_gal):
        spec = test[i]
        truth = {t: float(test.params[t][i]) for t in TARGETS}
        npe_post = npe.posterior(spec) if npe is not None else None
        kw = {"init": npe_post if npe_post is not None else "optimize", "n_steps": n_steps,
              "n_walkers": n_walkers, "seed": i, "progress": False, "compile": compile_,
              "emulator_error": error or False}
        t0 = time.perf_counter()
        post = ss.mcmc.sample(emu, spec, **kw)
        wall = time.perf_counter() - t0
        d = post.diagnostics
        draws = post.sample(1000)[:, [post.names.index(t) for t in TARGETS]]
        row = {"galaxy": i, "snr": float(spec.params.get("snr", np.nan)), "wall_s": wall,
               "cpu_s": d["cpu_s"], "converged": d["converged"], "n_steps": d["n_steps"],
               "acceptance": d["acceptance_fraction"],
               "max_autocorr": float(np.max(d["autocorr_time"])),
               "autocorr_time": [round(v, 1) for v in d["autocorr_time"]],
               "effective_samples": d["effective_samples"], "init": d["init"],
               **{f"{t}_truth": truth[t] for t in TARGETS}}
        _intervals(row, draws, truth)
        if npe_post is not None:
            npe_draws = npe_post.sample(1000)
            npe_draws = npe_draws[:, [list(npe.targets).index(t) for t in TARGETS]]
            row["c2st_vs_npe"] = _c2st(draws, npe_draws, seed=i)
            _intervals(row, npe_draws, truth, "npe_")
        if oracle:
            o = ss.mcmc.sample(emu, _oracle(emu, spec), **kw)
            _intervals(row, o.sample(1000)[:, [o.names.index(t) for t in TARGETS]], truth,
                       "oracle_")
            row["oracle_converged"] = o.diagnostics["converged"]
        if fits is not None and str(i) in fits.get("galaxies", {}):
            import h5py

            with h5py.File(Path(bagpipes_fits).with_suffix(".h5")) as h5:
                bp = h5[f"galaxy_{i}/samples"][()]
            row["c2st_vs_bagpipes"] = _c2st(draws, bp, seed=i)
            row["bagpipes_wall_s"] = fits["galaxies"][str(i)]["wall_s"]
            _intervals(row, bp, truth, "bagpipes_")
            if npe_post is not None:
                row["npe_c2st_vs_bagpipes"] = _c2st(npe_draws, bp, seed=i)
        rows.append(row)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v)
                          for k, v in row.items()}), file=sys.stderr, flush=True)
    walls = np.array([r["wall_s"] for r in rows])
    cpus = np.array([r["cpu_s"] for r in rows])
    steps = np.array([r["n_steps"] for r in rows])
    taus = np.array([r["max_autocorr"] for r in rows])
    summary = {
        "n_galaxies": n_gal, "max_steps": n_steps, "n_walkers": n_walkers,
        "emulator_error": error, "compile": compile_, "compile_s": compile_s,
        "init": rows[0]["init"] + (" (redshift scan within the NPE's draws)"
                                   if npe is not None and rows[0]["init"] == "optimize" else ""),
        "converged_fraction": float(np.mean([r["converged"] for r in rows])),
        "steps_median": float(np.median(steps)), "steps_max": int(steps.max()),
        "max_autocorr_median": float(np.median(taus)), "max_autocorr_max": float(taus.max()),
        "acceptance_median": float(np.median([r["acceptance"] for r in rows])),
        "effective_samples_median": float(np.median([r["effective_samples"] for r in rows])),
        "wall_s_per_galaxy_median": float(np.median(walls)),
        "wall_s_per_galaxy_mean": float(np.mean(walls)),
        "cpu_s_per_galaxy_median": float(np.median(cpus)),
        "cpu_ms_per_step_median": float(np.median(1e3 * cpus / steps)),
    }
    for prefix in ["", "npe_", "oracle_"]:
        for t in TARGETS:
            if f"{prefix}{t}_pull" not in rows[0]:
                continue
            summary[f"{prefix}{t}_median_width68"] = float(np.median(
                [r[f"{prefix}{t}_width68"] for r in rows]))
            summary[f"{prefix}{t}_fraction_within_68"] = float(np.mean(
                [r[f"{prefix}{t}_within68"] for r in rows]))
            summary[f"{prefix}{t}_rms_pull"] = float(np.sqrt(np.mean(
                [r[f"{prefix}{t}_pull"] ** 2 for r in rows])))
            summary[f"{prefix}{t}_rms_error"] = float(np.sqrt(np.mean(
                [(r[f"{prefix}{t}_median"] - r[f"{t}_truth"]) ** 2 for r in rows])))
    if npe is not None:
        summary["c2st_vs_npe_median"] = float(np.median([r["c2st_vs_npe"] for r in rows]))
    bp_rows = [r for r in rows if "c2st_vs_bagpipes" in r]
    if bp_rows:
        for key in ("c2st_vs_bagpipes", "npe_c2st_vs_bagpipes", "bagpipes_wall_s", "wall_s"):
            if key in bp_rows[0]:
                name = "mcmc_wall_s" if key == "wall_s" else key
                summary[name + "_galaxies_with_fits"] = {r["galaxy"]: r[key] for r in bp_rows}
    return {"summary": summary, "galaxies": rows}


def figure(emu, test: ss.SpectraSet, path: Path) -> None:
    """Fractional error percentiles against rest wavelength, and one spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theta = np.stack([test.params[n] for n in emu.prior.names], 1)
    pred = emu.predict(theta)
    frac = np.abs(pred / test.flux_noiseless - 1)
    rest = test.wavelength[None] / (1 + test.params["redshift"][:, None])
    edges = np.geomspace(2530, 9120, 120)
    idx = np.digitize(rest, edges)
    q = np.array([np.percentile(frac[idx == k], [50, 68, 95]) if (idx == k).any()
                  else [np.nan] * 3 for k in range(1, len(edges))])
    centre = np.sqrt(edges[1:] * edges[:-1])
    fig, ax = plt.subplots(2, 1, figsize=(9, 7))
    for j, (label, c) in enumerate(zip(["50th", "68th", "95th"], ["C0", "C1", "C3"],
                                       strict=True)):
        ax[0].plot(centre, 100 * q[:, j], color=c, label=f"{label} percentile")
    ax[0].axhline(1, color="k", lw=0.5, ls=":")
    ax[0].axhline(3, color="k", lw=0.5, ls=":")
    ax[0].set(xlabel="rest-frame wavelength [Å]", ylabel="|Δf| / f  [%]", yscale="log",
              title=f"{type(emu).__name__} vs bagpipes, {len(test)} held-out prior draws")
    ax[0].legend()
    i = int(np.argsort(np.median(frac, axis=1))[len(test) // 2])  # a typical spectrum
    ax[1].plot(test.wavelength, test.flux_noiseless[i], color="k", lw=0.8, label="bagpipes")
    ax[1].plot(test.wavelength, pred[i], color="C1", lw=0.6, label="emulator")
    ax[1].plot(test.wavelength, test.flux_noiseless[i] - pred[i], color="C3", lw=0.6,
               label="difference")
    ax[1].set(xlabel="observed wavelength [Å]", ylabel="flux [1e-17 erg/s/cm²/Å]",
              title=f"test galaxy {i} (median |Δf|/f = {100 * np.median(frac[i]):.2f}%)")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="emulator folder(s)")
    ap.add_argument("--test", required=True, help="held-out bagpipes set with noiseless flux")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--n-bagpipes", type=int, default=500, help="bagpipes spectra timed")
    ap.add_argument("--n-speed", type=int, default=50_000, help="emulator spectra timed")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10,
                    help="speed: bagpipes and the emulators timed in turn this many times")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile; the MCMC runs compiled too")
    ap.add_argument("--mcmc", type=int, default=0, help="galaxies for the MCMC part")
    ap.add_argument("--mcmc-steps", type=int, default=50_000,
                    help="most steps per chain (each stops once converged)")
    ap.add_argument("--mcmc-walkers", type=int, help="walkers (default: ss.mcmc.sample's)")
    ap.add_argument("--emulator-error", choices=["fixed", "diagonal", "model", "none"],
                    default="fixed",
                    help="ss.mcmc.sample's emulator_error (default: its default, fixed)")
    ap.add_argument("--mcmc-only", action="store_true",
                    help="skip accuracy, speed and the figure: only the MCMC part")
    ap.add_argument("--oracle", action="store_true",
                    help="also run each chain on the galaxy's noise added to the emulator's "
                         "own spectrum at the true θ (a perfect emulator)")
    ap.add_argument("--keep-mcmc", action="store_true",
                    help="without --mcmc: keep the MCMC section of an existing --out (marked "
                         "with the date and command of the run that measured it)")
    ap.add_argument("--npe", help="SpectrumPosterior folder: MCMC start and C2ST reference")
    ap.add_argument("--bagpipes-fits", help="JSON written by benchmarks/bagpipes_fit.py")
    ap.add_argument("--figure", help="PNG of the first emulator's errors")
    ap.add_argument("--out", default="benchmarks/results/emulators.json")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.n_bagpipes < 1 or args.n_speed < 1 or args.batch < 1:
        ap.error("--rounds, --n-bagpipes, --n-speed and --batch must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    test = ss.SpectraSet.read(args.test, rows=slice(0, args.n_test))
    emus = {Path(m).name: ss.load(m) for m in args.model}
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_average_1min_start": os.getloadavg()[0],
              "command": " ".join(["python", *sys.argv]), "test": args.test,
              "emulators": {}}
    for name, emu in emus.items():
        result["emulators"][name] = {"class": type(emu).__name__,
                                     "hyper": emu._hyper(),
                                     "card_validation": emu.metrics,
                                     "training_data": emu.data_info.get("n"),
                                     "fit_seconds": emu.data_info.get("fit_seconds")}
        if not args.mcmc_only:
            result["emulators"][name]["accuracy"] = accuracy(emu, test)
    if not args.mcmc_only:
        result["bagpipes"], speeds = speed(emus, test, args.n_bagpipes, args.n_speed,
                                           args.batch, args.compile, args.rounds)
        for name, sp in speeds.items():
            result["emulators"][name]["speed"] = sp
    if args.figure and not args.mcmc_only:
        figure(next(iter(emus.values())), test, Path(args.figure))
        result["figure"] = args.figure
    if args.mcmc:
        result["mcmc"] = mcmc(next(iter(emus.values())), test, args.mcmc, args.npe,
                              args.mcmc_steps, args.bagpipes_fits, args.compile, args.oracle,
                              args.mcmc_walkers, args.emulator_error)
        result["mcmc"]["emulator"] = next(iter(emus))
    elif args.keep_mcmc and Path(args.out).exists():
        before = json.loads(Path(args.out).read_text())
        if "mcmc" in before:
            run = before["mcmc"].get("from_run") or {k: before.get(k) for k in
                                                     ("date", "command")}
            result["mcmc"] = {**before["mcmc"], "from_run": run}  # the run that measured it
    result["load_average_1min_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=1, default=float)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
