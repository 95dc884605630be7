"""Generative models (VAE/AE, GAN, diffusion, flow density): shapes, switches, files, answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import specsbi as ss
from specsbi.generative import GAN, VAE, Density, Diffusion, normalise
from specsbi.generative.preprocessing import chi2_per_pixel
from specsbi.training import TrainConfig

A = np.array([[1.0, 0.5], [0.0, 1.0], [2.0, -1.0], [0.3, 0.3]])
B = np.array([1.0, 2.0, 3.0, 4.0])


def gaussian(n: int = 3000, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """x = A z + b + noise ε: mean b, covariance A Aᵀ + noise² I."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    return (z @ A.T + B + noise * rng.normal(size=(n, 4))).astype(np.float32)


def conditional(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x | c ~ N([2c, 0.5 − c], diag(0.3², 0.2²)), c ~ U(−1, 1)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1, 1, size=(n, 1))
    x = np.concatenate([2 * c + 0.3 * rng.normal(size=(n, 1)),
                        0.5 - c + 0.2 * rng.normal(size=(n, 1))], 1)
    return x.astype(np.float32), c.astype(np.float32)


def cfg(epochs: int, lr: float = 3e-3, **kw) -> TrainConfig:
    return TrainConfig(max_epochs=epochs, lr=lr, **kw)


@pytest.fixture(scope="module")
def vae() -> VAE:
    return VAE(latent_dim=2, hidden=(64, 64), progress=False,
               train_config=cfg(100, patience=10)).fit(gaussian())


# ------------------------------------------------------------------------- VAE
def test_vae_recovers_gaussian_mean_and_covariance(vae):
    x = gaussian(seed=1)
    s = vae.sample(20_000, seed=3)
    assert np.abs(s.mean(0) - B).max() < 0.1
    target = A @ A.T  # decoded means carry the signal; the learned noise σ ≈ 0.1 is apart
    assert np.linalg.norm(np.cov(s.T) - target) / np.linalg.norm(target) < 0.1
    sigma = np.exp(vae.net["stats"].log_sigma.detach().numpy()) * vae.net["x_scale"].std.numpy()
    assert np.all((sigma > 0.05) & (sigma < 0.3))
    assert vae.encode(x[:7]).shape == (7, 2) and vae.reconstruct(x[:7]).shape == (7, 4)
    assert np.isfinite(vae.elbo(x[:7])).all()


def test_autoencoder_switch_is_deterministic_and_samples_its_latents():
    x = gaussian(800)
    ae = VAE(latent_dim=2, hidden=(32,), autoencoder=True, progress=False,
             train_config=cfg(5)).fit(x)
    v = VAE(latent_dim=2, hidden=(32,), progress=False, train_config=cfg(5)).fit(x)
    xt, c, w = (torch.as_tensor(a) for a in (x[:50], np.zeros((50, 0), "f"), np.ones_like(x[:50])))
    for model, same in ((ae, True), (v, False)):
        model.net.train()  # training mode: the VAE draws z = μ + σε, the AE uses z = μ
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        e1, e2 = model._elbo(xt, c, w, g1), model._elbo(xt, c, w, g2)
        assert torch.equal(e1, e2) is same
        model.net.eval()
    z = ae.encode(x)  # an AE has no prior: it samples a Gaussian fitted to its latents
    draws = ae._noise(20_000, torch.Generator().manual_seed(0)).numpy()
    assert np.allclose(draws.mean(0), z.mean(0), atol=0.05 * z.std(0).max())
    assert np.allclose(draws.std(0), z.std(0), rtol=0.05)


def test_weighted_denoising_vae_reaches_the_noise_level():
    rng = np.random.default_rng(0)
    clean = (rng.normal(size=(3000, 2)) @ rng.normal(size=(2, 20)) + 3).astype(np.float32)
    sigma = 0.05
    w = np.full_like(clean, 1 / sigma**2)
    w[:, :3] = 0  # masked pixels are ignored
    model = VAE(latent_dim=2, hidden=(64,), denoise=True, progress=False,
                train_config=cfg(60, patience=8)).fit(clean, weights=w)
    noisy = clean[:500] + sigma * rng.normal(size=(500, 20)).astype(np.float32)
    chi2 = chi2_per_pixel(model.reconstruct(noisy, weights=w[:500]), noisy, w[:500])
    assert 0.8 < np.median(chi2) < 1.3  # ≈ 1 + (k / pixels): the fit is at the noise


def test_conditional_vae_generate_is_differentiable():
    x, c = conditional(600)
    model = VAE(latent_dim=1, hidden=(16,), cond_dim=1, progress=False,
                train_config=cfg(2)).fit(x, cond=c)
    cond = torch.zeros(3, 1, requires_grad=True)
    model.generate(cond).sum().backward()
    assert cond.grad is not None and torch.isfinite(cond.grad).all()
    assert model.sample(cond=c[:5]).shape == (5, 2)


# ------------------------------------------------------------------------- GAN
@pytest.mark.parametrize("stability", ["spectral_norm", "gradient_penalty", "none"])
def test_gan_records_losses_and_learns_the_mean(stability):
    x = gaussian(2000)
    gan = GAN(latent_dim=4, hidden=(32, 32), stability=stability, progress=False,
              train_config=TrainConfig(max_epochs=12, lr=1e-3, batch_size=128)).fit(x)
    h = gan.history
    for curve in (h.train_loss, h.val_loss, h.generator_loss, h.d_real, h.d_fake):
        assert len(curve) == 12 and np.isfinite(curve).all()
    assert 0.2 < h.d_real[-1] < 0.8 and 0.2 < h.d_fake[-1] < 0.8
    s = gan.sample(4000)
    assert np.abs(s.mean(0) - B).max() < 0.5


def test_conditional_gan_and_inversion():
    x, c = conditional(1000)
    gan = GAN(latent_dim=2, hidden=(32,), cond_dim=1, progress=False,
              train_config=TrainConfig(max_epochs=2)).fit(x, cond=c)
    assert gan.sample(cond=c[:6]).shape == (6, 2)
    cond = torch.ones(2, 1, requires_grad=True)
    gan.generate(cond).sum().backward()
    assert cond.grad is not None
    z, rec = gan.invert(x[:4], cond=c[:4], steps=5)
    assert z.shape == (4, 2) and rec.shape == (4, 2)


# ------------------------------------------------------------------- diffusion
@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    x, c = conditional()
    return Diffusion(steps=100, hidden=(64, 64), cond_dim=1, progress=False,
                     train_config=cfg(60, patience=10)).fit(x, cond=c)


def test_diffusion_recovers_conditional_gaussian(diffusion):
    cond = np.full((5000, 1), 0.5, dtype=np.float32)
    for method, steps, tol in (("ddpm", None, 0.15), ("ddim", 20, 0.2)):
        s = diffusion.sample(cond=cond, method=method, steps=steps, seed=1)
        assert np.abs(s.mean(0) - [1.0, 0.0]).max() < 0.06
        assert np.allclose(s.std(0), [0.3, 0.2], rtol=tol)


def test_diffusion_ddim_encode_generate_round_trip(diffusion):
    x, c = conditional(20, seed=5)
    z = diffusion.encode(x, cond=c, steps=50)
    back = diffusion.generate(torch.as_tensor(c), torch.as_tensor(z), steps=50)
    assert np.abs(back.detach().numpy() - x).max() < 0.1
    cond = torch.zeros(2, 1, requires_grad=True)
    diffusion.generate(cond, steps=3).sum().backward()
    assert cond.grad is not None


# --------------------------------------------------------------------- density
def test_density_matches_gaussian_log_density():
    from scipy.stats import multivariate_normal

    x = gaussian(3000, noise=0.3)
    q = Density(hidden=32, transforms=3, progress=False, train_config=cfg(40)).fit(x)
    test = gaussian(500, noise=0.3, seed=9)
    exact = multivariate_normal(B, A @ A.T + 0.09 * np.eye(4)).logpdf(test)
    assert abs(np.mean(q.log_prob(test) - exact)) < 0.1
    back = q.generate(None, torch.as_tensor(q.encode(test[:5])))
    assert np.allclose(back.detach().numpy(), test[:5], atol=1e-3)
    outlier = (B + 10)[None].astype(np.float32)  # far outside: a much lower score
    assert q.log_prob(outlier)[0] < np.percentile(q.log_prob(test), 1) - 10


# -------------------------------------------------------------- files and input
def test_save_load_round_trips(tmp_path, vae, diffusion):
    x, c = conditional(300)
    gan = GAN(latent_dim=2, hidden=(8,), cond_dim=1, progress=False,
              train_config=TrainConfig(max_epochs=1)).fit(x, cond=c)
    q = Density(hidden=8, transforms=1, progress=False, train_config=cfg(1)).fit(x)
    cases = [(vae, None), (gan, c[:4]), (diffusion, c[:4]), (q, None)]
    for i, (model, cond) in enumerate(cases):
        path = model.save(tmp_path / f"m{i}")
        loaded = ss.load(path)
        assert type(loaded) is type(model)
        n = None if cond is not None else 4
        assert np.array_equal(loaded.sample(n, cond=cond, seed=2), model.sample(n, cond, seed=2))
    with pytest.raises(ValueError, match="not a VAE"):
        VAE.load(tmp_path / "m1")


def test_bad_input_names_the_fix():
    x = gaussian(100)
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(latent_dim=0)
    with pytest.raises(ValueError, match="stability"):
        GAN(stability="magic")
    with pytest.raises(ValueError, match="ddim_steps"):
        Diffusion(steps=10, ddim_steps=20)
    with pytest.raises(ValueError, match="needs `weights`"):
        VAE(denoise=True).fit(x)
    with pytest.raises(ValueError, match="unconditional"):
        VAE(progress=False).fit(x, cond=x[:, :1])
    with pytest.raises(ValueError, match="pass `cond`"):
        VAE(cond_dim=1, progress=False).fit(x)
    with pytest.raises(ValueError, match="weights"):
        VAE(progress=False).fit(x, weights=-np.ones_like(x))
    with pytest.raises(ValueError, match="shape"):
        VAE(progress=False).fit(x, weights=np.ones((100, 3)))
    with pytest.raises(ValueError, match="finite"):
        VAE(progress=False).fit(np.full_like(x, np.nan))
    with pytest.raises(RuntimeError, match="not trained"):
        VAE().sample(3)
    with pytest.raises(ValueError, match="no `weights`"):
        Density().fit(x, weights=np.ones_like(x))


def test_normalise_keeps_amplitude_apart_and_masks():
    flux = np.array([[2.0, 4.0, 6.0, 100.0]])
    err = np.array([[0.2, 0.4, np.inf, 0.0]])
    n = normalise(flux, err)
    assert np.isclose(10 ** n.log_amp[0], 3.0)  # median of the unmasked pixels
    assert n.weights[0, 2] == 0 and n.weights[0, 3] == 0 and np.isclose(n.weights[0, 0], 225)
    assert np.allclose(n.flux[0, :2], [2 / 3, 4 / 3])


# ------------------------------------------------------- compressor for the flows
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_spectrum_posterior_with_vae_compressor(tmp_path, toy_set, kind):
    train = ss.simulate(ss.ToySimulator(), ss.default_prior(), n=300, seed=2, progress=False)
    model = ss.SpectrumPosterior(compressor=kind, n_components=4, hidden=16, transforms=1,
                                 embed=16, compressor_options={"hidden": (32,), "max_epochs": 2,
                                                               "latent_dim": 3},
                                 train_config=TrainConfig(max_epochs=2), progress=False)
    model.fit(train)
    s = model.summarize(toy_set[:3])
    assert s.shape == (3, 4 + 6 + 3)  # 4 template amplitudes, 6 fit figures, 3 latents
    assert np.allclose(s[:, 0].numpy(), np.log10(np.median(toy_set.flux[:3], 1)), atol=1e-5)
    assert np.allclose(s[:, 2].numpy(), toy_set.params["redshift"][:3], atol=1e-3)  # ẑ
    loaded = ss.load(model.save(tmp_path / "m"))
    theta = np.stack([toy_set.params["log_mstar"][:3], toy_set.params["redshift"][:3]], 1)
    assert np.allclose(loaded.posterior(toy_set[:3]).log_prob(theta),
                       model.posterior(toy_set[:3]).log_prob(theta), atol=1e-5)
    with pytest.raises(ValueError, match="unknown compressor"):
        ss.SpectrumPosterior(compressor="wavelets")


# ------------------------------------------------------------------- the table
def test_compare_generators_cli_writes_table_and_figures(tmp_path):
    from specsbi.cli import main

    data = tmp_path / "toy.h5"
    assert main(["simulate", "--simulator", "toy", "--n", "330", "--out", str(data),
                 "--no-progress"]) == 0
    budget = ["n_train=250", "n_eval=80", "pca_dim=8", "latent_dim=4", "ae_epochs=1",
              "vae_epochs=1", "gan_epochs=1", "flow_epochs=1", "diffusion_epochs=1",
              "invert_steps=2"]
    out = tmp_path / "cmp"
    args = ["compare-generators", "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(args + [a for b in budget for a in ("--budget", b)]) == 0
    import json

    result = json.loads((out / "generators.json").read_text())
    models = result["models"]
    assert {"AE", "VAE", "GAN", "Flow"} <= set(models) and len(models) == 6
    for row in models.values():
        assert 0 <= row["c2st"] <= 1 and row["spectra_per_s"] > 0 and row["recon_chi2"] > 0
    assert abs(result["reference"]["chi2_noiseless_truth"] - 1) < 0.2
    for name in ("generated_vs_real.png", "latent_vae.png", "traversal_vae.png",
                 "generators.md"):
        assert (out / name).stat().st_size > 0
    assert main(args + ["--budget", "vae_epochs=zero"]) == 2  # one-line error, no traceback
