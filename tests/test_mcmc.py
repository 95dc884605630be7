"""MCMC: the shared emcee runner and the emulator likelihood recover known answers."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import specsbi as ss
from specsbi.emulator_likelihood import BoxTransform, EmulatorLikelihood
from specsbi.emulators import Emulator, bagpipes_rest_wavelength
from specsbi.emulators.physics import trim_rest_wavelength
from specsbi.mcmc import gaussian_log_likelihood, log_posterior, run_emcee, sample
from specsbi.posterior import Posterior

WL = 10 ** np.arange(np.log10(4200.0), np.log10(4900.0), 1e-4)
PRIOR = ss.Prior({"log_mformed": (9.5, 11.5), "redshift": (0.05, 0.15)},
                 fixed={"metallicity": 1.0})
TRUTH = np.array([10.3, 0.0987])


class _Lines(nn.Module):
    """ln L: a sloped continuum with Gaussian absorption lines (no parameters to learn)."""

    def __init__(self, rest: np.ndarray) -> None:
        super().__init__()
        ln = -0.5 * ((rest - 4500.0) / 900.0) ** 2 - 8.0
        for centre in (3934.8, 3969.6, 4102.9, 4305.0, 4341.7, 4500.0):
            ln = ln - 0.6 * np.exp(-0.5 * ((rest - centre) / 2.5) ** 2)
        self.register_buffer("base", torch.as_tensor(ln, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.base.expand(len(x), -1)


class _LineEmulator(Emulator):
    """An analytic 'emulator' through the real physics layer: known spectra, no training."""

    def _build_decoder(self, n_features: int, n_rest: int) -> nn.Module:
        return _Lines(self.physics.rest_wavelength.numpy())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Chains evaluate small batches: torch's threads only add synchronisation, which on a
    busy machine costs milliseconds per operation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def emulator() -> _LineEmulator:
    emu = _LineEmulator(progress=False)
    rest = trim_rest_wavelength(bagpipes_rest_wavelength(WL), WL, (0.05, 0.15))
    emu._build(PRIOR, WL, rest, knots={})
    return emu.eval()


@pytest.fixture(scope="module")
def observed(emulator) -> ss.Spectrum:
    flux = emulator.predict(TRUTH)
    err = np.full_like(flux, np.median(flux) / 20)  # S/N 20
    noisy = flux + err * np.random.default_rng(0).standard_normal(len(flux))
    return ss.Spectrum(WL, noisy, err, np.zeros(len(WL), bool), {"redshift": TRUTH[1]})


def _fisher_sigma(emulator, err) -> np.ndarray:
    """σ of each parameter from the Fisher matrix, by central differences of the model."""
    steps = np.array([1e-3, 1e-6])
    jac = []
    for k, h in enumerate(steps):
        up, down = TRUTH.copy(), TRUTH.copy()
        up[k] += h
        down[k] -= h
        jac.append((emulator.predict(up).astype(np.float64)
                    - emulator.predict(down)) / (2 * h))
    jac = np.array(jac)
    return np.sqrt(np.diag(np.linalg.inv(jac / err**2 @ jac.T)))


@pytest.mark.parametrize("reparametrize", [False, True])
def test_emulator_likelihood_recovers_known_parameters(emulator, observed, reparametrize):
    post = sample(emulator, observed, n_steps=5000, emulator_error=False, seed=1,
                  progress=False, reparametrize=reparametrize)
    assert isinstance(post, Posterior)
    assert post.names == ["log_mformed", "redshift", "log_mstar"]
    draws = post.sample(1000)
    assert draws.shape == (1000, 3)
    sigma = _fisher_sigma(emulator, observed.err)
    mean, std = draws[:, :2].mean(0), draws[:, :2].std(0)
    assert np.all(np.abs(mean - TRUTH) < 4 * sigma), (mean, TRUTH, sigma)
    np.testing.assert_allclose(std, sigma, rtol=0.2)
    assert sigma[1] < 3e-5  # the redshift is pinned at a fraction of a pixel
    d = post.diagnostics
    assert d["converged"] and d["init"] == "optimize" and 0.2 < d["acceptance_fraction"] < 0.8
    assert d["n_steps"] < 5000 and d["cpu_s"] > 0  # it stopped once converged


def test_start_from_posterior_draws_and_batches(emulator, observed):
    rng = np.random.default_rng(3)
    draws = TRUTH + rng.normal(size=(400, 2)) * [0.01, 2e-5]
    npe = Posterior(None, torch.zeros(1, 3), PRIOR.names, None,
                    samples=torch.as_tensor(draws, dtype=torch.float32)[None], single=True)
    post = sample(emulator, observed, init=npe, n_steps=300, progress=False)
    assert post.diagnostics["init"] == "posterior draws"
    assert abs(post.summary()["redshift"]["median"] - TRUTH[1]) < 1e-4
    two = ss.SpectraSet.concat([observed.as_set(), observed.as_set()])
    batch = sample(emulator, two, n_steps=150, progress=False)
    assert batch.sample(50).shape == (2, 50, 3)
    assert len(batch.diagnostics["per_observation"]) == 2


def test_chains_run_on_the_requested_threads_and_restore_them(emulator, observed,
                                                             monkeypatch):
    seen = set()
    forward = type(emulator).forward

    def spy(self, theta):
        seen.add(torch.get_num_threads())
        return forward(self, theta)

    monkeypatch.setattr(type(emulator), "forward", spy)
    torch.set_num_threads(2)
    try:
        sample(emulator, observed, n_steps=20, progress=False)
        assert seen == {1} and torch.get_num_threads() == 2
        seen.clear()
        sample(emulator, observed, n_steps=20, progress=False, threads=None)
        assert seen == {2}
        with pytest.raises(ValueError, match="threads"):
            sample(emulator, observed, threads=0)
    finally:
        torch.set_num_threads(1)  # the module's setting


def _gaussian(cov: np.ndarray):
    prec = np.linalg.inv(cov)

    def log_prob(x: np.ndarray) -> np.ndarray:
        return -0.5 * np.einsum("ni,ij,nj->n", x, prec, x)

    return log_prob


def test_adaptive_stop_converges_and_recovers_a_gaussian():
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    init = np.random.default_rng(0).normal(size=(64, 3))
    theta, diag = run_emcee(_gaussian(cov), init, n_samples=4000, n_steps=50_000, seed=0)
    assert diag["converged"]
    assert diag["n_steps"] < 5000 and diag["max_steps"] == 50_000  # stopped on its own
    tau = np.max(diag["autocorr_time"])
    assert diag["n_steps"] - diag["burn_in_steps"] > 50 * tau
    assert diag["burn_in_steps"] == int(0.3 * diag["n_steps"])
    np.testing.assert_allclose(theta.mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(np.cov(theta.T), cov, atol=0.1)


def test_hitting_the_maximum_warns_and_is_not_converged(caplog):
    init = np.random.default_rng(0).normal(size=(64, 2))
    log_prob = _gaussian(np.array([[1.0, 0.8], [0.8, 1.0]]))
    with caplog.at_level(logging.WARNING, logger="specsbi.mcmc"):
        _, diag = run_emcee(log_prob, init, n_samples=100, n_steps=300, seed=0)
    assert not diag["converged"] and diag["n_steps"] == 300
    assert "may not have converged" in caplog.text and "maximum of 300 steps" in caplog.text
    # a fixed length, as before: runs every step, converged by the 50 τ rule alone
    _, diag = run_emcee(log_prob, init, n_samples=100, n_steps=2500, seed=0, adaptive=False)
    assert diag["n_steps"] == 2500 and diag["converged"]


def test_box_transform_is_an_exact_bijection_with_its_jacobian():
    box = BoxTransform(torch.tensor([9.0, 0.01]), torch.tensor([12.0, 0.5]))
    u = torch.randn(50, 2, dtype=torch.float64) * 3
    theta = box.to_theta(u)
    assert ((theta > box.low) & (theta < box.low + box.width)).all()
    torch.testing.assert_close(box.to_u(theta), u)
    jac = torch.stack([torch.autograd.functional.jacobian(box.to_theta, r[None])[0, :, 0]
                       for r in u])  # (50, 2, 2), diagonal
    expected = torch.log(torch.diagonal(jac, dim1=1, dim2=2)).sum(1)
    torch.testing.assert_close(box.log_det(u), expected)
    # a uniform prior in θ is, in u, the product of logistic densities: it integrates to 1
    grid = torch.linspace(-30, 30, 20001, dtype=torch.float64)
    dens = torch.exp(box.log_det(torch.stack([grid, torch.zeros_like(grid)], 1))
                     - math.log(3.0 * 0.49) - math.log(0.25))
    assert abs(float(torch.trapezoid(dens, grid)) - 1) < 1e-6


def test_emulator_likelihood_matches_the_reference(emulator, observed):
    """Masked pixels weigh nothing; both emulator-error modes; chunks padded when compiled."""
    good = np.ones(len(WL), bool)
    good[100:160] = False
    theta = torch.as_tensor(TRUTH + np.array([[0.0, 0.0], [0.01, 1e-5], [-0.02, -2e-5]]))
    model = emulator(theta)[:, good]
    flux = torch.as_tensor(observed.flux[good], dtype=torch.float64)
    var = torch.as_tensor(observed.err[good], dtype=torch.float64) ** 2
    frac = torch.full((len(WL),), 0.01, dtype=torch.float64)
    ref = emulator(theta[:1])[0].detach()
    for kwargs, expected in [
        ({}, gaussian_log_likelihood(model, flux, var)),
        ({"frac_err": frac}, gaussian_log_likelihood(model, flux, var, frac[good])),
        ({"frac_err": frac, "reference": ref},  # the error frozen at the reference model
         gaussian_log_likelihood(model, flux, var + (0.01 * ref[good].double()) ** 2)),
    ]:
        like = EmulatorLikelihood(emulator, observed.flux, observed.err, good, chunk=2, **kwargs)
        torch.testing.assert_close(like(theta), expected.double(), rtol=1e-10, atol=1e-8)
        like.compiled = True  # the padded, chunked path (the eager kernel stands in)
        torch.testing.assert_close(like(theta), expected.double(), rtol=1e-10, atol=1e-8)
    with pytest.raises(ValueError, match="unmasked pixels"):
        EmulatorLikelihood(emulator, observed.flux, observed.err, np.zeros(len(WL), bool))


def test_correlated_emulator_error_is_the_dense_gaussian(emulator, observed):
    """Diagonal plus low-rank error through Woodbury = ln N with the full covariance."""
    rng = np.random.default_rng(5)
    good = np.ones(len(WL), bool)
    good[40:90] = False
    theta = torch.as_tensor(TRUTH + np.array([[0.0, 0.0], [0.02, 2e-5], [-0.01, -1e-5]]))
    frac = torch.as_tensor(rng.uniform(0.002, 0.01, len(WL)))
    modes = torch.as_tensor(rng.normal(0, 0.01, (3, len(WL))))
    ref = emulator(theta[:1])[0].detach().double()
    like = EmulatorLikelihood(emulator, observed.flux, observed.err, good, frac, ref, modes,
                              chunk=2)
    b = (modes * ref)[:, good]
    cov = torch.diag(torch.as_tensor(observed.err[good]) ** 2 + (frac * ref)[good] ** 2)
    dense = torch.distributions.MultivariateNormal(emulator(theta)[:, good].double(),
                                                   covariance_matrix=cov + b.T @ b)
    expected = dense.log_prob(torch.as_tensor(observed.flux[good]))
    torch.testing.assert_close(like(theta), expected, rtol=1e-8, atol=1e-6)
    diagonal = EmulatorLikelihood(emulator, observed.flux, observed.err, good, frac, ref)
    assert (like(theta) != diagonal(theta)).all()
    with pytest.raises(ValueError, match="reference"):
        EmulatorLikelihood(emulator, observed.flux, observed.err, good, frac, modes=modes)


def test_a_failed_compilation_falls_back_to_eager(emulator, observed, caplog):
    like = EmulatorLikelihood(emulator, observed.flux, observed.err, np.ones(len(WL), bool))
    theta = torch.as_tensor(TRUTH)[None].expand(3, -1)
    expected = like(theta)

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    like.compiled, like._tried, like._fn = True, False, broken  # as a compile that fails
    with caplog.at_level(logging.WARNING, logger="specsbi.emulator_likelihood"):
        torch.testing.assert_close(like(theta), expected)
    assert "torch.compile failed (RuntimeError: no C++ compiler)" in caplog.text
    assert not like.compiled


def test_log_posterior_skips_the_likelihood_outside_the_prior():
    def like(theta: Tensor) -> Tensor:
        assert PRIOR.log_prob(theta).isfinite().all(), "likelihood called outside the prior"
        return -theta[:, 0]

    fn = log_posterior(like, PRIOR)
    out = fn(torch.tensor([[10.0, 0.1], [13.0, 0.1], [10.0, 0.01]]))
    assert torch.isfinite(out[0]) and torch.isinf(out[1:]).all()


def test_gaussian_log_likelihood_known_value():
    model = torch.tensor([[1.0, 2.0], [1.0, 3.0]])
    flux, var = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])
    lp = gaussian_log_likelihood(model, flux, var)
    expected = -0.5 * (np.log(2 * np.pi) + np.log(8 * np.pi))
    np.testing.assert_allclose(lp.numpy(), [expected, expected - 0.125])
    with_err = gaussian_log_likelihood(model, flux, var, torch.tensor([0.5, 0.0]))
    assert with_err[0] < lp[0]  # a model error widens (and normalises) the likelihood


def test_bad_inputs(emulator, observed):
    with pytest.raises(ValueError, match="init"):
        sample(emulator, observed, init="nope")
    with pytest.raises(ValueError, match="differ"):
        sample(emulator, observed, prior=ss.default_prior())
    with pytest.raises(ValueError, match="Spectrum"):
        sample(emulator, observed.flux)
    with pytest.raises(ValueError, match="emulator_error"):
        sample(emulator, observed, emulator_error="both")
    with pytest.raises(ValueError, match="select"):
        run_emcee(lambda x: -x.sum(1), np.zeros((40, 2)), select="all")
    with pytest.raises(ValueError, match="n_steps"):
        run_emcee(lambda x: -x.sum(1), np.zeros((40, 2)), n_steps=0)
