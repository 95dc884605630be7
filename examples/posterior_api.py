"""Posterior inference from the Python API: stellar mass and redshift of example galaxies.

    python examples/posterior_api.py                      # the shipped model and examples
    python examples/posterior_api.py --model models/npe --data data/test.h5
"""

from __future__ import annotations

import argparse

import numpy as np

import specsbi as ss
from specsbi.demo import data_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model folder (default: shipped)")
    parser.add_argument("--data", help="spectra file (default: the shipped examples)")
    args = parser.parse_args(argv)

    model = ss.load(args.model)                         # safetensors + JSON card, no pickle
    obs = ss.SpectraSet.read(args.data or data_path("examples.h5"))

    # one galaxy: draws, normalised densities, a summary
    post = model.posterior(obs[0])
    draws = post.sample(10_000)                         # (10000, 2): log_mstar, redshift
    print(f"galaxy 0: {post}")
    print("  log q(θ | x) of three draws:", np.round(post.log_prob(draws[:3]), 2))
    for name, s in post.summary().items():
        print(f"  {name:10s} {s['median']:.6g}  (16–84 %: {s['p16']:.6g} – {s['p84']:.6g})"
              f"   true {obs[0].params[name]:.6g}")

    # every galaxy in one batched pass, with the out-of-distribution flag
    batch = model.posterior(obs)
    summary = batch.summary()
    score, flagged = model.ood(model.summarize(obs))
    print(f"\n{'galaxy':>6} {'log M* true':>12} {'posterior':>20} {'z true':>10} "
          f"{'posterior':>22} {'OOD':>4}")
    for i in range(len(obs)):
        m, z = summary["log_mstar"], summary["redshift"]
        print(f"{i:6d} {obs.params['log_mstar'][i]:12.3f} "
              f"{m['median'][i]:8.3f} ± {(m['p84'][i] - m['p16'][i]) / 2:.3f}     "
              f"{obs.params['redshift'][i]:10.6f} {z['median'][i]:10.6f} ± "
              f"{(z['p84'][i] - z['p16'][i]) / 2:.1e}  {'yes' if flagged[i] else 'no':>4}")


if __name__ == "__main__":
    main()
