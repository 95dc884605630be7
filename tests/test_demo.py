"""`specsbi demo` end to end with a tiny toy model, the shipped example data, and the
data builder."""

from __future__ import annotations

import csv

import matplotlib
import numpy as np
import pytest
from toy_models import tiny_model_dir, toy_data

from specsbi import SpectraSet, sdss_wavelength
from specsbi.cli import main
from specsbi.demo import _load_emulator, build_example_data, data_path, run_demo


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-data")
    source = folder / "heldout_source.h5"
    toy_data(n=60, seed=7).write(source)
    return build_example_data(source, folder, n_examples=4, n_heldout=60)


def test_demo_end_to_end(toy_files, tmp_path, capsys):
    matplotlib.use("Agg")
    examples, heldout = toy_files
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_model_dir()), "--out", str(out),
                 "--examples", str(examples), "--heldout", str(heldout),
                 "--emulator", "none"]) == 0
    printed = capsys.readouterr().out
    assert "results in" in printed and str(out / "coverage.png") in printed
    for name in ("corner_0", "corner_1", "corner_2", "spectrum_0", "coverage", "sbc"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    text = (out / "summary.md").read_text()
    assert text.count("\n| ") == 1 + 4 and "held-out simulations" in text  # header + 4 rows
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    truth = SpectraSet.read(examples).params["log_mstar"]
    assert len(rows) == 4
    assert np.allclose([float(r["log_mstar_true"]) for r in rows], truth)
    assert all(float(r["log_mstar_p16"]) < float(r["log_mstar_median"])
               < float(r["log_mstar_p84"]) for r in rows)


class TargetEmulator:
    """θ = (log_mstar, redshift) → the galaxy's own noiseless flux scaled to the mass."""

    param_names = ["log_mstar", "redshift"]

    def __init__(self, spectra: SpectraSet) -> None:
        self.flux, self.mass = spectra.flux_noiseless[0], spectra.params["log_mstar"][0]

    def predict(self, theta):
        return self.flux[None] * 10 ** (np.asarray(theta)[:, :1] - self.mass)


def test_demo_draws_a_predictive_band_with_an_emulator(toy_files, tmp_path):
    matplotlib.use("Agg")
    examples, heldout = toy_files
    emu = TargetEmulator(SpectraSet.read(examples))
    written = run_demo(tmp_path / "d", model=tiny_model_dir(), emulator=emu,
                       examples=examples, heldout=heldout, n_samples=200, n_corner=1)
    assert set(written) == {"corner_0", "spectrum_0", "coverage", "sbc", "summary_md",
                            "summary_csv"}
    with pytest.raises(FileNotFoundError, match="no model"):
        run_demo(tmp_path / "e", model=tiny_model_dir(), emulator=tmp_path / "none",
                 examples=examples, heldout=heldout)


def test_shipped_example_data():
    ex, held = SpectraSet.read(data_path("examples.h5")), SpectraSet.read(data_path("heldout.h5"))
    assert len(ex) == 8 and len(held) == 200
    for s in (ex, held):
        assert np.allclose(s.wavelength, sdss_wavelength())
        assert {"log_mstar", "redshift", "snr"} <= set(s.params)
        assert s.attrs["simulator"]["class"] == "BagpipesSimulator"
    assert ex.flux_noiseless is not None and np.array_equal(ex.flux, held.flux[:8])
    assert data_path("heldout.h5").stat().st_size < 3e6


def test_build_example_data_checks(tmp_path, toy_files):
    examples, _ = toy_files
    with pytest.raises(ValueError, match="holds 4"):
        build_example_data(examples, tmp_path, n_examples=2, n_heldout=10)
    with pytest.raises(ValueError, match="n_examples"):
        build_example_data(examples, tmp_path, n_examples=5, n_heldout=4)


def test_shipped_emulator_reproduces_the_examples():
    # the demo's predictive band comes from this emulator: at the true θ of the shipped
    # bagpipes examples it must give their noiseless flux to about its stated accuracy
    from specsbi.models import load

    emu = load("default-emulator")
    assert type(_load_emulator(None)) is type(emu)  # the demo's default band uses it
    assert _load_emulator("none") is None
    ex = SpectraSet.read(data_path("examples.h5"))
    theta = np.stack([ex.params[n] for n in emu.param_names], 1)
    frac = np.abs(emu.predict(theta) / ex.flux_noiseless - 1)
    # measured: median 0.28 %, 95th 1.2 % (on 1,000 held-out draws 0.26 % and 1.4 %)
    assert np.median(frac) < 0.005 and np.percentile(frac, 95) < 0.025
    assert np.allclose(emu.predict_derived(theta)["log_mstar"], ex.params["log_mstar"],
                       atol=0.003)
