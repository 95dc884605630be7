"""The `specsbi` command line: simulate, train, infer, compare generators."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("specsbi")


def _name_values(items: list[str], what: str) -> dict[str, list[float]]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = [float(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(
                f"{what} takes NAME=VALUE (e.g. log_u=-3 or av=0,1); got {item!r}"
            ) from None
    return out


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .noise import NoiseModel
    from .priors import default_prior
    from .simulation import simulate_to_file
    from .simulators import BagpipesSimulator, ToySimulator

    prior = default_prior()
    ranges = _name_values(args.range or [], "--range")
    if any(len(v) != 2 for v in ranges.values()):
        raise ValueError("--range takes NAME=LOW,HIGH")
    if ranges:
        prior = prior.with_ranges(**{k: tuple(v) for k, v in ranges.items()})
    fixed = _name_values(args.fix or [], "--fix")
    if any(len(v) != 1 for v in fixed.values()):
        raise ValueError("--fix takes NAME=VALUE")
    if fixed:
        prior = prior.with_fixed(**{k: v[0] for k, v in fixed.items()})
    chunk_size = args.chunk_size
    if args.emulator:
        emulator = _load_emulator(args.emulator)
        sim = emulator.as_simulator(model=str(args.emulator), error=args.emulator_error)
        prior = _narrow(emulator.prior, ranges, fixed)
        workers, chunk_size = 1, chunk_size or 5000  # fast: one process, large chunks
    else:
        if args.emulator_error:
            raise ValueError("--emulator-error needs --emulator")
        if args.simulator == "toy":
            sim = ToySimulator()
        else:
            sim = BagpipesSimulator(R_spec=args.r_spec, sfh=args.sfh, dust=args.dust)
        workers = args.scheduler if args.scheduler else args.workers
    path = simulate_to_file(
        sim, prior, args.n, args.out, workers=workers, seed=args.seed,
        noise=NoiseModel(snr=(args.snr_min, args.snr_max)), chunk_size=chunk_size,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(f"wrote {args.n} simulated spectra to {path}")
    return 0


def _load_emulator(path: str):
    from .emulators import Emulator
    from .models import load

    model = load(path)
    if not isinstance(model, Emulator):
        raise ValueError(f"{path} is not an emulator (train one with `specsbi train emulator "
                         "pca --data FILE --out DIR`)")
    return model


def _narrow(prior, ranges: dict, fixed: dict):
    """The emulator's prior with --range/--fix applied (they must stay inside it)."""
    for name, (lo, hi) in ((k, tuple(v)) for k, v in ranges.items()):
        if name not in prior.ranges:
            raise ValueError(f"--range {name}: not a free parameter of the emulator's prior "
                             f"{prior.names}")
        a, b = prior.ranges[name]
        if lo < a or hi > b:
            raise ValueError(f"--range {name}={lo:g},{hi:g} leaves the emulator's trained "
                             f"range [{a:g}, {b:g}]")
    if ranges:
        prior = prior.with_ranges(**{k: tuple(v) for k, v in ranges.items()})
    if fixed:
        prior = prior.with_fixed(**{k: v[0] for k, v in fixed.items()})
    return prior


def _train_emulator(args: argparse.Namespace, config) -> int:
    from .emulators import EMULATORS, KINDS
    from .files import check_writable
    from .spectra import SpectraSet

    if args.kind not in KINDS:
        raise ValueError(f"`specsbi train emulator` takes one of {sorted(KINDS)}; got "
                         f"{args.kind!r}")
    check_writable(args.out, args.overwrite)
    data = SpectraSet.read(args.data, rows=slice(0, args.n) if args.n else None)
    extra = {"n_components": args.components} if args.components else {}
    model = EMULATORS[KINDS[args.kind]](train_config=config, seed=args.seed,
                                        progress=not args.no_progress, **extra)
    model.fit(data, checkpoint=args.checkpoint)
    path = model.save(args.out, overwrite=args.overwrite)
    _done_with(args.checkpoint)
    q = model.metrics["rest_frac_error_p50_p68_p95_p99"]
    print(f"saved emulator ({args.kind}) to {path}: validation |Δf|/f 68th {q[1]:.2%}, "
          f"95th {q[2]:.2%}")
    return 0


def _done_with(checkpoint: str | None) -> None:
    """The model is saved: its training checkpoint has served."""
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from .spectra import SpectraSet
    from .training import TrainConfig

    config = TrainConfig(batch_size=args.batch_size, lr=args.lr, max_epochs=args.epochs,
                         patience=args.patience)
    if args.checkpoint:
        Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    if args.what == "emulator":
        return _train_emulator(args, config)
    if args.kind is not None:
        raise ValueError(f"`specsbi train {args.what}` takes no model kind; got {args.kind!r}")
    rows = slice(0, args.n) if args.n else None
    data = SpectraSet.read(args.data, rows=rows)
    common = dict(variant=args.variant, flow=args.flow, train_config=config, seed=args.seed,
                  compressor=args.compressor,
                  noise_draws=args.noise_draws, progress=not args.no_progress)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.what == "npe":
        from .spectrum_posterior import SpectrumPosterior

        model = SpectrumPosterior(targets=targets, embed=args.embed, **common)
    else:
        from .spectrum_likelihood import SpectrumLikelihood

        model = SpectrumLikelihood(targets=targets, **common)
    from .files import check_writable

    check_writable(args.out, args.overwrite)  # fail before hours of training, not after
    model.fit(data, checkpoint=args.checkpoint)
    path = model.save(args.out, overwrite=args.overwrite)
    _done_with(args.checkpoint)
    h = model.history
    print(f"saved {args.what} ({args.variant}) to {path}: best validation loss "
          f"{h.best_val_loss:.3f} at epoch {h.best_epoch + 1} of {len(h.val_loss)}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from .inference import infer_catalog
    from .models import load

    model = load(args.model)
    if not hasattr(model, "summarize"):
        raise ValueError(f"{args.model} is not a spectrum model (train one with `specsbi "
                         "train npe --data FILE`)")
    emulator = _load_emulator(args.emulator) if args.emulator else None
    path = infer_catalog(model, args.inputs, args.out, n_samples=args.samples,
                         chunk=args.chunk, overwrite=args.overwrite,
                         progress=not args.no_progress, emulator=emulator, seed=args.seed)
    print(f"wrote posteriors to {path}")
    return 0


def _cmd_compare_generators(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .generative.comparison import Budget, compare_generators
    from .spectra import SpectraSet

    budget_fields = {f.name for f in fields(Budget)} - {"hidden"}
    values = _name_values(args.budget or [], "--budget")
    bad = sorted(set(values) - budget_fields)
    if bad or any(len(v) != 1 or v[0] != int(v[0]) for v in values.values()):
        raise ValueError(f"--budget takes NAME=INTEGER with NAME among {sorted(budget_fields)}")
    budget = Budget(**{k: int(v[0]) for k, v in values.items()})
    if args.test:
        train = SpectraSet.read(args.data, rows=slice(0, budget.n_train))
        test = SpectraSet.read(args.test, rows=slice(0, budget.n_eval))
    else:  # hold out the last n_eval spectra of --data
        data = SpectraSet.read(args.data, rows=slice(0, budget.n_train + budget.n_eval))
        if len(data) < budget.n_eval + 100:
            raise ValueError(f"{args.data} has {len(data)} spectra; need at least "
                             f"{budget.n_eval + 100} (or pass --test FILE)")
        train, test = data[: len(data) - budget.n_eval], data[len(data) - budget.n_eval :]
    result = compare_generators(train, test, args.out, budget, seed=args.seed,
                                progress=not args.no_progress)
    from .generative.comparison import markdown

    print(markdown(result))
    print(f"wrote {args.out}/generators.json, generators.md and figures")
    return 0


def _cmd_corner(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .plots import corner, save
    from .spectra import SpectraSet, open_hdf5

    draws, names = [], None
    for path in args.posteriors:
        with open_hdf5(Path(path)) as h5:
            if "samples" not in h5 or "param_names" not in h5:
                raise ValueError(f"{path} is not a posterior file of `specsbi infer` (no "
                                 "/samples, /param_names)")
            n = h5["samples"].shape[0]
            if not 0 <= args.galaxy < n:
                raise ValueError(f"--galaxy {args.galaxy} is out of range: {path} holds {n}")
            draws.append(h5["samples"][args.galaxy])
            own = [v.decode() for v in h5["param_names"][()]]
        names = names or own
        if own != names:
            raise ValueError(f"{path} is over {own}, the first file over {names}")
    truth = None
    if args.truth_from:
        truth = SpectraSet.read(args.truth_from, rows=slice(args.galaxy, args.galaxy + 1)).params
        if not truth or len(next(iter(truth.values()))) != 1:
            raise ValueError(f"{args.truth_from} has no galaxy {args.galaxy} with parameters")
        truth = {k: float(v[0]) for k, v in truth.items()}
    legend = [s.strip() for s in args.legend.split(",")] if args.legend else (
        [Path(p).stem for p in args.posteriors] if len(draws) > 1 else None)
    fig = corner(draws, names=names, truth=truth, legend=legend)
    print(f"wrote {save(fig, args.out)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    import matplotlib

    matplotlib.use("Agg")
    from .demo import run_demo

    logging.getLogger("specsbi.demo").setLevel(logging.INFO)  # say what each step does
    t0 = time.perf_counter()
    written = run_demo(args.out, model=args.model, emulator=args.emulator,
                       examples=args.examples, heldout=args.heldout)
    print(f"specsbi demo: done in {time.perf_counter() - t0:.0f} s; results in "
          f"{Path(args.out).resolve()}/")
    for name, path in written.items():
        print(f"  {name:18s} {path}")
    print(Path(written["summary_md"]).read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (importing no heavy module)."""
    parser = argparse.ArgumentParser(
        prog="specsbi",
        description="Simulation-based inference of stellar mass and redshift from galaxy spectra.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser("simulate", help="simulate a training set to HDF5")
    sim.add_argument("--n", type=int, required=True, help="number of spectra")
    sim.add_argument("--out", required=True, help="output HDF5 file (DESIGN.md layout)")
    sim.add_argument("--workers", type=int, default=1, help="local worker processes")
    sim.add_argument("--scheduler", help="Dask scheduler address (instead of local workers)")
    sim.add_argument("--seed", type=int, default=0, help="seed of θ and noise")
    sim.add_argument("--simulator", choices=["bagpipes", "toy"], default="bagpipes")
    sim.add_argument("--emulator", metavar="MODEL",
                     help="simulate with a trained emulator (model folder) instead")
    sim.add_argument("--emulator-error", action="store_true",
                     help="with --emulator: multiply each spectrum by a draw of the "
                          "emulator's own error (its validation residuals' covariance)")
    sim.add_argument("--r-spec", type=float, default=1000.0,
                     help="bagpipes internal resolution R (default 1000; SDSS ≈ 2000)")
    sim.add_argument("--sfh", choices=["delayed", "exponential", "constant"], default="delayed",
                     help="bagpipes star-formation history (default delayed-τ; others for "
                          "out-of-distribution tests)")
    sim.add_argument("--dust", choices=["Calzetti", "Cardelli", "SMC"], default="Calzetti",
                     help="bagpipes dust attenuation law (default Calzetti)")
    sim.add_argument("--snr-min", type=float, default=5.0)
    sim.add_argument("--snr-max", type=float, default=30.0)
    sim.add_argument("--chunk-size", type=int, default=None,
                     help="spectra per chunk, the unit of work and of resuming (default n/8, "
                          "10 to 250)")
    sim.add_argument("--fix", action="append", metavar="NAME=VALUE",
                     help="hold a prior parameter fixed (repeatable)")
    sim.add_argument("--range", action="append", metavar="NAME=LOW,HIGH",
                     help="change a prior range (repeatable)")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sim.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sim.set_defaults(func=_cmd_simulate)

    tr = sub.add_parser("train", help="train a posterior (npe) or likelihood (nle) model")
    tr.add_argument("what", choices=["npe", "nle", "emulator"])
    tr.add_argument("kind", nargs="?", help="emulator kind: pca, vae, gan or diffusion")
    tr.add_argument("--components", type=int, help="emulator PCA components (default 96)")
    tr.add_argument("--variant", choices=["dependent", "augmented"], default="dependent")
    tr.add_argument("--data", required=True, help="simulated HDF5 training set")
    tr.add_argument("--out", required=True, help="model folder to write")
    tr.add_argument("--targets", default="log_mstar,redshift",
                    help="comma-separated parameters to infer (default log_mstar,redshift)")
    tr.add_argument("--flow", choices=["nsf", "maf"], default="nsf")
    tr.add_argument("--compressor", choices=["pca", "vae", "ae"], default="pca",
                    help="summary of a spectrum: rest-frame PCA templates (default), or the "
                         "same template fit for ẑ plus the latents of a rest-frame VAE / AE")
    tr.add_argument("--embed", type=int, default=128, metavar="WIDTH",
                    help="npe, dependent variant: width of the MLP that embeds the summary "
                         "before it conditions the flow (default 128; 0: none)")
    tr.add_argument("--n", type=int, help="use only the first N training spectra")
    tr.add_argument("--epochs", type=int, default=300, help="most epochs (early stopping)")
    tr.add_argument("--patience", type=int, default=15)
    tr.add_argument("--noise-draws", type=int, default=None, metavar="K",
                    help="compress K noisy copies of each simulation once, before training "
                         "(much faster; default: fresh noise compressed for every batch)")
    tr.add_argument("--batch-size", type=int, default=256)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("--checkpoint", metavar="FILE",
                    help="save the training state here after every epoch; after an "
                         "interruption the same command resumes from it (deleted once the "
                         "model is saved; not for the vae/gan/diffusion emulators)")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)

    inf = sub.add_parser("infer", help="posteriors for every galaxy of a file")
    inf.add_argument("inputs", nargs="+", help="an HDF5 file or SDSS spec-*.fits files")
    inf.add_argument("--out", required=True, help="output HDF5 (samples, summary, flags)")
    inf.add_argument("--model", default="default", help="model folder (default: shipped)")
    inf.add_argument("--samples", type=int, default=1000, help="posterior samples per galaxy")
    inf.add_argument("--chunk", type=int, default=500,
                     help="galaxies per chunk: bounds memory; finished chunks are kept in "
                          "OUT.parts/ and an interrupted run resumes from them")
    inf.add_argument("--emulator", metavar="MODEL",
                     help="emulator model folder: adds /flags/predictive_chi2")
    inf.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
    inf.add_argument("--overwrite", action="store_true")
    inf.add_argument("--no-progress", action="store_true")
    inf.set_defaults(func=_cmd_infer)

    cg = sub.add_parser("compare-generators",
                        help="train AE, VAE, GAN, flow and diffusion; measure the lecture's table")
    cg.add_argument("--data", required=True, help="simulated HDF5 training set")
    cg.add_argument("--test", help="held-out simulated HDF5 (default: the last rows of --data)")
    cg.add_argument("--out", required=True, help="folder for the JSON, Markdown and figures")
    cg.add_argument("--budget", action="append", metavar="NAME=N",
                    help="override a budget entry, e.g. n_train=20000, vae_epochs=20 (repeatable)")
    cg.add_argument("--seed", type=int, default=0)
    cg.add_argument("--no-progress", action="store_true")
    cg.set_defaults(func=_cmd_compare_generators)

    cor = sub.add_parser("corner", help="corner plot of one galaxy from posterior files")
    cor.add_argument("posteriors", nargs="+", help="posterior HDF5 file(s) of `specsbi infer`; "
                     "several are overlaid")
    cor.add_argument("--galaxy", type=int, required=True, help="row of the galaxy (from 0)")
    cor.add_argument("--out", required=True, help="image to write (.png, .pdf)")
    cor.add_argument("--truth-from", metavar="FILE",
                     help="HDF5 spectra file whose parameters mark the truth")
    cor.add_argument("--legend", help="comma-separated names of the posterior files")
    cor.set_defaults(func=_cmd_corner)

    demo = sub.add_parser("demo", help="the shipped model on example galaxies, end to end")
    demo.add_argument("--out", default="specsbi-demo", help="folder for the results "
                      "(default specsbi-demo/)")
    demo.add_argument("--model", default="default", help="model folder (default: shipped)")
    demo.add_argument("--emulator", help="emulator folder for the predictive band "
                      "(default: the shipped one, if installed; 'none': no band)")
    demo.add_argument("--examples", help="example spectra (default: shipped)")
    demo.add_argument("--heldout", help="held-out simulations for coverage (default: shipped)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a command; bad input exits non-zero with a one-line reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "no_progress", False):  # no bar: a log file still shows each epoch
        logging.getLogger("specsbi.training").setLevel(logging.INFO)
    try:
        if getattr(args, "out", None):  # `--out data/x.h5` creates data/ as users expect
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        return args.func(args)
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        print(f"specsbi {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"specsbi {args.command}: interrupted (finished chunks are kept; rerun to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
