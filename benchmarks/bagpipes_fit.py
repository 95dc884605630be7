"""bagpipes' own fit (nautilus, the true likelihood) of held-out galaxies: the reference for MCMC.

Fits each chosen galaxy's noisy spectrum, with its own errors, using bagpipes'
``fit`` with the model of ``specsbi.simulators.BagpipesSimulator`` (delayed-τ SFH,
BC03, Calzetti dust, nebular emission, velocity dispersion, R_spec of the test
file) and the priors of ``ss.default_prior()``. One difference is unavoidable:
bagpipes cannot sample the age as a fraction of the age of the universe, so the
age is uniform in [0.05, 13.2] Gyr with bagpipes' own cut at the age of the
universe; with the redshift pinned to ~1e-5 by the data that changes the
posterior only for galaxies near the edges of the age prior.

Writes ``OUT.h5`` (``/galaxy_I/samples``: (n, 2) draws of log_mstar, redshift, with
attributes ``wall_s`` and the truth) and ``OUT.json`` (per galaxy: wall time, median,
16th and 84th percentiles, truth), both after each galaxy; a later run with the same
OUT and settings adds its galaxies to them (fits can be split across runs).
CPU-heavy (10–20 minutes per galaxy at n_live=200 on an idle core). Check it end to end with e.g.::

    python benchmarks/bagpipes_fit.py --test data/test1k.h5 --galaxies 0 --n-live 40 \
        --out /tmp/bp_check
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from specsbi import SpectraSet, default_prior
from specsbi.simulators.bagpipes import import_bagpipes


def fit_instructions(prior, r_spec: float) -> dict:
    """bagpipes' ``fit_instructions`` for the default prior's model."""
    rng = prior.ranges
    return {
        "redshift": rng["redshift"],
        "veldisp": rng["veldisp"],
        "delayed": {
            "massformed": rng["log_mformed"],
            "metallicity": rng["metallicity"],
            "age": (0.05, 13.2),
            "tau": tuple(10.0 ** np.array(rng["log_tau"])),
            "tau_prior": "log_10",  # log_tau uniform
        },
        "dust": {"type": "Calzetti", "Av": rng["av"]},
        "nebular": {"logU": rng["log_u"]},
    }


def fit_one(pipes, spec, index: int, instructions: dict, n_live: int, pool: int,
            workdir: Path) -> tuple[np.ndarray, float]:
    """Fit one galaxy; return (n, 2) draws of (log_mstar, redshift) and the wall time."""
    flux = spec.flux.astype(np.float64) * 1e-17  # bagpipes wants erg/s/cm²/Å
    err = spec.err.astype(np.float64) * 1e-17
    bad = ~np.isfinite(err) | (err <= 0)
    err[bad] = 1e10 * np.median(err[~bad])  # a masked pixel: no weight, finite normalisation
    flux[bad] = 0.0
    data = np.c_[spec.wavelength, flux, err]
    galaxy = pipes.galaxy(f"g{index}", lambda _id: data, photometry_exists=False,
                          spectrum_exists=True)
    cwd = os.getcwd()
    os.chdir(workdir)  # bagpipes writes pipes/posterior/... under the working directory
    pipes.utils.working_dir = str(workdir)  # (it fixed that directory at import time)
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            fit = pipes.fit(galaxy, instructions, run=f"specsbi_{index}")
            fit.fit(verbose=False, sampler="nautilus", n_live=n_live, pool=pool)
            fit.posterior.get_basic_quantities()
        wall = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
    samples = fit.posterior.samples
    return np.c_[samples["stellar_mass"], samples["redshift"]], wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--test", required=True, help="held-out HDF5 set (DESIGN.md layout)")
    ap.add_argument("--galaxies", type=int, nargs="+", required=True, help="row indices")
    ap.add_argument("--out", required=True, help="output stem: writes OUT.h5 and OUT.json")
    ap.add_argument("--n-live", type=int, default=400, help="nautilus live points")
    ap.add_argument("--pool", type=int, default=1, help="nautilus worker processes")
    ap.add_argument("--workdir", help="where bagpipes writes its files (default: a temp dir)")
    args = ap.parse_args(argv)
    pipes = import_bagpipes()
    test = SpectraSet.read(args.test)
    r_spec = float((test.attrs.get("simulator") or {}).get("R_spec", 1000.0))
    pipes.config.R_spec = r_spec
    prior = default_prior()
    if test.attrs.get("prior"):
        from specsbi import Prior

        prior = Prior.from_json(test.attrs["prior"])
    instructions = fit_instructions(prior, r_spec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bagpipes_fit_"))
    workdir.mkdir(parents=True, exist_ok=True)
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "cores": os.cpu_count(), "command": " ".join([sys.executable, *sys.argv]),
               "n_live": args.n_live, "pool": args.pool, "r_spec": r_spec,
               "fit_instructions": instructions, "galaxies": {}}
    json_path = out.with_suffix(".json")
    if json_path.exists():  # galaxies fitted by earlier runs into the same OUT stay
        before = json.loads(json_path.read_text())
        if before.get("n_live") != args.n_live or before.get("r_spec") != r_spec:
            raise SystemExit(f"{json_path} holds fits with other settings (n_live "
                             f"{before.get('n_live')}, R_spec {before.get('r_spec')}); "
                             "choose another --out")
        summary["galaxies"] = before.get("galaxies", {})
        summary["earlier_commands"] = [*before.get("earlier_commands", []), before["command"]]
    for i in args.galaxies:
        draws, wall = fit_one(pipes, test[i], i, instructions, args.n_live, args.pool,
                              workdir)
        truth = {k: float(test.params[k][i]) for k in ("log_mstar", "redshift")}
        key = f"galaxy_{i}"
        # the file is open only while one galaxy is written: an interruption during a
        # (long) fit leaves every earlier galaxy readable
        with h5py.File(out.with_suffix(".h5"), "a") as h5:
            if key in h5:
                del h5[key]
            g = h5.create_group(key)
            g.create_dataset("samples", data=draws.astype(np.float64))
            g.attrs["columns"] = ["log_mstar", "redshift"]
            g.attrs["wall_s"] = wall
            g.attrs["truth"] = json.dumps(truth)
        q = np.percentile(draws, [50, 16, 84], axis=0)
        summary["galaxies"][str(i)] = {
            "wall_s": round(wall, 1), "n_draws": len(draws), "truth": truth,
            **{name: {"median": float(q[0, j]), "p16": float(q[1, j]),
                      "p84": float(q[2, j])}
               for j, name in enumerate(["log_mstar", "redshift"])}}
        print(json.dumps({key: summary["galaxies"][str(i)]}), flush=True)
        tmp = json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
