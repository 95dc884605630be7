"""SpectraSet: validation, masks, slicing, the HDF5 layout, atomic writes, resampling."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from specsbi import SpectraSet, Spectrum, sdss_wavelength
from specsbi.files import atomic_path


def test_sdss_grid_has_3841_pixels_of_1e4_dex():
    wl = sdss_wavelength()
    assert wl.shape == (3841,)
    assert np.allclose(np.diff(np.log10(wl)), 1e-4)
    assert wl[0] == pytest.approx(3800) and 9190 < wl[-1] < 9200


def test_masks_from_zero_or_inf_errors(small_set):
    err = small_set.err.copy()
    err[0, 3], err[1, 4] = 0.0, np.inf
    flux = small_set.flux.copy()
    flux[1, 4] = np.nan  # allowed: the pixel is masked
    s = SpectraSet(small_set.wavelength, flux, err)
    assert s.mask[0, 3] and s.mask[1, 4] and s.mask.sum() == 2
    assert np.isinf(s.err[0, 3]) and s.flux[1, 4] == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(flux=a["flux"][0]), "shape"),
        (lambda a: a.update(flux=a["flux"][:, :-1]), "grids do not match"),
        (lambda a: a.update(err=a["err"][:2]), "shape of `flux`"),
        (lambda a: a["flux"].__setitem__((0, 0), np.nan), "non-finite"),
        (lambda a: a["flux"].__setitem__((0, 0), np.inf), "non-finite"),
        (lambda a: a["err"].__setitem__((0, 0), -1.0), "negative"),
        (lambda a: a["err"].__setitem__((0, 0), np.nan), "NaN"),
        (lambda a: a.update(wavelength=a["wavelength"][::-1]), "increasing"),
        (lambda a: a.update(params={"z": [1.0]}), "shape"),
    ],
)
def test_bad_input_is_a_clear_value_error(small_set, change, message):
    args = dict(
        wavelength=small_set.wavelength.copy(),
        flux=small_set.flux.copy(),
        err=small_set.err.copy(),
    )
    change(args)
    with pytest.raises(ValueError, match=message):
        SpectraSet(**args)


def test_slicing(small_set):
    one = small_set[2]
    assert isinstance(one, Spectrum) and one.flux.shape == (50,)
    assert one.params["redshift"] == pytest.approx(0.3)
    assert len(small_set[1:3]) == 2 and len(small_set[[0, 4]]) == 2
    sel = small_set[small_set.params["redshift"] > 0.25]
    assert len(sel) == 3 and np.all(sel.params["redshift"] > 0.25)
    assert small_set[-1].params["log_mstar"] == 13
    with pytest.raises(IndexError):
        small_set[5]
    with pytest.raises(IndexError):
        small_set[np.ones(3, bool)]
    assert len(one.as_set()) == 1


def test_concat_checks_grids(small_set):
    both = SpectraSet.concat([small_set, small_set[:2]])
    assert len(both) == 7
    other = SpectraSet(small_set.wavelength * 1.1, small_set.flux, small_set.err)
    with pytest.raises(ValueError, match="different wavelength grids"):
        SpectraSet.concat([small_set, other])


def test_round_trip_uses_lecture_names(tmp_path, small_set):
    path = small_set.write(tmp_path / "s.h5")
    with h5py.File(path) as h5:
        assert {"wavelength", "spec", "specerr", "z", "smass"} <= set(h5["raw"])
        assert h5.attrs["format_version"] == 1
    back = SpectraSet.read(path)
    assert np.array_equal(back.flux, small_set.flux)
    assert np.allclose(back.params["redshift"], small_set.params["redshift"])
    assert np.allclose(back.params["log_mstar"], small_set.params["log_mstar"])
    part = SpectraSet.read(path, rows=slice(1, 3))
    assert len(part) == 2 and part.params["redshift"][0] == pytest.approx(0.2)


def test_reads_a_file_holding_only_the_lecture_datasets(tmp_path):
    """The lecture's sdss_galaxy_spec.hdf5 layout, written with plain h5py, loads as it is."""
    wl = sdss_wavelength()
    rng = np.random.default_rng(3)
    with h5py.File(tmp_path / "sdss_galaxy_spec.hdf5", "w") as h5:
        raw = h5.create_group("raw")
        raw["wavelength"] = wl
        raw["spec"] = rng.uniform(1, 2, (6, wl.size))
        err = np.full((6, wl.size), 0.1)
        err[0, :10] = 0.0
        raw["specerr"] = err
        raw["z"] = np.linspace(0.02, 0.2, 6)
        raw["smass"] = np.linspace(9, 11, 6)
        raw["age"] = np.linspace(1, 10, 6)
        raw["metallicity"] = np.ones(6)
    s = SpectraSet.read(tmp_path / "sdss_galaxy_spec.hdf5")
    assert len(s) == 6 and s.npix == 3841
    assert set(s.params) == {"redshift", "log_mstar", "age", "metallicity"}
    assert s.mask[0, :10].all() and not s.mask[1].any()
    assert s[3].params["log_mstar"] == pytest.approx(10.2)


def test_missing_dataset_is_named(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["raw/wavelength"] = sdss_wavelength()
        h5["raw/spec"] = np.ones((2, 3841))
    with pytest.raises(ValueError, match="/raw/specerr"):
        SpectraSet.read(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "noraw.h5", "w") as h5:
        h5["spec"] = np.ones(3)
    with pytest.raises(ValueError, match="no /raw group"):
        SpectraSet.read(tmp_path / "noraw.h5")


def test_truncated_or_foreign_files_give_os_errors(tmp_path, small_set):
    path = small_set.write(tmp_path / "s.h5")
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(OSError, match="cut.h5"):
        SpectraSet.read(tmp_path / "cut.h5")
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    with pytest.raises(OSError, match="not a readable HDF5"):
        SpectraSet.read(tmp_path / "text.h5")
    with pytest.raises(FileNotFoundError):
        SpectraSet.read(tmp_path / "absent.h5")


def test_never_overwrites_unless_asked(tmp_path, small_set):
    path = small_set.write(tmp_path / "s.h5")
    with pytest.raises(FileExistsError, match="overwrite"):
        small_set[:2].write(path)
    assert len(SpectraSet.read(path)) == 5
    small_set[:2].write(path, overwrite=True)
    assert len(SpectraSet.read(path)) == 2


def test_failed_write_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_resample_conserves_flux_and_carries_masks(toy_set):
    s = toy_set[:3]
    err = s.err.copy()
    err[0, 1000:1010] = np.inf
    s = SpectraSet(s.wavelength, s.flux, err, params=s.params)
    new_wl = np.linspace(4000.0, 9000.0, 2000)
    r = s.resample(new_wl)
    assert r.flux.shape == (3, 2000) and set(r.params) == set(s.params)
    lam_masked = s.wavelength[1000:1010]
    near = (new_wl > lam_masked[0] + 3) & (new_wl < lam_masked[-1] - 3)
    assert r.mask[0, near].all() and not r.mask[1].any()
    # integral of flux over a common, fully covered range
    a, b = 5000.0, 8000.0
    old = (s.wavelength > a) & (s.wavelength < b)
    new = (new_wl > a) & (new_wl < b)
    i_old = np.sum(s.flux[1, old] * np.gradient(s.wavelength)[old])
    i_new = np.sum(r.flux[1, new] * np.gradient(new_wl)[new])
    assert i_new == pytest.approx(i_old, rel=2e-3)
    beyond = SpectraSet(s.wavelength, s.flux, s.err).resample(np.linspace(3000, 9500, 100))
    assert beyond.mask[:, 0].all() and beyond.mask[:, -1].all()
