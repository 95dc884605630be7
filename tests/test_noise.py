"""Noise model: σ = median/snr, S/N range, reproducibility, torch path, error library."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specsbi import NoiseModel


def test_sigma_is_median_over_snr_and_residuals_are_unit_normal():
    rng = np.random.default_rng(0)
    flux = rng.uniform(5, 50, size=(400, 1000))
    noisy, err, snr = NoiseModel(snr=(5, 30)).sample(flux, seed=1)
    assert snr.min() >= 5 and snr.max() <= 30
    assert np.allclose(err[:, 0], np.median(flux, 1) / snr)
    z = (noisy - flux) / err
    assert z.mean() == pytest.approx(0.0, abs=0.01)  # 4e5 draws: sd of the mean 0.0016
    assert z.std() == pytest.approx(1.0, abs=0.01)
    # S/N is uniform on (5, 30): mean 17.5, sd of the mean of 400 draws 0.36
    assert snr.mean() == pytest.approx(17.5, abs=1.5)


def test_same_seed_same_noise():
    flux = np.full((3, 20), 10.0)
    a = NoiseModel().sample(flux, seed=7)
    b = NoiseModel().sample(flux, seed=7)
    c = NoiseModel().sample(flux, seed=8)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_torch_path_matches_the_model():
    flux = torch.full((2000, 50), 20.0)
    gen = torch.Generator().manual_seed(0)
    noisy, err, snr = NoiseModel(snr=(10, 20)).sample(flux, gen)
    assert isinstance(noisy, torch.Tensor) and noisy.shape == flux.shape
    assert torch.allclose(err[:, 0], 20.0 / snr)
    z = (noisy - flux) / err
    assert float(z.std()) == pytest.approx(1.0, abs=0.02)
    again = NoiseModel(snr=(10, 20)).sample(flux, torch.Generator().manual_seed(0))[0]
    assert torch.equal(noisy, again)


def test_error_library_shapes_sigma_and_carries_masks():
    npix = 100
    shape = np.linspace(1.0, 3.0, npix)
    lib = np.stack([shape, shape.copy()])
    lib[1, 10] = np.inf
    model = NoiseModel(snr=(10, 10), error_library=lib)
    flux = np.full((200, npix), 40.0)
    noisy, err, _ = model.sample(flux, seed=2)
    finite = np.isfinite(err).all(1)
    assert 0 < finite.sum() < 200  # both library rows were drawn
    assert np.allclose(np.median(err[finite], 1), 4.0)  # median σ = median(flux)/snr
    assert np.allclose(err[finite][0] / err[finite][0, 0], shape / shape[0])
    assert np.all(noisy[~finite, 10] == 0)
    with pytest.raises(ValueError, match="grids do not match"):
        model.sample(np.ones((2, 50)), seed=0)
    t_noisy, t_err, _ = model.sample(torch.as_tensor(flux), torch.Generator().manual_seed(1))
    assert torch.isinf(t_err).any() and bool(torch.isfinite(t_noisy).all())


@pytest.mark.parametrize(
    "kwargs, message",
    [({"snr": (0, 5)}, "0 < min"), ({"snr": (10, 5)}, "min <= max"),
     ({"error_library": -np.ones((2, 5))}, ">= 0")],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoiseModel(**kwargs)


def test_non_positive_median_flux_is_refused():
    with pytest.raises(ValueError, match="positive median"):
        NoiseModel().sample(np.zeros((1, 10)), seed=0)
