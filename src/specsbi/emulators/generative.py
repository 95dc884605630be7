"""Conditional VAE, GAN and diffusion emulators: generative models of rest PCA coefficients."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..training import History, TrainConfig, split
from .base import Emulator
from .pca import check_settings, linear_features, project, rest_basis

__all__ = ["ConditionalDiffusion", "ConditionalGAN", "GenerativeEmulator", "ConditionalVAE"]

log = logging.getLogger(__name__)


class _CoefficientDecoder(nn.Module):
    """Standardised features → ln rest spectrum: mean + (poly(x) W + G(x, z)) @ basis, where
    poly(x) W is a polynomial least-squares baseline of the PCA coefficients, G a
    conditional generative model of the rest and z its fixed latents (G averaged over
    them), plus linear features × per-pixel slopes."""

    def __init__(self, model: Any, n_in: int, n_components: int, n_out: int,
                 linear: list[int], latents: Tensor, degree: int) -> None:
        super().__init__()
        self.model = model  # the specsbi.generative model (not a Module: its `net` is ours)
        self.linear = list(linear)
        self.nonlinear = [i for i in range(n_in) if i not in self.linear]
        m = len(self.nonlinear)
        self.degree, self.pairs = degree, torch.triu_indices(m, m).tolist()
        n_terms = 1 + (m if degree >= 1 else 0) + (len(self.pairs[0]) if degree == 2 else 0)
        self.register_buffer("weights", torch.zeros(n_terms, n_components))
        self.register_buffer("mean", torch.zeros(n_out))
        self.register_buffer("basis", torch.zeros(n_components, n_out))
        self.register_buffer("slopes", torch.zeros(len(self.linear), n_out))
        self.register_buffer("latents", latents)
        self.attach()

    def attach(self) -> None:
        """Register the generative model's networks (rebuilt by its ``fit``) as ours."""
        self.net = self.model.net

    def poly(self, c: Tensor) -> Tensor:
        """The baseline's terms (B, n_terms): 1, the features, their products (degree 2)."""
        terms = [torch.ones_like(c[:, :1])]
        if self.degree >= 1:
            terms.append(c)
        if self.degree == 2:
            terms.append(c[:, self.pairs[0]] * c[:, self.pairs[1]])
        return torch.cat(terms, 1)

    def coefficients(self, x: Tensor) -> Tensor:
        """PCA coefficients (B, k) at standardised features x (B, n_in)."""
        c, d = x[:, self.nonlinear], len(self.latents)
        base = self.poly(c) @ self.weights
        if d == 1:
            return base + self.model.generate(c, self.latents.expand(len(c), -1))
        z = self.latents.repeat(len(c), 1)
        gen = self.model.generate(c.repeat_interleave(d, 0), z).view(len(c), d, -1)
        return base + gen.mean(1)

    def forward(self, x: Tensor) -> Tensor:
        return project(self.coefficients(x), x[:, self.linear], self.mean, self.basis,
                       self.slopes)


class GenerativeEmulator(Emulator):
    """An emulator whose decoder is a conditional generative model of rest-frame PCA coefficients.

    The basis is PCAEmulator's (:func:`~specsbi.emulators.pca.rest_basis`: gappy PCA of
    the ln rest-frame spectra per M☉ formed, after the exactly linear features). Each
    training spectrum's coefficients are its least-squares fit on its covered rest
    pixels; when the physics layer broadens, ``refine`` fixed-point iterations
    (c ← c + fit(y − broadened(c))) make them coefficients of the *unbroadened*
    spectrum, so the shared layer's exact broadening applies to them. A polynomial
    least-squares fit of the coefficients on the standardised features (``degree``)
    takes out the bulk of their variance; the generative model (``specsbi.generative``)
    learns p(residual coefficients | shape features), and ``predict`` decodes at fixed
    latents (see each subclass). The card's validation records the baseline's own
    coefficient error next to the full model's, so the generative part's share shows.
    Redshift, distance, mass and broadening come from the shared physics layer, as for
    every emulator.

    Args:
        n_components, pca_spectra, linear: the basis, as for PCAEmulator.
        latents: "zero" (the latent prior's mode) or an integer k: the coefficients are
            averaged over k fixed standard-normal latents drawn with ``seed``.
        refine: fixed-point iterations of the unbroadened coefficients (0: none).
        degree: of the least-squares baseline: 0 (the mean), 1 (linear) or 2 (quadratic).
        options: keyword arguments of the generative model (e.g. ``latent_dim``,
            ``hidden``); ``train_config`` is also the generative model's.
        **kwargs: those of :class:`~specsbi.emulators.base.Emulator`.
    """

    model_class = ""  # the class name in specsbi.generative
    defaults: dict[str, Any] = {}
    default_latents: str | int = "zero"
    default_config = TrainConfig(batch_size=256, lr=1e-3, patience=20)

    def __init__(self, n_components: int = 96, pca_spectra: int = 10_000,
                 linear: Any = "auto", latents: str | int | None = None, refine: int = 4,
                 degree: int = 2, options: dict[str, Any] | None = None, **kwargs: Any
                 ) -> None:
        latents = self.default_latents if latents is None else latents
        check_settings(type(self).__name__, {
            "n_components": (n_components, isinstance(n_components, int)
                             and 1 <= n_components <= 512, "in [1, 512]"),
            "pca_spectra": (pca_spectra, isinstance(pca_spectra, int) and pca_spectra >= 10,
                            ">= 10"),
            "latents": (latents, latents == "zero" or (isinstance(latents, int)
                                                       and latents >= 1),
                        "'zero' or an integer >= 1"),
            "refine": (refine, isinstance(refine, int) and refine >= 0, ">= 0"),
            "degree": (degree, degree in (0, 1, 2) and isinstance(degree, int), "0, 1 or 2"),
            "options": (options, options is None or isinstance(options, dict), "a dict"),
        }, linear)
        kwargs.setdefault("train_config", self.default_config)
        super().__init__(**kwargs)
        self.n_components, self.pca_spectra, self.linear = n_components, pca_spectra, linear
        self.latents, self.refine, self.degree = latents, refine, degree
        self.options = {**self.defaults, **(options or {})}

    def _hyper(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "pca_spectra": self.pca_spectra,
                "linear": self.linear, "latents": self.latents, "refine": self.refine,
                "degree": self.degree,
                "options": {k: list(v) if isinstance(v, tuple) else v
                            for k, v in self.options.items()}}

    # ----------------------------------------------------------------- decoder
    def _new_model(self, cond_dim: int) -> Any:
        from .. import generative

        try:
            return getattr(generative, self.model_class)(
                **self.options, cond_dim=cond_dim, train_config=self.train_config,
                device=str(self.device), seed=self.seed, progress=self.progress)
        except TypeError as err:  # an unknown option: name the model's own arguments
            raise ValueError(f"bad `options` for {self.model_class}: {err}") from None

    def _latent_width(self, model: Any) -> int:
        return model.latent_dim

    def _build_decoder(self, n_features: int, n_out: int) -> nn.Module:
        idx = linear_features(self)
        model = self._new_model(n_features - len(idx))
        model.dim = self.n_components
        model.net = model._build()
        width = self._latent_width(model)
        if self.latents == "zero":
            z = torch.zeros(1, width)
        else:
            z = torch.randn(self.latents, width,
                            generator=torch.Generator().manual_seed(self.seed))
        return _CoefficientDecoder(model, n_features, self.n_components, n_out, idx, z,
                                   self.degree)

    def _fit_weights(self, coeff: Tensor) -> Tensor | None:
        """Per-element weights for the generative model's fit (None: its default)."""
        return None

    def _fit_decoder(self, features: Tensor, log_rest: Tensor, covered: Tensor,
                     veldisp: Tensor) -> History:
        if getattr(self, "_checkpoint", None) is not None:
            raise ValueError(f"{type(self).__name__} trains in several stages and takes no "
                             "checkpoint; fit it without one")
        dec = self.decoder
        rest_basis(self, features, log_rest, covered, veldisp)
        coeff = self._coefficients(features, log_rest, covered, veldisp)
        cond = features[:, dec.nonlinear]
        val, fit_rows = split(len(coeff), self.train_config, self.seed)
        terms = dec.poly(cond).double()
        a = terms[fit_rows]
        ridge = 1e-6 * len(a) * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
        ridge[0, 0] = 0.0  # the intercept is free
        dec.weights.copy_(torch.linalg.solve(a.T @ a + ridge, a.T @ coeff[fit_rows].double()))
        resid = coeff - terms.float() @ dec.weights
        model = dec.model
        model.fit(resid, cond=cond, weights=self._fit_weights(resid))
        dec.attach()
        self.to(self.device)
        with torch.no_grad():
            self._coefficient_rms = {
                "baseline": float(resid[val].pow(2).sum(1).mean().sqrt()),
                "model": float((dec.coefficients(features[val]) - coeff[val]).pow(2).sum(1)
                               .mean().sqrt())}
        return model.history

    def _validate(self, *args: Any) -> None:
        super()._validate(*args)
        rms = self.__dict__.pop("_coefficient_rms", None)  # the fit's own validation rows
        if rms is not None:  # ‖Δc‖ = the ln rest spectrum's error, summed over the grid
            self.metrics["coefficient_error_rms_baseline_vs_model"] = [rms["baseline"],
                                                                       rms["model"]]

    @torch.no_grad()
    def _coefficients(self, features: Tensor, log_rest: Tensor, covered: Tensor,
                      veldisp: Tensor, chunk: int = 2048) -> Tensor:
        """Each spectrum's coefficients (n, k): least squares on its covered pixels, then
        ``refine`` fixed-point steps through the broadening (if the layer broadens)."""
        dec, pad = self.decoder, self.physics.margin
        basis = dec.basis[:, pad : dec.basis.shape[1] - pad].double().cpu()
        base = dec.mean[pad : len(dec.mean) - pad].cpu()
        slopes = dec.slopes[:, pad : dec.slopes.shape[1] - pad].cpu()
        solver = _GappyProjection(basis)
        out, steps = [], self.refine if pad else 0
        for i in range(0, len(features), chunk):
            x = features[i : i + chunk].cpu()
            y, cov, v = log_rest[i : i + chunk].cpu(), covered[i : i + chunk].cpu(), \
                veldisp[i : i + chunk].to(self.device)
            lin = base + (x[:, dec.linear] @ slopes if dec.linear else 0.0)
            c = solver(y - lin, cov)
            for _ in range(steps):
                full = dec.mean + c.float().to(self.device) @ dec.basis
                if dec.linear:
                    full = full + x[:, dec.linear].to(self.device) @ dec.slopes
                model_y = self.observable(full, v).cpu()
                c = c + solver(y - model_y, cov)
            out.append(c.float())
        coeff = torch.cat(out).to(self.device)
        log.info("coefficients of %d spectra (%d refinement steps)", len(coeff), steps)
        return coeff


class _GappyProjection:
    """Least-squares coefficients of rows with gaps on an orthonormal basis (k, P).

    A row's covered pixels are almost always one run [a, b] (a redshift window), so
    its normal matrix is a difference of cumulative sums of the pixels' outer
    products; other rows get theirs summed directly.
    """

    def __init__(self, basis: Tensor) -> None:
        self.basis = basis
        outer = basis.T[:, :, None] * basis.T[:, None, :]  # (P, k, k)
        self.cum = torch.cat([outer.new_zeros(1, *outer.shape[1:]), outer.cumsum(0)])
        self.ridge = 1e-9 * torch.eye(len(basis), dtype=basis.dtype)

    def __call__(self, resid: Tensor, covered: Tensor) -> Tensor:
        w = covered.double()
        rhs = (resid.double() * w) @ self.basis.T  # (n, k)
        n_cov = covered.sum(1)
        first = covered.int().argmax(1)
        last = covered.shape[1] - 1 - covered.flip(1).int().argmax(1)
        run = (last - first + 1 == n_cov) & (n_cov > 0)
        gram = self.cum[last + 1] - self.cum[first]
        for j in torch.nonzero(~run)[:, 0].tolist():
            b = self.basis[:, covered[j]]
            gram[j] = b @ b.T
        return torch.linalg.solve(gram + self.ridge, rhs[..., None])[..., 0]


class ConditionalVAE(GenerativeEmulator):
    """Conditional VAE decoder as an emulator: predict decodes the latent prior's mode, z = 0.

    The VAE (``specsbi.generative.VAE``, ``cond_dim`` = the shape features) is trained on
    the residual coefficients with a fixed reconstruction noise ``noise`` per
    coefficient: its Gaussian term is ½ ‖Δc / noise‖², the squared error of the ln rest
    spectrum over the grid (the basis is orthonormal) in units of noise². θ fixes a
    noiseless spectrum, so nothing is left for the latent to explain; with a small
    noise the VAE still encodes the decoder's current misfit in z (which ``predict``,
    having no spectrum to encode, cannot know), so "auto" sets noise to the residuals'
    RMS norm, where that is worth less than the KL cost: the latent stays uninformative
    and z = 0 decodes the conditional mean.

    Args:
        noise: the reconstruction noise per coefficient (ln-flux units), or "auto".
        **kwargs: those of :class:`GenerativeEmulator`.

    Example:
        >>> import specsbi as ss
        >>> train = ss.simulate(ss.ToySimulator(), ss.default_prior(), n=200, progress=False)
        >>> emu = ConditionalVAE(n_components=8, options={"latent_dim": 2, "hidden": (32,)},
        ...                   train_config=ss.TrainConfig(max_epochs=2), progress=False)
        >>> emu.fit(train).predict(emu.prior.draw(3, seed=0)).shape
        (3, 3841)
    """

    model_class = "VAE"
    defaults = {"latent_dim": 4, "hidden": (512, 256)}

    def __init__(self, noise: float | str = "auto", **kwargs: Any) -> None:
        if not (noise == "auto" or (isinstance(noise, (int, float)) and noise > 0
                                    and np.isfinite(noise))):
            raise ValueError(f"`noise` must be 'auto' or a positive number; got {noise!r}")
        super().__init__(**kwargs)
        self.noise = noise if noise == "auto" else float(noise)

    def _hyper(self) -> dict[str, Any]:
        return {**super()._hyper(), "noise": self.noise}

    def _fit_weights(self, coeff: Tensor) -> Tensor:
        noise = (coeff.pow(2).sum(1).mean().sqrt().clamp(min=1e-6) if self.noise == "auto"
                 else self.noise)
        return torch.full_like(coeff, 1.0) / noise**2


class ConditionalGAN(GenerativeEmulator):
    """Conditional GAN generator as an emulator: predict averages the generator over
    ``latents`` (default 8) fixed latent draws, an estimate of the conditional mean.

    Args:
        **kwargs: those of :class:`GenerativeEmulator`; ``train_config.max_epochs`` is
            the number of epochs run (a GAN has no early stopping).
    """

    model_class = "GAN"
    defaults = {"latent_dim": 8, "hidden": (256, 512)}
    default_latents = 8
    default_config = TrainConfig(batch_size=256, lr=2e-4, max_epochs=100)


class ConditionalDiffusion(GenerativeEmulator):
    """Conditional diffusion model as an emulator: predict runs the deterministic DDIM
    sampler (``ddim_steps`` network calls, default 10) from the fixed initial noise
    z = 0, differentiably.

    Args:
        **kwargs: those of :class:`GenerativeEmulator`.
    """

    model_class = "Diffusion"
    defaults = {"steps": 200, "hidden": (256, 256, 256), "ddim_steps": 10}

    def _latent_width(self, model: Any) -> int:
        return self.n_components
