"""An emulator inside an MCMC likelihood, overlaid on the amortized posterior.

The emulator (θ → spectrum) replaces the slow simulator in a Gaussian likelihood with
the observed errors; emcee samples it. Written against the DESIGN.md API
(``ss.emulators.PCAEmulator``, ``ss.mcmc.sample``), which arrives with the emulator work:
until then this script stops with a message saying so.

    python examples/emulator_mcmc.py --train data/train.h5 --galaxy 3
"""

from __future__ import annotations

import argparse
import importlib
import sys

import matplotlib

import specsbi as ss
from specsbi.demo import data_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="simulated training set for the emulator")
    parser.add_argument("--n", type=int, default=20_000, help="training spectra to use")
    parser.add_argument("--model", default="default", help="amortized model to compare with")
    parser.add_argument("--data", help="spectra file (default: the shipped examples)")
    parser.add_argument("--galaxy", type=int, default=0)
    parser.add_argument("--out", default="emulator_mcmc")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    try:
        emulators = importlib.import_module("specsbi.emulators")
        mcmc = importlib.import_module("specsbi.mcmc")
        emulators.PCAEmulator, mcmc.sample  # noqa: B018 (the API this script needs)
    except (ImportError, AttributeError):
        print("this specsbi has no emulators yet (ss.emulators.PCAEmulator, ss.mcmc.sample)",
              file=sys.stderr)
        return 2

    train = ss.SpectraSet.read(args.train, rows=slice(0, args.n))
    emu = emulators.PCAEmulator().fit(train)           # θ → noiseless spectrum
    obs = ss.SpectraSet.read(args.data or data_path("examples.h5"))
    galaxy = obs[args.galaxy]
    prior = ss.default_prior()
    post_emu = mcmc.sample(emu, galaxy, prior=prior)   # emcee under the emulator likelihood
    post_npe = ss.load(args.model).posterior(galaxy)   # amortized, for comparison

    fig = ss.plots.corner([post_npe, post_emu], truth=galaxy.params,
                          legend=["amortized posterior", "emulator + MCMC"])
    print(f"wrote {ss.plots.save(fig, f'{args.out}_corner.png')}")
    fig = ss.plots.spectrum(galaxy, (emu, post_emu))   # posterior-predictive band, residuals
    print(f"wrote {ss.plots.save(fig, f'{args.out}_spectrum.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
