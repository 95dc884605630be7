"""`Emulator`: the interface every emulator shares, θ → observed-frame spectrum.

An emulator is a torch module in three parts: the shape features (the nuisance
parameters, with the age in Gyr from ``age_frac`` and the redshift), a *decoder*
that a subclass supplies — any module mapping standardised features (B, f) to the
ln rest-frame luminosity per M☉ formed (B, n_out) — and the shared physics layer
(:class:`~specsbi.emulators.physics.RestFrame`) that applies the velocity
dispersion (for bagpipes, whose broadening it reproduces), redshift, distance and
mass exactly. A small network of the same features gives log10(surviving / formed
mass), so every θ also yields ``log_mstar``. The fit, the emulator-error estimate,
the model file and the simulator adapter live here; a subclass writes
``_build_decoder`` and ``_fit_decoder`` (and ``_hyper`` for its card).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import as_numpy
from ..priors import Prior, default_prior
from ..serialization import read_model, write_model
from ..spectra import SpectraSet
from ..spectrum_likelihood import _Derived
from ..training import History, TrainConfig, split
from .physics import (
    RestFrame,
    bagpipes_rest_wavelength,
    log_rest_wavelength,
    trim_rest_wavelength,
)
from .sfh import N_BINS, bin_fractions

__all__ = ["EMULATORS", "Emulator", "masked_mse"]

log = logging.getLogger(__name__)

#: class name → class, for `specsbi.load`; subclasses register themselves.
EMULATORS: dict[str, type[Emulator]] = {}
_OUTSIDE = ("redshift", "log_mformed")  # what the physics layer applies, not the decoder
_SOFT_CLIP = 30.0  # age/τ beyond ~30: e^(−age/τ) no longer matters
N_ERROR_MODES = 64  # correlated emulator-error modes kept from the validation residuals


def masked_mse(pred: Tensor, target: Tensor, covered: Tensor) -> Tensor:
    """Per-row mean squared error over the covered pixels: (B, n) ×3 → (B,)."""
    w = covered.to(pred.dtype)
    return ((pred - target) ** 2 * w).sum(1) / w.sum(1).clamp(min=1)


class Emulator(nn.Module):
    """θ (the prior's parameter order) → noiseless observed-frame flux, differentiably.

    Args:
        rest_grid: the rest-frame pixels the decoder predicts: "auto" (bagpipes'
            own grid for bagpipes training sets, which makes the redshift exact;
            otherwise log-uniform at half the observed step), or an array in Å.
        knots: name → interior grid values where the simulator interpolates
            linearly (e.g. bagpipes' metallicity and log_u grids); each adds a hinge
            feature max(0, x − knot) so the decoder can bend there. "auto": bagpipes'
            grids for bagpipes training sets, none otherwise.
        broadening: the velocity dispersion applied by the physics layer rather than
            learned: (km/s per rest pixel, largest veldisp), None, or "auto" (bagpipes'
            Gaussian kernel, 3e5 / R_spec / 2 km/s per pixel, for bagpipes training sets
            with a ``veldisp`` parameter; None otherwise). The decoder then predicts the
            unbroadened spectrum on a grid ``margin`` pixels wider at each end.
        sfh_bins: also give the decoder the mass fraction of the history in each of
            bagpipes' SSP age bins, and its log10 (:mod:`~specsbi.emulators.sfh`): a
            narrow burst's spectrum steps as the burst crosses a bin edge, which those
            features carry and a smooth function of (age, τ) cannot. "auto": for
            training sets of bagpipes' delayed-τ histories.
        train_config: the shared training loop's settings for the decoder.
        device, seed, progress: as everywhere in specsbi.

    Calling the module on a torch (B, d) θ returns (B, npix) float32 flux with
    gradients (pass θ as float64 to keep the redshift's precision);
    :meth:`predict` is the numpy path with checks.
    """

    def __init__(self, rest_grid: Any = "auto", knots: Any = "auto", broadening: Any = "auto",
                 sfh_bins: Any = "auto", train_config: TrainConfig | None = None,
                 device: str = "cpu", seed: int = 0, progress: bool = True) -> None:
        super().__init__()
        if not (sfh_bins == "auto" or isinstance(sfh_bins, bool)):
            raise ValueError(f"`sfh_bins` must be 'auto', True or False; got {sfh_bins!r}")
        self.sfh_bins = sfh_bins
        if broadening != "auto" and not (isinstance(broadening, (list, tuple))
                                         and len(broadening) == 2) and broadening is not None:
            raise ValueError("`broadening` must be 'auto', None or (kms_per_pixel, max_veldisp)")
        self.broadening = None if broadening is None else (
            broadening if broadening == "auto" else tuple(float(b) for b in broadening))
        if not (isinstance(rest_grid, str) and rest_grid == "auto"):
            rest_grid = as_numpy(rest_grid, "rest_grid")
        if not (isinstance(knots, str) and knots == "auto") and not isinstance(knots, dict):
            raise ValueError("`knots` must be 'auto' or a dict name → list of grid values")
        self.rest_grid, self.knots, self.bagpipes = rest_grid, knots, False
        self.train_config = train_config or TrainConfig(batch_size=256, lr=1e-3, patience=20)
        self.device, self.seed, self.progress = torch.device(device), int(seed), progress
        self.prior: Prior | None = None
        self.history: History | None = None
        self.metrics: dict[str, Any] = {}
        self.data_info: dict[str, Any] = {}

    @property
    def param_names(self) -> list[str]:
        """The columns of θ that :meth:`predict` takes (the prior's free parameters)."""
        if self.prior is None:
            raise ValueError("the emulator is not fitted")
        return list(self.prior.names)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EMULATORS[cls.__name__] = cls

    # ------------------------------------------------------ what subclasses write
    def _build_decoder(self, n_features: int, n_out: int) -> nn.Module:
        """A module: standardised features (B, n_features) → ln L_λ per M☉ (B, n_out).

        The inputs are ``self.decoder_names``; ``n_out`` is ``physics.n_rest`` plus
        2 ``physics.margin`` (the unbroadened spectrum) when the layer broadens.
        """
        raise NotImplementedError

    def _fit_decoder(self, features: Tensor, log_rest: Tensor, covered: Tensor,
                     veldisp: Tensor) -> History:
        """Fit ``self.decoder`` (already built) to the rest-frame spectra; return its History.

        ``features`` (n, f) are the decoder's inputs; the targets are ``log_rest`` (n,
        n_rest) on the ``covered`` pixels, and :meth:`observable` maps the decoder's
        output to them (it applies ``veldisp`` (n,) when the layer broadens).
        """
        raise NotImplementedError

    def observable(self, out: Tensor, veldisp: Tensor) -> Tensor:
        """Decoder output → ln rest spectrum on the rest grid (broadened if the layer does)."""
        if self.physics.margin == 0:
            return out
        padded = self.physics.pad(out, self._covered())
        return torch.log(self.physics.broaden(torch.exp(padded), veldisp))

    def _covered(self) -> tuple[int, int]:
        """The decoder's pixels some training spectrum covered: (first, last). Those
        beyond take the outermost ones' values (``RestFrame.pad``): the decoder is never
        trained there, and the broadening kernel would leak them in."""
        if getattr(self, "_span", None) is None:
            self._set_span()
        return self._span

    def _set_span(self) -> None:
        """Read the covered span once, as python ints: no tensor read (a graph break
        under torch.compile) per call."""
        self._span = tuple(int(i) + self.physics.margin for i in self.covered_span)

    def _hyper(self) -> dict[str, Any]:
        """The subclass's constructor keyword arguments, for the model card."""
        return {}

    # ------------------------------------------------------------------ building
    def _build(self, prior: Prior, wavelength: np.ndarray, rest: np.ndarray,
               knots: dict[str, list[float]], feature_names: list[str] | None = None) -> None:
        if "redshift" not in prior.all_names or "log_mformed" not in prior.all_names:
            raise ValueError("an emulator needs `redshift` and `log_mformed` among the prior's "
                             f"parameters (free or fixed); got {prior.all_names}")
        self.prior, self.knots = prior, {k: [float(v) for v in vs] for k, vs in knots.items()}
        broad = self.broadening if isinstance(self.broadening, tuple) else None
        if broad is not None and "veldisp" not in prior.all_names:
            raise ValueError("`broadening` needs a `veldisp` parameter in the prior")
        self.physics = RestFrame(wavelength, rest, _z_range(prior),
                                 *(broad if broad else (None, 0.0)))
        if feature_names is None:
            shape = [n for n in prior.all_names if n not in _OUTSIDE]
            feature_names = [("log_age" if n == "age_frac" else n) for n in shape]
            if {"age_frac", "log_tau"} <= set(shape):  # the delayed-τ SFH's e^(−age/τ)
                feature_names += ["age/tau", "log_mass_weighted_age"]
                if self.sfh_bins is True:  # bagpipes' SSP age bins: what its spectrum sums
                    feature_names += [f"{kind}sfh_bin_{i}" for kind in ("", "log_")
                                      for i in range(N_BINS)]
            elif self.sfh_bins is True:
                raise ValueError("`sfh_bins` needs `age_frac` and `log_tau` among the free or "
                                 f"fixed parameters; got {shape}")
            feature_names += [f"{n}>{k:g}" for n, ks in self.knots.items() for k in ks]
        self.feature_names = list(feature_names)
        f = len(self.feature_names)
        # the decoder sees the shape features except what the physics layer applies
        self._decoder_idx = [j for j, n in enumerate(self.feature_names)
                             if not (broad and n == "veldisp")]
        self.decoder_names = [self.feature_names[j] for j in self._decoder_idx]
        self.register_buffer("feature_mean", torch.zeros(f))
        self.register_buffer("feature_std", torch.ones(f))
        self.register_buffer("rest_error", torch.zeros(self.physics.n_rest))
        self.register_buffer("error_modes", torch.zeros(0, self.physics.n_rest))
        self.register_buffer("covered_span", torch.tensor([0, self.physics.n_rest - 1]))
        n_out = self.physics.n_rest + 2 * self.physics.margin
        self.decoder = self._build_decoder(len(self._decoder_idx), n_out)
        self.survival = _Derived(f, 1)

    def _columns(self, theta: Tensor) -> dict[str, Tensor]:
        cols = {n: theta[:, j] for j, n in enumerate(self.prior.names)}
        for n, v in self.prior.fixed.items():
            cols[n] = theta.new_full((len(theta),), v)
        return cols

    def _raw_features(self, cols: dict[str, Tensor]) -> Tensor:
        """The decoder's inputs by name: parameters, log10 age (Gyr), age/τ, hinges x>k."""
        if "age_frac" in cols:
            age = self.physics.age(cols["redshift"], cols["age_frac"]).to(cols["age_frac"])
        out, bins = [], None
        for name in self.feature_names:
            if "sfh_bin_" in name:
                if bins is None:  # mass fraction per SSP age bin, and its log10 (floor 1e-8)
                    frac = bin_fractions(age, 10 ** cols["log_tau"]).to(age.dtype)
                    bins = {"sfh_bin_": frac, "log_sfh_bin_": torch.log10(frac + 1e-8)}
                kind, i = name.rsplit("_", 1)
                out.append(bins[kind + "_"][:, int(i)])
            elif name == "log_age":
                out.append(torch.log10(age))
            elif name == "age/tau":
                # young stars (UV, lines) scale as e^(−age/τ): linear in age/τ until negligible
                out.append(_SOFT_CLIP * torch.tanh(age / 10 ** cols["log_tau"] / _SOFT_CLIP))
            elif name == "log_mass_weighted_age":
                out.append(torch.log10(_mass_weighted_age(age, 10 ** cols["log_tau"])))
            elif ">" in name:
                param, knot = name.split(">")
                out.append(torch.relu(cols[param] - float(knot)))
            else:
                out.append(cols[name])
        return torch.stack(out, 1).float()

    def _require(self) -> None:
        if self.prior is None:
            raise ValueError(f"this {type(self).__name__} is not fitted; call .fit(train_set) "
                             "or load a saved one with ss.load(path)")

    # ------------------------------------------------------------------ forward
    def features(self, theta: Tensor) -> Tensor:
        """Standardised shape features (B, f) of θ (B, d)."""
        x = self._raw_features(self._columns(theta))
        return (x - self.feature_mean) / self.feature_std

    def _veldisp(self, cols: dict[str, Tensor]) -> Tensor | None:
        return cols["veldisp"] if self.physics.margin else None

    def log_rest(self, theta: Tensor) -> Tensor:
        """ln rest-frame L_λ per M☉ formed on the rest grid (B, n_rest), in L☉/Å."""
        cols = self._columns(theta)
        x = (self._raw_features(cols) - self.feature_mean) / self.feature_std
        return self.observable(self.decoder(x[:, self._decoder_idx]), self._veldisp(cols))

    def forward(self, theta: Tensor) -> Tensor:
        """θ (B, d) in the prior's order → observed flux (B, npix), differentiable.

        θ may be float32 or float64 (the redshift then keeps float64 precision); the
        flux is float32.
        """
        cols = self._columns(theta)
        x = (self._raw_features(cols) - self.feature_mean) / self.feature_std
        out = self.decoder(x[:, self._decoder_idx])
        span = self._covered() if self.physics.margin else None
        return self.physics(out, cols["redshift"], cols["log_mformed"], self._veldisp(cols),
                            span=span)

    def log_mstar(self, theta: Tensor) -> Tensor:
        """log10 surviving stellar mass (B,): log_mformed + the learned log10(surviving/formed)."""
        cols = self._columns(theta)
        return cols["log_mformed"] + self.survival(self._raw_features(cols))[:, 0].to(theta)

    def fractional_error(self, redshift: Tensor) -> Tensor:
        """The emulator's 1σ fractional error per observed pixel (B, npix) at ``redshift``."""
        var = self.rest_error.double()[None].expand(len(redshift), -1) ** 2
        return self.physics.shift(var, redshift).clamp(min=0).sqrt()

    def error_model(self, redshift: float) -> tuple[Tensor, Tensor]:
        """The emulator's fractional error at ``redshift`` as a diagonal plus low-rank model.

        The validation residuals δ ln f share a few patterns along the spectrum (an
        error in a continuum slope or a break moves every pixel of it together), so
        Cov(δ ln f) ≈ diag(s²) + Σ_k e_k e_kᵀ over the leading modes e_k; s² is what
        the modes leave of each pixel's variance. Both are moved to the observed pixels.

        Returns:
            s (npix,) and the modes (k, npix), float64; k is 0 for an emulator saved
            before the modes were kept (then s is :meth:`fractional_error`).
        """
        rest_var, modes = self._rest_error_parts()
        rows = torch.cat([rest_var[None], modes])
        z = torch.full((len(rows),), float(redshift), dtype=torch.float64, device=rows.device)
        obs = self.physics.shift(rows, z)
        return obs[0].clamp(min=0).sqrt(), obs[1:]

    def _rest_error_parts(self) -> tuple[Tensor, Tensor]:
        """The rest-frame error model, float64: what the modes leave of each pixel's
        variance (n_rest,) and the modes (k, n_rest)."""
        modes = self.error_modes.double()
        return (self.rest_error.double() ** 2 - (modes**2).sum(0)).clamp(min=0), modes

    @torch.no_grad()
    def draw_error(self, redshift: Tensor, gen: torch.Generator) -> Tensor:
        """Random emulator errors δ ln f (B, npix) from :meth:`error_model`'s covariance:
        rest-frame Σ_k a_k e_k + s ε (a, ε standard normal), moved to each ``redshift``.

        ``emulator(θ) · exp(δ)`` is then a spectrum as far from the emulator's as the
        simulator's typically is; :class:`~specsbi.emulators.EmulatorSimulator` draws
        them for emulated training sets that carry the emulator's error."""
        rest_var, modes = (t.cpu() for t in self._rest_error_parts())
        n = len(redshift)
        a = torch.randn(n, len(modes), generator=gen, dtype=torch.float64)
        eps = torch.randn(n, len(rest_var), generator=gen, dtype=torch.float64)
        rest = a @ modes + rest_var.sqrt() * eps
        return self.physics.shift(rest.to(self.device), redshift.to(self.device, torch.float64))

    # -------------------------------------------------------------- numpy path
    def _theta(self, theta: Any) -> Tensor:
        self._require()
        t = self.prior.check(theta)
        if "redshift" in self.prior.names:
            self.physics.check_redshift(t[:, self.prior.names.index("redshift")])
        return torch.as_tensor(t, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def predict(self, theta: Any, batch_size: int = 2048) -> np.ndarray:
        """Noiseless observed flux (n, npix) for θ (n, d) or (d,) in the prior's order.

        ``emu.compile()`` (torch's ``Module.compile``) first makes batched prediction
        about 5× faster on a CPU (16 against 85 µs a spectrum, one thread), after a
        one-off compilation of 10-40 s.

        Raises:
            ValueError: θ of the wrong shape, NaN, or outside the prior.
        """
        t = self._theta(theta)
        out = np.concatenate([self(t[i : i + batch_size]).cpu().numpy()
                              for i in range(0, len(t), batch_size)])
        return out[0] if np.ndim(theta) == 1 else out

    @torch.no_grad()
    def predict_derived(self, theta: Any) -> dict[str, np.ndarray]:
        """``log_mstar`` and ``age`` (Gyr) for θ (n, d): what bagpipes returns besides flux."""
        t = self._theta(theta)
        cols = self._columns(t)
        age = self.physics.age(cols["redshift"], cols["age_frac"]) if "age_frac" in cols else None
        out = {"log_mstar": self.log_mstar(t).double().cpu().numpy()}
        if age is not None:
            out["age"] = age.cpu().numpy()
        return out

    # --------------------------------------------------------------------- fit
    def fit(self, train_set: SpectraSet, max_spectra: int | None = None,
            checkpoint: str | os.PathLike | None = None) -> Emulator:
        """Fit to a simulated SpectraSet: noiseless flux, every prior parameter, ``log_mstar``.

        Args:
            train_set: e.g. ``ss.SpectraSet.read("train.h5")``; its ``prior`` attribute
                (else the default prior) fixes θ's order and range.
            max_spectra: use only the first ``max_spectra`` rows.
            checkpoint: file the decoder's training saves after every epoch and resumes
                from (emulators whose decoder trains in one loop; others refuse it).
        """
        t0 = time.perf_counter()
        self._checkpoint = checkpoint
        _check_set(train_set, "fit")
        data = train_set if max_spectra is None else train_set[:max_spectra]
        if len(data) < 50:
            raise ValueError(f"need at least 50 training spectra; got {len(data)}")
        prior_doc = data.attrs.get("prior")
        prior = Prior.from_json(prior_doc) if prior_doc else default_prior()
        _check_params(data, prior)
        sim = data.attrs.get("simulator") or {}
        bagpipes = isinstance(sim, dict) and sim.get("class") == "BagpipesSimulator"
        self.bagpipes = bagpipes
        if self.sfh_bins == "auto":  # the binning of bagpipes' delayed-τ histories
            self.sfh_bins = bagpipes and sim.get("sfh", "delayed") == "delayed"
        wl = data.wavelength
        z_range = _z_range(prior)
        rest = trim_rest_wavelength(self._rest_grid(wl, z_range, sim if bagpipes else None),
                                    wl, z_range)
        knots = self.knots if isinstance(self.knots, dict) else (
            _bagpipes_knots(prior) if bagpipes else {})
        if self.broadening == "auto":
            v = prior.ranges.get("veldisp", (prior.fixed.get("veldisp"),) * 2)[1]
            self.broadening = ((3e5 / float(sim.get("R_spec", 1000.0)) / 2, float(v))
                               if bagpipes and v is not None else None)
        torch.manual_seed(self.seed)
        self._build(prior, wl, rest, knots)
        raw, log_rest, covered, veldisp, surv = self._targets(data)
        seen = np.nonzero(covered.any(0).numpy())[0]
        self.covered_span.copy_(torch.tensor([seen[0], seen[-1]]))
        self._set_span()
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(torch.where(raw.std(0) > 1e-6, raw.std(0), 1.0))
        self.survival.fit(raw, surv, self.seed, self.progress)
        self.to(self.device)
        x = ((raw - self.feature_mean.cpu()) / self.feature_std.cpu()).to(self.device)
        covered_t, veldisp = covered.to(self.device), veldisp.to(self.device)
        x_dec = x[:, self._decoder_idx]
        self.history = self._fit_decoder(x_dec, log_rest.to(self.device), covered_t, veldisp)
        val, _ = split(len(x), self.train_config, self.seed)
        val = val[:5000]
        self._validate(x_dec[val], log_rest[val], covered_t[val], veldisp[val], raw[val],
                       surv[val])
        self.data_info = {"n": len(data), "attrs": {k: data.attrs.get(k) for k in
                                                     ("simulator", "seed", "prior", "noise")},
                          "fit_seconds": time.perf_counter() - t0}
        self.eval()
        return self

    def _rest_grid(self, wl: np.ndarray, z_range: tuple[float, float], sim: dict | None
                   ) -> np.ndarray:
        if not isinstance(self.rest_grid, str):
            return self.rest_grid
        if sim is not None:
            return bagpipes_rest_wavelength(wl, float(sim.get("R_spec", 1000.0)))
        step = float(np.log10(wl[-1] / wl[0]) / (len(wl) - 1))
        return log_rest_wavelength(wl, z_range, step / 2)

    def _targets(self, data: SpectraSet) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """What the networks learn from simulations: raw shape features (n, f), ln rest
        spectra (n, n_rest) and the pixels of them the observed grid covered (bool),
        veldisp (n,) and log10(surviving / formed mass) (n, 1)."""
        theta = self.prior.check(np.stack([data.params[n] for n in self.prior.names], 1))
        named = self.prior.to_dict(theta)
        z, log_m = named["redshift"], named["log_mformed"]
        lum, covered = self.physics.to_rest(data.flux_noiseless, z, log_m)
        covered &= lum > 0
        log_rest = torch.as_tensor(np.log(np.where(covered, lum, 1.0)), dtype=torch.float32)
        del lum
        t = torch.as_tensor(theta, dtype=torch.float32)
        cols = self._columns(t)
        veldisp = cols["veldisp"] if "veldisp" in cols else torch.zeros(len(t))
        surv = torch.as_tensor(data.params["log_mstar"] - log_m, dtype=torch.float32)[:, None]
        return self._raw_features(cols), log_rest, torch.as_tensor(covered), veldisp, surv

    @torch.no_grad()
    def validate(self, held_out: SpectraSet) -> dict[str, Any]:
        """Measure the emulator's error again, on simulations it was not trained on.

        Replaces the per-pixel RMS error and the correlated error modes (what
        :func:`specsbi.mcmc.sample` adds to the likelihood) and ``metrics`` with those of
        ``held_out``, e.g. an independent simulated set. :meth:`fit` does the same on its
        own validation rows.

        Returns:
            The new ``metrics``.
        """
        self._require()
        _check_set(held_out, "validate")
        _check_params(held_out, self.prior)
        raw, log_rest, covered, veldisp, surv = self._targets(held_out)
        x = ((raw.to(self.device) - self.feature_mean) / self.feature_std)[:, self._decoder_idx]
        before = dict(self.metrics)  # the training history's figures stay
        self._validate(x, log_rest, covered.to(self.device), veldisp.to(self.device), raw, surv)
        self.metrics = {**before, **self.metrics,
                        "error_measured_on": {"n": len(held_out),
                                              "seed": held_out.attrs.get("seed")}}
        return self.metrics

    @torch.no_grad()
    def _validate(self, x: Tensor, log_rest: Tensor, covered: Tensor, veldisp: Tensor,
                  raw: Tensor, surv: Tensor) -> None:
        """The emulator error on held-out rows: per-pixel RMS, modes, percentiles."""
        self.eval()
        pred = self.observable(self.decoder(x), veldisp).cpu()
        cov = covered.cpu()
        res = (pred - log_rest) * cov
        err = res.abs()
        n = cov.sum(0).clamp(min=1)
        rms = ((res**2).sum(0) / n).sqrt()
        rms = torch.where(cov.sum(0) > 0, rms, rms[cov.sum(0) > 0].max())
        self.rest_error.copy_(rms.to(self.rest_error))
        # modes of the second moments over all rows: a pixel few rows cover (the edges of
        # the rest grid) joins them in proportion, the rest of its variance stays diagonal
        self.error_modes = _leading_modes(res / len(res) ** 0.5, N_ERROR_MODES).to(self.rest_error)
        frac = torch.expm1(err[cov]).abs()  # |Δf|/f of the rest-frame spectrum
        pick = torch.randperm(len(frac), generator=torch.Generator().manual_seed(0))
        q = torch.quantile(frac[pick[:2_000_000]].double(),
                           torch.tensor([0.5, 0.68, 0.95, 0.99], dtype=torch.float64))
        d_surv = (self.survival(raw.to(self.device)).cpu() - surv).abs()
        self.metrics = {
            "validation_rows": len(x),
            "rest_frac_error_p50_p68_p95_p99": [float(v) for v in q],
            "log_mstar_rms_dex": float(d_surv.pow(2).mean().sqrt()),
        }
        log.info("emulator validation: %s", self.metrics)

    # ----------------------------------------------------------------- adapter
    def as_simulator(self, model: str | None = None, error: bool = False) -> Any:
        """This emulator as a :class:`~specsbi.simulators.Simulator` for ``ss.simulate``
        (with ``error``, each spectrum carries a draw of the emulator's own error)."""
        from .simulator import EmulatorSimulator

        return EmulatorSimulator(self, model, error)

    # --------------------------------------------------------------- save/load
    def card(self) -> dict[str, Any]:
        """The JSON model card."""
        self._require()
        grid = self.physics.rest_wavelength.numpy()
        return {
            "class": type(self).__name__,
            "hyper": self._hyper(),
            "train_config": dataclasses.asdict(self.train_config),
            "prior": self.prior.to_json(),
            "parameter_names": self.prior.names,
            "derived_names": ["log_mstar", "age"],
            "feature_names": self.feature_names,
            "knots": self.knots,
            "broadening": ([self.physics.kms_per_pixel, self.physics.max_veldisp]
                           if self.physics.margin else None),
            "z_range": list(self.physics.z_range),
            "wavelength": {"n": self.physics.npix,
                           "start": float(self.physics.wavelength[0]),
                           "end": float(self.physics.wavelength[-1])},
            "rest_wavelength": {"n": len(grid), "start": float(grid[0]),
                                "end": float(grid[-1])},
            "preprocessing": "ln rest-frame L_λ per M☉ formed (observed noiseless flux ÷ "
                             "1e17 L☉/(4π d_L²(1+z)) ÷ 10^log_mformed, rest pixels that hold "
                             "whole observed pixels); features standardised",
            "seed": self.seed,
            "training_data": self.data_info,
            "validation": {**self.metrics,
                           **({} if self.history is None else self.history.summary())},
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save as a model folder: weights (safetensors) + JSON card; ``ss.load`` reads it."""
        self._require()
        return write_model(path, self.card(), self.state_dict(), overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Emulator:
        """Load a folder written by :meth:`save`."""
        card, state = read_model(path)
        kind = card.get("class")
        if kind not in EMULATORS or not issubclass(EMULATORS[kind], cls):
            raise ValueError(f"{path} holds a {kind!r}, not a {cls.__name__}")
        return EMULATORS[kind].from_card(card, state, device)

    @classmethod
    def from_card(cls, card: dict[str, Any], state: dict[str, Tensor],
                  device: str = "cpu") -> Emulator:
        """Rebuild from a card and its weights (what :func:`specsbi.load` calls)."""
        cfg = TrainConfig(**card["train_config"]) if card.get("train_config") else None
        model = cls(**card.get("hyper", {}), knots=card.get("knots") or {},
                    broadening=card.get("broadening") or None, train_config=cfg,
                    device=device, seed=card.get("seed", 0), progress=False)
        model._build(Prior.from_json(card["prior"]), state["physics.wavelength"].numpy(),
                     state["physics.rest_wavelength"].numpy(), card.get("knots") or {},
                     card.get("feature_names"))
        state = dict(state)  # emulators saved before the error modes were kept have none
        model.error_modes = state.setdefault("error_modes", model.error_modes).clone()
        model.load_state_dict(state)
        model._set_span()
        model.metrics = dict(card.get("validation") or {})
        model.data_info = card.get("training_data", {})
        return model.to(model.device).eval()


def _check_set(data: Any, what: str) -> None:
    if not isinstance(data, SpectraSet):
        raise ValueError(f"{what} takes a SpectraSet (e.g. ss.SpectraSet.read('train.h5'))")
    if data.flux_noiseless is None:
        raise ValueError("the set has no noiseless flux (/raw/spec_noiseless); simulate one "
                         "with ss.simulate or `specsbi simulate`")


def _check_params(data: SpectraSet, prior: Prior) -> None:
    missing = [n for n in [*prior.names, "log_mstar"] if n not in data.params]
    if missing:
        raise ValueError(f"the set lacks parameter(s) {missing}; it has {sorted(data.params)}")


def _leading_modes(res: Tensor, k: int) -> Tensor:
    """The k leading principal directions of the residual rows, scaled so that
    Σ_k e_k e_kᵀ is their second-moment matrix's best rank-k part: (k, n)."""
    k = min(k, *res.shape)
    with torch.random.fork_rng(devices=[]):  # the sketch's random start, seeded, kept local
        torch.manual_seed(0)
        _, s, v = torch.svd_lowrank(res.double(), q=min(k + 10, *res.shape), niter=4)
    return (s[:k, None] * v[:, :k].T).float()


def _mass_weighted_age(age: Tensor, tau: Tensor) -> Tensor:
    """Mean age of the stars of a delayed-τ history SFR ∝ t e^(−t/τ) begun ``age`` ago.

    With x = age/τ the mean time since the start is τ γ(3, x) / γ(2, x) (lower
    incomplete gamma functions): 2 age/3 for x → 0 and 2τ for x → ∞.
    """
    x = (age / tau).double().clamp(min=1e-3)
    e = torch.exp(-x)
    g2 = -torch.expm1(-x) - x * e  # γ(2, x) = 1 − e^(−x)(1 + x)
    g3 = 2 * g2 - x**2 * e  # γ(3, x) = 2 γ(2, x) − x² e^(−x)
    return (age.double() - tau.double() * g3 / g2).to(age.dtype)


def _z_range(prior: Prior) -> tuple[float, float]:
    """The redshifts an emulator serves: the prior's range (a little around a fixed value)."""
    if "redshift" in prior.ranges:
        return prior.ranges["redshift"]
    z = prior.fixed["redshift"]
    return max(z - 1e-3, 0.0), z + 1e-3


def _bagpipes_knots(prior: Prior) -> dict[str, list[float]]:
    """bagpipes' metallicity and log_u grids inside the prior (it interpolates linearly)."""
    grids = {"metallicity": [0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0],
             "log_u": [-4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0]}
    out = {}
    for name, grid in grids.items():
        if name in prior.ranges:
            lo, hi = prior.ranges[name]
            inner = [g for g in grid if lo + 1e-9 < g < hi - 1e-9]
            if inner:
                out[name] = inner
    return out
