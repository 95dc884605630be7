"""Plots: corner (one posterior or several overlaid), spectrum with a predictive band,
SBC and coverage figures, and `specsbi corner`; images are checked, bad input named."""

from __future__ import annotations

import re

import h5py
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from specsbi import Posterior, SpectraSet, plots
from specsbi.cli import main
from specsbi.diagnostics import expected_coverage, sbc

NAMES = ["log_mstar", "redshift"]


def one_galaxy(mean=(10.5, 0.1), sd=(0.05, 1e-4), names=NAMES, n=2000, seed=0) -> Posterior:
    rng = np.random.default_rng(seed)
    draws = rng.normal(mean, sd, (1, n, len(names)))
    return Posterior(None, torch.zeros(1), names,
                     samples=torch.as_tensor(draws, dtype=torch.float64), single=True)


@pytest.fixture(autouse=True)
def agg_backend():
    matplotlib.use("Agg")
    yield
    plt.close("all")


def test_corner_of_one_posterior_has_units_truth_and_quantiles():
    fig = plots.corner(one_galaxy(), truth={"log_mstar": 10.52, "redshift": 0.1, "av": 0.3})
    axes = np.array(fig.axes).reshape(2, 2)
    assert axes[1, 0].get_xlabel() == plots.LABELS["log_mstar"] == r"$\log_{10}(M_\star / M_\odot)$"
    assert axes[1, 0].get_ylabel() == "$z$"
    title = axes[0, 0].get_title()  # median and 68 % with the digits the width needs
    assert title.startswith(plots.LABELS["log_mstar"])
    assert re.search(r"= \$10\.(49|50)\d\^\{\+0\.0\d\d\}_\{-0\.0\d\d\}\$$", title), title
    assert re.search(r"= \$0\.(0999|1000)\d+\^\{\+0\.000\d\d+\}", axes[1, 1].get_title())
    # quantile lines (3) and the truth line on each 1-D histogram
    xs = sorted(round(line.get_xdata()[0], 3) for line in axes[0, 0].lines
                if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
    assert 10.52 in xs and len(xs) >= 4


def test_overlay_matches_parameters_by_name_and_has_a_legend():
    npe = one_galaxy()
    mcmc = one_galaxy(mean=(0.1002, 10.48, 0.5), sd=(5e-5, 0.02, 0.1),
                      names=["redshift", "log_mstar", "av"], seed=1)
    fig = plots.corner([npe, mcmc], legend=["NPE", "emulator + MCMC"])
    assert len(fig.axes) == 4
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["NPE", "emulator + MCMC"]
    lo, hi = np.array(fig.axes).reshape(2, 2)[1, 1].get_xlim()  # shared range covers both
    assert lo < 0.0997 and hi > 0.1003
    again = plots.corner(one_galaxy(seed=2), fig=fig, legend=["third"], colors=["k"])
    assert again is fig


def test_corner_errors_name_the_fix():
    flat = np.column_stack([np.full(500, 10.0), np.random.default_rng(0).normal(size=500)])
    with pytest.raises(ValueError, match="no dynamic range.*`range`"):
        plots.corner(flat, names=NAMES)
    fig = plots.corner(flat, names=NAMES, range=[(9.9, 10.1), (-4, 4)])
    assert np.array(fig.axes).reshape(2, 2)[1, 0].get_xlim() == (9.9, 10.1)
    batch = Posterior(None, torch.zeros(3, 1), NAMES, samples=torch.zeros(3, 10, 2))
    with pytest.raises(ValueError, match="one galaxy"):
        plots.corner(batch)
    with pytest.raises(ValueError, match="names="):
        plots.corner(flat)
    with pytest.raises(ValueError, match="NaN"):
        plots.corner(np.full((10, 2), np.nan), names=NAMES)
    with pytest.raises(ValueError, match="lacks"):
        plots.corner([one_galaxy(), one_galaxy(names=["redshift", "av"])])


class FakeEmulator:
    """flux = amplitude(log_mstar) × a smooth shape; θ in (log_mstar, redshift) order."""

    param_names = NAMES

    def __init__(self, wl: np.ndarray) -> None:
        self.shape = 1 + 0.3 * np.sin(wl / 300.0)

    def predict(self, theta: np.ndarray) -> np.ndarray:
        return 10 ** (np.asarray(theta)[:, :1] - 10) * self.shape


def test_spectrum_with_predictive_band_masks_and_residuals():
    wl = np.linspace(4000, 6000, 300)
    emu = FakeEmulator(wl)
    truth = np.array([[10.3, 0.1]])
    err = np.full((1, 300), 0.05)
    err[0, 100:120] = np.inf
    flux = emu.predict(truth) + err * np.random.default_rng(0).normal(size=(1, 300))
    obs = SpectraSet(wl, np.where(np.isfinite(err), flux, 0), err)[0]
    fig = plots.spectrum(obs, (emu, one_galaxy(mean=(10.3, 0.1), sd=(0.01, 1e-4))),
                         title="galaxy 0")
    top, res = fig.axes
    assert res.get_ylabel() == r"residual [$\sigma$]"
    labels = top.get_legend_handles_labels()[1]
    assert {"predictive 16–84 %", "predictive 2.5–97.5 %", "masked"} <= set(labels)
    resid = res.lines[0].get_ydata()
    assert np.isnan(resid[100:120]).all() and abs(np.nanstd(resid) - 1) < 0.2
    fig2, ax = plt.subplots()
    assert plots.spectrum(obs, ax=ax) is fig2  # no model: flux panel only
    with pytest.raises(ValueError, match="shape"):
        plots.spectrum(obs, np.ones((5, 10)))
    with pytest.raises(ValueError, match="one galaxy"):
        plots.spectrum(SpectraSet(wl, flux, err))


def test_sbc_and_coverage_figures(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(300, 2))
    draws = rng.normal(size=(300, 100, 2))
    fig = plots.sbc(sbc(draws, truth, names=NAMES))
    assert len(fig.axes) == 2 and "χ² p" in fig.axes[0].get_title()
    cov = expected_coverage(draws, truth, names=NAMES)
    fig = plots.coverage([cov, cov], legend=["a", "b"])
    assert len(fig.legends[0].get_texts()) == 1 + 2 * 3
    assert plots.save(fig, tmp_path / "c.png").stat().st_size > 10_000


def test_cli_corner(tmp_path, capsys):
    post, truth = tmp_path / "post.h5", tmp_path / "obs.h5"
    draws = np.random.default_rng(0).normal([10.5, 0.1], [0.05, 1e-4], (3, 500, 2))
    with h5py.File(post, "w") as h5:
        h5["samples"] = draws.astype(np.float32)
        h5["param_names"] = np.array(NAMES, dtype="S")
    wl = np.linspace(4000, 5000, 10)
    SpectraSet(wl, np.ones((3, 10)), np.ones((3, 10)),
               params={"log_mstar": [10, 10.5, 11], "redshift": [0.1] * 3}).write(truth)
    out = tmp_path / "corner_2.png"
    assert main(["corner", str(post), str(post), "--galaxy", "2", "--out", str(out),
                 "--truth-from", str(truth), "--legend", "a,b"]) == 0
    assert out.stat().st_size > 10_000 and str(out) in capsys.readouterr().out
    assert main(["corner", str(post), "--galaxy", "3", "--out", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err
