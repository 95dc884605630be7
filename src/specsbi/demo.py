"""`specsbi demo`: the shipped model on the shipped example galaxies, end to end, in a minute.

Writes into one folder: a summary table of posteriors against the truth
(markdown and CSV), corner plots of a few galaxies, a spectrum with its model
(the posterior-predictive band when an emulator is available), and the
coverage and SBC figures of the model on the shipped held-out simulations.

The example data ship inside the package (``specsbi/data/``); they are rebuilt
from a held-out simulated set with ``python -m specsbi.demo build-data FILE``.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .spectra import SpectraSet

__all__ = ["build_example_data", "data_path", "run_demo"]

log = logging.getLogger(__name__)
EXAMPLES, HELDOUT = "examples.h5", "heldout.h5"
MCMC_STEPS = 1000  # emcee steps of the demo's emulator fit for the predictive band


def data_path(name: str) -> Path:
    """A data file shipped with specsbi (``examples.h5``, ``heldout.h5``)."""
    path = Path(str(resources.files("specsbi") / "data" / name))
    if not path.exists():
        raise FileNotFoundError(f"specsbi's example data {name} is not installed ({path})")
    return path


def build_example_data(source: str | os.PathLike, folder: str | os.PathLike | None = None,
                       n_examples: int = 8, n_heldout: int = 200,
                       overwrite: bool = False) -> tuple[Path, Path]:
    """Write the demo's data from a held-out simulated set (never the training set).

    ``examples.h5``: the first ``n_examples`` galaxies, noisy, with their noiseless
    flux and every parameter. ``heldout.h5``: the first ``n_heldout`` (noisy flux
    and parameters only), for the coverage and SBC figures. Both gzip-compressed.

    Args:
        source: a simulated HDF5 file held out from training (e.g. test1k.h5).
        folder: where to write (default: the installed ``specsbi/data``).
        n_examples, n_heldout: galaxies in each file.
        overwrite: replace existing files.
    """
    folder = Path(folder) if folder is not None else Path(str(resources.files("specsbi"))) / "data"
    if not 1 <= n_examples <= n_heldout:
        raise ValueError(f"need 1 <= n_examples <= n_heldout; got {n_examples}, {n_heldout}")
    held = SpectraSet.read(source, rows=slice(0, n_heldout))
    if len(held) < n_heldout:
        raise ValueError(f"{source} holds {len(held)} galaxies; asked for {n_heldout}")
    attrs = {**held.attrs, "source": str(Path(source).name)}
    ex = held[:n_examples]
    ex = SpectraSet(ex.wavelength, ex.flux, ex.err, ex.mask, ex.params, ex.flux_noiseless, attrs)
    out_ex = ex.write(folder / EXAMPLES, overwrite, compression="gzip")
    slim = SpectraSet(held.wavelength, held.flux, held.err, held.mask, held.params, None, attrs)
    out_held = slim.write(folder / HELDOUT, overwrite, compression="gzip")
    return out_ex, out_held


def _fmt(med: float, lo: float, hi: float) -> str:
    from .plots import decimals

    digits = decimals(min(med - lo, hi - med))
    return f"{med:.{digits}f} +{hi - med:.{digits}f} −{med - lo:.{digits}f}"


def _table(names: list[str], obs: SpectraSet, draws: np.ndarray, flags: np.ndarray
           ) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per galaxy: truth, median, 16th, 84th per target, (median − truth)/σ."""
    q = np.percentile(draws, [50, 16, 84], axis=1)  # (3, b, d)
    rows, lines = [], []
    head = ["galaxy", "S/N"] + [f"{n} {w}" for n in names for w in ("true", "posterior")] + \
        [f"pull {n}" for n in names] + ["OOD"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    snr = obs.params.get("snr", np.full(len(obs), np.nan))
    for i in range(len(obs)):
        row: dict[str, Any] = {"galaxy": i, "snr": float(snr[i])}
        cells = [str(i), f"{row['snr']:.1f}"]
        pulls = []
        for j, n in enumerate(names):
            med, lo, hi = q[0, i, j], q[1, i, j], q[2, i, j]
            true = float(obs.params[n][i]) if n in obs.params else np.nan
            row.update({f"{n}_true": true, f"{n}_median": med, f"{n}_p16": lo, f"{n}_p84": hi})
            cells += [f"{true:.6g}", _fmt(med, lo, hi)]
            pulls.append((med - true) / max((hi - lo) / 2, 1e-300))
        row.update({f"pull_{n}": p for n, p in zip(names, pulls, strict=True)})
        row["ood"] = bool(flags[i])
        cells += [f"{p:+.2f}" for p in pulls] + ["yes" if flags[i] else "no"]
        rows.append(row)
        lines.append("| " + " | ".join(cells) + " |")
    return rows, lines


def _load_emulator(emulator: Any) -> Any:
    """The emulator to draw the predictive band with: a model folder, an object with
    ``predict``, or None for the shipped default if one is installed."""
    from .models import load

    if emulator is not None and not isinstance(emulator, (str, os.PathLike)):
        return emulator
    if isinstance(emulator, str) and emulator.lower() == "none":
        return None
    try:
        emu = load(emulator or "default-emulator")
    except (FileNotFoundError, ValueError) as err:
        if emulator is not None:
            raise
        log.info("no default emulator installed (%s); the spectrum plot shows the noiseless "
                 "simulation instead of a predictive band", err)
        return None
    if not hasattr(emu, "predict"):
        raise ValueError(f"{emulator} is not an emulator (it has no predict(θ))")
    return emu


def _predictive(emu: Any, spec: Any, draws: np.ndarray, names: list[str]
                ) -> tuple[np.ndarray | None, Any]:
    """Predictive flux draws for the spectrum plot, and an emulator + MCMC posterior
    when the emulator needs parameters the model does not infer (else None)."""
    from .diagnostics import predictive_flux

    wanted = getattr(emu, "param_names", None)
    if wanted is None or set(wanted) <= set(names):
        return predictive_flux(emu, draws, 200, names=names), None
    from . import mcmc

    # a short chain: the band needs a few hundred draws, not converged tails, so the
    # convergence warning is not the user's concern here
    quiet = logging.getLogger("specsbi.mcmc")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        post = mcmc.sample(emu, spec, prior=getattr(emu, "prior", None), n_steps=MCMC_STEPS,
                           progress=False)
    finally:
        quiet.setLevel(level)
    return predictive_flux(emu, post, 200), post


def run_demo(out: str | os.PathLike = "specsbi-demo", model: Any = "default",
             emulator: Any = None, examples: str | os.PathLike | None = None,
             heldout: str | os.PathLike | None = None, n_samples: int = 2000,
             n_corner: int = 3) -> dict[str, Path]:
    """Run the demo and return what it wrote (name → path).

    Args:
        out: folder for the results (created; files in it are replaced).
        model: a model folder, a loaded spectrum model, or "default" (shipped).
        emulator: a model folder or object with ``predict(θ)`` for the predictive
            band; None uses the shipped default emulator if one is installed, "none"
            draws no band.
        examples, heldout: spectra files (default: the shipped ones).
        n_samples: posterior draws per example galaxy.
        n_corner: galaxies that get a corner plot.
    """
    from . import plots
    from .diagnostics import expected_coverage, sbc
    from .models import load

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = load(model) if isinstance(model, (str, os.PathLike)) else model
    if not hasattr(m, "summarize"):
        raise ValueError(f"{model} is not a spectrum model (train one with `specsbi train npe`)")
    names = list(m.targets)
    obs = SpectraSet.read(examples or data_path(EXAMPLES))
    held = SpectraSet.read(heldout or data_path(HELDOUT))
    log.info("posteriors of %d example galaxies", len(obs))
    draws = m.posterior(obs).sample(n_samples)
    _, flags = m.ood(m.summarize(obs))
    rows, lines = _table(names, obs, draws, flags)
    written: dict[str, Path] = {}
    for i in range(min(n_corner, len(obs))):
        fig = plots.corner(draws[i], names=names, truth=obs[i].params)
        fig.suptitle(f"example galaxy {i}", x=0.7, y=0.98)
        written[f"corner_{i}"] = plots.save(fig, out / f"corner_{i}.png")
    emu = _load_emulator(emulator)
    pred, post_emu = (None, None) if emu is None else _predictive(emu, obs[0], draws[0], names)
    fig = plots.spectrum(obs[0], pred, title="example galaxy 0: " + ", ".join(
        f"{plots.label(n)} = {_fmt(*np.percentile(draws[0][:, j], [50, 16, 84]))}"
        for j, n in enumerate(names)))
    written["spectrum_0"] = plots.save(fig, out / "spectrum_0.png")
    if post_emu is not None:
        fig = plots.corner([draws[0], post_emu], names=names, truth=obs[0].params,
                           legend=["amortized posterior", "emulator + MCMC"])
        written["corner_0_emulator"] = plots.save(fig, out / "corner_0_emulator.png")
    log.info("calibration on %d held-out simulations", len(held))
    hd = m.posterior(held).sample(500)
    cov = expected_coverage(hd, held.params, names=names)
    ranks = sbc(hd, held.params, names=names)
    written["coverage"] = plots.save(plots.coverage(cov), out / "coverage.png")
    written["sbc"] = plots.save(plots.sbc(ranks), out / "sbc.png")
    dev = cov.max_deviation
    lines += ["", f"Calibration on {len(held)} held-out simulations: largest distance of the "
              "coverage curve from the diagonal " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                              dev.items())
              + f" (a calibrated model stays within ±{cov.band().max():.3f} at each level, "
              "95 %); SBC rank uniformity p-values (χ²) " + ", ".join(
                  f"{n} {p:.2g}" for n, p in zip(names, ranks.chi2_pvalue, strict=True)) + "."]
    text = "# specsbi demo\n\nPosterior median +(84th − median) −(median − 16th) per " \
        "example galaxy; pull = (median − truth) / half the 68 % width.\n\n" + \
        "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    written["summary_md"] = out / "summary.md"
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    written["summary_csv"] = out / "summary.csv"
    log.info("demo finished in %.1f s", time.perf_counter() - t0)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m specsbi.demo build-data FILE [--out DIR]``: rebuild the shipped data."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m specsbi.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-data", help="rebuild the demo's example data")
    build.add_argument("source", help="held-out simulated HDF5 file (e.g. test1k.h5)")
    build.add_argument("--out", help="folder (default: the installed specsbi/data)")
    build.add_argument("--examples", type=int, default=8)
    build.add_argument("--heldout", type=int, default=200)
    args = parser.parse_args(argv)
    paths = build_example_data(args.source, args.out, args.examples, args.heldout,
                               overwrite=True)
    for p in paths:
        print(f"wrote {p} ({p.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
