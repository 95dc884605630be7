"""`simulate`: the file layout, seeds, parallel workers, resuming, Dask, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from specsbi import SpectraSet, ToySimulator, default_prior, simulate
from specsbi.simulation import simulate_to_file
from specsbi.simulators import toy


def _run(path, **kw):
    args = dict(n=23, seed=4, chunk_size=5, progress=False)
    args.update(kw)
    return simulate_to_file(ToySimulator(), default_prior(), path=path, **args)


def test_file_has_the_design_layout(tmp_path):
    path = _run(tmp_path / "train.h5")
    with h5py.File(path) as h5:
        raw = h5["raw"]
        expected = {"wavelength", "spec", "specerr", "spec_noiseless", "z", "smass", "age",
                    "snr", *default_prior().names}
        expected -= {"redshift"}
        assert expected <= set(raw)
        assert raw["spec"].shape == (23, 3841) and raw["z"].shape == (23,)
        for key in ("format_version", "simulator", "prior", "seed", "created"):
            assert key in h5.attrs
    assert not (tmp_path / "train.h5.parts").exists()
    s = SpectraSet.read(path)
    assert np.all(s.params["log_mstar"] < s.params["log_mformed"])
    assert s.attrs["simulator"]["class"] == "ToySimulator"


def test_in_memory_equals_file(tmp_path):
    path = _run(tmp_path / "a.h5")
    mem = simulate(ToySimulator(), default_prior(), n=23, seed=4, chunk_size=5, progress=False)
    disk = SpectraSet.read(path)
    assert np.array_equal(mem.flux, disk.flux)
    assert np.array_equal(mem.params["redshift"], disk.params["redshift"])


def test_seed_controls_the_result(tmp_path):
    a = SpectraSet.read(_run(tmp_path / "a.h5"))
    b = SpectraSet.read(_run(tmp_path / "b.h5"))
    c = SpectraSet.read(_run(tmp_path / "c.h5", seed=5))
    assert np.array_equal(a.flux, b.flux) and not np.array_equal(a.flux, c.flux)


def test_two_workers_equal_one(tmp_path, monkeypatch):
    prepared = []  # the parent's one-off set-up runs before the pool, once, and only for it
    monkeypatch.setattr(ToySimulator, "prepare", lambda self: prepared.append(1))
    one = SpectraSet.read(_run(tmp_path / "one.h5"))
    assert prepared == []
    two = SpectraSet.read(_run(tmp_path / "two.h5", workers=2))
    assert prepared == [1]
    assert np.array_equal(one.flux, two.flux)
    assert np.array_equal(one.flux_noiseless, two.flux_noiseless)


def test_interrupted_run_resumes_without_redoing_chunks(tmp_path, monkeypatch):
    reference = SpectraSet.read(_run(tmp_path / "ref.h5"))
    calls = []
    original = toy.ToySimulator._simulate

    def flaky(self, params, progress):
        calls.append(len(params["redshift"]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C during chunk 3
        return original(self, params, progress)

    monkeypatch.setattr(toy.ToySimulator, "_simulate", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()
    assert len(list((tmp_path / "out.h5.parts").glob("chunk_*.npz"))) == 2
    calls.clear()
    monkeypatch.setattr(toy.ToySimulator, "_simulate", original)
    monkeypatch.setattr(toy.ToySimulator, "_simulate",
                        lambda self, p, pr: (calls.append(len(p["redshift"])),
                                             original(self, p, pr))[1])
    resumed = SpectraSet.read(_run(tmp_path / "out.h5"))
    assert sum(calls) == 23 - 10  # the two finished chunks (5 + 5) were not redone
    assert np.array_equal(resumed.flux, reference.flux)
    assert np.array_equal(resumed.params["snr"], reference.params["snr"])


def test_resume_with_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(toy.ToySimulator, "_simulate",
                        lambda self, p, pr: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "out.h5")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="other settings"):
        _run(tmp_path / "out.h5", seed=99)


def test_dask_local_cluster_gives_the_same_file(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    reference = SpectraSet.read(_run(tmp_path / "ref.h5"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            dask_set = SpectraSet.read(_run(tmp_path / "dask.h5", workers=client))
    assert np.array_equal(reference.flux, dask_set.flux)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"n": 0}, ValueError, "positive integer"),
        ({"chunk_size": 0}, ValueError, "positive integer"),
        ({"workers": 0}, ValueError, ">= 1"),
        ({"workers": 1.5}, ValueError, "int, a dask"),
        ({"noise": "gaussian"}, ValueError, "NoiseModel"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        _run(tmp_path / "x.h5", **kwargs)
    assert not (tmp_path / "x.h5").exists()


def test_existing_output_is_not_overwritten(tmp_path):
    path = tmp_path / "x.h5"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        _run(path)
    assert path.read_text() == "precious"
    _run(path, overwrite=True)
    assert len(SpectraSet.read(path)) == 23


def test_fixed_parameters_reach_the_simulator_and_the_file(tmp_path):
    prior = default_prior().with_fixed(log_u=-2.5)
    s = simulate(ToySimulator(), prior, n=6, path=tmp_path / "f.h5", progress=False)
    assert np.all(s.params["log_u"] == -2.5)


def test_parameters_outside_the_simulator_range_are_refused():
    prior = default_prior().with_ranges(redshift=(0.01, 20.0))
    with pytest.raises(ValueError, match="redshift = .* outside the range ToySimulator"):
        simulate(ToySimulator(), prior, n=200, progress=False)
