"""A corner plot of one galaxy's posterior, with the true values marked.

    python examples/corner_one_galaxy.py --galaxy 3 --out corner_3.png
"""

from __future__ import annotations

import argparse

import matplotlib

import specsbi as ss
from specsbi.demo import data_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model folder (default: shipped)")
    parser.add_argument("--data", help="spectra file (default: the shipped examples)")
    parser.add_argument("--galaxy", type=int, default=0)
    parser.add_argument("--out", default="corner.png")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # write a file; no window

    model = ss.load(args.model)
    obs = ss.SpectraSet.read(args.data or data_path("examples.h5"))
    galaxy = obs[args.galaxy]
    post = model.posterior(galaxy)
    fig = ss.plots.corner(post, truth=galaxy.params)   # labels with units, 16/50/84 %
    print(f"wrote {ss.plots.save(fig, args.out)}")


if __name__ == "__main__":
    main()
