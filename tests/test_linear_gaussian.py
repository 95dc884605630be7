"""Known answer: a linear-Gaussian problem with an analytic posterior, for both variants.

θ ~ U(-3, 3)², x = A θ + N(0, σ² I) in 3 dimensions. Test observations come from
θ in (-1.5, 1.5)², where the uniform prior's edges are > 7 posterior σ away, so
the posterior is N(μ, Σ) with Σ = (AᵀA / σ²)⁻¹ and μ = Σ Aᵀ x / σ².
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specsbi import Prior
from specsbi.estimators import LikelihoodEstimator, PosteriorEstimator
from specsbi.training import TrainConfig

A = np.array([[1.0, 0.5], [-0.3, 1.0], [0.8, -0.6]])
SIGMA = 0.3
PRIOR = Prior({"a": (-3.0, 3.0), "b": (-3.0, 3.0)})
COV = np.linalg.inv(A.T @ A / SIGMA**2)
CONFIG = TrainConfig(max_epochs=100, patience=10, batch_size=256, lr=1e-3)


def simulate(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return theta @ A.T + SIGMA * rng.standard_normal((len(theta), 3))


def exact_mean(x: np.ndarray) -> np.ndarray:
    return x @ A @ COV.T / SIGMA**2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    theta = PRIOR.draw(12_000, seed=0)
    return theta, simulate(theta, rng)


@pytest.fixture(scope="module")
def tests():
    rng = np.random.default_rng(1)
    theta = rng.uniform(-1.5, 1.5, size=(200, 2))
    return theta, simulate(theta, rng)


@pytest.fixture(scope="module", params=["dependent", "augmented"])
def npe(request, data):
    theta, x = data
    est = PosteriorEstimator(variant=request.param, flow="nsf",
                             train_config=CONFIG, seed=0, progress=False)
    return est.fit(theta, x, prior=PRIOR)


def test_posterior_mean_and_covariance(npe, tests):
    _, x = tests
    post = npe.posterior(x[:5])
    samples = post.sample(4000)  # (5, 4000, 2)
    sd = np.sqrt(np.diag(COV))
    for i in range(5):
        err = (samples[i].mean(0) - exact_mean(x[i])) / sd
        assert np.all(np.abs(err) < 0.25), err  # mean within a quarter of a posterior σ
        cov = np.cov(samples[i].T)
        assert np.allclose(np.sqrt(np.diag(cov)) / sd, 1, atol=0.15)
        corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
        assert corr == pytest.approx(COV[0, 1] / (sd[0] * sd[1]), abs=0.1)


def test_log_prob_matches_the_analytic_density(npe, tests):
    _, x = tests
    post = npe.posterior(x[0])
    theta = np.random.default_rng(2).multivariate_normal(exact_mean(x[0]), COV, size=200)
    exact = -0.5 * np.einsum("ij,jk,ik->i", theta - exact_mean(x[0]), np.linalg.inv(COV),
                             theta - exact_mean(x[0])) - 0.5 * np.log(
        np.linalg.det(2 * np.pi * COV))
    lp = post.log_prob(theta)
    assert lp.shape == (200,)
    # E_p[log p − log q] estimates KL(p‖q) ≥ 0: small, and not offset by a missing constant
    kl = float(np.mean(exact - lp))
    assert -0.05 < kl < 0.12, kl


def test_expected_coverage(npe):
    """Highest-density coverage at 50% and 90% within ±0.05 over 300 pairs from the prior."""
    theta = PRIOR.draw(300, seed=7)
    x = simulate(theta, np.random.default_rng(7))
    post = npe.posterior(x)
    samples = post.sample(500)  # (300, 500, 2)
    lp_true = post.log_prob(theta)  # (300,)
    lp_samples = np.stack([post.log_prob(samples[:, j]) for j in range(samples.shape[1])], 1)
    rank = (lp_samples > lp_true[:, None]).mean(1)  # HPD level at which θ_true enters
    for level in (0.5, 0.9):
        assert np.mean(rank < level) == pytest.approx(level, abs=0.05)


@pytest.mark.parametrize("variant", ["dependent", "augmented"])
def test_likelihood_and_mcmc(data, tests, variant):
    theta, x = data
    nle = LikelihoodEstimator(variant=variant, flow="nsf",
                              train_config=CONFIG, seed=0, progress=False)
    nle.fit(theta, x, prior=PRIOR)
    t_test, x_test = tests
    # the learned likelihood against the exact Gaussian at the true θ
    ll = nle.log_likelihood(t_test[:50], x_test[:50])
    r = x_test[:50] - t_test[:50] @ A.T
    exact = -0.5 * (r**2).sum(1) / SIGMA**2 - 1.5 * np.log(2 * np.pi * SIGMA**2)
    assert np.median(np.abs(ll - exact)) < 0.2
    post = nle.posterior(x_test[0], n_samples=2000)
    s = post.sample(2000)
    sd = np.sqrt(np.diag(COV))
    assert np.all(np.abs((s.mean(0) - exact_mean(x_test[0])) / sd) < 0.3)
    assert np.allclose(s.std(0) / sd, 1, atol=0.2)
    assert post.diagnostics["converged"] and 0.2 < post.diagnostics["acceptance_fraction"] < 0.9


def test_summary_and_batches(npe, tests):
    _, x = tests
    one = npe.posterior(x[3])
    s = one.summary()
    assert set(s) == {"a", "b"} and s["a"]["p16"] < s["a"]["median"] < s["a"]["p84"]
    batch = npe.posterior(x[:4])
    assert batch.sample(10).shape == (4, 10, 2)
    assert batch.log_prob(np.zeros((4, 2))).shape == (4,)
    assert batch.summary()["b"]["median"].shape == (4,)


def test_sbi_style_calls_and_run_sbc(npe, tests):
    from sbi.diagnostics import run_sbc

    theta, x = tests
    post = npe.posterior(x[0])
    t = post.sample((50,), x=torch.as_tensor(x[1], dtype=torch.float32))
    assert isinstance(t, torch.Tensor) and t.shape == (50, 2)
    lp = post.log_prob(t, x=torch.as_tensor(x[1], dtype=torch.float32))
    assert lp.shape == (50,)
    ranks, dap = run_sbc(torch.as_tensor(theta[:100], dtype=torch.float32),
                         torch.as_tensor(x[:100], dtype=torch.float32), post,
                         num_posterior_samples=100, show_progress_bar=False)
    assert ranks.shape == (100, 2) and dap.shape == (100, 2)
    # ranks of a calibrated posterior are uniform on 0..100: mean 50, sd of the mean ≈ 2.9
    assert float(ranks.float().mean()) == pytest.approx(50, abs=10)
