"""Catalog inference: posteriors for every galaxy of a file, in chunks, resumable, to HDF5.

The catalog is cut into chunks of galaxies. Each chunk is read alone (rows of an
HDF5 file, or a slice of the list of FITS files), inferred, and saved atomically
in ``<out>.parts/`` (the mechanism ``specsbi simulate`` uses), so memory is bounded
by the chunk and an interrupted run resumes where it stopped. The chunks are then
copied one at a time into the output, written under a temporary name and renamed
into place. Every chunk's draws come from the seed and its index alone, so a
resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .files import ChunkStore, atomic_path, check_writable
from .posterior import Posterior
from .spectra import SpectraSet, open_hdf5, write_attrs

__all__ = ["infer_catalog", "read_observations"]

log = logging.getLogger(__name__)
_FITS = (".fits", ".fit", ".gz")


def read_observations(inputs: Sequence[str | os.PathLike], wavelength: np.ndarray | None,
                      rows: slice | None = None) -> SpectraSet:
    """Read an HDF5 set or SDSS ``spec-*.fits`` files (one galaxy each), on ``wavelength``
    if given; ``rows`` selects galaxies (HDF5 rows, or a slice of the FITS files)."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("give at least one input file")
    if all(p.suffix.lower() in _FITS for p in paths):
        from .sdss import read_sdss_fits

        return read_sdss_fits(paths if rows is None else paths[rows], wavelength)
    if len(paths) != 1:
        raise ValueError("give one HDF5 file, or one or more SDSS spec-*.fits files")
    obs = SpectraSet.read(paths[0], rows=rows)
    if wavelength is not None and (obs.npix != len(wavelength)
                                   or not np.allclose(obs.wavelength, wavelength, rtol=1e-7)):
        log.info("resampling %s onto the model grid", paths[0])
        obs = obs.resample(wavelength)
    return obs


def _count(paths: list[Path]) -> int:
    """Galaxies in the input: rows of the HDF5 file, or the number of FITS files."""
    if all(p.suffix.lower() in _FITS for p in paths):
        return len(paths)
    with open_hdf5(paths[0]) as h5:
        if "raw/spec" not in h5:
            raise ValueError(f"{paths[0]} is missing dataset /raw/spec")
        return int(h5["raw/spec"].shape[0])


def _fingerprint(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _sample(post: Posterior, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, n, d) draws of a batch posterior and a per-galaxy failure flag. A galaxy
    whose draws almost all fall outside the prior (far from the training data) gets
    NaN draws and the flag, instead of stopping the catalog."""
    try:
        return post.sample(n), np.zeros(len(post), bool)
    except RuntimeError:
        if len(post) == 1:
            return np.full((1, n, len(post.names)), np.nan), np.ones(1, bool)
    parts = [_sample(Posterior(post.source, post.x[i : i + 1], post.names, post.prior), n)
             for i in range(len(post))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _infer_chunk(model: Any, obs: SpectraSet, n_samples: int, emulator: Any,
                 n_predictive: int) -> dict[str, np.ndarray]:
    """Everything the output holds for one chunk of galaxies."""
    from .diagnostics import predictive_chi2

    b, d = len(obs), len(model.targets)
    samples = np.full((b, n_samples, d), np.nan, dtype=np.float32)
    score = np.full(b, np.inf, dtype=np.float32)
    flag = np.ones(b, dtype=bool)
    chi2 = np.full(b, np.nan, dtype=np.float32)
    ok = ~obs.mask.all(1)  # a spectrum with every pixel masked has nothing to infer from
    if ok.any():
        post = model.posterior(obs[ok] if not ok.all() else obs)
        sc, fl = model.ood(post.x)  # the summaries the posterior was computed from
        draws, failed = _sample(post, n_samples)
        samples[ok] = draws
        score[ok], flag[ok] = sc, fl | failed
        if emulator is not None:
            idx = np.flatnonzero(ok)[~failed]
            if len(idx):
                chi2[idx] = predictive_chi2(emulator, samples[idx], obs[idx], n_predictive,
                                            names=model.targets)
    with np.errstate(all="ignore"):
        q = np.percentile(samples, [50, 16, 84], axis=1).transpose(1, 2, 0)
    out = {"samples": samples, "summary": q.astype(np.float32), "flags/ood": flag,
           "flags/ood_score": score, "flags/masked_fraction": obs.mask.mean(1).astype(np.float32)}
    if emulator is not None:
        out["flags/predictive_chi2"] = chi2
    return out


def infer_catalog(model: Any, inputs: Sequence[str | os.PathLike], out: str | os.PathLike,
                  n_samples: int = 1000, chunk: int = 500, overwrite: bool = False,
                  progress: bool = True, emulator: Any = None, n_predictive: int = 50,
                  seed: int = 0) -> Path:
    """Posterior samples, summaries and flags for every galaxy of ``inputs``.

    Writes ``/samples`` (n_gal, n_samples, d), ``/param_names``, ``/summary``
    (n_gal, d, 3: median, p16, p84), ``/flags/ood``, ``/flags/ood_score``,
    ``/flags/masked_fraction`` and, with an emulator, ``/flags/predictive_chi2``
    (see :func:`specsbi.diagnostics.predictive_chi2`). The file appears under
    ``out`` only when complete. Galaxies with every pixel masked, or whose
    posterior falls outside the prior, get NaN samples and ``ood`` True.

    Args:
        model: a spectrum model (``summarize``, ``posterior``, ``ood``, ``targets``).
        inputs: one HDF5 file (DESIGN.md layout) or SDSS ``spec-*.fits`` files.
        out: the output HDF5 file.
        n_samples: posterior draws per galaxy.
        chunk: galaxies per chunk: the unit of memory, of saving and of resuming.
        overwrite: replace an existing ``out``.
        progress: show a progress bar.
        emulator: optional ``predict(θ) → flux`` over the model's targets, for the
            posterior-predictive χ².
        n_predictive: posterior draws per galaxy for that χ².
        seed: seeds every chunk's draws.
    """
    from tqdm.auto import tqdm

    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"--samples must be an integer >= 1; got {n_samples!r}")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"--chunk must be an integer >= 1; got {chunk!r}")
    out = check_writable(out, overwrite)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("give at least one input file")
    n_total = _count(paths)
    if n_total == 0:
        raise ValueError("no galaxies to infer")
    names = list(model.targets)
    if emulator is not None:
        from .diagnostics import _emulator_columns

        _emulator_columns(emulator, names, len(names))  # refuse a mismatch before any work
    manifest = {
        "model": _fingerprint(model.card()),
        "inputs": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths],
        "n_samples": int(n_samples), "chunk": int(chunk), "seed": int(seed),
        "emulator": None if emulator is None else _fingerprint(
            getattr(emulator, "card", lambda: type(emulator).__name__)()),
        "n_predictive": int(n_predictive),
    }
    parts = ChunkStore(out, manifest, "model, inputs, samples, chunk, seed or emulator")
    n_chunks = -(-n_total // chunk)
    todo = [k for k in range(n_chunks) if not parts.done(k)]
    done = n_total - sum(min(chunk, n_total - k * chunk) for k in todo)
    if done:
        log.info("resuming %s: %d of %d galaxies already inferred", out, done, n_total)
    import torch

    with tqdm(total=n_total, initial=done, disable=not progress, desc="infer",
              unit="gal") as bar:
        for k in todo:
            obs = read_observations(paths, model.wavelength,
                                    slice(k * chunk, min((k + 1) * chunk, n_total)))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1_000_003 + k)
                part = _infer_chunk(model, obs, n_samples, emulator, n_predictive)
            parts.save(k, part)
            bar.update(len(obs))
    with atomic_path(out, overwrite) as tmp, h5py.File(tmp, "w") as h5:
        write_attrs(h5, {"model": model.card().get("class"),
                         "inputs": [str(p) for p in paths], "n_samples": int(n_samples),
                         "seed": int(seed)})
        h5["param_names"] = np.array(names, dtype="S")
        for k in range(n_chunks):
            part, a = parts.load(k), k * chunk
            for key, value in part.items():
                if key not in h5:
                    h5.create_dataset(key, shape=(n_total, *value.shape[1:]), dtype=value.dtype,
                                      chunks=(min(chunk, n_total), *value.shape[1:]))
                h5[key][a : a + len(value)] = value
        h5["summary"].attrs["columns"] = ["median", "p16", "p84"]
    parts.remove()
    return out
