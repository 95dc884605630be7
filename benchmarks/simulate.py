"""Benchmark the bagpipes simulator and `specsbi.simulate`'s parallel run.

Measures, on N draws of ``default_prior()``:

1. ``BagpipesSimulator().simulate`` in-process: the one-off bagpipes import and
   model build (seconds), then the steady-state cost (ms per spectrum);
2. the same for ``BagpipesSimulator(R_spec=R)`` for each R, timed in blocks that
   alternate between the R values (so machine noise hits them alike), and the
   ratio to R_spec=1000 (the cost of raising R_spec; SDSS needs about 2000);
3. ``simulate_to_file`` with workers=1 and workers=2 (same n, seed, chunks): wall
   seconds, speed-up, steady ms per spectrum per worker, and whether both files
   hold identical /raw/spec_noiseless and /raw/spec.

Run from the repository root (about 2 minutes with the defaults on 2 cores); prints one
JSON object to stdout and writes it to ``--out``; progress goes to stderr:

    python benchmarks/simulate.py [--n 200] [--r-spec 1000 2000 3000] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

log = logging.getLogger("benchmarks.simulate")


def timed_blocks(sims: dict, params: dict, n: int, block: int) -> dict:
    """Simulate rows [0, n) with every simulator, block by block, alternating simulators."""
    times = {key: [] for key in sims}
    for a in range(0, n, block):
        rows = {k: v[a:a + block] for k, v in params.items()}
        for key, sim in sims.items():
            t0 = time.perf_counter()
            sim.simulate(rows)
            times[key].append((time.perf_counter() - t0) * 1e3 / len(rows["redshift"]))
    return {key: {"ms_per_spectrum": round(float(np.mean(t)), 2),
                  "ms_per_spectrum_min_block": round(float(np.min(t)), 2)}
            for key, t in times.items()}


def build(sim, params: dict) -> float:
    """Warm-up call on one spectrum: builds (and caches) the bagpipes model; return seconds."""
    t0 = time.perf_counter()
    sim.simulate({k: v[-1:] for k, v in params.items()})
    return time.perf_counter() - t0


def run_to_file(path: Path, n: int, workers: int, seed: int, chunk: int) -> float:
    from specsbi import BagpipesSimulator, default_prior
    from specsbi.simulation import simulate_to_file

    t0 = time.perf_counter()
    simulate_to_file(BagpipesSimulator(), default_prior(), n, path, workers=workers, seed=seed,
                     chunk_size=chunk, overwrite=True, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="spectra per measurement")
    ap.add_argument("--r-spec", type=float, nargs="+", default=[1000.0, 2000.0, 3000.0])
    ap.add_argument("--chunk-size", type=int, default=25, help="chunk size for part 3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/simulate.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    block = max(1, min(25, args.n // 8))
    load_start = round(os.getloadavg()[0], 2)

    t0 = time.perf_counter()
    from specsbi.simulators.bagpipes import import_bagpipes
    import_bagpipes()
    import_s = time.perf_counter() - t0
    from specsbi import BagpipesSimulator, default_prior

    prior = default_prior()
    params = prior.to_dict(prior.draw(args.n + 1, args.seed))  # last row: warm-up only

    log.info("1. BagpipesSimulator() on %d spectra", args.n)
    sim = BagpipesSimulator()
    build_s = build(sim, params)
    single = {"import_s": round(import_s, 2), "model_build_s": round(build_s, 2),
              **timed_blocks({"1000": sim}, params, args.n, block)["1000"]}

    r_list = sorted({1000.0, *args.r_spec})
    log.info("2. R_spec in %s, %d spectra each, alternating blocks of %d", r_list, args.n, block)
    sims = {f"{r:g}": BagpipesSimulator(R_spec=r) for r in r_list}
    builds = {key: build(s, params) for key, s in sims.items()}
    builds["1000"] = build_s  # part 1 already built (and cached) the R_spec=1000 model
    r_res = timed_blocks(sims, params, args.n, block)
    for key, res in r_res.items():
        res["model_build_s"] = round(builds[key], 2)
        res["ratio_to_1000"] = round(res["ms_per_spectrum"] / r_res["1000"]["ms_per_spectrum"], 2)

    log.info("3. simulate_to_file, workers=1 and 2, n=%d, chunk_size=%d", args.n, args.chunk_size)
    with tempfile.TemporaryDirectory() as tmp:
        files = {w: Path(tmp, f"w{w}.h5") for w in (1, 2)}
        wall1 = run_to_file(files[1], args.n, 1, args.seed, args.chunk_size)
        wall2 = run_to_file(files[2], args.n, 2, args.seed, args.chunk_size)
        startup2 = run_to_file(Path(tmp, "startup.h5"), 2, 2, args.seed, 1)
        with h5py.File(files[1]) as f1, h5py.File(files[2]) as f2:
            identical = all(np.array_equal(f1[f"raw/{k}"][()], f2[f"raw/{k}"][()])
                            for k in ("spec_noiseless", "spec"))
    parallel = {
        "n": args.n, "chunk_size": args.chunk_size,
        "wall_s_workers1": round(wall1, 2), "wall_s_workers2": round(wall2, 2),
        "speedup": round(wall1 / wall2, 2),
        "speedup_cold": round((import_s + build_s + wall1) / wall2, 2),
        "startup_s_workers2": round(startup2, 2),
        "ms_per_spectrum_per_worker_workers1": round(wall1 * 1e3 / args.n, 2),
        "ms_per_spectrum_per_worker_workers2": round((wall2 - startup2) * 2e3 / args.n, 2),
    }

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "command": shlex.join(["python", *sys.argv]),
        "bagpipes_single": single,
        "r_spec": r_res,
        "parallel": parallel,
        "identical_results": bool(identical),
        "notes": [
            "ms_per_spectrum: mean over all N draws after one warm-up call that builds the "
            f"model; ms_per_spectrum_min_block: the fastest block of {block} (less machine noise).",
            "r_spec: the R values are timed in alternating blocks on the same draws in one run.",
            "workers=1 runs in this process, where bagpipes is already imported and the model "
            "built, so wall_s_workers1 is steady state plus file I/O; speedup = wall1/wall2; "
            "speedup_cold adds this run's import_s + model_build_s to wall1 (a fresh process).",
            "workers=2 spawns a fresh pool each call; startup_s_workers2 is the wall time of the "
            "same call with n=2, chunk_size=1 (spawn, import, model build, 1-2 spectra, write); "
            "its steady ms per spectrum per worker = (wall2 - startup) * 2 / n.",
            "load_average_1min: other processes on the machine compete for its cores.",
        ],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
