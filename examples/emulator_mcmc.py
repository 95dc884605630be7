"""An emulator inside an MCMC likelihood, overlaid on the amortized posterior.

The emulator (θ → spectrum) replaces the slow simulator in a Gaussian likelihood with
the observed errors; emcee samples it. By default the shipped emulator (a PCAEmulator
trained on 50,000 bagpipes spectra) and the shipped example galaxies; ``--train``
fits a new emulator on a simulated set first.

    python examples/emulator_mcmc.py --galaxy 3
    python examples/emulator_mcmc.py --train data/train.h5 --n 20000
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

import specsbi as ss
from specsbi.demo import data_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator", default="default-emulator",
                        help="emulator folder (default: the shipped one)")
    parser.add_argument("--train", help="fit a PCAEmulator on this simulated set instead")
    parser.add_argument("--n", type=int, default=20_000, help="training spectra to use")
    parser.add_argument("--model", default="default", help="amortized model to compare with")
    parser.add_argument("--data", help="spectra file (default: the shipped examples)")
    parser.add_argument("--galaxy", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50_000,
                        help="most emcee steps (the chain stops once converged)")
    parser.add_argument("--out", default="emulator_mcmc")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")

    if args.train:
        train = ss.SpectraSet.read(args.train, rows=slice(0, args.n))
        emu = ss.emulators.PCAEmulator().fit(train)    # θ → noiseless spectrum
    else:
        emu = ss.load(args.emulator)
    obs = ss.SpectraSet.read(args.data or data_path("examples.h5"))
    galaxy = obs[args.galaxy]
    post_npe = ss.load(args.model).posterior(galaxy)   # amortized: milliseconds
    # emcee under the emulator likelihood, its redshift search narrowed by the NPE
    post_emu = ss.mcmc.sample(emu, galaxy, init=post_npe, n_steps=args.steps)
    print(post_emu.summary())

    fig = ss.plots.corner([post_npe, post_emu], truth=galaxy.params,
                          legend=["amortized posterior", "emulator + MCMC"])
    print(f"wrote {ss.plots.save(fig, f'{args.out}_corner.png')}")
    fig = ss.plots.spectrum(galaxy, (emu, post_emu))   # posterior-predictive band, residuals
    print(f"wrote {ss.plots.save(fig, f'{args.out}_spectrum.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
