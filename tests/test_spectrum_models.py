"""Spectra front-end on the toy simulator: compressor, SpectrumPosterior, SpectrumLikelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specsbi import (
    NoiseModel,
    SpectraSet,
    SpectrumLikelihood,
    SpectrumPosterior,
    ToySimulator,
    default_prior,
    load,
    sdss_wavelength,
    simulate,
)
from specsbi.compressors import RestFramePCA
from specsbi.training import TrainConfig

QUICK = TrainConfig(max_epochs=4, batch_size=128)


@pytest.fixture(scope="module")
def toy_train() -> SpectraSet:
    return simulate(ToySimulator(), default_prior(), n=800, seed=11, progress=False)


@pytest.fixture(scope="module")
def toy_test() -> SpectraSet:
    return simulate(ToySimulator(), default_prior(), n=60, seed=12, progress=False)


@pytest.fixture(scope="module")
def npe(toy_train) -> SpectrumPosterior:
    return SpectrumPosterior(hidden=32, transforms=2, train_config=QUICK,
                             progress=False).fit(toy_train)


def test_compressor_finds_redshift_to_a_small_fraction_of_a_pixel(toy_train, toy_test):
    pca = RestFramePCA(sdss_wavelength(), 8).fit(toy_train.flux_noiseless,
                                                 toy_train.params["redshift"])
    s = pca(torch.as_tensor(toy_test.flux), torch.as_tensor(toy_test.err))
    z = toy_test.params["redshift"]
    dz = (s[:, pca.summary_names.index("z_hat")].numpy() - z) / (1 + z)
    # one pixel is 2.3e-4 in Δz/(1+z); S/N 5-30 spectra land far inside it
    assert 1.4826 * np.median(np.abs(dz)) < 1e-4
    assert np.mean(np.abs(dz) > 0.01) <= 0.05
    # a mask (weighted normal equations) changes little
    err = toy_test.err.copy()
    err[:, 500:560] = np.inf
    s2 = pca(torch.as_tensor(toy_test.flux), torch.as_tensor(err))
    assert np.median(np.abs(s2[:, 2].numpy() - s[:, 2].numpy())) < 1e-4


def test_rest_frame_stage_follows_the_spectrum_not_the_noise_or_a_mask(toy_train, toy_test):
    pca = RestFramePCA(sdss_wavelength(), 8, n_rest=16).fit(toy_train.flux_noiseless,
                                                             toy_train.params["redshift"])
    assert pca.dim == 6 + 8 + 16 and pca.summary_names[-1] == "r15"
    clean = toy_test.flux_noiseless
    s0 = pca(torch.as_tensor(clean), torch.as_tensor(clean / 1e4)).numpy()[:, 14:]
    s1 = pca(torch.as_tensor(toy_test.flux), torch.as_tensor(toy_test.err)).numpy()[:, 14:]
    # the leading coefficients carry the galaxy, and survive S/N 5-30 noise (the toy
    # model varies in few directions: later ones are mostly noise)
    assert np.corrcoef(s0[:, 0], s1[:, 0])[0, 1] > 0.98
    assert np.corrcoef(s0[:, 1], s1[:, 1])[0, 1] > 0.8
    # the basis reconstructs a noiseless training spectrum in its rest frame
    # a masked stretch (100 of 3841 pixels) takes the template fit instead
    err = np.full_like(clean, 1e-4 * np.median(clean))
    full = pca(torch.as_tensor(clean), torch.as_tensor(err)).numpy()[:, 14:]
    err[:, 1500:1600] = np.inf
    masked = pca(torch.as_tensor(clean), torch.as_tensor(err)).numpy()[:, 14:]
    change = np.median(np.abs(masked - full), 0) / s0.std(0)
    assert change[:2].max() < 0.05
    basis = pca.rest_basis.double()  # orthonormal rows
    assert torch.allclose(basis @ basis.T, torch.eye(16, dtype=torch.float64), atol=1e-3)


def test_precomputed_noise_draws(toy_train, toy_test):
    model = SpectrumPosterior(hidden=32, transforms=2, train_config=QUICK, progress=False,
                              noise_draws=2, n_rest=8)
    x = None

    def spy(noiseless, _inner=model._noisy_summaries):
        nonlocal x
        x = _inner(noiseless)
        return x

    model._noisy_summaries = spy
    model.fit(toy_train)
    assert x.shape == (len(toy_train), 2, model.net["compressor"].dim)
    assert not torch.equal(x[:, 0], x[:, 1])  # two different noise draws
    assert model.posterior(toy_test[:4]).sample(10).shape == (4, 10, 2)
    with pytest.raises(ValueError, match="noise_draws"):
        SpectrumPosterior(noise_draws=0)


def test_compressor_needs_a_log_grid():
    with pytest.raises(ValueError, match="log-uniform"):
        RestFramePCA(np.linspace(4000, 8000, 1000))


def test_posterior_shapes_and_truth(npe, toy_test):
    post = npe.posterior(toy_test)
    assert post.sample(50).shape == (60, 50, 2)
    one = npe.posterior(toy_test[3])
    s = one.summary()
    assert set(s) == {"log_mstar", "redshift"}
    assert s["redshift"]["median"] == pytest.approx(toy_test[3].params["redshift"], abs=2e-3)
    lp = post.log_prob(np.stack([toy_test.params["log_mstar"],
                                 toy_test.params["redshift"]], 1))
    assert np.isfinite(lp).all() and np.median(lp) > 2  # sharper than the prior by far


@pytest.mark.parametrize("variant", ["augmented"])
def test_augmented_variant_runs(toy_train, toy_test, variant):
    model = SpectrumPosterior(variant=variant, hidden=32, transforms=2, train_config=QUICK,
                              progress=False).fit(toy_train)
    post = model.posterior(toy_test[:5])
    assert post.sample(20).shape == (5, 20, 2)
    truth = np.stack([toy_test.params["log_mstar"][:5], toy_test.params["redshift"][:5]], 1)
    assert np.isfinite(post.log_prob(truth)).all()


def test_save_load_gives_the_same_posterior(npe, toy_test, tmp_path):
    folder = npe.save(tmp_path / "npe")
    back = load(folder)
    truth = np.stack([toy_test.params["log_mstar"], toy_test.params["redshift"]], 1)[:5]
    a = npe.posterior(toy_test[:5]).log_prob(truth)
    b = back.posterior(toy_test[:5]).log_prob(truth)
    assert np.allclose(a, b, atol=1e-4)


def test_bad_observations(npe, toy_test):
    other = toy_test.resample(np.geomspace(4000, 9000, 2000))
    with pytest.raises(ValueError, match="another wavelength grid"):
        npe.posterior(other)
    err = toy_test.err[:2].copy()
    err[0] = np.inf
    with pytest.raises(ValueError, match="every pixel masked"):
        npe.posterior(SpectraSet(toy_test.wavelength, toy_test.flux[:2], err))
    with pytest.raises(ValueError, match="Spectrum"):
        npe.posterior(np.zeros(3841))


def test_training_set_checks(toy_train):
    no_noiseless = SpectraSet(toy_train.wavelength, toy_train.flux, toy_train.err,
                              params=toy_train.params)
    with pytest.raises(ValueError, match="noiseless"):
        SpectrumPosterior().fit(no_noiseless)
    with pytest.raises(ValueError, match="lacks target"):
        SpectrumPosterior(targets=["dust"]).fit(toy_train)
    with pytest.raises(ValueError, match="at least 100"):
        SpectrumPosterior().fit(toy_train[:50])


def test_ood_flags_spectra_unlike_the_training_set(npe, toy_test):
    s = npe.summarize(toy_test)
    _, flag = npe.ood(s)
    assert flag.mean() < 0.1
    rng = np.random.default_rng(0)
    weird = SpectraSet(toy_test.wavelength, 10 + rng.normal(size=(5, 3841)) * 5
                       + 40 * np.sin(np.arange(3841) / 30), np.full((5, 3841), 1.0))
    _, flag_weird = npe.ood(npe.summarize(weird))
    assert flag_weird.all()


def test_likelihood_model_and_mcmc(toy_train, toy_test, tmp_path):
    nle = SpectrumLikelihood(hidden=32, transforms=2, train_config=QUICK, progress=False,
                             noise=NoiseModel()).fit(toy_train)
    post = nle.posterior(toy_test[0], n_samples=200, n_steps=300)
    assert post.sample(200).shape == (200, 2)
    assert "acceptance_fraction" in post.diagnostics
    back = load(nle.save(tmp_path / "nle"))
    s = nle.summarize(toy_test[:3])
    theta = torch.as_tensor(default_prior().draw(3, 0), dtype=torch.float32)
    assert torch.allclose(nle.log_likelihood(s, theta), back.log_likelihood(s, theta), atol=1e-4)
