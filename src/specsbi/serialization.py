"""Model files: a folder with ``model.json`` (the card) and ``weights.safetensors``; no pickle."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .files import check_writable

__all__ = ["FORMAT_VERSION", "read_model", "write_model"]

FORMAT_VERSION = 1
CARD, WEIGHTS = "model.json", "weights.safetensors"


def write_model(path: str | os.PathLike, card: dict[str, Any], state: dict[str, torch.Tensor],
                overwrite: bool = False) -> Path:
    """Write a model folder atomically: a temporary folder renamed into place.

    Args:
        path: the folder to create.
        card: JSON-able description (class, hyper-parameters, prior, metrics, ...).
        state: name → tensor (a module's ``state_dict()``).
        overwrite: replace an existing folder.
    """
    from safetensors.torch import save_file

    path = check_writable(path, overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(tmp / WEIGHTS))
        full = {"format_version": FORMAT_VERSION, **card}
        (tmp / CARD).write_text(json.dumps(full, indent=1, default=_jsonable))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_model(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a model folder's card and weights; refuse anything that is not that format.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: not a specsbi model folder, a newer format, or weights that are
            not safetensors (a pickle posing as weights is refused unread).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}")
    if not path.is_dir() or not (path / CARD).exists() or not (path / WEIGHTS).exists():
        raise ValueError(
            f"{path} is not a specsbi model folder (expected {CARD} and {WEIGHTS}); "
            "specsbi never loads pickled models"
        )
    try:
        card = json.loads((path / CARD).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path / CARD} is not valid JSON: {err}") from None
    version = card.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has model format {version!r}; this specsbi reads up to {FORMAT_VERSION}"
        )
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path / WEIGHTS} is not a safetensors file ({err}); refused") from None
    return card, state


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a model card")
