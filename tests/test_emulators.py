"""Emulators: the shared physics layer (exact redshift, distance, mass), PCAEmulator, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import specsbi as ss
from specsbi.cosmology import luminosity_distance_cm
from specsbi.emulators import (
    ConditionalDiffusion,
    ConditionalGAN,
    ConditionalVAE,
    EmulatorSimulator,
    PCAEmulator,
    RestFrame,
    bagpipes_rest_wavelength,
    log_rest_wavelength,
)
from specsbi.emulators.physics import FLUX_UNIT, L_SUN, MPC_CM, trim_rest_wavelength

WL = ss.sdss_wavelength()
Z_RANGE = (0.01, 0.5)


@pytest.fixture(scope="module")
def layer() -> RestFrame:
    """The physics layer on bagpipes' own rest grid (coarser than the SDSS pixels)."""
    return RestFrame(WL, trim_rest_wavelength(bagpipes_rest_wavelength(WL), WL, Z_RANGE))


@pytest.fixture(scope="module")
def toy_train() -> ss.SpectraSet:
    return ss.simulate(ss.ToySimulator(), ss.default_prior(), n=300, seed=3, progress=False)


@pytest.fixture(scope="module")
def emulator(toy_train) -> PCAEmulator:
    cfg = ss.TrainConfig(batch_size=64, lr=3e-3, max_epochs=8, patience=8)
    return PCAEmulator(n_components=8, hidden=32, layers=2, train_config=cfg,
                       progress=False).fit(toy_train)


def test_bagpipes_grid_is_geometric_and_covers_the_prior(layer):
    w = layer.rest_wavelength.numpy()
    assert np.allclose(w[1:] / w[:-1], 1.0005, rtol=1e-12)
    assert w[0] < WL[0] / 1.5 and w[-1] > WL[-1] / 1.01
    assert layer.fast  # bagpipes' pixels are wider than SDSS's: the two-point path


def test_round_trip_rest_to_observed_to_rest_is_exact(layer):
    rng = np.random.default_rng(0)
    rest = np.exp(rng.normal(size=(3, layer.n_rest)))
    z = np.array([0.013, 0.21, 0.49])
    log_m = np.array([9.5, 10.0, 11.7])
    flux = layer(torch.as_tensor(np.log(rest)), torch.as_tensor(z), torch.as_tensor(log_m))
    back, covered = layer.to_rest(flux.numpy(), z, log_m)
    assert covered.sum(1).min() > 1700  # each spectrum sees ~1769 of bagpipes' pixels
    np.testing.assert_allclose(back[covered], rest[covered], rtol=1e-9)


def test_fast_path_equals_the_cumulative_integral(layer):
    rng = np.random.default_rng(1)
    rest = torch.as_tensor(np.exp(rng.normal(size=(4, layer.n_rest))))
    z = torch.tensor([0.01, 0.1234, 0.3, 0.5], dtype=torch.float64)
    fast = layer.shift(rest, z)
    layer.fast = False
    try:
        slow = layer.shift(rest, z)
    finally:
        layer.fast = True
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=5e-6)  # float32 weights


def test_windowed_forward_equals_broadening_then_resampling_everywhere():
    """The fast forward exponentiates and broadens only each spectrum's window of rest
    pixels; it must equal the whole-grid broadening followed by the cumulative-integral
    resampling, at the ends of the redshift range too, and honour ``span``."""
    grid = trim_rest_wavelength(bagpipes_rest_wavelength(WL), WL, Z_RANGE)
    layer = RestFrame(WL, grid, Z_RANGE, kms_per_pixel=149.9, max_veldisp=400.0)
    assert layer.fast and layer.margin == 12
    rng = np.random.default_rng(4)
    n = layer.n_rest + 2 * layer.margin
    log_rest = torch.as_tensor(rng.normal(size=(6, n)))
    z = torch.tensor([0.01, 0.5, 0.0100001, 0.4999999, 0.137, 0.33], dtype=torch.float64)
    log_m = torch.full((6,), 10.0, dtype=torch.float64)
    veldisp = torch.tensor([50.0, 400.0, 149.9, 300.0, 10.0, 220.0], dtype=torch.float64)
    span = (30, n - 41)
    fast = layer(log_rest, z, log_m, veldisp, span=span)
    layer.fast = False
    try:
        slow = layer(layer.pad(log_rest, span), z, log_m, veldisp)
    finally:
        layer.fast = True
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=5e-6)  # float32 weights
    padded = layer.pad(log_rest, span)
    assert (padded[:, :30] == log_rest[:, 30:31]).all()
    assert (padded[:, -41:] == log_rest[:, -41:-40]).all()
    assert not torch.allclose(fast, layer(log_rest, z, log_m, veldisp))  # span matters


def test_redshift_moves_a_feature_by_log10_1pz_over_the_step(layer):
    """A rest-frame feature lands log10(1 + z) / 1e-4 pixels further at redshift z."""
    w = layer.rest_wavelength.numpy()
    rest = np.ones((2, layer.n_rest))
    k = int(np.searchsorted(w, 4000.0))
    rest[:, k] = 50.0  # one bright rest pixel
    z = np.array([0.05, 0.37])
    flux = layer(torch.as_tensor(np.log(rest)), torch.as_tensor(z),
                 torch.zeros(2, dtype=torch.float64)).numpy()
    line = flux - np.median(flux, axis=1, keepdims=True)
    centre = (line * np.arange(len(WL))).sum(1) / line.sum(1)
    expected = np.log10(w[k] * (1 + z) / WL[0]) / 1e-4
    np.testing.assert_allclose(centre, expected, atol=0.05)  # (sampling of one box)
    assert abs((centre[1] - centre[0]) - np.log10(1.37 / 1.05) / 1e-4) < 0.05


def test_flux_scales_with_mass_and_distance(layer):
    rest = torch.zeros(3, layer.n_rest, dtype=torch.float64)  # ln L = 0: 1 L☉/Å per M☉
    z = torch.tensor([0.1, 0.1, 0.4], dtype=torch.float64)
    log_m = torch.tensor([10.0, 10.5, 10.0], dtype=torch.float64)
    flux = layer(rest, z, log_m).numpy()
    np.testing.assert_allclose(flux[1] / flux[0], 10**0.5, rtol=1e-12)
    d_l = luminosity_distance_cm(z.numpy()) * MPC_CM / 3.0856775814913673e24
    expected = 1e10 * FLUX_UNIT * L_SUN / (4 * np.pi * d_l**2 * (1 + z.numpy()))
    np.testing.assert_allclose(flux[[0, 2], 1000], expected[[0, 2]], rtol=1e-4)
    assert flux[2, 1000] / flux[0, 1000] < 0.1  # four times farther, ≈ 1/16 the flux


def test_age_is_the_fraction_of_the_age_of_the_universe(layer):
    z = torch.tensor([0.0, 0.5], dtype=torch.float64)
    age = layer.age(z, torch.tensor([1.0, 0.5], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(age, [13.467, 0.5 * 8.42], rtol=2e-3)


def test_redshift_gradient_matches_finite_differences(layer):
    rng = np.random.default_rng(2)
    rest = torch.as_tensor(rng.normal(size=(1, layer.n_rest)))
    weights = torch.as_tensor(rng.normal(size=(1, len(WL))))
    f = lambda zz: (layer(rest, zz, torch.tensor([10.0], dtype=torch.float64))  # noqa: E731
                    * weights).sum()
    grads = []
    for fast in (True, False):  # float32 two-point mix; float64 cumulative integral
        layer.fast = fast
        try:
            z = torch.tensor([0.2037], dtype=torch.float64, requires_grad=True)  # off the table
            f(z).backward()
            grads.append(z.grad[0])
            if not fast:
                h = 1e-9  # (almost) inside one linear piece
                numeric = (f(z.detach() + h) - f(z.detach() - h)) / (2 * h)
        finally:
            layer.fast = True
    assert torch.isclose(grads[1], numeric, rtol=1e-4)
    assert torch.isclose(grads[0], grads[1], rtol=1e-4)


def test_rest_grid_that_misses_the_range_is_refused():
    with pytest.raises(ValueError, match="does not cover"):
        RestFrame(WL, log_rest_wavelength(WL, (0.0, 0.1)), z_range=(0.0, 0.5))
    with pytest.raises(ValueError, match="z_range"):
        RestFrame(WL, bagpipes_rest_wavelength(WL), z_range=(0.3, 0.1))


def test_fit_predict_shapes_and_derived(emulator, toy_train):
    theta = np.stack([toy_train.params[n] for n in emulator.prior.names], 1)[:5]
    flux = emulator.predict(theta)
    assert flux.shape == (5, len(WL)) and np.isfinite(flux).all() and (flux > 0).all()
    assert emulator.predict(theta[0]).shape == (len(WL),)
    derived = emulator.predict_derived(theta)
    np.testing.assert_allclose(derived["age"], toy_train.params["age"][:5], rtol=2e-3)
    assert np.abs(derived["log_mstar"] - toy_train.params["log_mstar"][:5]).max() < 0.1
    q = emulator.metrics["rest_frac_error_p50_p68_p95_p99"]
    assert q == sorted(q) and q[1] < 0.5  # a rough fit after 8 epochs, but a fit
    err = emulator.fractional_error(torch.tensor([0.1, 0.3])).numpy()
    assert err.shape == (2, len(WL)) and (err > 0).all()


def test_emulator_is_exact_in_redshift_and_mass(emulator):
    """Same age in Gyr at two redshifts → the same rest spectrum, only moved and dimmed."""
    names = emulator.prior.names
    theta = emulator.prior.draw(2, seed=4)
    theta[1] = theta[0]
    theta[1, names.index("redshift")] = 0.3
    t_univ = [float(emulator.physics.age(torch.tensor([z], dtype=torch.float64),
                                         torch.tensor([1.0], dtype=torch.float64)))
              for z in theta[:, names.index("redshift")]]
    theta[1, names.index("age_frac")] = theta[0, names.index("age_frac")] * t_univ[0] / t_univ[1]
    t = torch.as_tensor(theta, dtype=torch.float32)
    with torch.no_grad():
        rest = emulator.log_rest(t)
    np.testing.assert_allclose(rest[0].numpy(), rest[1].numpy(), atol=1e-4)
    heavier = theta[:1].copy()
    heavier[0, names.index("log_mformed")] += 0.3
    ratio = emulator.predict(heavier) / emulator.predict(theta[:1])
    np.testing.assert_allclose(ratio, 10**0.3, rtol=1e-5)


def test_torch_path_is_differentiable(emulator):
    theta = torch.as_tensor(emulator.prior.draw(3, seed=5), dtype=torch.float32)
    theta.requires_grad_(True)
    emulator(theta).sum().backward()
    grad = theta.grad
    assert torch.isfinite(grad).all()
    names = emulator.prior.names
    assert (grad[:, names.index("log_mformed")] > 0).all()  # more mass, more flux
    assert (grad[:, names.index("redshift")] != 0).all()


def test_leading_error_modes_recover_a_known_shared_pattern():
    """Residuals = a_i · e + white noise: the first mode is ±std(a) · e, the rest small."""
    from specsbi.emulators.base import _leading_modes

    gen = torch.Generator().manual_seed(0)
    e = torch.sin(torch.linspace(0, 3, 500))
    a = 0.02 * torch.randn(4000, 1, generator=gen)
    res = a * e + 0.001 * torch.randn(4000, 500, generator=gen)
    modes = _leading_modes(res / len(res) ** 0.5, 4)
    assert modes.shape == (4, 500)
    cos = float(modes[0] @ e / (modes[0].norm() * e.norm()))
    assert abs(abs(cos) - 1) < 1e-4
    assert abs(float(modes[0].norm()) / (0.02 * float(e.norm())) - 1) < 0.03
    assert float(modes[1].norm()) < 0.1 * float(modes[0].norm())


def test_error_modes_and_validate_on_held_out_sets(emulator, toy_train, tmp_path):
    k, n_rest = emulator.error_modes.shape
    assert k > 0 and n_rest == emulator.physics.n_rest
    # the modes are part of each pixel's variance, never more than all of it
    assert ((emulator.error_modes.double() ** 2).sum(0)
            <= emulator.rest_error.double() ** 2 * (1 + 1e-5) + 1e-12).all()
    diag, modes = emulator.error_model(0.2)
    assert diag.shape == (len(WL),) and modes.shape == (k, len(WL))
    total = emulator.fractional_error(torch.tensor([0.2], dtype=torch.float64))[0]
    assert (diag <= total + 1e-9).all() and (diag < total).any()
    # the fit's own validation rows give back the same error model
    val, _ = ss.training.split(len(toy_train), emulator.train_config, emulator.seed)
    again = ss.load(emulator.save(tmp_path / "emu"))
    metrics = again.validate(toy_train[np.sort(val.numpy())])
    torch.testing.assert_close(again.rest_error, emulator.rest_error, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(again.error_modes[:3].abs(), emulator.error_modes[:3].abs(),
                               rtol=1e-3, atol=1e-6)  # the leading ones; later ones may swap
    assert metrics["error_measured_on"]["n"] == len(val) and "best_epoch" in metrics
    observed_only = ss.SpectraSet(toy_train.wavelength, toy_train.flux, toy_train.err,
                                  params=toy_train.params)
    with pytest.raises(ValueError, match="noiseless"):
        again.validate(observed_only)


def test_emulators_saved_without_error_modes_still_load(emulator, tmp_path):
    from specsbi.serialization import read_model, write_model

    card, state = read_model(emulator.save(tmp_path / "emu"))
    del state["error_modes"]
    old = ss.load(write_model(tmp_path / "old", card, state))
    assert old.error_modes.shape == (0, old.physics.n_rest)
    diag, modes = old.error_model(0.2)
    torch.testing.assert_close(diag, old.fractional_error(torch.tensor([0.2],
                                                                        dtype=torch.float64))[0])
    assert modes.shape == (0, len(WL))


def test_save_load_round_trip(emulator, tmp_path):
    path = emulator.save(tmp_path / "emu")
    again = ss.load(path)
    assert isinstance(again, PCAEmulator)
    theta = emulator.prior.draw(4, seed=6)
    np.testing.assert_array_equal(again.predict(theta), emulator.predict(theta))
    np.testing.assert_array_equal(again.predict_derived(theta)["log_mstar"],
                                  emulator.predict_derived(theta)["log_mstar"])
    assert again.metrics["rest_frac_error_p50_p68_p95_p99"] == \
        emulator.metrics["rest_frac_error_p50_p68_p95_p99"]
    with pytest.raises(FileExistsError):
        emulator.save(path)


def test_a_loaded_emulator_traces_as_one_graph():
    # the shipped emulator broadens; its padding once read a tensor per call, which
    # split the compiled forward in two (a graph break) on its first, compiled call
    emu = ss.load("default-emulator")
    theta = torch.as_tensor(emu.prior.draw(3, seed=1), dtype=torch.float32)
    torch._dynamo.reset()
    traced = torch.compile(emu, fullgraph=True, backend="eager")  # raises on a break
    with torch.no_grad():
        torch.testing.assert_close(traced(theta), emu(theta))


def test_sfh_bin_fractions_follow_bagpipes_weights():
    from specsbi.emulators.sfh import BIN_EDGES_GYR, N_BINS, bin_fractions
    from specsbi.simulators.bagpipes import import_bagpipes

    pipes = import_bagpipes()
    np.testing.assert_allclose(BIN_EDGES_GYR, pipes.config.age_bins / 1e9, rtol=1e-7)
    assert N_BINS == len(pipes.config.age_sampling)
    rng = np.random.default_rng(0)
    for z, frac, log_tau in rng.uniform([0.01, 0.05, -1], [0.5, 0.98, 1], size=(40, 3)):
        age = frac * float(np.interp(z, pipes.utils.z_array, pipes.utils.age_at_z))
        sfh = pipes.models.star_formation_history(
            {"redshift": z, "delayed": {"massformed": 10.0, "metallicity": 1.0, "age": age,
                                        "tau": 10**log_tau}})
        weights = sfh.component_weights["delayed"]
        ours = bin_fractions(torch.tensor([age], dtype=torch.float64),
                             torch.tensor([10**log_tau], dtype=torch.float64))[0].numpy()
        # integrals against bagpipes' fine-grid sums: close for broad histories, a few
        # per cent of a bin's share for narrow bursts at bin edges (see the module)
        tol = 0.012 if log_tau >= 0 else 0.1
        np.testing.assert_allclose(ours, weights / weights.sum(), atol=tol)
        assert abs(ours.sum() - 1) < 1e-12


def test_sfh_bin_features_round_trip(toy_train, tmp_path):
    cfg = ss.TrainConfig(batch_size=64, max_epochs=2)
    emu = PCAEmulator(n_components=4, hidden=16, layers=1, sfh_bins=True, train_config=cfg,
                      progress=False).fit(toy_train)
    bins = [n for n in emu.feature_names if "sfh_bin_" in n]
    assert len(bins) == 84 and "log_sfh_bin_41" in bins
    theta = emu.prior.draw(3, seed=1)
    again = ss.load(emu.save(tmp_path / "emu"))
    assert again.feature_names == emu.feature_names
    np.testing.assert_array_equal(again.predict(theta), emu.predict(theta))
    auto = PCAEmulator(n_components=4, hidden=16, layers=1, train_config=cfg, progress=False)
    assert not any("sfh_bin" in n for n in auto.fit(toy_train).feature_names)  # not bagpipes
    with pytest.raises(ValueError, match="sfh_bins"):
        PCAEmulator(sfh_bins="yes")


def test_emulated_training_set(emulator):
    sim = EmulatorSimulator(emulator)
    data = ss.simulate(sim, emulator.prior, n=20, seed=2, progress=False)
    assert data.flux.shape == (20, len(WL)) and "log_mstar" in data.params
    theta = np.stack([data.params[n] for n in emulator.prior.names], 1)
    # θ is read back from the file in float32: equal to its last bits
    np.testing.assert_allclose(data.flux_noiseless, emulator.predict(theta), rtol=1e-5)
    assert data.attrs["simulator"]["emulator"] == "PCAEmulator"


def test_emulated_spectra_can_carry_the_emulators_error(emulator):
    """δ = ln(emulated / emulator): zero mean, the error model's variance, seeded by θ."""
    prior = emulator.prior.with_fixed(redshift=0.2)
    sim = EmulatorSimulator(emulator, error=True)
    data = ss.simulate(sim, prior, n=400, seed=4, progress=False)
    theta = np.stack([data.params[n] for n in emulator.prior.names], 1)
    delta = np.log(data.flux_noiseless / emulator.predict(theta))
    diag, modes = emulator.error_model(0.2)
    expected = (diag**2 + (modes**2).sum(0)).numpy()
    ratio = delta.var(0).mean() / expected.mean()
    assert abs(ratio - 1) < 0.1, ratio  # 400 draws: the mean variance to a few per cent
    # each spectrum's mean δ: variance Σ_k mean(e_k)² + mean(s²)/npix; the grand mean to 4σ
    sd = np.sqrt(float((modes.mean(1) ** 2).sum() + (diag**2).mean() / len(diag)) / len(delta))
    assert abs(delta.mean()) < 4 * sd
    again = ss.simulate(sim, prior, n=400, seed=4, progress=False)
    np.testing.assert_array_equal(again.flux_noiseless, data.flux_noiseless)
    assert data.attrs["simulator"]["emulator_error"] is True


def test_bad_inputs(emulator, toy_train):
    with pytest.raises(ValueError, match="shape"):
        emulator.predict(np.zeros((2, 3)))
    theta = emulator.prior.draw(1, seed=0)
    theta[0, 1] = 0.9  # redshift beyond the prior
    with pytest.raises(ValueError, match="outside the prior"):
        emulator.predict(theta)
    with pytest.raises(ValueError, match="not fitted"):
        PCAEmulator().predict(theta)
    with pytest.raises(ValueError, match="n_components"):
        PCAEmulator(n_components=0)
    with pytest.raises(ValueError, match="linear"):
        PCAEmulator(linear="av")
    with pytest.raises(ValueError, match="noiseless"):
        PCAEmulator().fit(ss.SpectraSet(WL, toy_train.flux[:60], toy_train.err[:60]))
    with pytest.raises(ValueError, match="SpectraSet"):
        PCAEmulator().fit(toy_train.flux)
    with pytest.raises(ValueError, match="at least 50"):
        PCAEmulator().fit(toy_train[:10])


def test_cli_train_and_simulate(tmp_path, capsys):
    from specsbi.cli import main

    data = tmp_path / "toy.h5"
    assert main(["simulate", "--n", "120", "--out", str(data), "--simulator", "toy",
                 "--no-progress", "--seed", "2"]) == 0
    model = tmp_path / "emu"
    assert main(["train", "emulator", "pca", "--data", str(data), "--out", str(model),
                 "--components", "6", "--epochs", "2", "--no-progress"]) == 0
    assert "saved emulator (pca)" in capsys.readouterr().out
    out = tmp_path / "emulated.h5"
    assert main(["simulate", "--emulator", str(model), "--n", "30", "--out", str(out),
                 "--no-progress", "--range", "redshift=0.1,0.2", "--emulator-error"]) == 0
    emulated = ss.SpectraSet.read(out)
    assert emulated.flux.shape == (30, len(WL)) and emulated.flux_noiseless is not None
    assert emulated.params["redshift"].min() >= 0.1 and emulated.params["redshift"].max() <= 0.2
    assert emulated.attrs["simulator"]["class"] == "EmulatorSimulator"
    assert emulated.attrs["simulator"]["emulator_error"] is True
    for argv, message in [
        (["train", "emulator", "flow", "--data", str(data), "--out", str(tmp_path / "v")],
         "pca"),
        (["simulate", "--emulator", str(data), "--n", "3", "--out", str(tmp_path / "x.h5")],
         "not a specsbi model"),
        (["simulate", "--emulator", str(model), "--n", "3", "--out", str(tmp_path / "y.h5"),
          "--range", "redshift=0.0,0.9"], "trained range"),
        (["simulate", "--emulator-error", "--simulator", "toy", "--n", "3", "--out",
          str(tmp_path / "z.h5")], "needs --emulator"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


# ------------------------------------------------- generative models as emulators
GENERATIVE = {"vae": ConditionalVAE, "gan": ConditionalGAN, "diffusion": ConditionalDiffusion}


@pytest.fixture(scope="module", params=sorted(GENERATIVE))
def generative_emulator(request, toy_train):
    cfg = ss.TrainConfig(batch_size=64, lr=3e-3, max_epochs=6, patience=6)
    return GENERATIVE[request.param](n_components=8, options={"hidden": (32, 32)},
                                     train_config=cfg, progress=False).fit(toy_train)


def test_generative_fit_predict_shapes(generative_emulator, toy_train):
    emu = generative_emulator
    theta = np.stack([toy_train.params[n] for n in emu.prior.names], 1)[:5]
    flux = emu.predict(theta)
    assert flux.shape == (5, len(WL)) and np.isfinite(flux).all() and (flux > 0).all()
    assert emu.predict(theta[0]).shape == (len(WL),)
    assert emu.predict_derived(theta)["log_mstar"].shape == (5,)
    # predict is deterministic: fixed latents, not fresh draws
    np.testing.assert_array_equal(emu.predict(theta), flux)
    q = emu.metrics["rest_frac_error_p50_p68_p95_p99"]
    assert q == sorted(q) and np.isfinite(q).all()
    base, model = emu.metrics["coefficient_error_rms_baseline_vs_model"]
    assert 0 < model < 2 * base  # six epochs: the generator has not spoilt the baseline


def test_conditional_vae_learns_the_coefficients(toy_train):
    """Without the polynomial baseline, the VAE decoder at z = 0 alone must explain the
    coefficients: its error well below that of their mean (the toy's seed fixed)."""
    cfg = ss.TrainConfig(batch_size=64, lr=3e-3, max_epochs=6, patience=6)
    emu = ConditionalVAE(n_components=8, degree=0, options={"hidden": (32, 32)},
                      train_config=cfg, progress=False).fit(toy_train)
    base, model = emu.metrics["coefficient_error_rms_baseline_vs_model"]
    assert model < 0.6 * base  # measured: 51 against 112


def test_generative_coefficients_are_the_least_squares_fit(toy_train):
    """Without broadening, a spectrum's target coefficients are the exact gappy least-squares
    fit: a spectrum built from the basis comes back exactly, whatever its coverage."""
    from specsbi.emulators.generative import _GappyProjection

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(60, 5)))
    basis = torch.as_tensor(q.T)  # orthonormal (5, 60)
    coeff = torch.as_tensor(rng.normal(size=(4, 5)))
    covered = torch.zeros(4, 60, dtype=torch.bool)
    covered[0, 10:40] = covered[1, :25] = covered[2, 30:] = True
    covered[3, 5:20] = covered[3, 35:55] = True  # two runs: the direct sum
    y = coeff @ basis + torch.where(covered, 0.0, 99.0)  # gaps hold garbage
    np.testing.assert_allclose(_GappyProjection(basis)(y, covered).numpy(), coeff.numpy(),
                               atol=1e-8)


def test_generative_save_load_round_trip(generative_emulator, tmp_path):
    emu = generative_emulator
    again = ss.load(emu.save(tmp_path / "emu"))
    assert type(again) is type(emu)
    theta = emu.prior.draw(4, seed=6)
    np.testing.assert_array_equal(again.predict(theta), emu.predict(theta))
    assert again._hyper() == emu._hyper()


def test_generative_is_differentiable_and_exact_in_redshift(generative_emulator):
    emu = generative_emulator
    names = emu.prior.names
    theta = torch.as_tensor(emu.prior.draw(3, seed=5), dtype=torch.float32)
    theta.requires_grad_(True)
    emu(theta).sum().backward()
    assert torch.isfinite(theta.grad).all()
    assert (theta.grad[:, names.index("log_mformed")] > 0).all()
    assert (theta.grad[:, names.index("age_frac")] != 0).all()  # through the generator
    # same age in Gyr at two redshifts → the same rest spectrum (the shared layer moves it)
    pair = emu.prior.draw(2, seed=4)
    pair[1] = pair[0]
    pair[1, names.index("redshift")] = 0.3
    ages = emu.physics.age(torch.as_tensor(pair[:, names.index("redshift")]),
                           torch.ones(2, dtype=torch.float64)).numpy()
    pair[1, names.index("age_frac")] = pair[0, names.index("age_frac")] * ages[0] / ages[1]
    with torch.no_grad():
        rest = emu.log_rest(torch.as_tensor(pair, dtype=torch.float32))
    np.testing.assert_allclose(rest[0].numpy(), rest[1].numpy(), atol=1e-4)


def test_generative_bad_settings():
    with pytest.raises(ValueError, match="latents"):
        ConditionalGAN(latents=0)
    with pytest.raises(ValueError, match="n_components"):
        ConditionalDiffusion(n_components=0)
    with pytest.raises(ValueError, match="noise"):
        ConditionalVAE(noise=-1.0)
    with pytest.raises(ValueError, match="refine"):
        ConditionalVAE(refine=-2)
    with pytest.raises(ValueError, match="not fitted"):
        ConditionalVAE().predict(np.zeros((1, 8)))


@pytest.mark.parametrize("kind", sorted(GENERATIVE))
def test_cli_trains_generative_emulators(kind, tmp_path, capsys):
    from specsbi.cli import main

    data = tmp_path / "toy.h5"
    ss.simulate(ss.ToySimulator(), ss.default_prior(), n=80, seed=2, path=data, progress=False)
    model = tmp_path / kind
    assert main(["train", "emulator", kind, "--data", str(data), "--out", str(model),
                 "--components", "4", "--epochs", "1", "--no-progress"]) == 0
    assert f"saved emulator ({kind})" in capsys.readouterr().out
    assert isinstance(ss.load(model), GENERATIVE[kind])
