"""Figures of the generator comparison: generated versus real spectra, and the VAE's latents."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .latent import latent_scatter, traversal

__all__ = ["generated_vs_real", "latent_figure"]


def generated_vs_real(wavelength: np.ndarray, real: np.ndarray,
                      samples: Mapping[str, np.ndarray], path: str | Path, seed: int = 0,
                      per_panel: int = 3) -> Path:
    """One panel per model with a few generated spectra (offset) beside the real ones;
    conditional models (same rows as ``real``) are drawn over the real spectrum of the
    same θ in grey."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = {"real (held-out simulations)": real, **samples}
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.55 * len(panels)), sharex=True)
    rows = np.random.default_rng(seed).choice(len(real), per_panel, replace=False)
    for ax, (name, x) in zip(axes, panels.items(), strict=True):
        paired = name.startswith("Diffusion")
        for j, i in enumerate(rows):
            if paired:
                ax.plot(wavelength, real[i] + 2 * j, color="0.6", lw=0.6)
            ax.plot(wavelength, x[i] + 2 * j, lw=0.5, color=f"C{j}")
        ax.set_ylim(0, 2 * per_panel + 1)
        ax.text(0.01, 0.85, name + (" (grey: real at the same θ)" if paired else ""),
                transform=ax.transAxes, fontsize=8)
        ax.set_yticks([])
    axes[-1].set_xlabel("observed wavelength (Å)")
    fig.supylabel("flux / median (offset)", fontsize=9)
    fig.tight_layout(h_pad=0.2)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return Path(path)


def latent_figure(vae: Any, latents: np.ndarray, params: Mapping[str, np.ndarray],
                  table: Mapping[str, Any], wavelength: np.ndarray, path: str | Path,
                  cond: Any = None, xlabel: str = "rest-frame wavelength (Å)") -> Path:
    """The VAE latents coloured by redshift and mass (``path``) and a traversal of the
    latent that tracks redshift best (``traversal_vae.png`` beside it), decoded at the
    condition ``cond`` on the ``wavelength`` grid of the model's data."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = latent_scatter(latents, params)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    dim = table["redshift"]["best_dim"]
    ax = traversal(vae, dim, z0=latents.mean(0), wavelength=wavelength, offset=1.0, cond=cond,
                   values=np.quantile(latents[:, dim], [0.05, 0.25, 0.5, 0.75, 0.95]))
    ax.set_title(f"moving z{dim} (the latent most correlated with redshift) from its 5th to "
                 "95th percentile", fontsize=9)
    ax.set_ylim(0, 9)
    ax.set_xlabel(xlabel)
    trav = Path(path).with_name("traversal_vae.png")
    ax.figure.tight_layout()
    ax.figure.savefig(trav, dpi=72)
    plt.close(ax.figure)
    return Path(path)
