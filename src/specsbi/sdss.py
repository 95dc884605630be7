"""Read SDSS ``spec-*.fits`` files and resample them onto the model grid, masks carried."""

from __future__ import annotations

import gzip
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .resampling import resample
from .spectra import SpectraSet, _check_grid, sdss_wavelength

__all__ = ["read_sdss_fits"]

logger = logging.getLogger(__name__)

#: COADD columns every file must have (matched case-insensitively).
COADD_COLUMNS = ("flux", "loglam", "ivar", "and_mask")
# astropy reports damaged files as warnings, then fails (or not) later on.
_DAMAGED = re.compile(r"truncated|error validating header", re.IGNORECASE)


class _ContentError(ValueError):
    """A readable FITS file without the HDUs or columns of the SDSS layout."""


def read_sdss_fits(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    wavelength: Any = None,
    min_coverage: float = 0.5,
) -> SpectraSet:
    """Read SDSS ``spec-*.fits`` files and resample them onto one grid, flux-conserving.

    From HDU "COADD" (or HDU 1 where none is named so): ``flux`` (1e-17
    erg/s/cm²/Å), ``loglam`` (log10 Å), ``ivar`` and ``and_mask``; from "SPECOBJ"
    (or HDU 2): ``Z``. A pixel is masked where ``ivar <= 0``, ``and_mask != 0``,
    or ``flux`` or ``ivar`` is NaN or inf (SDSS files sometimes hold NaN flux at
    pixels they do not flag: those are masked, not an error). Errors are
    ``1/sqrt(ivar)``. Each spectrum is resampled with
    :func:`specsbi.resampling.resample`; model pixels covered less than
    ``min_coverage`` by good data (masks, or beyond the file's wavelength
    range) come out masked.

    Args:
        paths: one file, or a sequence of files (no glob expansion).
        wavelength: model grid in Å; default :func:`specsbi.spectra.sdss_wavelength`.
        min_coverage: fraction of a model pixel that good data must cover, in (0, 1].

    Returns:
        A SpectraSet with ``params["redshift"]`` (Z per file) and attrs
        ``{"source": "sdss_fits", "files": [file names]}``, in the order given.

    Raises:
        FileNotFoundError: a file does not exist.
        OSError: a file is not FITS, or is truncated or corrupt.
        ValueError: no paths; a file lacks an HDU or column, or its columns are
            malformed; a bad ``wavelength`` or ``min_coverage``.

    Example:
        >>> obs = read_sdss_fits(["spec-0266-51602-0001.fits"])  # doctest: +SKIP
        >>> obs.flux.shape, obs.params["redshift"]  # doctest: +SKIP
        ((1, 3841), array([0.0213]))
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("read_sdss_fits needs at least one file; got an empty list")
    wl = sdss_wavelength() if wavelength is None else _check_grid(wavelength)
    if not 0 < min_coverage <= 1:
        raise ValueError(f"`min_coverage` must lie in (0, 1]; got {min_coverage}")
    flux, err, mask, z = [], [], [], []
    for path in files:
        cols, redshift = _read_one(path)
        old_wl, f, e, m = _prepare(cols, path)
        new_f, new_e, new_m = resample(old_wl, f, wl, e, m, min_coverage)
        if new_m.all():
            logger.warning("%s: no model pixel is covered by good data; all masked", path)
        flux.append(new_f)
        err.append(new_e)
        mask.append(new_m)
        z.append(redshift)
    logger.info("read %d SDSS spectra onto a grid of %d pixels", len(files), wl.size)
    return SpectraSet(
        wl,
        np.stack(flux),
        np.stack(err),
        np.stack(mask),
        params={"redshift": np.array(z)},
        attrs={"source": "sdss_fits", "files": [p.name for p in files]},
    )


def _read_one(path: Path) -> tuple[dict[str, np.ndarray], float]:
    """The COADD columns and the redshift of one file, with errors that name it."""
    from astropy.io import fits

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    problem: Exception | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                coadd, how = _table(hdul, "COADD", 1, path)
                cols = {c: _column(coadd, c, how, path) for c in COADD_COLUMNS}
                specobj, how = _table(hdul, "SPECOBJ", 2, path)
                z = _column(specobj, "Z", how, path)
        except _ContentError as exc:
            problem = exc
        except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError) as exc:
            problem = OSError(f"{exc.__class__.__name__}: {exc}")
    damaged = [str(w.message) for w in caught if _DAMAGED.search(str(w.message))]
    if isinstance(problem, _ContentError):  # astropy stops quietly at a cut-off .gz
        damaged += _gzip_damage(path)
    if damaged or isinstance(problem, OSError):
        reason = damaged[0] if damaged else str(problem)
        raise OSError(
            f"{path} is not a readable FITS file (truncated, corrupt, or another format): {reason}"
        ) from None
    if problem is not None:
        raise ValueError(str(problem)) from None
    for w in caught:
        logger.debug("%s: astropy: %s", path, w.message)
    if z.size == 0:
        raise ValueError(f"{path}: SPECOBJ table has no rows, so no redshift `Z`")
    return cols, float(z.ravel()[0])


def _gzip_damage(path: Path) -> list[str]:
    """[the reason] when ``path`` is gzip-compressed and cannot be decompressed, else []."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return []
    try:
        with gzip.open(path) as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError) as exc:
        return [f"gzip: {exc}"]
    return []


def _table(hdul: Any, name: str, index: int, path: Path) -> tuple[Any, str]:
    """HDU ``name``, else HDU ``index``; a table, or a _ContentError naming the file."""
    try:
        return _require_table(hdul[name], f"HDU {name!r}", path), f"HDU {name!r}"
    except KeyError:
        pass
    how = f"HDU {index} (no HDU is named {name!r})"
    if len(hdul) <= index:
        raise _ContentError(
            f"{path} has no {name} HDU: no extension named {name!r} and only {len(hdul)} HDU(s)"
        )
    return _require_table(hdul[index], how, path), how


def _require_table(hdu: Any, how: str, path: Path) -> Any:
    if getattr(hdu, "columns", None) is None or hdu.data is None:
        raise _ContentError(f"{path}: {how} is not a table with data")
    return hdu


def _column(hdu: Any, name: str, how: str, path: Path) -> np.ndarray:
    """Column ``name`` (any case) of a table HDU as a numpy array."""
    names = {n.lower(): n for n in hdu.columns.names}
    if name.lower() not in names:
        raise _ContentError(
            f"{path}: {how} has no column {name!r} (columns: {', '.join(hdu.columns.names)})"
        )
    return np.array(hdu.data[names[name.lower()]])


def _prepare(cols: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, ...]:
    """Check the COADD columns; return the file's grid (Å), flux, 1σ errors and mask."""
    shapes = {c: a.shape for c, a in cols.items()}
    n = cols["loglam"].size
    if any(s != (n,) for s in shapes.values()) or n < 2:
        raise ValueError(f"{path}: COADD columns must be 1-D of one length; got {shapes}")
    loglam = cols["loglam"].astype(np.float64)
    if not np.isfinite(loglam).all() or np.any(np.diff(loglam) <= 0):
        raise ValueError(f"{path}: `loglam` must be finite and strictly increasing")
    flux = cols["flux"].astype(np.float64)
    ivar = cols["ivar"].astype(np.float64)
    mask = (cols["and_mask"] != 0) | ~(ivar > 0) | ~np.isfinite(ivar)
    nan = ~np.isfinite(flux) & ~mask
    if nan.any():
        logger.info("%s: %d unflagged pixel(s) with NaN/inf flux masked", path, nan.sum())
    mask |= nan
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(mask, np.inf, 1.0 / np.sqrt(ivar))
    return 10.0**loglam, np.where(mask, 0.0, flux), err, mask
