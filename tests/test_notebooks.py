"""The hands-on notebooks run top to bottom (small setting: SPECSBI_NB_FAST=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import specsbi

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    src = str(Path(specsbi.__file__).parents[1])  # the kernel imports this very specsbi
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [src,
                                                                    os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SPECSBI_NB_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("SPECSBI_NB_DATA", raising=False)
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails


def test_there_is_one_notebook_per_model() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"vae", "gan", "flow", "diffusion"}
