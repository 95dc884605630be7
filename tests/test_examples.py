"""The examples run as a user runs them (a tiny toy model and toy spectra stand in for the
shipped ones)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from toy_models import tiny_model_dir, toy_data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spectra(tmp_path_factory):
    path = tmp_path_factory.mktemp("ex") / "obs.h5"
    toy_data()[:5].write(path)
    return path


def test_posterior_api(spectra, capsys):
    example("posterior_api").main(["--model", str(tiny_model_dir()), "--data", str(spectra)])
    out = capsys.readouterr().out
    assert "galaxy 0: Posterior(one observation" in out and "log_mstar" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("4 ")]) == 1


def test_corner_one_galaxy(spectra, tmp_path):
    out = tmp_path / "c.png"
    example("corner_one_galaxy").main(["--model", str(tiny_model_dir()), "--data", str(spectra),
                                       "--galaxy", "2", "--out", str(out)])
    assert out.stat().st_size > 10_000


def test_emulator_mcmc_says_what_it_needs(spectra, capsys):
    if importlib.util.find_spec("specsbi.emulators") is not None:
        pytest.skip("emulators have landed: this example now trains one and runs MCMC (slow)")
    assert example("emulator_mcmc").main(["--train", str(spectra)]) == 2
    assert "no emulators yet" in capsys.readouterr().err
