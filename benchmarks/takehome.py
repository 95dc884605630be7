"""What users take home, measured: calibration on held-out simulations, and the OOD flag.

For one spectrum model:

- calibration on the held-out simulations of --test (1,000 by default): the expected
  coverage curves (central intervals per target, TARP for the joint) with their
  largest distance from the diagonal, SBC rank histograms with χ² and KS p-values,
  and the galaxy figures of ``specsbi.diagnostics.score_galaxies``;
- the out-of-distribution flag (``model.ood``, written by ``specsbi infer``) on
  spectra simulated with other physical models, against the fraction it flags on
  the in-distribution test set, with the AUC of its score and the galaxy figures
  on those sets (what an unflagged wrong-model galaxy costs).

Figures (coverage, SBC, OOD scores) go to --figures; --card also writes a
MODEL_CARD.md there (the model folder, for the shipped model). Timings are not the
point here; the seconds each step took are recorded for reference.

Data (bagpipes; the OOD sets take ~1 min each on one core):
    specsbi simulate --n 1000 --out data/test1k.h5 --workers 2 --seed 2
    specsbi simulate --n 500 --sfh exponential --dust Cardelli --seed 3 \\
        --out data/ood_exponential_Cardelli.h5
    specsbi simulate --n 500 --sfh constant --dust SMC --seed 4 --out data/ood_constant_SMC.h5
Then:
    python benchmarks/takehome.py --model MODEL --test data/test1k.h5 \\
        --ood data/ood_exponential_Cardelli.h5 --ood data/ood_constant_SMC.h5 --figures DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import numpy as np

import specsbi as ss
from specsbi import plots
from specsbi.diagnostics import expected_coverage, sbc, score_galaxies

ROOT = Path(__file__).resolve().parents[1]


def posteriors(model, data: ss.SpectraSet, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws (b, n, d) and log q(θ_true | x) (b,), in batches of 250 galaxies."""
    names = list(model.targets)
    truth = np.stack([data.params[k] for k in names], 1)
    draws, log_q = [], []
    for i in range(0, len(data), 250):
        post = model.posterior(data[i : i + 250])
        draws.append(post.sample(n_samples))
        log_q.append(post.log_prob(truth[i : i + 250]))
    return np.concatenate(draws), np.concatenate(log_q)


def auc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of an out-of-distribution galaxy > score of an in-distribution one)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(outside, inside).statistic / (len(inside) * len(outside)))


def ood_figure(scores: dict[str, np.ndarray], threshold: float):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    hi = max(float(np.percentile(np.concatenate(list(scores.values())), 99.5)), threshold) * 1.1
    bins = np.linspace(0, hi, 60)
    for name, s in scores.items():
        ax.hist(np.clip(s, 0, hi), bins, histtype="step", lw=1.5, density=True,
                label=f"{name} ({np.mean(s > threshold):.1%} flagged)")
    ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set_xlabel("OOD score (largest |z| of the summary against the training summaries)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False)
    return fig


def model_card(model_path: str, result: dict, folder: Path) -> Path:
    """A human-readable card beside model.json: training, calibration, OOD, figures."""
    card = json.loads((Path(model_path) / "model.json").read_text()) \
        if (Path(model_path) / "model.json").exists() else {}
    cal, ood = result["calibration"], result["ood"]
    dev = cal["coverage"]["max_deviation"]
    lines = [
        "# Model card", "",
        f"- class: {card.get('class')}, variant {card.get('variant')}, flow {card.get('flow')}, "
        f"targets {card.get('targets')}",
        f"- training data: {json.dumps(card.get('training_data'))}",
        f"- training: {json.dumps(card.get('validation'))}",
        f"- noise: {json.dumps(card.get('noise'))}", "",
        f"## Calibration on {cal['coverage']['n_galaxies']} held-out simulations", "",
        "Largest distance of the expected-coverage curve from the diagonal: "
        + ", ".join(f"{k} {v:.3f}" for k, v in dev.items())
        + f" (a calibrated model's curve stays within ±{cal['coverage']['band95_max']:.3f} "
        "of it at each level, 95 %).",
        "SBC rank uniformity p-values: "
        + ", ".join(f"{k} χ² {cal['sbc']['chi2_pvalue'][k]:.2g}, KS {v:.2g}"
                    for k, v in cal["sbc"]["ks_pvalue"].items()) + ".", "",
        "![coverage](coverage.png) ![SBC ranks](sbc.png)", "",
        "## Galaxy figures", "", "```json", json.dumps(cal["galaxies"], indent=1), "```", "",
        "## Out-of-distribution flag", "",
        "Flagged: the fraction above the threshold; AUC: P(score of a galaxy of that set "
        "> score of a test galaxy); then what the posteriors of that set are worth.", "",
        "| set | galaxies | flagged | AUC | log M* bias | log M* RMSE | 68 % coverage of "
        "log M* |", "|---|---|---|---|---|---|---|",
    ]
    for name, r in ood["sets"].items():
        g = r.get("galaxies", cal["galaxies"])  # the test set's are the calibration's
        auc_text = f"{r['auc_vs_test']:.2f}" if "auc_vs_test" in r else "–"
        lines.append(f"| {name} | {r['n']} | {r['fraction_flagged']:.1%} | {auc_text} | "
                     f"{g['log_mstar_bias']:+.3f} | {g['log_mstar_rmse']:.3f} | "
                     f"{g['coverage68_log_mstar']:.2f} |")
    lines += ["", "![OOD scores](ood_scores.png)", "",
              f"Measured by `{result['command']}` on {result['date']}."]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--test", default="/work/data/test1k.h5")
    parser.add_argument("--ood", action="append", default=[], help="OOD spectra (repeatable)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--figures", help="folder for the figures")
    parser.add_argument("--card", action="store_true", help="write MODEL_CARD.md in --figures")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/takehome.json"))
    args = parser.parse_args()
    matplotlib.use("Agg")
    seconds = {}
    t0 = time.perf_counter()
    model = ss.load(args.model)
    names = list(model.targets)
    test = ss.SpectraSet.read(args.test)
    draws, log_q = posteriors(model, test, args.samples)
    seconds["posteriors_test"] = time.perf_counter() - t0
    cov = expected_coverage(draws, test.params, names=names)
    ranks = sbc(draws, test.params, names=names)
    galaxies = score_galaxies(draws, log_q, names, test.params)
    calibration = {"coverage": cov.to_dict(), "sbc": ranks.to_dict(), "galaxies": galaxies}
    print(json.dumps(calibration, indent=1), flush=True)

    score_in, flag_in = model.ood(model.summarize(test))
    threshold = float(model.net["anchor"].ood_threshold)
    sets = {"test (in distribution)": {"file": args.test, "n": len(test),
                                       "fraction_flagged": float(flag_in.mean())}}
    scores = {"test": score_in}
    for path in args.ood:
        t1 = time.perf_counter()
        data = ss.SpectraSet.read(path)
        score, flag = model.ood(model.summarize(data))
        d, lq = posteriors(model, data, args.samples)
        name = Path(path).stem.removeprefix("ood_")
        sets[name] = {"file": path, "simulator": data.attrs.get("simulator"), "n": len(data),
                      "fraction_flagged": float(flag.mean()), "auc_vs_test": auc(score_in, score),
                      "galaxies": score_galaxies(d, lq, names, data.params),
                      "coverage": expected_coverage(d, data.params, names=names).to_dict()}
        scores[name] = score
        seconds[f"ood_{name}"] = time.perf_counter() - t1
    ood = {"score": "largest |z| of the summary against the training summaries (model.ood)",
           "threshold": threshold, "sets": sets}
    result = {
        "benchmark": "takehome: calibration on held-out simulations and the OOD flag",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "samples_per_galaxy": args.samples,
        "calibration": calibration,
        "ood": ood,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    if args.figures:
        folder = Path(args.figures)
        folder.mkdir(parents=True, exist_ok=True)
        plots.save(plots.coverage(cov), folder / "coverage.png")
        plots.save(plots.sbc(ranks), folder / "sbc.png")
        plots.save(ood_figure(scores, threshold), folder / "ood_scores.png")
        if args.card:
            print(f"wrote {model_card(args.model, result, folder)}")
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
