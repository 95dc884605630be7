"""Boundary checks shared by the public functions: arrays in, clear errors out."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_numpy", "require_finite", "require_ndim"]


def as_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Convert numpy, torch or a sequence to a numpy array of ``dtype``.

    Raises:
        ValueError: if ``x`` cannot be read as numbers.
    """
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be an array of numbers; got {type(x).__name__}") from err


def require_ndim(x: np.ndarray, name: str, ndims: tuple[int, ...], what: str) -> None:
    """Raise a ValueError naming the expected shape when ``x.ndim`` is not allowed."""
    if x.ndim not in ndims:
        raise ValueError(f"`{name}` must have shape {what}; got shape {tuple(x.shape)}")


def require_finite(x: np.ndarray, name: str, fix: str = "") -> None:
    """Raise a ValueError when ``x`` holds NaN or inf, saying how many and where."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        hint = f" {fix}" if fix else ""
        raise ValueError(
            f"`{name}` has {int(bad.sum())} non-finite value(s) (first at index {first}).{hint}"
        )
