"""Spectra and their HDF5 layout: `SpectraSet` (many galaxies) and `Spectrum` (one)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._checks import as_numpy, require_finite, require_ndim
from .files import atomic_path
from .resampling import resample

__all__ = [
    "FORMAT_VERSION",
    "FILE_NAMES",
    "SpectraSet",
    "Spectrum",
    "sdss_wavelength",
]

FORMAT_VERSION = 1

#: Parameter names in the API → dataset names in files (the lecture's layout).
FILE_NAMES = {"redshift": "z", "log_mstar": "smass"}
API_NAMES = {v: k for k, v in FILE_NAMES.items()}
_ARRAYS = {"wavelength", "spec", "specerr", "spec_noiseless"}


def sdss_wavelength() -> np.ndarray:
    """The default model grid: SDSS log-λ pixels of 1e-4 dex from 3800 to 9200 Å (3841 pixels).

    Example:
        >>> sdss_wavelength().shape
        (3841,)
    """
    return 10 ** np.arange(np.log10(3800.0), np.log10(9200.0), 1e-4)


def _check_grid(wavelength: Any) -> np.ndarray:
    wl = as_numpy(wavelength, "wavelength")
    require_ndim(wl, "wavelength", (1,), "(npix,)")
    require_finite(wl, "wavelength")
    if wl.size < 2 or np.any(np.diff(wl) <= 0) or wl[0] <= 0:
        raise ValueError("`wavelength` must be positive and strictly increasing (Å)")
    return wl


@dataclass(frozen=True)
class Spectrum:
    """One galaxy: flux, 1σ errors and mask on a wavelength grid, with named parameters.

    ``mask`` is True where a pixel is masked (its error is inf).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    err: np.ndarray
    mask: np.ndarray
    params: dict[str, float] = field(default_factory=dict)
    flux_noiseless: np.ndarray | None = None

    def as_set(self) -> SpectraSet:
        """This spectrum as a SpectraSet of one row."""
        return SpectraSet(
            self.wavelength,
            self.flux[None],
            self.err[None],
            params={k: np.array([v]) for k, v in self.params.items()},
            flux_noiseless=None if self.flux_noiseless is None else self.flux_noiseless[None],
        )


class SpectraSet:
    """Spectra of ``n`` galaxies on one wavelength grid, with named parameters.

    Flux and errors are in 1e-17 erg/s/cm²/Å on an observed-frame grid in Å. A
    pixel is masked where its error is 0 or inf, or where ``mask`` says so; masked
    pixels get error inf and flux 0. Parameters use the API names (``redshift``,
    ``log_mstar``, ...); files use the lecture's names (``z``, ``smass``).

    Args:
        wavelength: (npix,) pixel centres, strictly increasing.
        flux: (n, npix) flux density.
        err: (n, npix) 1σ errors (>= 0; 0 or inf masks a pixel).
        mask: optional (n, npix) bool, True where masked, on top of ``err``.
        params: name → (n,) array.
        flux_noiseless: optional (n, npix) noiseless flux of simulations.
        attrs: file attributes (simulator, prior, seed, ...).

    Example:
        >>> wl = sdss_wavelength()
        >>> s = SpectraSet(wl, np.ones((3, wl.size)), np.full((3, wl.size), 0.1),
        ...                params={"redshift": [0.1, 0.2, 0.3]})
        >>> len(s), s[1].params["redshift"], len(s[s.params["redshift"] > 0.15])
        (3, 0.2, 2)
    """

    def __init__(
        self,
        wavelength: Any,
        flux: Any,
        err: Any,
        mask: Any | None = None,
        params: Mapping[str, Any] | None = None,
        flux_noiseless: Any | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.wavelength = _check_grid(wavelength)
        npix = self.wavelength.size
        f = as_numpy(flux, "flux", np.float32)
        e = as_numpy(err, "err", np.float32)
        for name, a in (("flux", f), ("err", e)):
            require_ndim(a, name, (2,), f"(n, {npix})")
            if a.shape[1] != npix:
                raise ValueError(
                    f"`{name}` has {a.shape[1]} pixels but the wavelength grid has {npix}: "
                    "the grids do not match (resample onto one grid first)"
                )
        if e.shape != f.shape:
            raise ValueError(f"`err` must have the shape of `flux` {f.shape}; got {e.shape}")
        if np.isnan(e).any():
            raise ValueError("`err` holds NaN; use inf (or 0) to mask a pixel")
        if (e < 0).any():
            raise ValueError("`err` holds negative values; errors are 1σ and must be >= 0")
        bad = (e == 0) | np.isinf(e)
        if mask is not None:
            m = np.asarray(mask, dtype=bool)
            if m.shape != f.shape:
                raise ValueError(f"`mask` must have the shape of `flux` {f.shape}; got {m.shape}")
            bad |= m
        if (~np.isfinite(f) & ~bad).any():
            require_finite(
                np.where(bad, 0.0, f),
                "flux",
                "Mask those pixels (error 0 or inf) or remove those spectra.",
            )
        self.flux = np.where(bad, np.float32(0), f)
        self.err = np.where(bad, np.float32(np.inf), e)
        self.mask = bad
        self.flux_noiseless = None
        if flux_noiseless is not None:
            fn = as_numpy(flux_noiseless, "flux_noiseless", np.float32)
            if fn.shape != f.shape:
                raise ValueError(
                    f"`flux_noiseless` must have the shape of `flux` {f.shape}; got {fn.shape}"
                )
            require_finite(fn, "flux_noiseless")
            self.flux_noiseless = fn
        self.params: dict[str, np.ndarray] = {}
        for name, value in (params or {}).items():
            v = as_numpy(value, f"params[{name!r}]")
            if v.shape != (len(f),):
                raise ValueError(
                    f"parameter {name!r} must have shape ({len(f)},); got {tuple(v.shape)}"
                )
            self.params[name] = v
        self.attrs = dict(attrs or {})

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.flux)

    def __repr__(self) -> str:
        return (
            f"SpectraSet(n={len(self)}, npix={self.wavelength.size}, "
            f"λ={self.wavelength[0]:.0f}–{self.wavelength[-1]:.0f} Å, "
            f"params={sorted(self.params)})"
        )

    @property
    def npix(self) -> int:
        """Number of pixels of the wavelength grid."""
        return self.wavelength.size

    def __getitem__(self, index: Any) -> Spectrum | SpectraSet:
        """``s[17]`` → Spectrum; ``s[10:20]``, ``s[bool_mask]``, ``s[[1, 5]]`` → SpectraSet."""
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"galaxy {i} is out of range for a set of {len(self)}")
            return Spectrum(
                self.wavelength,
                self.flux[i],
                self.err[i],
                self.mask[i],
                {k: float(v[i]) for k, v in self.params.items()},
                None if self.flux_noiseless is None else self.flux_noiseless[i],
            )
        if isinstance(index, np.ndarray) and index.dtype == bool and index.shape != (len(self),):
            raise IndexError(f"a boolean index must have shape ({len(self)},); got {index.shape}")
        return SpectraSet(
            self.wavelength,
            self.flux[index],
            self.err[index],
            self.mask[index],
            {k: v[index] for k, v in self.params.items()},
            None if self.flux_noiseless is None else self.flux_noiseless[index],
            self.attrs,
        )

    @classmethod
    def concat(cls, sets: list[SpectraSet]) -> SpectraSet:
        """Join sets on the same grid and with the same parameter names."""
        if not sets:
            raise ValueError("concat needs at least one SpectraSet")
        first = sets[0]
        for s in sets[1:]:
            if s.wavelength.shape != first.wavelength.shape or not np.allclose(
                s.wavelength, first.wavelength, rtol=1e-10
            ):
                raise ValueError("cannot concatenate spectra on different wavelength grids")
            if set(s.params) != set(first.params):
                raise ValueError("cannot concatenate sets with different parameter names")
        noiseless = None
        if all(s.flux_noiseless is not None for s in sets):
            noiseless = np.concatenate([s.flux_noiseless for s in sets])
        return cls(
            first.wavelength,
            np.concatenate([s.flux for s in sets]),
            np.concatenate([s.err for s in sets]),
            np.concatenate([s.mask for s in sets]),
            {k: np.concatenate([s.params[k] for s in sets]) for k in first.params},
            noiseless,
            first.attrs,
        )

    def resample(self, new_wavelength: Any, min_coverage: float = 0.5) -> SpectraSet:
        """Flux-conserving resampling onto ``new_wavelength``; masks carried along.

        A new pixel less than ``min_coverage`` covered by unmasked data is masked.
        """
        new = _check_grid(new_wavelength)
        flux, err, mask = resample(
            self.wavelength, self.flux, new, self.err, self.mask, min_coverage
        )
        noiseless = None
        if self.flux_noiseless is not None:
            noiseless, _, _ = resample(self.wavelength, self.flux_noiseless, new)
        return SpectraSet(new, flux, err, mask, self.params, noiseless, self.attrs)

    # --------------------------------------------------------------------- I/O
    @classmethod
    def read(cls, path: str | os.PathLike, rows: Any = None) -> SpectraSet:
        """Read the ``sdss_galaxy_spec.hdf5`` layout (DESIGN.md), or ``rows`` of it.

        Args:
            path: HDF5 file with ``/raw/wavelength``, ``/raw/spec``, ``/raw/specerr``.
            rows: optional slice or sorted index array of galaxies to read.

        Raises:
            OSError: missing, truncated or non-HDF5 file.
            ValueError: a required dataset is missing or malformed.
        """
        path = Path(path)
        sel = slice(None) if rows is None else rows
        with open_hdf5(path) as h5:
            raw = _raw_group(h5, path)
            wl = raw["wavelength"][()]
            n = raw["spec"].shape[0] if raw["spec"].ndim == 2 else -1
            params = {}
            for key, ds in raw.items():
                if key in _ARRAYS or not isinstance(ds, h5py.Dataset):
                    continue
                if ds.shape != (n,):
                    raise ValueError(
                        f"{path}: dataset /raw/{key} has shape {ds.shape}; expected ({n},)"
                    )
                params[API_NAMES.get(key, key)] = ds[sel]
            noiseless = raw["spec_noiseless"][sel] if "spec_noiseless" in raw else None
            attrs = {k: _attr(v) for k, v in h5.attrs.items()}
            try:
                spec, err = raw["spec"][sel], raw["specerr"][sel]
                return cls(wl, spec, err, None, params, noiseless, attrs)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None

    def write(self, path: str | os.PathLike, overwrite: bool = False,
              compression: str | None = None) -> Path:
        """Write the DESIGN.md HDF5 layout atomically; never overwrites unless asked.

        ``compression="gzip"`` shrinks the flux datasets (≈ 25 % for noisy spectra):
        for files that ship, not for training sets read often.
        """
        path = Path(path)
        packed = {"compression": compression, "shuffle": True} if compression else {}
        with atomic_path(path, overwrite) as tmp, h5py.File(tmp, "w") as h5:
            write_attrs(h5, self.attrs)
            raw = h5.create_group("raw")
            raw.create_dataset("wavelength", data=self.wavelength)
            raw.create_dataset("spec", data=self.flux, **packed)
            raw.create_dataset("specerr", data=self.err, compression=compression or "lzf")
            if self.flux_noiseless is not None:
                raw.create_dataset("spec_noiseless", data=self.flux_noiseless, **packed)
            for name, value in self.params.items():
                raw.create_dataset(FILE_NAMES.get(name, name), data=value)
        return path


def open_hdf5(path: Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning h5py's terse failures into a sentence that names the file."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        raise OSError(
            f"{path} is not a readable HDF5 file (truncated, still being written, or another "
            f"format): {err}"
        ) from None


def _raw_group(h5: h5py.File, path: Path) -> h5py.Group:
    if "raw" not in h5:
        raise ValueError(f"{path} has no /raw group; expected the sdss_galaxy_spec.hdf5 layout")
    raw = h5["raw"]
    for key in ("wavelength", "spec", "specerr"):
        if key not in raw:
            raise ValueError(f"{path} is missing dataset /raw/{key}")
    return raw


def write_attrs(h5: h5py.File, attrs: Mapping[str, Any]) -> None:
    """Write file attributes; dicts become JSON, and format_version/created are always set."""
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for key, value in attrs.items():
        if key in ("format_version", "created") or value is None:
            continue
        h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value
