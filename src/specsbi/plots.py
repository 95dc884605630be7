"""Figures users take home: corner plots, spectra with predictive bands, SBC and coverage."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._checks import as_numpy
from .diagnostics import CoverageResult, SBCResult, predictive_flux
from .posterior import Posterior

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LABELS", "corner", "coverage", "decimals", "label", "save", "sbc", "spectrum"]

#: Axis labels with units for the parameters specsbi knows.
LABELS = {
    "log_mstar": r"$\log_{10}(M_\star / M_\odot)$",
    "log_mformed": r"$\log_{10}(M_\mathrm{formed} / M_\odot)$",
    "redshift": r"$z$",
    "age": r"age [Gyr]",
    "age_frac": r"age / $t_\mathrm{universe}(z)$",
    "log_tau": r"$\log_{10}(\tau / \mathrm{Gyr})$",
    "metallicity": r"$Z / Z_\odot$",
    "av": r"$A_V$ [mag]",
    "veldisp": r"$\sigma_v$ [km/s]",
    "log_u": r"$\log_{10} U$",
    "snr": "S/N",
}
_COLORS = ("#1f4e9c", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#555555")


def label(name: str) -> str:
    """The axis label of a parameter, with units (the name itself if unknown)."""
    return LABELS.get(name, name)


def save(fig: Figure, path: Any, dpi: int = 110) -> Any:
    """Save a figure (format from the suffix), close it to free its memory, return the path."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _draws(post: Posterior | Any, n: int) -> tuple[np.ndarray, list[str] | None]:
    """(n, d) draws of one galaxy's posterior (a Posterior or an array) and its names."""
    if isinstance(post, Posterior):
        if not post.single and len(post) != 1:
            raise ValueError(
                f"corner takes the posterior of one galaxy; this one holds {len(post)}. "
                "Use model.posterior(obs[17]), or pass post.sample(n)[17] as an array")
        if post._samples is not None:  # MCMC draws: all of them, up to n
            n = min(n, post._samples.shape[1])
        s = np.asarray(post.sample(n), dtype=np.float64)
        return (s if post.single else s[0]), list(post.names)
    s = as_numpy(post, "samples")
    if s.ndim != 2:
        raise ValueError(f"samples must have shape (n, d) for one galaxy; got {s.shape}")
    return s, None


def _ranges(columns: list[np.ndarray], truth: np.ndarray | None,
            names: list[str]) -> list[tuple[float, float]]:
    """Shared axis ranges: the union of each posterior's 0.1–99.9 % range, and the truth."""
    out = []
    for j, name in enumerate(names):
        lo = min(np.percentile(c[:, j], 0.1) for c in columns)
        hi = max(np.percentile(c[:, j], 99.9) for c in columns)
        if truth is not None and np.isfinite(truth[j]):
            lo, hi = min(lo, truth[j]), max(hi, truth[j])
        if not hi > lo:
            raise ValueError(
                f"parameter {name!r} has no dynamic range (every sample is {lo:g}), so "
                "corner cannot bin it. Please provide a `range` argument, e.g. "
                f"range=[... ({lo:g} - 0.1, {lo:g} + 0.1) ...], one (low, high) per parameter")
        pad = 0.05 * (hi - lo)
        out.append((float(lo - pad), float(hi + pad)))
    return out


def decimals(width: float) -> int:
    """Decimal places that show two significant digits of an uncertainty ``width``."""
    return max(0, 1 - int(math.floor(math.log10(width)))) if width > 0 else 3


def _title(x: np.ndarray, name: str) -> str:
    """``label = median +hi −lo`` with as many digits as the 68 % width needs."""
    p16, p50, p84 = np.percentile(x, [16, 50, 84])
    digits = decimals(min(p50 - p16, p84 - p50))
    return (f"{label(name)} = ${p50:.{digits}f}^{{+{p84 - p50:.{digits}f}}}"
            f"_{{-{p50 - p16:.{digits}f}}}$")


def corner(posteriors: Posterior | Any | Sequence[Posterior | Any], *,
           names: Sequence[str] | None = None, labels: Sequence[str] | Mapping[str, str] |
           None = None, truth: Mapping[str, float] | Sequence[float] | None = None,
           legend: Sequence[str] | None = None,
           quantiles: Sequence[float] | None = (0.16, 0.5, 0.84),
           range: Sequence[tuple[float, float]] | None = None,  # noqa: A002 (corner's name)
           n_samples: int = 5000, colors: Sequence[str] | None = None, fig: Figure | None = None,
           **corner_kwargs: Any) -> Figure:
    """A corner plot of one galaxy's posterior, or several overlaid with a legend.

    Built on corner.py. Several posteriors (e.g. NPE, NLE + MCMC, emulator + MCMC)
    share one set of axes; their parameters are matched by name, so a posterior
    over more parameters can be overlaid on one over fewer.

    Args:
        posteriors: a single-galaxy :class:`~specsbi.posterior.Posterior`, an (n, d)
            array of draws, or a list of them.
        names: parameters to show (default: those of the first posterior); needed
            for arrays, whose columns must then follow this order.
        labels: axis labels, a list or name → label (default: with units, see
            :data:`LABELS`).
        truth: the true values, name → value (e.g. ``obs[17].params``) or a sequence.
        legend: one name per posterior (default "posterior 1", ... when several).
        quantiles: quantile lines on the 1-D histograms (None: none).
        range: (low, high) per parameter (default: the union of all posteriors).
        n_samples: draws taken from each Posterior.
        colors: one colour per posterior.
        fig: a figure to draw into (corner's ``fig=``), e.g. to overlay later.
        **corner_kwargs: passed to ``corner.corner`` (bins, smooth, levels, ...).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: a batch posterior, mismatched names, or a parameter without
            dynamic range (pass ``range=``).

    Example:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal([10.5, 0.1], [0.05, 1e-4], (2000, 2))
        >>> fig = corner(draws, names=["log_mstar", "redshift"], truth=[10.5, 0.1])
        >>> len(fig.axes)
        4
    """
    import corner as corner_py
    from matplotlib.lines import Line2D

    if isinstance(posteriors, (Posterior, np.ndarray)) or hasattr(posteriors, "detach"):
        posteriors = [posteriors]
    posteriors = list(posteriors)
    if not posteriors:
        raise ValueError("corner needs at least one posterior")
    drawn = [_draws(p, n_samples) for p in posteriors]
    names = list(names) if names is not None else drawn[0][1]
    if names is None:
        raise ValueError("pass names=[...] (one per column) when plotting arrays of draws")
    columns = []
    for i, (s, own) in enumerate(drawn):
        if own is None:
            if s.shape[1] != len(names):
                raise ValueError(f"posterior {i + 1} has {s.shape[1]} columns but names has "
                                 f"{len(names)}: {names}")
            columns.append(s)
            continue
        missing = [k for k in names if k not in own]
        if missing:
            raise ValueError(f"posterior {i + 1} is over {own}; it lacks {missing} to overlay")
        columns.append(s[:, [own.index(k) for k in names]])
    for i, s in enumerate(columns):
        if not np.isfinite(s).all():
            raise ValueError(f"posterior {i + 1} holds NaN or inf draws (specsbi infer writes "
                             "NaN for a galaxy it could not infer: see its /flags/ood)")
    t = None
    if truth is not None:
        if isinstance(truth, Mapping):
            t = np.array([float(truth.get(k, np.nan)) for k in names])
        else:
            t = as_numpy(truth, "truth").ravel()
            if len(t) != len(names):
                raise ValueError(f"truth has {len(t)} values for {len(names)} parameters")
    if labels is None:
        labels = [label(k) for k in names]
    elif isinstance(labels, Mapping):
        labels = [labels.get(k, label(k)) for k in names]
    if len(labels) != len(names):
        raise ValueError(f"labels has {len(labels)} entries for {len(names)} parameters")
    if range is None:
        range = _ranges(columns, t, names)  # noqa: A001
    elif len(range) != len(names):
        raise ValueError(f"range needs one (low, high) per parameter ({len(names)})")
    colors = list(colors) if colors is not None else list(_COLORS)
    if len(colors) < len(columns):
        raise ValueError(f"give at least {len(columns)} colors")
    if legend is None and len(columns) > 1:
        legend = [f"posterior {i + 1}" for i, _ in enumerate(columns)]
    if legend is not None and len(legend) != len(columns):
        raise ValueError(f"legend needs one name per posterior ({len(columns)})")
    single = len(columns) == 1
    kwargs = {"bins": 30, "smooth": 1.0, "plot_datapoints": False, "plot_density": single,
              "fill_contours": single, "levels": (0.393, 0.865), "max_n_ticks": 4,
              "label_kwargs": {"fontsize": 11}, "labelpad": 0.08, **corner_kwargs}
    for i, s in enumerate(columns):
        fig = corner_py.corner(
            s, fig=fig, range=range, labels=labels, color=colors[i], quantiles=quantiles,
            weights=np.full(len(s), 1.0 / len(s)), truths=t if i == 0 else None,
            truth_color="#222222", hist_kwargs={"density": False, "lw": 1.4},
            contour_kwargs={"linewidths": 1.2}, **kwargs)
    d = len(names)
    if single:
        diag = np.array(fig.axes).reshape(d, d).diagonal()
        for j, ax in enumerate(diag):
            ax.set_title(_title(columns[0][:, j], names[j]), fontsize=10)
    if legend is not None:
        handles = [Line2D([], [], color=colors[i], lw=2) for i, _ in enumerate(columns)]
        fig.legend(handles, list(legend), loc="upper right", frameon=False,
                   fontsize=11, bbox_to_anchor=(0.98, 0.98))
    return fig


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where ``mask`` is True."""
    m = np.concatenate([[False], mask, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(m))
    return list(zip(edges[::2], edges[1::2], strict=True))


def spectrum(spec: Any, predictive: Any = None, *, n_draws: int = 200,
             title: str | None = None, fig: Figure | None = None,
             ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """An observed spectrum with its errors and masks, a predictive band and residuals.

    Args:
        spec: a :class:`~specsbi.spectra.Spectrum` (e.g. ``obs[17]``).
        predictive: None; ``(emulator, posterior)`` with ``emulator.predict(θ) →
            (n, npix)`` and a posterior over the emulator's parameters (see
            :func:`specsbi.diagnostics.predictive_flux`); or predictive flux draws
            (n_draws, npix). Without one, a simulation's noiseless flux (if the
            spectrum has it) is drawn as the model instead.
        n_draws: posterior draws for the band.
        title: the figure title.
        fig: a figure to draw into; ax: one Axes (flux only) or two (flux, residuals).

    Returns:
        The Figure: flux ±1σ (grey), masked pixels shaded, the predictive median
        with its 16–84 % and 2.5–97.5 % bands, and residuals (obs − model) / σ.

    Example:
        >>> from specsbi import SpectraSet
        >>> wl = np.linspace(4000, 5000, 100)
        >>> s = SpectraSet(wl, np.ones((1, 100)), np.full((1, 100), 0.1))[0]
        >>> fig = spectrum(s, np.ones((50, 100)))
        >>> len(fig.axes)
        2
    """
    import matplotlib.pyplot as plt

    if not all(hasattr(spec, k) for k in ("wavelength", "flux", "err", "mask")) or \
            np.ndim(spec.flux) != 1:
        raise ValueError("spectrum takes one galaxy's Spectrum, e.g. obs[17]")
    wl, flux, err, mask = spec.wavelength, spec.flux, spec.err, spec.mask
    pred = None
    if isinstance(predictive, tuple):
        if len(predictive) != 2:
            raise ValueError("predictive takes (emulator, posterior) or flux draws")
        pred = predictive_flux(predictive[0], predictive[1], n_draws)
    elif predictive is not None:
        pred = as_numpy(predictive, "predictive", np.float64)
    if pred is not None and (pred.ndim != 2 or pred.shape[1] != len(wl)):
        raise ValueError(f"predictive flux must have shape (n_draws, {len(wl)}); "
                         f"got {pred.shape}")
    model = None
    if pred is not None:
        q = np.percentile(pred, [2.5, 16, 50, 84, 97.5], axis=0)
        model = q[2]
    elif getattr(spec, "flux_noiseless", None) is not None:
        model = np.asarray(spec.flux_noiseless, dtype=np.float64)
    if ax is not None:
        axes = [ax] if not isinstance(ax, Sequence) else list(ax)
        fig = axes[0].figure
    else:
        if fig is None:
            fig = plt.figure(figsize=(10, 5.5 if model is not None else 4))
        if model is not None:
            gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
            axes = [fig.add_subplot(gs[0])]
            axes.append(fig.add_subplot(gs[1], sharex=axes[0]))
        else:
            axes = [fig.add_subplot(1, 1, 1)]
    top = axes[0]
    good = ~mask
    shown = np.where(good, flux, np.nan)
    sig = np.where(good, err, np.nan)
    top.fill_between(wl, shown - sig, shown + sig, color="0.82", lw=0, step="mid",
                     label=r"observed $\pm 1\sigma$")
    top.plot(wl, shown, color="0.45", lw=0.4, drawstyle="steps-mid", label="observed")
    if pred is not None:
        top.fill_between(wl, q[0], q[4], color="#e8828f", lw=0, zorder=3,
                         label="predictive 2.5–97.5 %")
        top.fill_between(wl, q[1], q[3], color="#c0394b", lw=0, zorder=3,
                         label="predictive 16–84 %")
        top.plot(wl, model, color="#5e0f1b", lw=0.6, zorder=4, label="predictive median")
    elif model is not None:
        top.plot(wl, model, color="#1f4e9c", lw=0.8, zorder=4, label="noiseless simulation")
    for a in axes:
        for k, (i, j) in enumerate(_spans(mask)):
            a.axvspan(wl[i], wl[min(j, len(wl) - 1)], color="#e9a03b", alpha=0.25, lw=0,
                      label="masked" if a is top and k == 0 else None)
    lo, hi = np.nanpercentile(shown, [0.5, 99.5])
    if model is not None:  # keep the model's emission lines in view
        hi = max(hi, float(np.nanmax(q[4] if pred is not None else model)))
    top.set_ylim(min(0, lo) - 0.05 * (hi - lo), hi + 0.15 * (hi - lo))
    top.set_ylabel(r"$f_\lambda$ [$10^{-17}$ erg s$^{-1}$ cm$^{-2}$ Å$^{-1}$]")
    entries = len(top.get_legend_handles_labels()[1])
    top.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, frameon=False,
               ncol=entries, handlelength=1.5, columnspacing=1.0)
    if title:
        top.set_title(title, pad=22)
    if model is not None and len(axes) > 1:
        res = axes[1]
        r = (shown - model) / sig
        res.plot(wl, r, color="0.25", lw=0.4, drawstyle="steps-mid")
        for level, style in ((0, "-"), (-2, ":"), (2, ":")):
            res.axhline(level, color="#8c1c2c", lw=0.8, ls=style)
        lim = max(4.0, float(np.nanpercentile(np.abs(r), 99.5)) * 1.1)
        res.set_ylim(-lim, lim)
        res.set_ylabel(r"residual [$\sigma$]")
        res.set_xlabel("observed wavelength [Å]")
        top.tick_params(labelbottom=False)
    else:
        top.set_xlabel("observed wavelength [Å]")
    top.set_xlim(wl[0], wl[-1])
    return fig


def sbc(result: SBCResult, *, fig: Figure | None = None) -> Figure:
    """SBC rank histograms, one panel per parameter, with the 99 % band of uniform ranks
    and the χ² and KS p-values."""
    import matplotlib.pyplot as plt
    from scipy import stats

    d = len(result.names)
    if fig is None:
        fig = plt.figure(figsize=(3.6 * d, 3.0))
    axes = fig.subplots(1, d, squeeze=False)[0]
    bins = result.counts.shape[1]
    edges = np.floor(np.arange(bins + 1) * (result.n_samples + 1) / bins)
    p = result.expected / result.expected.sum()
    n = len(result.ranks)
    lo, hi = stats.binom.ppf([0.005, 0.995], n, p[:, None]).T  # (bins,) each
    for j, ax in enumerate(axes):
        ax.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post",
                        color="0.85", lw=0, label="99 % if uniform")
        ax.stairs(result.counts[j], edges, color="#1f4e9c", lw=1.5)
        ax.stairs(result.expected, edges, color="0.3", ls="--", lw=0.8)
        ax.set_xlim(0, result.n_samples + 1)
        ax.set_ylim(0, max(hi.max(), result.counts[j].max()) * 1.15)
        ax.set_xlabel(f"rank of true {label(result.names[j])}")
        ax.set_title(f"χ² p = {result.chi2_pvalue[j]:.2g}, KS p = {result.ks_pvalue[j]:.2g}",
                     fontsize=9)
    axes[0].set_ylabel(f"galaxies (of {len(result.ranks)})")
    axes[0].legend(fontsize=8, frameon=False, loc="lower center")
    fig.tight_layout()
    return fig


def coverage(results: CoverageResult | Sequence[CoverageResult], *,
             legend: Sequence[str] | None = None, tarp: bool = True,
             ax: Axes | None = None, fig: Figure | None = None) -> Figure:
    """Expected coverage against credibility level, the diagonal and its binomial band.

    One curve per parameter (central intervals) and the joint TARP curve, for
    each result given (``legend`` names them); the band is where a calibrated
    posterior's curve falls 95 % of the time at each level.
    """
    import matplotlib.pyplot as plt

    results = [results] if isinstance(results, CoverageResult) else list(results)
    if not results:
        raise ValueError("coverage needs at least one CoverageResult")
    if legend is not None and len(legend) != len(results):
        raise ValueError(f"legend needs one name per result ({len(results)})")
    own = ax is None and fig is None
    if ax is None:
        fig = fig or plt.figure(figsize=(4.8, 4.8 + 0.17 * len(results) * 4),
                                layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
    fig = ax.figure
    first = results[0]
    band = first.band()
    ax.fill_between(first.levels, first.levels - band, first.levels + band, color="0.8",
                    lw=0, label=f"95 % band, {first.n} galaxies")
    ax.plot([0, 1], [0, 1], color="0.3", lw=0.8, ls="--")
    styles = ("-", "--", ":", "-.")
    for i, res in enumerate(results):
        prefix = f"{legend[i]}: " if legend is not None else ""
        dev = res.max_deviation
        for j, name in enumerate(res.names):
            ax.plot(res.levels, res.central[:, j], color=_COLORS[j % len(_COLORS)],
                    ls=styles[i % 4], lw=1.5,
                    label=f"{prefix}{label(name)} (max dev {dev[name]:.3f})")
        if tarp:
            ax.plot(res.levels, res.tarp, color="0.2", ls=styles[i % 4], lw=1.2,
                    label=f"{prefix}joint, TARP (max dev {dev['tarp']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    if own:  # below the axes, where it hides no curve
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7.5,
                   frameon=False)
    else:
        ax.legend(fontsize=7.5, frameon=False, loc="upper left")
    return fig
