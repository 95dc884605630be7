"""Benchmark the generative models: the lecture's comparison table, measured on bagpipes spectra.

Trains AE, VAE, GAN, a flow and a diffusion model on N bagpipes simulations within
the default `Budget` (`specsbi compare-generators`), scores them on held-out
simulations, and times bagpipes itself in the same process as the reference for
sampling speed. Prints one JSON object, writes it to ``--out`` and the figures
(small PNGs) to ``--figures``:

    python benchmarks/generators.py --data /work/data/train50k.h5 --test /work/data/test1k.h5
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def bagpipes_seconds_per_spectrum(n: int = 24, seed: int = 5) -> float:
    """Steady-state bagpipes cost (model built and warm), seconds per spectrum."""
    from specsbi import BagpipesSimulator, default_prior

    sim = BagpipesSimulator()
    theta = default_prior().draw(n + 1, seed)
    sim.simulate(theta[:1])  # import and model build, not counted
    t0 = time.perf_counter()
    sim.simulate(theta[1:])
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/data/train50k.h5")
    parser.add_argument("--test", default="/work/data/test1k.h5")
    parser.add_argument("--n", type=int, default=20_000, help="training spectra")
    parser.add_argument("--work", default="/work/scratch/generative/benchmark",
                        help="folder for the full outputs")
    parser.add_argument("--out", default="benchmarks/results/generators.json")
    parser.add_argument("--figures", default="docs/figures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    import specsbi as ss
    from specsbi.generative.comparison import Budget, compare_generators

    t0 = time.perf_counter()
    reference = {"name": "bagpipes", "seconds_per_spectrum": bagpipes_seconds_per_spectrum()}
    budget = Budget(n_train=args.n)
    train = ss.SpectraSet.read(args.data, rows=slice(0, args.n))
    test = ss.SpectraSet.read(args.test, rows=slice(0, budget.n_eval))
    result = compare_generators(train, test, args.work, budget, seed=args.seed, progress=False,
                                reference=reference)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    for name in ("generated_vs_real.png", "latent_vae.png", "traversal_vae.png"):
        shutil.copy(Path(args.work) / name, figures / f"generators_{name}")
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "command": "python " + shlex.join(sys.argv),
        "data": {"train": args.data, "test": args.test, "n_train": len(train),
                 "n_test": len(test)},
        "total_seconds": round(time.perf_counter() - t0, 1),
        **result,
        "notes": "Timings on a shared 2-core machine (OMP_NUM_THREADS=1); sampling speeds "
                 "include the PCA decoding and the move to the observed frame, and are also "
                 "given as ratios to bagpipes timed in the same process.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=_jsonable))
    print(json.dumps(out, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    main()
