"""Catalog inference: posteriors for every galaxy of a file, written in chunks to HDF5."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .files import atomic_path, check_writable
from .spectra import SpectraSet, open_hdf5, write_attrs

__all__ = ["infer_catalog", "read_observations"]

log = logging.getLogger(__name__)


def read_observations(inputs: Sequence[str | os.PathLike], wavelength: np.ndarray | None,
                      rows: slice | None = None) -> SpectraSet:
    """Read an HDF5 set or SDSS ``spec-*.fits`` files, on ``wavelength`` if given."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("give at least one input file")
    if all(p.suffix.lower() in (".fits", ".fit", ".gz") for p in paths):
        from .sdss import read_sdss_fits

        return read_sdss_fits(paths, wavelength)
    if len(paths) != 1:
        raise ValueError("give one HDF5 file, or one or more SDSS spec-*.fits files")
    obs = SpectraSet.read(paths[0], rows=rows)
    if wavelength is not None and (obs.npix != len(wavelength)
                                   or not np.allclose(obs.wavelength, wavelength, rtol=1e-7)):
        log.info("resampling %s onto the model grid", paths[0])
        obs = obs.resample(wavelength)
    return obs


def _count(inputs: Sequence[str | os.PathLike]) -> int:
    p = Path(inputs[0])
    if p.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        with open_hdf5(p) as h5:
            if "raw/spec" not in h5:
                raise ValueError(f"{p} is missing dataset /raw/spec")
            return int(h5["raw/spec"].shape[0])
    return -1


def infer_catalog(model: Any, inputs: Sequence[str | os.PathLike], out: str | os.PathLike,
                  n_samples: int = 1000, chunk: int = 500, overwrite: bool = False,
                  progress: bool = True) -> Path:
    """Posterior samples, summaries and flags for every galaxy of ``inputs``.

    Writes ``/samples`` (n_gal, n_samples, d), ``/param_names``, ``/summary``
    (n_gal, d, 3: median, p16, p84), ``/flags/ood``, ``/flags/ood_score``,
    ``/flags/masked_fraction``; the file appears under ``out`` only when complete.
    """
    from tqdm.auto import tqdm

    if n_samples < 1:
        raise ValueError(f"--samples must be >= 1; got {n_samples}")
    out = check_writable(out, overwrite)
    n_total = _count(inputs)
    names = list(model.targets)
    d = len(names)
    with atomic_path(out, overwrite) as tmp, h5py.File(tmp, "w") as h5:
        write_attrs(h5, {"model": model.card().get("class"),
                         "inputs": [str(p) for p in inputs]})
        h5["param_names"] = np.array(names, dtype="S")
        ds = {}
        start = 0
        bar = tqdm(total=n_total if n_total > 0 else None, disable=not progress,
                   desc="infer", unit="gal")
        with bar:
            while True:
                rows = slice(start, start + chunk) if n_total > 0 else None
                obs = read_observations(inputs, model.wavelength, rows)
                if len(obs) == 0:
                    break
                s = model.summarize(obs)
                post = model.posterior(obs)
                samples = post.sample(n_samples).astype(np.float32)
                q = np.percentile(samples, [50, 16, 84], axis=1).transpose(1, 2, 0)
                score, flag = model.ood(s)
                part = {"samples": samples, "summary": q.astype(np.float32),
                        "flags/ood": flag, "flags/ood_score": score.astype(np.float32),
                        "flags/masked_fraction": obs.mask.mean(1).astype(np.float32)}
                for key, value in part.items():
                    if key not in ds:
                        ds[key] = h5.create_dataset(key, shape=(0, *value.shape[1:]),
                                                    maxshape=(None, *value.shape[1:]),
                                                    dtype=value.dtype)
                    dset = ds[key]
                    dset.resize(dset.shape[0] + len(value), axis=0)
                    dset[-len(value):] = value
                bar.update(len(obs))
                start += len(obs)
                if n_total <= 0 or start >= n_total:
                    break
        h5["summary"].attrs["columns"] = ["median", "p16", "p84"]
        if d and "samples" not in h5:
            raise ValueError("no galaxies to infer")
    return out
