"""Catalog inference: the DESIGN.md layout, chunks of bounded size, resume after an
interruption (equal to an uninterrupted run), predictive χ² with an emulator, bad galaxies."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from toy_models import tiny_model_dir, toy_data

from specsbi import Posterior, SpectraSet, inference, load
from specsbi.cli import main


@pytest.fixture(scope="module")
def model():
    return load(tiny_model_dir())


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "obs.h5"
    toy_data()[:23].write(path)
    return path


def read(path):
    with h5py.File(path) as h5:
        return {k: h5[k][()] for k in ("samples", "summary", "flags/ood", "flags/ood_score",
                                       "flags/masked_fraction")}


def test_chunks_are_bounded_and_resume_equals_an_uninterrupted_run(model, catalog, tmp_path,
                                                                  monkeypatch):
    whole = inference.infer_catalog(model, [catalog], tmp_path / "whole.h5", n_samples=30,
                                    chunk=5, progress=False)
    ref = read(whole)
    assert ref["samples"].shape == (23, 30, 2) and ref["summary"].shape == (23, 2, 3)
    assert np.isfinite(ref["samples"]).all()
    assert np.allclose(ref["summary"][:, :, 0], np.median(ref["samples"], 1), atol=1e-6)
    sizes, calls = [], {"n": 0}
    real_read, real_chunk = inference.read_observations, inference._infer_chunk

    def spy_read(inputs, wl, rows=None):
        obs = real_read(inputs, wl, rows)
        sizes.append(len(obs))
        return obs

    def dying_chunk(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_chunk(*args)

    monkeypatch.setattr(inference, "read_observations", spy_read)
    monkeypatch.setattr(inference, "_infer_chunk", dying_chunk)
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        inference.infer_catalog(model, [catalog], out, n_samples=30, chunk=5, progress=False)
    assert not out.exists() and len(list((tmp_path / "resumed.h5.parts").glob("chunk_*"))) == 2
    with pytest.raises(ValueError, match="other settings"):
        inference.infer_catalog(model, [catalog], out, n_samples=31, chunk=5, progress=False)
    monkeypatch.setattr(inference, "_infer_chunk", real_chunk)
    inference.infer_catalog(model, [catalog], out, n_samples=30, chunk=5, progress=False)
    assert sizes == [5, 5, 5, 5, 5, 3]  # 3 chunks read before dying, then the 3 not saved
    assert not (tmp_path / "resumed.h5.parts").exists()
    got = read(out)
    for key, value in ref.items():
        assert np.array_equal(got[key], value), key


class TargetEmulator:
    """A fake emulator over the model's targets: the noiseless flux of the nearest
    training galaxy in (log_mstar, redshift), scaled to the asked mass."""

    param_names = ["log_mstar", "redshift"]

    def __init__(self) -> None:
        self.data = toy_data()

    def predict(self, theta):
        p = self.data.params
        d = (p["log_mstar"][None] - theta[:, :1]) ** 2 + (1e3 * (p["redshift"][None]
                                                                  - theta[:, 1:])) ** 2
        i = d.argmin(1)
        return self.data.flux_noiseless[i] * 10 ** (theta[:, 0] - p["log_mstar"][i])[:, None]


def test_emulator_chi2_and_bad_galaxies(model, tmp_path):
    obs = toy_data()[:6]
    err = obs.err.copy()
    err[2] = np.inf  # every pixel masked
    path = tmp_path / "obs.h5"
    SpectraSet(obs.wavelength, obs.flux, err, params=obs.params).write(path)
    out = inference.infer_catalog(model, [path], tmp_path / "post.h5", n_samples=20, chunk=4,
                                  progress=False, emulator=TargetEmulator(), n_predictive=10)
    with h5py.File(out) as h5:
        chi2, ood = h5["flags/predictive_chi2"][()], h5["flags/ood"][()]
        assert np.isnan(h5["samples"][2]).all() and ood[2] and h5["flags/masked_fraction"][2] == 1
        assert np.isfinite(np.delete(h5["samples"][()], 2, 0)).all()
    assert np.isnan(chi2[2]) and (np.delete(chi2, 2) > 0.5).all()

    class Wrong:
        param_names = ["log_mformed", "redshift"]

        def predict(self, theta):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"missing \['log_mformed'\]"):
        inference.infer_catalog(model, [path], tmp_path / "x.h5", emulator=Wrong())
    assert not (tmp_path / "x.h5.parts").exists()


def test_cli_infer_refuses_a_non_emulator(model, catalog, tmp_path, capsys):
    out = tmp_path / "p.h5"
    args = ["infer", str(catalog), "--model", str(tiny_model_dir()), "--out", str(out),
            "--samples", "10", "--no-progress"]
    assert main([*args, "--emulator", str(tiny_model_dir())]) == 2
    assert "not an emulator" in capsys.readouterr().err
    assert main([*args, "--chunk", "0"]) == 2 and "--chunk" in capsys.readouterr().err
    assert main([*args, "--chunk", "10"]) == 0 and out.exists()


def test_a_galaxy_off_the_prior_is_flagged_not_fatal(model, catalog, tmp_path):
    bad = model.summarize(toy_data()[1])

    class OffPrior:
        """The model, except that galaxy 1's draws all fall far outside the prior."""

        def __getattr__(self, name):
            return getattr(model, name)

        def draw(self, s, n):
            theta = model.draw(s, n)
            theta[(s == bad).all(1)] = 1e6
            return theta

        def posterior(self, obs):
            return Posterior(self, model.summarize(obs), model.targets, model.prior)

    out = inference.infer_catalog(OffPrior(), [catalog], tmp_path / "p.h5", n_samples=10,
                                  chunk=4, progress=False)
    got = read(out)
    assert np.isnan(got["samples"][1]).all() and got["flags/ood"][1]
    assert np.isfinite(np.delete(got["samples"], 1, 0)).all()
