"""Physics checks of both simulators: mass scaling, (1+z) shifts, distance dimming, validity."""

from __future__ import annotations

import numpy as np
import pytest

from specsbi import BagpipesSimulator, ToySimulator, default_prior
from specsbi.cosmology import age_gyr, luminosity_distance_mpc

BASE = {
    "log_mformed": 10.5, "redshift": 0.1, "age_frac": 0.2, "log_tau": 0.5,
    "metallicity": 1.0, "av": 0.3, "veldisp": 120.0, "log_u": -2.5,
}


@pytest.fixture(scope="module", params=["bagpipes", "toy"])
def sim(request):
    return BagpipesSimulator() if request.param == "bagpipes" else ToySimulator()


def _params(**changes):
    p = {**BASE, **changes}
    return {k: np.array([v], dtype=float) for k, v in p.items()}


def _at_fixed_age(z, age_frac=BASE["age_frac"], **changes):
    """Parameters at redshift z with the stellar age (Gyr) that age_frac gives at BASE's z."""
    age = age_frac * age_gyr(BASE["redshift"])
    return _params(redshift=z, age_frac=float(age / age_gyr(z)), **changes)


def _rest_mean(sim, flux, z, lo, hi):
    rest = sim.wavelength / (1 + z)
    sel = (rest > lo) & (rest < hi)
    return flux[0, sel].mean()


def test_flux_scales_with_mass_formed(sim):
    f1, d1 = sim.simulate(_params())
    f2, d2 = sim.simulate(_params(log_mformed=BASE["log_mformed"] + 0.7))
    assert np.allclose(f2 / f1, 10**0.7, rtol=1e-6)
    assert d2["log_mstar"][0] - d1["log_mstar"][0] == pytest.approx(0.7, abs=1e-6)
    assert d1["log_mstar"][0] < BASE["log_mformed"]


def test_features_move_by_one_plus_z(sim):
    z1, z2 = 0.05, 0.3
    f1, _ = sim.simulate(_at_fixed_age(z1))
    f2, _ = sim.simulate(_at_fixed_age(z2))
    for z, f in ((z1, f1), (z2, f2)):
        halpha = 6564.6 * (1 + z)
        window = np.abs(sim.wavelength - halpha) < 40
        peak = sim.wavelength[window][np.argmax(f[0, window])]
        assert peak == pytest.approx(halpha, rel=7e-4)  # within ≈ 2 SDSS pixels
    # the 4000 Å break of an old population: the same rest-frame ratio at both redshifts
    old = {"age_frac": 0.7, "log_tau": -0.7, "log_u": -4.0}
    f1, _ = sim.simulate(_at_fixed_age(z1, **old))
    f2, _ = sim.simulate(_at_fixed_age(z2, **old))
    d4000 = [_rest_mean(sim, f, z, 4050, 4250) / _rest_mean(sim, f, z, 3750, 3950)
             for z, f in ((z1, f1), (z2, f2))]
    assert d4000[0] > 1.3
    assert d4000[1] == pytest.approx(d4000[0], rel=0.01)


def test_flux_dims_with_luminosity_distance(sim):
    z1, z2 = 0.05, 0.3
    f1, _ = sim.simulate(_at_fixed_age(z1))
    f2, _ = sim.simulate(_at_fixed_age(z2))
    ratio = _rest_mean(sim, f2, z2, 5200, 6200) / _rest_mean(sim, f1, z1, 5200, 6200)
    d1, d2 = luminosity_distance_mpc(z1), luminosity_distance_mpc(z2)
    expected = (d1**2 * (1 + z1)) / (d2**2 * (1 + z2))
    assert ratio == pytest.approx(expected, rel=0.02)


def test_no_empty_or_non_finite_spectrum_over_1000_prior_draws(sim):
    theta = default_prior().draw(1000, seed=123)
    flux, derived = sim.simulate(theta)
    assert np.isfinite(flux).all()
    assert (flux.max(axis=1) > 0).all() and (np.median(flux, axis=1) > 0).all()
    assert np.all(derived["log_mstar"] < theta[:, 0])


def test_simulator_refuses_bad_parameters(sim):
    with pytest.raises(ValueError, match="shape"):
        sim.simulate(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        sim.simulate(_params(av=np.nan))
    with pytest.raises(ValueError, match="age_frac = 1.5 is outside"):
        sim.simulate(_params(age_frac=1.5))
    with pytest.raises(ValueError, match="needs parameters"):
        sim.simulate({"redshift": [0.1]})


def test_bagpipes_r_spec_is_validated():
    with pytest.raises(ValueError, match="R_spec"):
        BagpipesSimulator(R_spec=10)
