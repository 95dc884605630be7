"""Galaxy figures of a trained SpectrumPosterior on held-out bagpipes spectra.

Measures, on the first --n-test galaxies of a test file (S/N 5-30 noise already
drawn): mean log q(θ_true | x) over (log_mstar, redshift), log M* RMSE and bias,
redshift NMAD of Δz/(1+z) and outlier fraction, 68/95% coverage per target, median
68% widths; and the time per galaxy to draw --n-samples posterior samples batched
over those galaxies. The sbi baselines of the flows issue are not run here yet.

Reproduce the data and model (about 10 min simulation, 1 h training on 2 cores):
    specsbi simulate --n 20000 --out data/train20k.h5 --workers 2 --seed 1
    specsbi simulate --n 1000 --out data/test1k.h5 --workers 2 --seed 2
    specsbi train npe --variant dependent --data data/train20k.h5 --out models/npe20k \
        --epochs 60 --patience 10
Then:
    python benchmarks/galaxies.py --model models/npe20k --test data/test1k.h5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import specsbi as ss
from specsbi.diagnostics import galaxy_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--out", default="benchmarks/results/galaxies.json")
    args = parser.parse_args()
    model = ss.load(args.model)
    test = ss.SpectraSet.read(args.test, rows=slice(0, args.n_test))
    post = model.posterior(test)
    metrics = galaxy_metrics(post, test.params)
    t0 = time.perf_counter()
    samples = model.posterior(test).sample(args.n_samples)
    seconds = time.perf_counter() - t0
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "command": "python " + " ".join(sys.argv),
        "model": {"path": args.model, "card": {k: model.card()[k] for k in
                                               ("variant", "flow", "targets", "validation")}},
        "metrics": metrics,
        "speed": {"galaxies": len(test), "samples_per_galaxy": args.n_samples,
                  "seconds_per_galaxy": seconds / len(test), "shape": list(samples.shape)},
    }
    text = json.dumps(result, indent=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
