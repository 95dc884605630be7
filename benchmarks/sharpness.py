"""Sharpness against the truth: specsbi's posterior widths over bagpipes' own fit.

For the galaxies fitted by ``benchmarks/bagpipes_fit.py`` (nautilus on the true
likelihood, the galaxy's own noise), compares the 68 % half-widths (half the 16–84th
percentile range) of log_mstar and redshift from

- the amortized posterior (a SpectrumPosterior, 10,000 draws), and
- with --emulator, the emulator likelihood sampled by ``ss.mcmc.sample`` (started
  from the amortized posterior),

with bagpipes' own, as ratios specsbi / bagpipes, next to each method's wall time
and the distance of each median from the truth in units of that method's width.

    python benchmarks/bagpipes_fit.py --test data/test1k.h5 --galaxies 0 1 2 \\
        --n-live 200 --out fits/fit3
    python benchmarks/sharpness.py --fit fits/fit3.h5 --test data/test1k.h5 \\
        --emulator default-emulator
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

import specsbi as ss

TARGETS = ["log_mstar", "redshift"]
MCMC_DRAWS = 1000  # thinned draws the chain keeps


def widths(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Medians and 68 % half-widths per column of (n, 2) draws."""
    lo, med, hi = np.percentile(draws, [16, 50, 84], axis=0)
    return med, (hi - lo) / 2


def describe(draws: np.ndarray, truth: np.ndarray, wall: float) -> dict:
    med, w = widths(draws)
    return {"wall_s": round(wall, 2),
            **{n: {"median": float(med[j]), "half_width68": float(w[j]),
                   "pull": float((med[j] - truth[j]) / w[j])} for j, n in enumerate(TARGETS)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", required=True, help="HDF5 written by bagpipes_fit.py")
    parser.add_argument("--test", required=True, help="the test file the fit used")
    parser.add_argument("--model", default="default", help="SpectrumPosterior (default: shipped)")
    parser.add_argument("--emulator", help="also emulator + MCMC with this emulator")
    parser.add_argument("--mcmc-steps", type=int, default=50_000,
                        help="most steps per chain (it stops once converged)")
    parser.add_argument("--out", default="benchmarks/results/sharpness.json")
    args = parser.parse_args()
    model = ss.load(args.model)
    emu = ss.load(args.emulator) if args.emulator else None
    test = ss.SpectraSet.read(args.test)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cores": os.cpu_count(), "command": "python " + " ".join(sys.argv),
              "model": args.model, "emulator": args.emulator, "galaxies": {}}
    with h5py.File(args.fit) as h5:
        fits = {int(k.split("_")[1]): (h5[k]["samples"][()], float(h5[k].attrs["wall_s"]))
                for k in h5}
    for i, (bp_draws, bp_wall) in sorted(fits.items()):
        galaxy = test[i]
        truth = np.array([galaxy.params[n] for n in TARGETS], dtype=float)
        row = {"snr": float(galaxy.params["snr"]) if "snr" in galaxy.params else None,
               "truth": dict(zip(TARGETS, truth.tolist(), strict=True)),
               "bagpipes": describe(bp_draws, truth, bp_wall)}
        t0 = time.perf_counter()
        post = model.posterior(galaxy)
        draws = post.sample(10_000)
        row["specsbi"] = describe(draws, truth, time.perf_counter() - t0)
        if emu is not None:
            t0 = time.perf_counter()
            mc = ss.mcmc.sample(emu, galaxy, init=post, n_samples=MCMC_DRAWS,
                                n_steps=args.mcmc_steps, progress=False)
            mc_all = mc.sample(MCMC_DRAWS)
            mc_draws = np.stack([mc_all[:, mc.names.index(n)] for n in TARGETS], 1)
            row["emulator_mcmc"] = describe(mc_draws, truth, time.perf_counter() - t0)
        for method in ("specsbi", "emulator_mcmc"):
            if method in row:
                row[f"width_ratio_{method}_over_bagpipes"] = {
                    n: row[method][n]["half_width68"] / row["bagpipes"][n]["half_width68"]
                    for n in TARGETS}
        result["galaxies"][str(i)] = row
        print(i, json.dumps(row), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=1)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
