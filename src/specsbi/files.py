"""Atomic file writes: a temporary file renamed into place, never a half-written result;
finished chunks of a long job kept beside its output so an interrupted run resumes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChunkStore", "atomic_path", "check_writable"]


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path after checking it may be written.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
        OSError: if the parent folder does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; choose another path or pass overwrite=True (--overwrite)"
        )
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    If the block raises (or the process dies) the final name is never created or
    replaced; the temporary file is removed on an exception.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    path = check_writable(path, overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class ChunkStore:
    """Finished chunks of a long job, saved atomically in ``<out>.parts/`` beside its output.

    A rerun with the same settings (the ``manifest``) finds the chunks already done
    and skips them; other settings are refused, so chunks of different runs never
    mix. :meth:`remove` deletes the folder once the output is complete.

    Args:
        out: the job's final output file.
        manifest: JSON-able settings that fix the result of every chunk.
        settings: how to name those settings in the refusal message.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "result.h5"
        >>> store = ChunkStore(out, {"n": 10})
        >>> store.save(0, {"x": np.arange(3)})
        >>> store.done(0), store.done(1), store.load(0)["x"].tolist()
        (True, False, [0, 1, 2])
    """

    def __init__(self, out: str | os.PathLike, manifest: dict[str, Any],
                 settings: str = "settings") -> None:
        out = Path(out)
        self.folder = out.with_name(out.name + ".parts")
        file = self.folder / "manifest.json"
        manifest = json.loads(json.dumps(manifest))  # as it reads back
        if file.exists():
            if json.loads(file.read_text()) != manifest:
                raise ValueError(
                    f"{self.folder} holds an interrupted run with other settings ({settings}); "
                    "rerun with the same settings to resume, or delete that folder to start "
                    "over"
                )
            return
        self.folder.mkdir(exist_ok=True)
        with atomic_path(file, overwrite=True) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1))

    def path(self, k: int) -> Path:
        """The file of chunk ``k``."""
        return self.folder / f"chunk_{k:06d}.npz"

    def done(self, k: int) -> bool:
        """Whether chunk ``k`` was finished (by this run or an interrupted one)."""
        return self.path(k).exists()

    def save(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        """Save chunk ``k`` atomically: it exists whole or not at all."""
        with atomic_path(self.path(k), overwrite=True) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def load(self, k: int) -> dict[str, np.ndarray]:
        """The arrays of chunk ``k``."""
        with np.load(self.path(k)) as data:
            return dict(data)

    def remove(self) -> None:
        """Delete the folder (once the output is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)
