"""Calibration diagnostics against known answers: exact posteriors pass, wrong ones are flagged.

θ ~ N(0, I₂), x = θ + N(0, s² I): the exact posterior is N(x / (1 + s²), s² / (1 + s²) I).
Draws from it must give uniform SBC ranks and diagonal coverage; draws 0.6× too narrow
(overconfident) or shifted by one posterior σ (biased) must be flagged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specsbi import Posterior, SpectraSet
from specsbi.diagnostics import (
    expected_coverage,
    predictive_chi2,
    predictive_flux,
    sbc,
)

S = 0.5
SD = np.sqrt(S**2 / (1 + S**2))


def problem(n: int = 1000, draws: int = 300, width: float = 1.0, shift: float = 0.0,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n, 2))
    x = theta + S * rng.normal(size=(n, 2))
    mean = x / (1 + S**2) + shift * SD
    samples = mean[:, None] + width * SD * rng.normal(size=(n, draws, 2))
    return samples, theta


def test_exact_posterior_is_calibrated():
    samples, theta = problem()
    r = sbc(samples, theta, names=["a", "b"])
    assert r.ranks.shape == (1000, 2) and r.counts.sum(1).tolist() == [1000, 1000]
    assert np.allclose(r.expected.sum(), 1000)
    assert (r.chi2_pvalue > 0.01).all() and (r.ks_pvalue > 0.01).all()
    cov = expected_coverage(samples, theta, names=["a", "b"])
    dev = cov.max_deviation
    assert max(dev.values()) < 0.05, dev  # 1000 sims: band half-width ≤ 0.031
    for name in ("a", "b"):
        assert abs(cov.at(0.68)[name] - 0.68) < 0.03 and abs(cov.at(0.95)[name] - 0.95) < 0.02
    assert cov.tarp[0] == 0 and cov.tarp[-1] == 1


@pytest.mark.parametrize("width, shift", [(0.6, 0.0), (1.0, 1.0)])
def test_overconfident_or_biased_posterior_is_flagged(width, shift):
    samples, theta = problem(width=width, shift=shift)
    r = sbc(samples, theta)
    assert (r.chi2_pvalue < 1e-6).all() and (r.ks_pvalue < 1e-6).all()
    cov = expected_coverage(samples, theta)
    assert min(cov.max_deviation.values()) > 0.1
    if width < 1:  # too narrow: the 68% interval holds 1 − 2Φ(−0.6) ≈ 0.45 of truths
        assert abs(cov.at(0.68)["θ0"] - 0.45) < 0.04
        assert r.counts[:, [0, -1]].mean() > 3 * r.expected[0]  # ∪-shaped ranks


def test_posterior_object_and_truth_mapping():
    samples, theta = problem(n=200, draws=100)
    post = Posterior(None, torch.zeros(200, 1), ["a", "b"],
                     samples=torch.as_tensor(samples, dtype=torch.float32))
    r = sbc(post, {"a": theta[:, 0], "b": theta[:, 1]}, n_samples=100, bins=5)
    assert r.names == ["a", "b"] and r.counts.shape == (2, 5)
    assert set(r.to_dict()["chi2_pvalue"]) == {"a", "b"}
    cov = expected_coverage(post, theta, n_samples=100, levels=[0.0, 0.5, 1.0])
    assert cov.central.shape == (3, 2) and cov.to_dict()["n_galaxies"] == 200


@pytest.mark.parametrize("call, message", [
    (lambda s, t: sbc(s, t[:5]), "truth must have shape"),
    (lambda s, t: sbc(s[0], t), r"\(b, n, d\)"),
    (lambda s, t: sbc(s, t, bins=1), "bins"),
    (lambda s, t: sbc(s, {"x": t[:, 0]}, names=["x", "y"]), "lacks parameter"),
    (lambda s, t: expected_coverage(s, t, levels=[0.5, 2.0]), "levels"),
    (lambda s, t: sbc(np.where(s > 2, np.nan, s), t), "non-finite"),
])
def test_bad_input(call, message):
    samples, theta = problem(n=50, draws=20)
    with pytest.raises(ValueError, match=message):
        call(samples, theta)


class LinearEmulator:
    """A fake emulator: flux = 10 + θ · basis on 200 pixels."""

    param_names = ["a", "b"]

    def __init__(self) -> None:
        self.basis = np.random.default_rng(5).normal(size=(2, 200))

    def predict(self, theta: np.ndarray) -> np.ndarray:
        return 10 + np.asarray(theta) @ self.basis


def test_predictive_chi2_known_answer():
    emu, rng = LinearEmulator(), np.random.default_rng(1)
    theta = rng.normal(size=(6, 2))
    err = np.full((6, 200), 0.2)
    flux = emu.predict(theta) + err * rng.normal(size=err.shape)
    err[:, :50] = np.inf  # masked pixels must not count, whatever their flux
    obs = SpectraSet(np.linspace(4000, 5000, 200), flux, err)
    exact = np.repeat(theta[:, None], 40, 1)
    chi2 = predictive_chi2(emu, exact, obs, n_draws=40)
    assert chi2.shape == (6,) and np.all(np.abs(chi2 - 1) < 0.35)  # χ²₁₅₀/150: sd 0.12
    off = exact + np.array([0.3, 0.0])  # adds (0.3 · basis_a / 0.2)² per unmasked pixel
    expected = 1 + np.mean((0.3 * emu.basis[0, 50:] / 0.2) ** 2)
    assert np.all(np.abs(predictive_chi2(emu, off, obs, n_draws=40) - expected) < 0.5)
    assert expected > 3
    # names pick the emulator's columns: a posterior over (b, a) gives the same answer
    post = Posterior(None, torch.zeros(6, 1), ["b", "a"],
                     samples=torch.as_tensor(exact[..., ::-1].copy(), dtype=torch.float32))
    assert np.allclose(predictive_chi2(emu, post, obs, n_draws=40), chi2, rtol=1e-4)
    assert predictive_flux(emu, exact[0], n_draws=5, names=["a", "b"]).shape == (5, 200)
    # a posterior wider than the data: the mean χ² grows with its spread, the best draw's not
    wide = exact + np.random.default_rng(2).normal(0, 0.3, exact.shape)
    wide[:, 0] = exact[:, 0]  # one draw at the truth
    assert (predictive_chi2(emu, wide, obs, n_draws=40) > 2).all()
    best = predictive_chi2(emu, wide, obs, n_draws=40, statistic="min")
    assert np.all(np.abs(best - 1) < 0.35)
    assert predictive_chi2(emu, wide, obs, n_draws=40, statistic="all").shape == (6, 40)
    with pytest.raises(ValueError, match="statistic"):
        predictive_chi2(emu, wide, obs, statistic="max")


def test_predictive_needs_the_emulator_parameters():
    post = Posterior(None, torch.zeros(2, 1), ["a", "z"], samples=torch.zeros(2, 10, 2))
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        predictive_flux(LinearEmulator(), post, n_draws=5)
