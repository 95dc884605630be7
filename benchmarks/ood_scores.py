"""Candidate out-of-distribution scores, side by side, on spectra from other physical models.

Every score is a function of a galaxy's summary (the model's compressor output) and
is calibrated on held-out in-distribution simulations: the threshold is the 99th
(and 99.9th) percentile of the score on the first half of --test; the second half
is the in-distribution set it is scored on. Scores:

- ``max_abs_z``: the shipped one (``model.ood``), largest |z-score| of the summary
  against the training summaries;
- ``mahalanobis``: squared Mahalanobis distance to the training summaries;
- ``template_chi2``: χ² per pixel of the compressor's template fit;
- ``flow_density``: −log q(s) under a normalizing flow fitted to --train-n noisy
  training summaries (the shared training loop, a few minutes);
- ``classifier_ceiling``: not a usable score, an upper bound: the cross-validated
  AUC of a classifier trained to tell each OOD set from the test set (it has seen
  the OOD set, which a real score never does; needs scikit-learn).

    python benchmarks/ood_scores.py --model MODEL --train data/train50k.h5 \\
        --test data/test1k.h5 --ood data/ood_exponential_Cardelli.h5 \\
        --ood data/ood_constant_SMC.h5
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
from specsbi.flows import ConditionalFlow
from specsbi.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def training_summaries(model, path: str, rows: slice, seed: int = 0) -> torch.Tensor:
    """Summaries of noisy copies (the model's noise model) of training simulations."""
    data = ss.SpectraSet.read(path, rows=rows)
    flux = torch.as_tensor(data.flux_noiseless)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(flux), 1000):
        noisy, err, _ = model.noise.sample(flux[i : i + 1000], gen)
        out.append(model.net["compressor"](noisy, err))
    return torch.cat(out)


def fit_density(s: torch.Tensor, seed: int = 0) -> ConditionalFlow:
    """An NSF over summaries (a constant context makes the conditional flow unconditional)."""
    flow = ConditionalFlow(s.shape[1], 1, hidden=64, transforms=4, y=s[:5000])
    ctx = torch.zeros(len(s), 1)
    train(flow, lambda net, b, g: -net.log_prob(b[0], b[1]), [s, ctx],
          TrainConfig(max_epochs=60, patience=8, batch_size=512), seed=seed, progress=False)
    return flow


def auc(inside: np.ndarray, outside: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(outside, inside).statistic / (len(inside) * len(outside)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--train", default="/work/data/train50k.h5")
    parser.add_argument("--train-n", type=int, default=20_000)
    parser.add_argument("--test", default="/work/data/test1k.h5")
    parser.add_argument("--ood", action="append", default=[])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ood_scores.json"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    model = ss.load(args.model)
    names = model.net["compressor"].summary_names
    s_train = training_summaries(model, args.train, slice(0, args.train_n))
    with torch.no_grad():
        sets = {"test": model.summarize(ss.SpectraSet.read(args.test))}
        for path in args.ood:
            sets[Path(path).stem.removeprefix("ood_")] = model.summarize(ss.SpectraSet.read(path))
    seconds = {"summaries": time.perf_counter() - t0}
    mean, cov = s_train.double().mean(0), torch.cov(s_train.double().T)
    precision = torch.linalg.inv(cov + 1e-9 * torch.eye(len(cov), dtype=torch.float64))
    t1 = time.perf_counter()
    flow = fit_density(s_train)
    seconds["flow_density_fit"] = time.perf_counter() - t1

    @torch.no_grad()
    def scores(s: torch.Tensor) -> dict[str, np.ndarray]:
        d = s.double() - mean
        return {"max_abs_z": model.ood(s)[0],
                "mahalanobis": ((d @ precision) * d).sum(1).numpy(),
                "template_chi2": s[:, names.index("chi2_pix")].numpy(),
                "flow_density": -flow.log_prob(s, torch.zeros(len(s), 1)).numpy()}

    per_set = {k: scores(v) for k, v in sets.items()}
    half = len(sets["test"]) // 2
    calib = {k: v[:half] for k, v in per_set["test"].items()}
    evaluate = {"test (held-out half)": {k: v[half:] for k, v in per_set["test"].items()},
                **{k: v for k, v in per_set.items() if k != "test"}}
    results: dict[str, dict] = {}
    for score in calib:
        thr = {q: float(np.quantile(calib[score], q)) for q in (0.99, 0.999)}
        results[score] = {
            name: {"flagged_at_99": float(np.mean(v[score] > thr[0.99])),
                   "flagged_at_99.9": float(np.mean(v[score] > thr[0.999])),
                   "auc_vs_test": auc(evaluate["test (held-out half)"][score], v[score])}
            for name, v in evaluate.items()}
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    ceiling = {}
    for name, s in sets.items():
        if name == "test":
            continue
        x = np.concatenate([sets["test"].numpy(), s.numpy()])
        y = np.r_[np.zeros(len(sets["test"])), np.ones(len(s))]
        p = cross_val_predict(HistGradientBoostingClassifier(random_state=0), x, y, cv=5,
                              method="predict_proba")[:, 1]
        ceiling[name] = float(roc_auc_score(y, p))
    result = {
        "benchmark": "candidate OOD scores on spectra from other physical models",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "calibration": f"thresholds: 99th / 99.9th percentile of each score on the first "
                       f"{half} galaxies of {Path(args.test).name}",
        "scores": results,
        "classifier_ceiling_auc": ceiling,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
