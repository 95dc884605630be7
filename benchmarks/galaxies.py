"""Galaxy figures of trained SpectrumPosteriors next to two sbi baselines, same simulations.

Measures, on the first --n-test galaxies of a test file (S/N 5-30 noise already
drawn): mean log q(θ_true | x) over (log_mstar, redshift), log M* RMSE and bias,
redshift NMAD of Δz/(1+z) and outlier fraction, 68/95% coverage per target and
median 68% half-widths (definitions: specsbi.diagnostics.score_galaxies); specsbi's
coverage again on --n-coverage galaxies (a 200-galaxy coverage has a standard
error of 0.033); and the time per galaxy to draw --n-samples posterior samples
batched over --n-speed galaxies.

With --train, two sbi baselines are trained in the same run on the same
simulations (their noisy flux, as stored) and scored the same way:
  sbi-fc-raw   sbi's NPE, default settings, with its FCEmbedding on the raw spectra;
  sbi-nsf-pca  sbi's NPE (nsf) on log10 median flux + 64 PCA coefficients of
               flux / median (PCA of the training spectra).
The speed ratio compares specsbi with sbi's `sample_batched` of sbi-nsf-pca.

Reproduce (about 10 min simulation, 4 + 3 min training of the dependent model,
30 min of the augmented one, on 2 cores):
    specsbi simulate --n 20000 --out data/train20k.h5 --workers 2 --seed 1
    specsbi simulate --n 1000 --out data/test1k.h5 --workers 2 --seed 2
    specsbi train npe --variant dependent --data data/train20k.h5 --out models/npe-dep \\
        --noise-draws 6 --epochs 150 --patience 20
    specsbi train npe --variant augmented --data data/train20k.h5 --out models/npe-aug \\
        --noise-draws 6 --epochs 150 --patience 20
Then:
    python benchmarks/galaxies.py --model models/npe-dep --test data/test1k.h5 \\
        --train data/train20k.h5 --n-speed 200
    python benchmarks/galaxies.py --model models/npe-aug --model models/npe-dep \\
        --test data/test1k.h5 --n-speed 200 --out benchmarks/results/galaxies_specsbi.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import specsbi as ss
from specsbi.diagnostics import galaxy_metrics, score_galaxies

TARGETS = ["log_mstar", "redshift"]


def _theta(data: ss.SpectraSet) -> torch.Tensor:
    return torch.as_tensor(np.stack([data.params[t] for t in TARGETS], 1), dtype=torch.float32)


class PCAFeatures:
    """log10 median flux + the first k PCA coefficients of flux / median."""

    def __init__(self, flux: np.ndarray, k: int = 64) -> None:
        shape = self._shape(flux)
        self.mean = shape.mean(0)
        torch.manual_seed(0)
        _, _, v = torch.svd_lowrank(torch.as_tensor(shape - self.mean), q=k + 10, niter=4)
        self.basis = v[:, :k].numpy()

    @staticmethod
    def _shape(flux: np.ndarray) -> np.ndarray:
        return flux / np.median(flux, axis=1, keepdims=True)

    def __call__(self, flux: np.ndarray) -> torch.Tensor:
        med = np.median(flux, axis=1, keepdims=True)
        coeff = (self._shape(flux) - self.mean) @ self.basis
        feats = np.concatenate([np.log10(np.clip(med, 1e-300, None)), coeff], 1)
        return torch.as_tensor(feats, dtype=torch.float32)


def train_sbi(theta: torch.Tensor, x: torch.Tensor, kind: str, max_epochs: int,
              embedding: torch.nn.Module | None = None):
    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn
    from sbi.utils import BoxUniform

    lo, hi = theta.min(0).values, theta.max(0).values
    pad = 0.05 * (hi - lo)
    prior = BoxUniform(lo - pad, hi + pad)
    if embedding is None:
        inference = NPE(prior=prior, density_estimator=kind, show_progress_bars=False)
    else:
        net = posterior_nn(model=kind, embedding_net=embedding)
        inference = NPE(prior=prior, density_estimator=net, show_progress_bars=False)
    t0 = time.perf_counter()
    inference.append_simulations(theta, x).train(max_num_epochs=max_epochs)
    seconds = time.perf_counter() - t0
    epochs = inference.summary["epochs_trained"][-1]
    return inference.build_posterior(), {"train_seconds": seconds, "epochs": int(epochs),
                                         "max_epochs": max_epochs}


def score_sbi(posterior, x: torch.Tensor, test: ss.SpectraSet, n: int = 1000) -> dict:
    samples = posterior.sample_batched((n,), x=x, show_progress_bars=False)
    samples = samples.permute(1, 0, 2).numpy()  # (b, n, d)
    theta = _theta(test)
    log_q = np.array([float(posterior.log_prob(theta[i : i + 1], x=x[i]))
                      for i in range(len(x))])
    return score_galaxies(samples, log_q, TARGETS, test.params)


def time_sbi(posterior, x: torch.Tensor, n: int) -> float:
    t0 = time.perf_counter()
    posterior.sample_batched((n,), x=x, show_progress_bars=False)
    return (time.perf_counter() - t0) / len(x)


def time_specsbi(model, data: ss.SpectraSet, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(data), 200):  # 200 × 10,000 × 2 floats per pass
        model.posterior(data[i : i + 200]).sample(n)
    return (time.perf_counter() - t0) / len(data)


def model_name(card: dict) -> str:
    """specsbi-VARIANT, plus the compressor and a missing embedding when not the default."""
    name = f"specsbi-{card['variant']}"
    if card.get("compressor", "pca") != "pca":
        name += f"-{card['compressor']}"
    if card["variant"] == "dependent" and not card.get("embed"):
        name += "-no-embedding"
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="a trained SpectrumPosterior (repeat for several)")
    parser.add_argument("--label", action="append",
                        help="name of each --model in the results (default: from its card)")
    parser.add_argument("--test", required=True)
    parser.add_argument("--train", help="training set: also train and score the sbi baselines")
    parser.add_argument("--n-train", type=int, help="use only the first N training spectra")
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-coverage", type=int, default=1000,
                        help="also score specsbi's coverage on this many test galaxies")
    parser.add_argument("--n-speed", type=int, default=1000)
    parser.add_argument("--speed-models", type=int,
                        help="time sampling for only the first N --model entries (default all)")
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--sbi-max-epochs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", default="benchmarks/results/galaxies.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    test = ss.SpectraSet.read(args.test, rows=slice(0, args.n_test))
    speed_set = ss.SpectraSet.read(args.test, rows=slice(0, args.n_speed))
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "command": "python " + " ".join(sys.argv),
        "test": {"file": args.test, "galaxies": len(test)},
        "specsbi": {}, "baselines": {}, "speed": {"galaxies": len(speed_set),
                                                  "samples_per_galaxy": args.n_samples},
    }
    labels = args.label or []
    if labels and len(labels) != len(args.model):
        parser.error("give one --label per --model, or none")
    for i, path in enumerate(args.model):
        model = ss.load(path)
        card = model.card()
        name = labels[i] if labels else model_name(card)
        if name in result["specsbi"]:
            parser.error(f"two models would be reported as {name!r}: pass --label")
        t0 = time.perf_counter()
        metrics = galaxy_metrics(model.posterior(test), test.params)
        result["specsbi"][name] = {
            "path": path, "metrics": metrics, "score_seconds": time.perf_counter() - t0,
            "card": {k: card.get(k) for k in ("variant", "compressor", "flow", "n_rest",
                                              "embed", "noise_draws", "validation",
                                              "training_data")},
        }
        if args.n_coverage > len(test):
            more = ss.SpectraSet.read(args.test, rows=slice(0, args.n_coverage))
            wide = galaxy_metrics(model.posterior(more), more.params)
            result["specsbi"][name][f"metrics_{len(more)}"] = wide
        if args.speed_models is None or i < args.speed_models:
            result["speed"][name] = {"seconds_per_galaxy": time_specsbi(model, speed_set,
                                                                        args.n_samples)}
        print(name, json.dumps(metrics), file=sys.stderr, flush=True)
    if args.train:
        train = ss.SpectraSet.read(args.train, rows=slice(0, args.n_train))
        theta = _theta(train)
        from sbi.neural_nets.embedding_nets import FCEmbedding

        x_raw = torch.as_tensor(train.flux, dtype=torch.float32)
        post, info = train_sbi(theta, x_raw, "maf", args.sbi_max_epochs,
                               FCEmbedding(input_dim=x_raw.shape[1]))
        info["metrics"] = score_sbi(post, torch.as_tensor(test.flux, dtype=torch.float32), test)
        result["baselines"]["sbi-fc-raw"] = info
        print("sbi-fc-raw", json.dumps(info), file=sys.stderr, flush=True)
        feats = PCAFeatures(train.flux)
        post, info = train_sbi(theta, feats(train.flux), "nsf", args.sbi_max_epochs)
        info["metrics"] = score_sbi(post, feats(test.flux), test)
        result["baselines"]["sbi-nsf-pca"] = info
        print("sbi-nsf-pca", json.dumps(info), file=sys.stderr, flush=True)
        sbi_speed = time_sbi(post, feats(speed_set.flux), args.n_samples)
        result["speed"]["sbi-nsf-pca"] = {"seconds_per_galaxy": sbi_speed}
        for name in result["specsbi"]:
            if name not in result["speed"]:
                continue
            result["speed"][name]["ratio_to_sbi"] = (
                result["speed"][name]["seconds_per_galaxy"] / sbi_speed)
    text = json.dumps(result, indent=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
