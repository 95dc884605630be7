"""The `specsbi` command line: simulate, train, infer."""

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
        sim = emulator.as_simulator(model=str(args.emulator))
        prior = _narrow(emulator.prior, ranges, fixed)
        workers, chunk_size = 1, chunk_size or 5000  # fast: one process, large chunks
    else:
        if args.simulator == "toy":
            sim = ToySimulator()
        else:
            sim = BagpipesSimulator(R_spec=args.r_spec)
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
    model.fit(data)
    path = model.save(args.out, overwrite=args.overwrite)
    q = model.metrics["rest_frac_error_p50_p68_p95_p99"]
    print(f"saved emulator ({args.kind}) to {path}: validation |Δf|/f 68th {q[1]:.2%}, "
          f"95th {q[2]:.2%}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .spectra import SpectraSet
    from .training import TrainConfig

    if args.what == "emulator":
        config = TrainConfig(batch_size=args.batch_size, lr=args.lr, max_epochs=args.epochs,
                             patience=args.patience)
        return _train_emulator(args, config)
    if args.kind is not None:
        raise ValueError(f"`specsbi train {args.what}` takes no model kind; got {args.kind!r}")
    rows = slice(0, args.n) if args.n else None
    data = SpectraSet.read(args.data, rows=rows)
    config = TrainConfig(batch_size=args.batch_size, lr=args.lr, max_epochs=args.epochs,
                         patience=args.patience)
    common = dict(variant=args.variant, flow=args.flow, train_config=config, seed=args.seed,
                  noise_draws=args.noise_draws, progress=not args.no_progress)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.what == "npe":
        from .spectrum_posterior import SpectrumPosterior

        model = SpectrumPosterior(targets=targets, **common)
    else:
        from .spectrum_likelihood import SpectrumLikelihood

        model = SpectrumLikelihood(targets=targets, **common)
    from .files import check_writable

    check_writable(args.out, args.overwrite)  # fail before hours of training, not after
    model.fit(data)
    path = model.save(args.out, overwrite=args.overwrite)
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
    path = infer_catalog(model, args.inputs, args.out, n_samples=args.samples,
                         chunk=args.chunk, overwrite=args.overwrite,
                         progress=not args.no_progress)
    print(f"wrote posteriors to {path}")
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
    sim.add_argument("--r-spec", type=float, default=1000.0,
                     help="bagpipes internal resolution R (default 1000; SDSS ≈ 2000)")
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
    tr.add_argument("kind", nargs="?", help="emulator kind: pca (vae, gan, diffusion to come)")
    tr.add_argument("--components", type=int, help="emulator PCA components (default 96)")
    tr.add_argument("--variant", choices=["dependent", "augmented"], default="dependent")
    tr.add_argument("--data", required=True, help="simulated HDF5 training set")
    tr.add_argument("--out", required=True, help="model folder to write")
    tr.add_argument("--targets", default="log_mstar,redshift",
                    help="comma-separated parameters to infer (default log_mstar,redshift)")
    tr.add_argument("--flow", choices=["nsf", "maf"], default="nsf")
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
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)

    inf = sub.add_parser("infer", help="posteriors for every galaxy of a file")
    inf.add_argument("inputs", nargs="+", help="an HDF5 file or SDSS spec-*.fits files")
    inf.add_argument("--out", required=True, help="output HDF5 (samples, summary, flags)")
    inf.add_argument("--model", default="default", help="model folder (default: shipped)")
    inf.add_argument("--samples", type=int, default=1000, help="posterior samples per galaxy")
    inf.add_argument("--chunk", type=int, default=500, help="galaxies per chunk")
    inf.add_argument("--overwrite", action="store_true")
    inf.add_argument("--no-progress", action="store_true")
    inf.set_defaults(func=_cmd_infer)
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
