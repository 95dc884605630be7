"""Latent-space tools: latents coloured by parameters, traversals, and which latent tracks what.

The lecture's last hands-on cell, made general: give latents (n, k) (e.g.
``vae.encode(x)``) and parameters by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._checks import as_numpy

__all__ = ["correlation_table", "latent_scatter", "traversal"]


def _latents(latents: Any, params: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    z = as_numpy(latents, "latents")
    if z.ndim != 2:
        raise ValueError(f"`latents` must have shape (n, k); got {z.shape}")
    out = {}
    for name, v in params.items():
        a = as_numpy(v, name)
        if a.shape != (len(z),):
            raise ValueError(f"parameter {name!r} must have shape ({len(z)},); got {a.shape}")
        out[name] = a
    return z, out


def correlation_table(latents: Any, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Which latent dimension tracks which parameter.

    Args:
        latents: (n, k) latent coordinates.
        params: name → (n,) values.

    Returns:
        name → {"corr": Pearson correlation with each latent dimension (k,),
        "best_dim": the dimension of largest |corr|, "r2": the fraction of the
        parameter's variance a linear function of all latents explains}.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=(500, 3))
        >>> t = correlation_table(z, {"a": 2 * z[:, 1] + 0.1 * rng.normal(size=500)})
        >>> t["a"]["best_dim"], round(t["a"]["r2"], 2)
        (1, 1.0)
    """
    z, p = _latents(latents, params)
    zc = z - z.mean(0)
    zs = zc / np.where(zc.std(0) > 0, zc.std(0), 1)
    design = np.column_stack([z, np.ones(len(z))])
    table = {}
    for name, v in p.items():
        vc = v - v.mean()
        corr = (zs * (vc / (vc.std() or 1))[:, None]).mean(0)
        coef, *_ = np.linalg.lstsq(design, v, rcond=None)
        resid = v - design @ coef
        r2 = 1 - resid.var() / v.var() if v.var() > 0 else 0.0
        table[name] = {"corr": corr, "best_dim": int(np.argmax(np.abs(corr))),
                       "r2": float(r2)}
    return table


def correlation_markdown(table: Mapping[str, Mapping[str, Any]]) -> str:
    """A `correlation_table` as a Markdown table (parameters as rows)."""
    k = len(next(iter(table.values()))["corr"])
    head = "| parameter | " + " | ".join(f"z{i}" for i in range(k)) + " | best | R² (linear) |"
    rows = [head, "|" + " --- |" * (k + 3)]
    for name, t in table.items():
        cells = " | ".join(f"{c:+.2f}" for c in t["corr"])
        rows.append(f"| {name} | {cells} | z{t['best_dim']} | {t['r2']:.2f} |")
    return "\n".join(rows)


def latent_scatter(latents: Any, params: Mapping[str, Any], dims: Sequence[int] | None = None,
                   fig: Any = None, s: float = 3.0) -> Any:
    """Latent coordinates coloured by each parameter: one panel per parameter.

    Args:
        latents: (n, k) latents; params: name → (n,) values (e.g. redshift, log_mstar).
        dims: the two latent dimensions to plot (default: the two that correlate
            most with the first parameter).
        fig: a matplotlib figure to draw into (default: a new one).

    Returns:
        The figure.
    """
    import matplotlib.pyplot as plt

    z, p = _latents(latents, params)
    if z.shape[1] < 2:
        raise ValueError("latent_scatter needs at least 2 latent dimensions")
    if dims is None:
        corr = np.abs(correlation_table(z, {k: p[k] for k in list(p)[:1]})[next(iter(p))]["corr"])
        dims = [int(i) for i in np.argsort(corr)[::-1][:2]]
    if len(dims) != 2 or not all(0 <= d < z.shape[1] for d in dims):
        raise ValueError(f"`dims` must be two latent indices below {z.shape[1]}; got {dims}")
    fig = fig or plt.figure(figsize=(4.2 * len(p), 3.6))
    axes = fig.subplots(1, len(p), squeeze=False)[0]
    for ax, (name, v) in zip(axes, p.items(), strict=True):
        sc = ax.scatter(z[:, dims[0]], z[:, dims[1]], c=v, s=s, cmap="viridis", rasterized=True)
        fig.colorbar(sc, ax=ax, label=name)
        ax.set_xlabel(f"z{dims[0]}")
        ax.set_ylabel(f"z{dims[1]}")
    fig.tight_layout()
    return fig


def traversal(model: Any, dim: int, z0: Any = None, values: Any = None, cond: Any = None,
              wavelength: Any = None, offset: float = 0.0, ax: Any = None) -> Any:
    """How the decoded data change as one latent coordinate moves.

    Args:
        model: a fitted model with ``latent_dim`` and ``decode(z, cond)`` (a `VAE`).
        dim: the latent coordinate to move.
        z0: the starting latent (latent_dim,) (default zeros, the prior's mode).
        values: the values ``z[dim]`` takes (default −2…2 in 7 steps).
        cond: one condition row for a conditional model.
        wavelength: x axis (default the element index).
        offset: vertical offset between curves.
        ax: a matplotlib axes to draw into.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    k = model.latent_dim
    if not 0 <= dim < k:
        raise ValueError(f"`dim` must lie in [0, {k}); got {dim}")
    z0 = np.zeros(k) if z0 is None else as_numpy(z0, "z0")
    values = np.linspace(-2, 2, 7) if values is None else as_numpy(values, "values")
    z = np.repeat(z0[None], len(values), 0)
    z[:, dim] = values
    c = None if cond is None else np.repeat(np.atleast_2d(as_numpy(cond, "cond")), len(z), 0)
    x = model.decode(z, c)
    grid = np.arange(x.shape[1]) if wavelength is None else as_numpy(wavelength, "wavelength")
    if ax is None:
        ax = plt.figure(figsize=(7, 4)).subplots()
    colors = plt.get_cmap("coolwarm")(np.linspace(0, 1, len(values)))
    for i, (row, v) in enumerate(zip(x, values, strict=True)):
        ax.plot(grid, row + i * offset, color=colors[i], lw=0.8, label=f"z{dim} = {v:+.1f}")
    ax.set_xlabel("wavelength (Å)" if wavelength is not None else "element")
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylabel("decoded value")
    ax.legend(fontsize=7, ncol=2)
    return ax
