"""The lecture's comparison table, measured: AE, VAE, GAN, flow and diffusion on the same spectra.

Every model sees the same preprocessing (flux / median; inverse-variance weights
from the per-pixel errors), in the rest frame: each spectrum is moved by the
whole number of pixels nearest its (given) redshift, with the fractional
remainder as a condition (`RestFrame`); uncovered rest pixels are masked. Flow
and diffusion work on rest-frame PCA coefficients (masked least squares);
AE, VAE and GAN on pixels. Each is trained within a stated `Budget`. Columns:
latent dimension; reconstruction χ²/pixel of noisy held-out spectra; a
classifier two-sample test (C2ST) between generated and held-out spectra;
whether (and which) density the model gives; sampling speed; training time.
The C2ST runs on one fixed low-dimensional representation of every spectrum:
the 16 leading principal components of the normalised training spectra
(whitened) plus the log RMS of what those components leave, so that pixel-scale
artefacts count; an MLP classifier with 5-fold cross-validation (sbi's `c2st`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cosmology import luminosity_distance_mpc
from ..simulators.base import PHYSICAL_PARAMETERS
from ..spectra import SpectraSet
from ..training import TrainConfig
from .preprocessing import PCA, RestFrame, chi2_per_pixel, normalise

__all__ = ["Budget", "c2st_accuracy", "compare_generators", "spectra_c2st"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """What each model may spend: training spectra, epochs, sizes (keyword overrides)."""

    n_train: int = 20_000
    n_eval: int = 1000
    latent_dim: int = 16
    pca_dim: int = 64
    hidden: tuple[int, ...] = (512, 256)
    ae_epochs: int = 20
    vae_epochs: int = 20
    gan_epochs: int = 20
    flow_epochs: int = 40
    diffusion_epochs: int = 200
    invert_steps: int = 200

    def __post_init__(self) -> None:
        bad = [k for k, v in asdict(self).items()
               if k != "hidden" and not (isinstance(v, int) and v >= 1)]
        if bad or not all(isinstance(h, int) and h >= 1 for h in self.hidden):
            raise ValueError(f"budget entries must be positive integers; bad: {bad or 'hidden'}")


class _Representation:
    """Whitened leading PCA coefficients plus the log RMS of the residual: C2ST features."""

    def __init__(self, x: np.ndarray, k: int = 16) -> None:
        self.pca = PCA(x.shape[1], k).fit(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(x, dtype=torch.float32)
        c = self.pca.transform(t)
        rms = (t - self.pca.inverse(c)).pow(2).mean(1).sqrt()
        return torch.cat([c / self.pca.scale, torch.log10(rms + 1e-6)[:, None]], 1).numpy()


def c2st_accuracy(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Cross-validated accuracy of an MLP telling ``a`` from ``b`` (0.5: indistinguishable),
    on low-dimensional features (at most 64 columns; compare spectra with `spectra_c2st`)."""
    from sbi.utils.metrics import c2st

    if a.shape[1] > 64:
        raise ValueError(f"c2st_accuracy takes low-dimensional features; got {a.shape[1]} "
                         "columns (for spectra use spectra_c2st, which compresses them first)")
    n = min(len(a), len(b))
    ta, tb = (torch.as_tensor(v[:n], dtype=torch.float32) for v in (a, b))
    return float(c2st(ta, tb, seed=seed, classifier="mlp"))


def spectra_c2st(generated: np.ndarray, real: np.ndarray, fit_on: np.ndarray | None = None,
                 seed: int = 0) -> float:
    """C2ST accuracy between generated and real normalised spectra (n, npix), on the
    comparison's representation (16 whitened PCA coefficients fitted on ``fit_on``, default
    ``real``, plus the log RMS of the residual)."""
    rep = _Representation(real if fit_on is None else fit_on, min(16, len(real) - 1))
    return c2st_accuracy(rep(generated), rep(real), seed)


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compare_generators(train: SpectraSet, test: SpectraSet, out: str | Path,
                       budget: Budget = Budget(), seed: int = 0, progress: bool = True,
                       reference: dict[str, float] | None = None) -> dict[str, Any]:
    """Train AE, VAE, GAN, flow and diffusion within ``budget``; measure the table.

    Args:
        train: simulations with ``flux_noiseless``, noisy ``flux``/``err`` and θ.
        test: held-out simulations, the "real" spectra.
        out: folder for generators.json, generators.md and the figures.
        budget: spectra, epochs and sizes.
        reference: optional {"name": ..., "seconds_per_spectrum": ...} of a simulator
            measured in the same run: sampling speeds are also given as ratios to it.

    Returns:
        The JSON-able results (also written to ``out``).
    """
    from .density import Density
    from .diffusion import Diffusion
    from .gan import GAN
    from .latent import correlation_markdown, correlation_table
    from .vae import VAE

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, s in (("train", train), ("test", test)):
        if s.flux_noiseless is None:
            raise ValueError(f"the {name} set has no noiseless flux; compare-generators "
                             "needs simulations (specsbi simulate)")
    names = [p for p in PHYSICAL_PARAMETERS if p in train.params and p in test.params]
    n = min(budget.n_train, len(train))
    ne = min(budget.n_eval, len(test))
    z_tr, z_te = train.params["redshift"][:n], test.params["redshift"][:ne]
    tr = normalise(train.flux_noiseless[:n])
    w_tr = normalise(train.flux[:n], train.err[:n], amplitude_from=train.flux_noiseless[:n])
    real = normalise(test.flux_noiseless[:ne]).flux
    obs = normalise(test.flux[:ne], test.err[:ne])  # noisy held-out spectra, own amplitude
    theta_tr = np.stack([train.params[p][:n] for p in names], 1).astype(np.float32)
    theta_te = np.stack([test.params[p][:ne] for p in names], 1).astype(np.float32)
    # every model works in the rest frame (redshift given): whole-pixel shifts, gaps masked
    rf = RestFrame(train.wavelength, z_max=float(max(z_tr.max(), z_te.max())) + 0.01)
    x_r, cover, frac_tr = rf.to_rest(tr.flux, np.ones_like(tr.flux), z_tr)
    _, w_r, _ = rf.to_rest(tr.flux, w_tr.weights, z_tr)
    obs_r, obs_w, frac_te = rf.to_rest(obs.flux, obs.weights, z_te)
    # new spectra are drawn at the redshifts (and θ) of training simulations, not of the
    # held-out ones they are compared with: paired sets would bias the C2ST below 0.5
    z_gen, frac_gen, theta_gen = z_tr[:ne], frac_tr[:ne], theta_tr[:ne]
    rep = _Representation(tr.flux[: min(n, 10_000)])
    real_rep = rep(real)
    pca = PCA(rf.n_rest, budget.pca_dim).fit(x_r[:10_000], cover[:10_000], seed=seed)
    coef = pca.project(x_r, cover).numpy()
    obs_coef = pca.project(obs_r, obs_w).numpy()
    del tr, w_tr  # the rest-frame copies are what the models use
    rows: dict[str, dict[str, Any]] = {}
    samples: dict[str, np.ndarray] = {}

    def observed(rest: Any, z: np.ndarray = z_gen) -> np.ndarray:
        rest = rest.detach().cpu().numpy() if isinstance(rest, torch.Tensor) else rest
        return rf.to_observed(rest, z[: len(rest)])

    def from_pca(c: Any, z: np.ndarray = z_gen) -> np.ndarray:
        return observed(pca.inverse(torch.as_tensor(c)), z)

    def record(name: str, generated: np.ndarray, sample_s: float, **info: Any) -> None:
        samples[name] = generated
        rows[name] = {**info, "c2st": round(c2st_accuracy(rep(generated), real_rep, seed), 4),
                      "spectra_per_s": round(len(generated) / sample_s, 1)}
        if reference:
            rows[name]["speedup_vs_" + reference["name"]] = round(
                reference["seconds_per_spectrum"] * len(generated) / sample_s, 1)
        log.info("%s: %s", name, rows[name])

    def chi2(recon: np.ndarray) -> float:
        k = len(recon)
        return round(float(np.median(chi2_per_pixel(recon, obs.flux[:k], obs.weights[:k]))), 3)

    rows_ref = {"c2st_train_vs_test": round(c2st_accuracy(rep(normalise(
                    train.flux_noiseless[:ne]).flux), real_rep, seed), 4),
                "chi2_noiseless_truth": chi2(real),  # ≈ 1 by construction
                "chi2_pca_truncation": chi2(from_pca(obs_coef, z_te))}
    common = dict(seed=seed, progress=progress)

    # ---- AE and VAE: weighted by the errors, fresh noise on the encoder's input
    for kind, epochs in (("AE", budget.ae_epochs), ("VAE", budget.vae_epochs)):
        model = VAE(budget.latent_dim, budget.hidden, autoencoder=kind == "AE", denoise=True,
                    cond_dim=1, train_config=TrainConfig(max_epochs=epochs, patience=5),
                    **common)
        _, fit_s = _timed(lambda m=model: m.fit(x_r, cond=frac_tr, weights=w_r))
        recon = observed(model.reconstruct(obs_r, frac_te, obs_w), z_te)
        gen, s = _timed(lambda m=model: observed(m.sample(cond=frac_gen, seed=seed + 1)))
        elbo = model.elbo(obs_r, frac_te, obs_w) if kind == "VAE" else None
        record(kind, gen, s, latent_dim=budget.latent_dim, recon_chi2=chi2(recon),
               density="no" if kind == "AE" else "lower bound (ELBO)",
               log_density=None if elbo is None else round(float(np.median(elbo)), 1),
               train_s=round(fit_s, 1), epochs=len(model.history.val_loss))
        if kind == "VAE":
            vae, vae_latents = model, model.encode(obs_r, frac_te, obs_w)

    # ---- GAN: gaps masked alike in real and generated rows; reconstruction by inversion
    gan = GAN(32, tuple(reversed(budget.hidden)), cond_dim=1,
              train_config=TrainConfig(max_epochs=budget.gan_epochs, lr=2e-4), **common)
    _, fit_s = _timed(lambda: gan.fit(x_r, cond=frac_tr, weights=cover))
    k = min(200, ne)
    _, recon = gan.invert(obs_r[:k], cond=frac_te[:k], weights=obs_w[:k],
                          steps=budget.invert_steps)
    gen, s = _timed(lambda: observed(gan.sample(cond=frac_gen, seed=seed + 1)))
    h = gan.history
    record("GAN", gen, s, latent_dim=32, recon_chi2=chi2(observed(recon, z_te)), density="no",
           log_density=None, train_s=round(fit_s, 1), epochs=budget.gan_epochs,
           final_d_real=round(h.d_real[-1], 3), final_d_fake=round(h.d_fake[-1], 3))

    # ---- flow: exact density over the rest-frame PCA coefficients
    flow = Density(hidden=64, transforms=5,
                   train_config=TrainConfig(max_epochs=budget.flow_epochs, patience=8), **common)
    _, fit_s = _timed(lambda: flow.fit(coef))
    gen, s = _timed(lambda: from_pca(flow.sample(ne, seed=seed + 1)))
    record("Flow", gen, s, latent_dim=budget.pca_dim,
           recon_chi2=rows_ref["chi2_pca_truncation"], density="exact (PCA coefficients)",
           log_density=round(float(np.median(flow.log_prob(obs_coef))), 1),
           train_s=round(fit_s, 1), epochs=len(flow.history.val_loss))

    # ---- diffusion: PCA coefficients conditional on θ; full DDPM and few-step DDIM
    diff = Diffusion(steps=200, hidden=(256, 256, 256), cond_dim=len(names),
                     train_config=TrainConfig(max_epochs=budget.diffusion_epochs, patience=10),
                     **common)
    _, fit_s = _timed(lambda: diff.fit(coef, cond=theta_tr))
    z = diff.encode(obs_coef, cond=theta_te, steps=50)
    with torch.no_grad():
        recon = from_pca(diff.generate(torch.as_tensor(theta_te), torch.as_tensor(z), steps=50),
                         z_te)
        emulated = from_pca(diff.generate(torch.as_tensor(theta_te)), z_te)  # z=0: θ → spectrum
    paired = from_pca(diff.sample(cond=theta_te, seed=seed + 1), z_te)  # for the figure
    for method, steps in (("ddpm", None), ("ddim", diff.ddim_steps)):
        gen, s = _timed(lambda method=method, steps=steps: from_pca(diff.sample(
            cond=theta_gen, seed=seed + 1, method=method, steps=steps)))
        label = "Diffusion (DDPM, 200 steps)" if method == "ddpm" else \
            f"Diffusion (DDIM, {diff.ddim_steps} steps)"
        record(label, gen, s, latent_dim=budget.pca_dim, recon_chi2=chi2(recon),
               emulation_chi2=chi2(emulated), density="no (bound not computed)",
               log_density=None, train_s=round(fit_s, 1), epochs=len(diff.history.val_loss),
               conditional_on=names)

    # ---- figures and the latent table
    from .figures import generated_vs_real, latent_figure

    shown = {k: v for k, v in samples.items() if not k.startswith("Diffusion")}
    shown[f"Diffusion (DDIM, {diff.ddim_steps} steps)"] = paired  # at the held-out θ
    generated_vs_real(test.wavelength, real, shown, out / "generated_vs_real.png", seed)
    # the latents see flux / median: the mass lives in the amplitude, so also show the
    # stellar mass-to-light ratio (mass − log luminosity of the median flux), which they can see
    log_lum = (normalise(test.flux_noiseless[:ne]).log_amp + np.log10(1 + z_te)
               + 2 * np.log10(luminosity_distance_mpc(z_te)))
    params = {"redshift": z_te, "log_mstar": test.params["log_mstar"][:ne],
              "log_mstar_to_light": test.params["log_mstar"][:ne] - log_lum}
    extra = {p: test.params[p][:ne] for p in ("age", "av", "metallicity", "log_u")
             if p in test.params}
    table = correlation_table(vae_latents, {**params, **extra})
    latent_figure(vae, vae_latents, params, table, rf.rest_wavelength, out / "latent_vae.png",
                  cond=[0.0])
    result = {
        "budget": asdict(budget), "n_train": n, "n_eval": ne, "npix": int(rf.npix),
        "n_rest": int(rf.n_rest),
        "c2st_representation": "16 whitened PCA coefficients of flux/median + log10 RMS of "
                               "the residual; sbi c2st, MLP, 5-fold",
        "reference": {**rows_ref, **({"simulator": reference} if reference else {})},
        "models": rows,
        "vae_latent_correlations": {k: {"corr": [round(float(c), 3) for c in v["corr"]],
                                        "best_dim": v["best_dim"], "r2": round(v["r2"], 3)}
                                    for k, v in table.items()},
    }
    (out / "generators.json").write_text(json.dumps(result, indent=1))
    (out / "generators.md").write_text(markdown(result) + "\n\nVAE latents:\n\n"
                                       + correlation_markdown(table) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The comparison table in Markdown (from the JSON of `compare_generators`)."""
    ref = result["reference"]
    sim = ref.get("simulator")
    head = ("| model | latent dim | recon. χ²/pixel | C2ST accuracy | density | spectra/s"
            + (f" (× {sim['name']})" if sim else "") + " | training s |")
    lines = [head, "|" + " --- |" * 7]
    for name, r in result["models"].items():
        dens = r["density"] + (f", median {r['log_density']}" if r.get("log_density") else "")
        speed = f"{r['spectra_per_s']:,.0f}"
        if sim:
            speed += f" (× {r['speedup_vs_' + sim['name']]:,.0f})"
        lines.append(f"| {name} | {r['latent_dim']} | {r['recon_chi2']} | {r['c2st']} | {dens} "
                     f"| {speed} | {r['train_s']:.0f} |")
    lines.append("")
    lines.append(f"References: C2ST of training vs held-out simulations "
                 f"{ref['c2st_train_vs_test']}; χ²/pixel of the noiseless truth "
                 f"{ref['chi2_noiseless_truth']}, of its {result['budget']['pca_dim']}-component "
                 f"rest-frame PCA projection {ref['chi2_pca_truncation']}.")
    return "\n".join(lines)
