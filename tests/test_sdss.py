"""read_sdss_fits: SDSS spec-*.fits files resampled onto the model grid, masks and errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from specsbi import SpectraSet, read_sdss_fits, sdss_wavelength
from specsbi.resampling import bin_edges

NPIX = 3900
LOGLAM0 = 3.5797  # SDSS's own grid: 0.84 pixel off the model grid, so resampling is real


def smooth(wl: np.ndarray) -> np.ndarray:
    return 20.0 + 5.0 * np.sin(wl / 400.0) + 1e-3 * (wl - 6000.0)


def write_spec(
    path: Path,
    flux: np.ndarray | None = None,
    ivar: np.ndarray | None = None,
    and_mask: np.ndarray | None = None,
    z: float = 0.1234,
    loglam0: float = LOGLAM0,
    npix: int = NPIX,
    drop: str | None = None,
    names: bool = True,
    upper: bool = False,
) -> Path:
    """A minimal spec-*.fits: PRIMARY, COADD (flux, loglam, ivar, and_mask), SPECOBJ (Z)."""
    loglam = (loglam0 + 1e-4 * np.arange(npix)).astype(np.float32)
    wl = 10.0 ** loglam.astype(np.float64)
    cols = {
        "flux": smooth(wl) if flux is None else flux,
        "loglam": loglam,
        "ivar": np.full(npix, 4.0) if ivar is None else ivar,
        "and_mask": np.zeros(npix, np.int32) if and_mask is None else and_mask,
    }
    coadd = fits.BinTableHDU.from_columns(
        [
            fits.Column(
                name=k.upper() if upper else k, format="J" if k == "and_mask" else "E", array=v
            )
            for k, v in cols.items()
            if k != drop
        ],
        name="COADD" if names else None,
    )
    zcols = [] if drop == "Z" else [fits.Column(name="Z", format="E", array=[z])]
    zcols.append(fits.Column(name="CLASS", format="6A", array=["GALAXY"]))
    specobj = fits.BinTableHDU.from_columns(zcols, name="SPECOBJ" if names else None)
    hdus = [fits.PrimaryHDU(), coadd, specobj]
    if drop == "COADD":
        hdus = hdus[:1]
    elif drop == "SPECOBJ":
        hdus = hdus[:2]
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "spec-0266-51602-0001.fits")


def test_smooth_spectrum_read_onto_model_grid(spec):
    s = read_sdss_fits(spec)
    wl = sdss_wavelength()
    assert isinstance(s, SpectraSet) and len(s) == 1
    assert s.flux.shape == s.err.shape == s.mask.shape == (1, wl.size)
    assert np.array_equal(s.wavelength, wl)
    assert not s.mask.any()  # the file covers 3799-9324 Å, the grid 3800-9192 Å
    np.testing.assert_allclose(s.flux[0], smooth(wl), rtol=0.01)
    # err 0.5 per file pixel, averaged over ~2 of them per model pixel
    assert np.all((s.err > 0.5 / np.sqrt(2) * 0.99) & (s.err <= 0.5 * 1.01))
    assert s.params["redshift"][0] == pytest.approx(0.1234, rel=1e-6)
    assert s.attrs == {"source": "sdss_fits", "files": ["spec-0266-51602-0001.fits"]}


def test_bad_pixels_are_masked_near_their_wavelength(tmp_path):
    loglam = LOGLAM0 + 1e-4 * np.arange(NPIX)
    flux = smooth(10**loglam)
    ivar, and_mask = np.full(NPIX, 4.0), np.zeros(NPIX, np.int32)
    ivar[500] = 0.0
    and_mask[1500] = 1 << 23
    flux[2500] = np.nan  # unflagged NaN: masked, not an error
    flux[3000] = 1e6  # a flagged outlier must not leak into its neighbours
    and_mask[3000] = 4
    path = write_spec(tmp_path / "spec-bad.fits", flux=flux, ivar=ivar, and_mask=and_mask)
    s = read_sdss_fits([path])
    logwl = np.log10(s.wavelength)
    bad = [500, 1500, 2500, 3000]
    for i in bad:
        assert s.mask[0, np.argmin(np.abs(logwl - loglam[i]))], i
    near = np.min(np.abs(logwl[:, None] - loglam[bad][None, :]), axis=1) < 1.5e-4
    assert s.mask[0].sum() <= 2 * len(bad) and not s.mask[0, ~near].any()
    assert np.all(np.isinf(s.err[s.mask])) and np.all(s.flux[s.mask] == 0)
    good = ~s.mask[0]
    np.testing.assert_allclose(s.flux[0, good], smooth(s.wavelength[good]), rtol=0.01)


def test_pixels_beyond_the_file_coverage_are_masked(tmp_path):
    path = write_spec(tmp_path / "spec-short.fits", loglam0=3.6, npix=2000)  # 3981-6307 Å
    s = read_sdss_fits(path)
    logwl = np.log10(s.wavelength)
    lo, hi = 3.6, 3.6 + 1e-4 * 1999
    assert s.mask[0, (logwl < lo - 1e-4) | (logwl > hi + 1e-4)].all()
    inside = (logwl > lo + 1e-4) & (logwl < hi - 1e-4)
    assert not s.mask[0, inside].any()
    assert s.mask[0].sum() == pytest.approx(3841 - 2000, abs=2)


def test_custom_grid_and_min_coverage(spec):
    wl = np.linspace(4000.0, 5000.0, 101)  # 10 Å pixels: several file pixels each
    s = read_sdss_fits(spec, wavelength=wl, min_coverage=1.0)
    assert s.flux.shape == (1, 101) and not s.mask.any()
    np.testing.assert_allclose(s.flux[0], smooth(wl), rtol=0.01)
    with pytest.raises(ValueError, match="min_coverage"):
        read_sdss_fits(spec, min_coverage=0.0)
    with pytest.raises(ValueError, match="increasing"):
        read_sdss_fits(spec, wavelength=wl[::-1])


def test_flux_is_conserved(tmp_path):
    rng = np.random.default_rng(3)
    loglam = (LOGLAM0 + 1e-4 * np.arange(NPIX)).astype(np.float32).astype(np.float64)
    wl_old = 10**loglam
    line = 300 * np.exp(-0.5 * ((wl_old - 6563) / 2.0) ** 2)  # narrower than 3 pixels
    flux = (5 + rng.exponential(3.0, NPIX) + line).astype(np.float32)
    s = read_sdss_fits(write_spec(tmp_path / "spec-lines.fits", flux=flux))
    e_new, e_old = bin_edges(s.wavelength), bin_edges(wl_old)

    def integrals(lo: float, hi: float) -> tuple[float, float]:
        """∫ flux dλ over whole model pixels in [lo, hi]: model grid, then file pixels."""
        j = np.nonzero((s.wavelength > lo) & (s.wavelength < hi))[0]
        a, b = e_new[j[0]], e_new[j[-1] + 1]
        overlap = np.clip(np.minimum(e_old[1:], b) - np.maximum(e_old[:-1], a), 0, None)
        new = np.sum(s.flux[0, j].astype(np.float64) * np.diff(e_new)[j])
        return new, np.sum(flux * overlap)

    for lo, hi in [(4000, 9000), (6550, 6576)]:  # most of the range; the line alone
        new, old = integrals(lo, hi)
        assert new == pytest.approx(old, rel=1e-3), (lo, hi)
    assert integrals(6550, 6576)[0] > 0.9 * 300 * 2.0 * np.sqrt(2 * np.pi)  # the line is in


def test_several_files_in_order(tmp_path):
    paths = [
        write_spec(tmp_path / f"spec-{i}.fits", z=z, loglam0=l0)
        for i, (z, l0) in enumerate([(0.05, 3.5797), (0.2, 3.5790), (0.5, 3.5803)])
    ]
    s = read_sdss_fits([str(paths[0]), paths[1], paths[2]])
    assert len(s) == 3 and s.flux.shape == (3, 3841)
    np.testing.assert_allclose(s.params["redshift"], [0.05, 0.2, 0.5], rtol=1e-6)
    assert s.attrs["files"] == ["spec-0.fits", "spec-1.fits", "spec-2.fits"]
    # the last file starts 3803.6 Å > 3800 Å: its first model pixels are masked
    assert not s.mask[:2].any() and s.mask[2, 0] and not s.mask[2, 10:].any()
    np.testing.assert_allclose(
        s.flux[~s.mask], np.broadcast_to(smooth(s.wavelength), s.flux.shape)[~s.mask], rtol=0.01
    )


def test_unnamed_hdus_and_upper_case_columns_fall_back_to_index(tmp_path):
    path = write_spec(tmp_path / "spec-plain.fits", names=False, upper=True)
    s = read_sdss_fits(path)
    assert s.params["redshift"][0] == pytest.approx(0.1234, rel=1e-6) and not s.mask.any()


def test_empty_path_list():
    with pytest.raises(ValueError, match="at least one"):
        read_sdss_fits([])


def test_gzip_files_are_read_and_cut_off_ones_raise_oserror(spec, tmp_path):
    packed = tmp_path / "spec-packed.fits.gz"
    packed.write_bytes(gzip.compress(spec.read_bytes()))
    s = read_sdss_fits(packed)
    assert s.attrs["files"] == ["spec-packed.fits.gz"] and not s.mask.any()
    cut = tmp_path / "spec-cut.fits.gz"
    cut.write_bytes(packed.read_bytes()[:3000])
    with pytest.raises(OSError, match="spec-cut.fits.gz"):
        read_sdss_fits(cut)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="spec-missing.fits"):
        read_sdss_fits(tmp_path / "spec-missing.fits")


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"",
        lambda b: b"SIMPLE? no, this is a text file\n" * 200,
        lambda b: b[: len(b) // 2],  # cut inside COADD's data
        lambda b: b[:4000],  # cut inside COADD's header
    ],
    ids=["empty", "text", "truncated-data", "truncated-header"],
)
def test_unreadable_file_raises_oserror_naming_it(spec, tmp_path, damage):
    bad = tmp_path / "spec-damaged.fits"
    bad.write_bytes(damage(spec.read_bytes()))
    with pytest.raises(OSError, match="spec-damaged.fits") as info:
        read_sdss_fits([spec, bad])
    assert not isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(
    "drop, message",
    [
        ("COADD", "no COADD HDU"),
        ("SPECOBJ", "no SPECOBJ HDU"),
        ("flux", "no column 'flux'"),
        ("loglam", "no column 'loglam'"),
        ("ivar", "no column 'ivar'"),
        ("and_mask", "no column 'and_mask'"),
        ("Z", "no column 'Z'"),
    ],
)
def test_missing_hdu_or_column_names_it_and_the_file(tmp_path, drop, message):
    path = write_spec(tmp_path / f"spec-no-{drop}.fits", drop=drop)
    with pytest.raises(ValueError, match=message) as info:
        read_sdss_fits(path)
    assert f"spec-no-{drop}.fits" in str(info.value)


def test_non_increasing_loglam_names_the_file(tmp_path):
    path = write_spec(tmp_path / "spec-flat.fits", loglam0=3.6)
    with fits.open(path, mode="update") as hdul:
        hdul["COADD"].data["loglam"][10] = np.nan
    with pytest.raises(ValueError, match="spec-flat.fits.*loglam"):
        read_sdss_fits(path)
