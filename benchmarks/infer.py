"""Catalog inference at survey scale: `specsbi infer` on 100,000 spectra.

The 100k catalog is the 1,000 held-out bagpipes simulations of test1k.h5 repeated
100 times, each repeat with a fresh noise draw (its own S/N in U(5, 30) and Gaussian
noise) added to the noiseless flux, written in the DESIGN.md layout to a scratch file.

Runs, each the real command line in its own process (wall time, and the process's
peak resident memory from ``os.wait4``):

- 100k galaxies, chunk 500;
- 10k galaxies (the first 10 repeats), chunk 500 and chunk 2000: peak memory set by
  the chunk, not the catalog size;
- 10k galaxies, chunk 500, interrupted (SIGINT) part-way and rerun: the resumed file
  must equal the uninterrupted one.

Reference (same model, measured right before each run): the model's own posterior
sampling in-process on 1,000 spectra already in memory; ``reference_over_cli`` is its
galaxies/s over the CLI's (1 means reading, chunking and writing cost nothing).
Finished runs are kept in ``runs.json`` in --scratch, so an interrupted benchmark
resumes (``--fresh`` measures everything again).

    python benchmarks/infer.py --model /path/to/model [--samples 200] [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

import specsbi as ss

ROOT = Path(__file__).resolve().parents[1]


def build_catalog(source: Path, out: Path, repeats: int, seed: int = 7) -> Path:
    """``repeats`` × the galaxies of ``source``, fresh noise each time, in bounded memory."""
    if out.exists():
        with h5py.File(out) as h5:
            if h5["raw/spec"].shape[0] == repeats * h5.attrs["source_rows"]:
                return out
    test = ss.SpectraSet.read(source)
    n, npix = len(test), test.npix
    noise = ss.NoiseModel(snr=(5.0, 30.0))
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        h5.attrs["format_version"] = 1
        h5.attrs["source_rows"] = n
        h5.attrs["how"] = f"{source.name} x {repeats}, fresh noise per repeat (seed {seed})"
        raw = h5.create_group("raw")
        raw["wavelength"] = test.wavelength
        spec = raw.create_dataset("spec", (repeats * n, npix), "f4", chunks=(250, npix))
        err = raw.create_dataset("specerr", (repeats * n, npix), "f4", chunks=(250, npix),
                                 compression="lzf")
        for key, name in (("redshift", "z"), ("log_mstar", "smass"), ("snr", "snr")):
            raw[name] = np.tile(test.params[key], repeats)
        for r in range(repeats):
            flux, sigma, _ = noise.sample(test.flux_noiseless.astype(np.float64),
                                          np.random.default_rng([seed, r]))
            spec[r * n : (r + 1) * n] = flux
            err[r * n : (r + 1) * n] = sigma
    os.replace(tmp, out)
    return out


def run_cli(args: list[str], interrupt_when: Callable[[], bool] | None = None) -> dict:
    """Run ``specsbi`` in a child process; its wall time and peak RSS (MiB). With
    ``interrupt_when``, send Ctrl-C (SIGINT) as soon as it returns True."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "specsbi.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            # a background shell starts children with Ctrl-C ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    sent = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if interrupt_when is not None and not sent and interrupt_when():
            os.kill(proc.pid, signal.SIGINT)
            sent = True
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if interrupt_when is None and proc.returncode != 0:
        raise RuntimeError(f"specsbi {' '.join(args)} failed: {err}")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "exit_code": proc.returncode,
            "stderr_tail": err.strip().splitlines()[-1:] if err else []}


def reference(model_path: str, source: Path, samples: int) -> float:
    """Galaxies/s of in-process posterior sampling of 1,000 in-memory spectra (no files,
    no chunks), measured in a child process right before each run it is compared with."""
    code = ("import sys, time, specsbi as ss\n"
            "m = ss.load(sys.argv[1]); obs = ss.SpectraSet.read(sys.argv[2])\n"
            "t0 = time.perf_counter()\n"
            "for i in range(0, len(obs), 500):\n"
            "    m.posterior(obs[i:i + 500]).sample(int(sys.argv[3]))\n"
            "print(len(obs) / (time.perf_counter() - t0))")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code, model_path, str(source), str(samples)],
                         env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--source", default="/work/data/test1k.h5")
    parser.add_argument("--scratch", default="/work/scratch/takehome/infer")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--fresh", action="store_true",
                        help="measure every run again (default: reuse runs.json in --scratch)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/infer.json"))
    args = parser.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    source = Path(args.source)
    with h5py.File(source) as h5:
        n_src = h5["raw/spec"].shape[0]
    t0 = time.perf_counter()
    big = build_catalog(source, scratch / f"catalog{args.n // 1000}k.h5", args.n // n_src)
    small = build_catalog(source, scratch / "catalog10k.h5", 10_000 // n_src)
    build_s = time.perf_counter() - t0
    cache = scratch / "runs.json"  # a benchmark of hours resumes too
    done = json.loads(cache.read_text()) if cache.exists() and not args.fresh else {}
    key = f"{args.model}|{args.samples}|"

    def infer(path: Path, out: str, chunk: int, **kw) -> dict:
        cli = ["infer", str(path), "--model", args.model, "--out", str(scratch / out),
               "--samples", str(args.samples), "--chunk", str(chunk), "--no-progress",
               "--overwrite"]
        return run_cli(cli, **kw)

    def save(name: str, result: dict) -> None:
        done[key + name] = {**result, "measured": datetime.now(timezone.utc).isoformat(
            timespec="seconds")}
        cache.write_text(json.dumps(done, indent=1))
        print(name, done[key + name], flush=True)

    for name, path, chunk in (("10k_chunk500", small, 500), ("10k_chunk2000", small, 2000),
                              (f"{args.n // 1000}k_chunk500", big, 500)):
        if key + name in done:
            continue
        ref = reference(args.model, source, args.samples)
        r = infer(path, f"{name}.h5", chunk)
        with h5py.File(path) as h5:
            n = h5["raw/spec"].shape[0]
        save(name, {**r, "galaxies": n, "chunk": chunk,
                    "galaxies_per_s": round(n / r["wall_s"], 2),
                    "reference_galaxies_per_s": round(ref, 2),
                    "reference_over_cli": round(ref / (n / r["wall_s"]), 2)})
    name = "10k_chunk500_interrupted_then_resumed"
    if key + name not in done:  # Ctrl-C once 4 of the 20 chunks are saved, then rerun
        parts = scratch / "resumed.h5.parts"
        first = infer(small, "resumed.h5", 500,
                      interrupt_when=lambda: len(list(parts.glob("chunk_*.npz"))) >= 4)
        kept = len(list(parts.glob("chunk_*.npz")))
        second = infer(small, "resumed.h5", 500)
        with h5py.File(scratch / "resumed.h5") as a, \
                h5py.File(scratch / "10k_chunk500.h5") as b:
            same = all(np.array_equal(a[k][()], b[k][()], equal_nan=True)
                       for k in ("samples", "summary", "flags/ood", "flags/ood_score"))
        save(name, {"interrupted_exit_code": first["exit_code"],
                    "interrupted_after_s": first["wall_s"],
                    "interrupt_message": first["stderr_tail"], "chunks_kept": kept,
                    "resumed_wall_s": second["wall_s"],
                    "identical_to_uninterrupted": bool(same)})
    result = {
        "benchmark": "catalog inference (specsbi infer)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "samples_per_galaxy": args.samples,
        "catalog": f"{source.name} x {args.n // n_src} with fresh noise per repeat "
                   f"(built in {build_s:.0f} s)",
        "runs": {k.removeprefix(key): v for k, v in done.items() if k.startswith(key)},
        "note": "wall times on a shared 2-core machine under load from other jobs; the "
                "reference (in-process sampling of 1,000 in-memory spectra) is measured "
                "right before each run; peak RSS is the whole process (Python, torch, "
                "the model), from os.wait4",
    }
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
