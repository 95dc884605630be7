"""Posterior-predictive checks with the simulator itself as the emulator.

A SpectrumPosterior over all eight bagpipes parameters gives draws θ; bagpipes
simulates each (it satisfies the emulator protocol, ``predict(θ) → flux``), and
``specsbi.diagnostics.predictive_chi2`` scores every observed spectrum against
them. Measured: χ² per pixel on in-distribution held-out spectra and on spectra
from other physical models (is it an out-of-distribution signal?), and the
spectrum figure with its predictive band for the README. The cost of each
galaxy's check is timed against one bagpipes spectrum, simulated in the same run.

Model (about 15 min on 2 busy cores):
    specsbi train npe --data data/train50k.h5 --n 20000 --noise-draws 2 --epochs 30 \\
        --patience 6 --out models/npe-all \\
        --targets log_mformed,redshift,age_frac,log_tau,metallicity,av,veldisp,log_u
Then:
    python benchmarks/predictive.py --model models/npe-all --test data/test1k.h5 \\
        --ood data/ood_exponential_Cardelli.h5 --ood data/ood_constant_SMC.h5 --figures DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import numpy as np

import specsbi as ss
from specsbi import plots
from specsbi.diagnostics import predictive_chi2, predictive_flux
from specsbi.priors import DEFAULT_RANGES

ROOT = Path(__file__).resolve().parents[1]


class SimulatorEmulator:
    """bagpipes as an emulator: θ (n, 8) in the default prior's order → noiseless flux.

    Draws are clipped to the default prior's ranges (the posterior's support is the
    training range padded by 5 %, a little wider than bagpipes accepts for age_frac).
    """

    param_names = list(DEFAULT_RANGES)

    def __init__(self) -> None:
        self.sim = ss.BagpipesSimulator()
        self.lo = np.array([lo for lo, _ in DEFAULT_RANGES.values()])
        self.hi = np.array([hi for _, hi in DEFAULT_RANGES.values()])

    def predict(self, theta: np.ndarray) -> np.ndarray:
        return self.sim.simulate(np.clip(theta, self.lo, self.hi))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="SpectrumPosterior over all 8 parameters")
    parser.add_argument("--test", default="/work/data/test1k.h5")
    parser.add_argument("--ood", action="append", default=[])
    parser.add_argument("--n", type=int, default=40, help="galaxies per set")
    parser.add_argument("--draws", type=int, default=30, help="posterior draws per galaxy")
    parser.add_argument("--figures", help="folder for the spectrum figures")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/predictive.json"))
    args = parser.parse_args()
    matplotlib.use("Agg")
    model = ss.load(args.model)
    emu = SimulatorEmulator()
    emu.predict(np.array([[10.0, 0.1, 0.5, 0.0, 1.0, 0.5, 100.0, -3.0]]))  # build bagpipes once
    t0 = time.perf_counter()
    emu.predict(np.array([[10.5, 0.2, 0.5, 0.0, 1.0, 0.5, 150.0, -3.0]]))
    one_spectrum = time.perf_counter() - t0
    sets = {"test": args.test, **{Path(p).stem.removeprefix("ood_"): p for p in args.ood}}
    results, chi2 = {}, {}
    for name, path in sets.items():
        data = ss.SpectraSet.read(path, rows=slice(0, args.n))
        draws, ok = [], []
        for i in range(len(data)):  # a posterior almost wholly outside the prior says OOD
            try:
                draws.append(model.posterior(data[i]).sample(args.draws))
                ok.append(i)
            except RuntimeError:
                pass
        t0 = time.perf_counter()
        c = predictive_chi2(emu, np.stack(draws), data[np.array(ok)], n_draws=args.draws,
                            names=model.targets, statistic="all")
        seconds = time.perf_counter() - t0
        chi2[name] = {"mean": c.mean(1), "min": c.min(1)}
        results[name] = {
            "n": len(data), "posterior_outside_prior": len(data) - len(ok),
            **{f"chi2_{k}_median": float(np.median(v)) for k, v in chi2[name].items()},
            **{f"chi2_{k}_p90": float(np.percentile(v, 90)) for k, v in chi2[name].items()},
            "seconds_per_galaxy": round(seconds / len(ok), 2),
            "seconds_per_galaxy_in_bagpipes_spectra": round(seconds / len(ok) / one_spectrum, 1)}
        if args.figures:
            folder = Path(args.figures)
            folder.mkdir(parents=True, exist_ok=True)
            j = int(np.argmax(chi2[name]["min"])) if name != "test" else 0
            band = predictive_flux(emu, draws[j], args.draws, names=model.targets)
            fig = plots.spectrum(data[ok[j]], band,
                                 title=f"{name} galaxy {ok[j]}: predictive χ²/pixel mean "
                                       f"{c[j].mean():.2f}, best draw {c[j].min():.2f}")
            plots.save(fig, folder / f"predictive_{name}_{ok[j]}.png")
    for name in results:
        if name != "test":
            for k in ("mean", "min"):
                threshold = float(np.percentile(chi2["test"][k], 95))
                results[name][f"fraction_{k}_above_test_p95"] = float(
                    np.mean(chi2[name][k] > threshold))
    result = {
        "benchmark": "posterior-predictive χ² with bagpipes as the emulator",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "draws_per_galaxy": args.draws,
        "reference_one_bagpipes_spectrum_s": round(one_spectrum, 4),
        "sets": results,
    }
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
