"""`simulate`: draw θ from a prior, run a simulator in parallel, write an HDF5 training set.

The run is split into chunks. Each finished chunk is saved atomically in a
``<path>.parts/`` folder beside the output, so an interrupted run resumes where it
stopped; the chunks are then merged into one file, written to a temporary name
and renamed into place. θ and the noise of every chunk come from the seed alone,
so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .files import ChunkStore, atomic_path, check_writable
from .noise import NoiseModel
from .spectra import API_NAMES, FILE_NAMES, SpectraSet, write_attrs

if TYPE_CHECKING:
    from .priors import Prior
    from .simulators import Simulator

__all__ = ["simulate", "simulate_to_file"]

log = logging.getLogger(__name__)
_DEFAULT_NOISE = NoiseModel()


def simulate(
    simulator: Simulator,
    prior: Prior,
    n: int,
    path: str | os.PathLike | None = None,
    workers: Any = 1,
    seed: int = 0,
    noise: NoiseModel = _DEFAULT_NOISE,
    chunk_size: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SpectraSet:
    """Simulate ``n`` galaxies from ``prior`` and return them (and write ``path`` if given).

    Args:
        simulator: e.g. ``BagpipesSimulator()`` or ``ToySimulator()``.
        prior: a :class:`~specsbi.priors.Prior`; fixed parameters are passed on.
        n: number of spectra.
        path: HDF5 output (DESIGN.md layout); None keeps the result in memory.
        workers: number of local worker processes, or a ``dask.distributed.Client``
            or scheduler address ("tcp://host:8786") to run the chunks on a cluster.
        seed: seeds θ and the noise; the same seed gives the same file.
        noise: noise model of the one noisy realisation stored in ``/raw/spec``,
            ``/raw/specerr`` and ``/raw/snr``; the noiseless flux is always kept in
            ``/raw/spec_noiseless`` so training can draw fresh noise every epoch.
        chunk_size: spectra per chunk, the unit of parallel work and of resuming
            (default: n/8 rounded up, between 10 and 250).
        overwrite: replace an existing ``path``.
        progress: show a progress bar.

    Returns:
        The simulated SpectraSet (read back from ``path`` when one is given).

    Example:
        >>> from specsbi import ToySimulator, default_prior
        >>> s = simulate(ToySimulator(), default_prior(), n=4, progress=False)
        >>> s.flux.shape, sorted(s.params)[:3]
        ((4, 3841), ['age', 'age_frac', 'av'])
    """
    if path is None:
        return _simulate_in_memory(simulator, prior, n, workers, seed, noise, chunk_size, progress)
    out = simulate_to_file(
        simulator, prior, n, path, workers, seed, noise, chunk_size, overwrite, progress
    )
    return SpectraSet.read(out)


def simulate_to_file(
    simulator: Simulator,
    prior: Prior,
    n: int,
    path: str | os.PathLike,
    workers: Any = 1,
    seed: int = 0,
    noise: NoiseModel = _DEFAULT_NOISE,
    chunk_size: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """As :func:`simulate`, but only write ``path`` and return it (no read-back)."""
    path = check_writable(path, overwrite)
    plan = _Plan(simulator, prior, n, seed, noise, chunk_size)
    parts = ChunkStore(path, plan.manifest(),
                       "n, seed, prior, simulator, noise or chunk size")
    todo = [k for k in range(plan.n_chunks) if not parts.done(k)]
    if len(todo) < plan.n_chunks:
        log.info("resuming %s: %d of %d chunks already done", path, plan.n_chunks - len(todo),
                 plan.n_chunks)
    for k, (flux, derived, _) in _run_chunks(plan, todo, workers, progress):
        parts.save(k, {"flux": flux, **derived})
    with atomic_path(path, overwrite) as tmp, h5py.File(tmp, "w") as h5:
        plan.write_file(h5, parts.load)
    parts.remove()
    return path


def _simulate_in_memory(simulator, prior, n, workers, seed, noise, chunk_size, progress):
    plan = _Plan(simulator, prior, n, seed, noise, chunk_size)
    results: dict[int, dict[str, np.ndarray]] = {}
    for k, (flux, derived, _) in _run_chunks(plan, list(range(plan.n_chunks)), workers, progress):
        results[k] = {"flux": flux, **derived}
    chunks = [plan.finish_chunk(k, results[k]) for k in range(plan.n_chunks)]
    cat = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    params = {k: v for k, v in cat.items() if k not in ("spec", "specerr", "spec_noiseless")}
    params = {API_NAMES.get(k, k): v for k, v in params.items()}
    return SpectraSet(
        simulator.wavelength, cat["spec"], cat["specerr"], None, params,
        cat["spec_noiseless"], plan.attrs(),
    )


class _Plan:
    """Everything that fixes a run's result: θ, chunks, noise seeds, file attributes."""

    def __init__(self, simulator, prior, n, seed, noise, chunk_size) -> None:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"`n` must be a positive integer; got {n!r}")
        if chunk_size is None:
            chunk_size = int(min(250, max(10, -(-n // 8))))
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer; got {chunk_size!r}")
        if not isinstance(seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an integer; got {seed!r}")
        if not isinstance(noise, NoiseModel):
            raise ValueError(f"`noise` must be a NoiseModel; got {type(noise).__name__}")
        self.sim, self.prior, self.n, self.seed = simulator, prior, int(n), int(seed)
        self.noise, self.chunk_size = noise, int(chunk_size)
        self.theta = prior.draw(self.n, self.seed)
        self.params = simulator.parameters(prior.to_dict(self.theta))  # validates every row
        self.extra = {k: v for k, v in prior.to_dict(self.theta).items() if k not in self.params}
        self.n_chunks = -(-self.n // self.chunk_size)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.chunk_size, min((k + 1) * self.chunk_size, self.n)

    def chunk_params(self, k: int) -> dict[str, np.ndarray]:
        a, b = self.bounds(k)
        return {key: v[a:b] for key, v in self.params.items()}

    def manifest(self) -> dict[str, Any]:
        wl = np.ascontiguousarray(self.sim.wavelength)
        return {
            "n": self.n,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
            "prior": json.loads(self.prior.to_json()),
            "simulator": self.sim.config(),
            "noise": self.noise.config(),
            "wavelength_sha1": hashlib.sha1(wl.tobytes()).hexdigest(),
        }

    def attrs(self) -> dict[str, Any]:
        return {
            "simulator": self.sim.config(),
            "prior": json.loads(self.prior.to_json()),
            "seed": self.seed,
            "noise": self.noise.config(),
        }

    def finish_chunk(self, k: int, result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Noise, parameters and derived values of chunk ``k``, keyed by file dataset name."""
        a, b = self.bounds(k)
        flux = np.asarray(result["flux"], dtype=np.float64)
        noisy, err, snr = self.noise.sample(flux, np.random.default_rng([self.seed, 1, k]))
        out = {
            "spec_noiseless": flux.astype(np.float32),
            "spec": noisy.astype(np.float32),
            "specerr": err.astype(np.float32),
            "snr": snr,
        }
        for key, v in {**self.params, **self.extra}.items():
            out[FILE_NAMES.get(key, key)] = v[a:b]
        for key, v in result.items():
            if key != "flux":
                out[FILE_NAMES.get(key, key)] = v
        return out

    def write_file(self, h5: h5py.File, load_chunk) -> None:
        write_attrs(h5, self.attrs())
        raw = h5.create_group("raw")
        raw.create_dataset("wavelength", data=self.sim.wavelength)
        npix = self.sim.wavelength.size
        rows = min(self.chunk_size, self.n, max(1, 2**20 // (4 * npix)))
        for k in range(self.n_chunks):
            a, b = self.bounds(k)
            chunk = self.finish_chunk(k, load_chunk(k))
            for key, v in chunk.items():
                if key not in raw:
                    shape = (self.n, *v.shape[1:])
                    extra = {"chunks": (rows, npix)} if v.ndim == 2 else {}
                    if key == "specerr":
                        extra["compression"] = "lzf"
                    raw.create_dataset(key, shape=shape, dtype=v.dtype, **extra)
                raw[key][a:b] = v


def _chunk_task(simulator: Simulator, params: dict[str, np.ndarray]):
    """Run in a worker: simulate one chunk; return float32 flux, derived values and seconds."""
    t0 = time.perf_counter()
    flux, derived = simulator.simulate(params)
    return flux.astype(np.float32), derived, time.perf_counter() - t0


def _run_chunks(
    plan: _Plan, todo: list[int], workers: Any, progress: bool
) -> Iterator[tuple[int, tuple[np.ndarray, dict[str, np.ndarray], float]]]:
    """Yield ``(k, result)`` for each chunk in ``todo`` as it finishes, in any order."""
    from tqdm.auto import tqdm

    if not (isinstance(workers, (int, np.integer)) and workers == 1):
        plan.sim.prepare()  # one-off set-up before workers start (see Simulator.prepare)
    total = sum(b - a for a, b in map(plan.bounds, todo))
    bar = tqdm(total=total, disable=not progress, desc="simulate", unit="spec")
    with bar, _executor(workers) as submit:
        futures = {submit(_chunk_task, plan.sim, plan.chunk_params(k)): k for k in todo}
        for future, k in _completed(futures):
            result = future.result()
            a, b = plan.bounds(k)
            bar.update(b - a)
            yield k, result


@contextlib.contextmanager
def _executor(workers: Any):
    """Yield a ``submit(fn, *args) -> future``: in-process, a process pool, or Dask."""
    if isinstance(workers, (int, np.integer)) and not isinstance(workers, bool):
        if workers < 1:
            raise ValueError(f"`workers` must be >= 1; got {workers}")
        if workers == 1:
            yield _InlineFuture.submit
            return
        import multiprocessing

        pool = ProcessPoolExecutor(int(workers), mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool.submit
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return
    client, own = _dask_client(workers)
    try:
        yield lambda fn, *args: client.submit(fn, *args, pure=False)
    finally:
        if own:
            client.close()


def _dask_client(workers: Any):
    try:
        from dask.distributed import Client
    except ImportError as err:  # pragma: no cover - a dependency
        raise ImportError("running on a cluster needs dask[distributed]") from err
    if isinstance(workers, Client):
        return workers, False
    if isinstance(workers, str):
        try:
            return Client(workers, timeout="10s"), True
        except OSError as err:
            raise OSError(f"cannot reach the Dask scheduler at {workers!r}: {err}") from None
    raise ValueError(
        "`workers` must be an int, a dask.distributed.Client or a scheduler address; "
        f"got {type(workers).__name__}"
    )


def _completed(futures: dict) -> Iterator[tuple[Any, int]]:
    first = next(iter(futures), None)
    if isinstance(first, _InlineFuture) or first is None:
        yield from futures.items()
        return
    if hasattr(first, "key") and hasattr(first, "client"):  # dask
        from dask.distributed import as_completed as dask_completed

        for fut in dask_completed(list(futures)):
            yield fut, futures[fut]
        return
    for fut in as_completed(futures):
        yield fut, futures[fut]


class _InlineFuture:
    """A future that runs its call when its result is asked for (one worker, no processes)."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    @classmethod
    def submit(cls, fn, *args) -> _InlineFuture:
        return cls(fn, args)

    def result(self):
        return self.fn(*self.args)
