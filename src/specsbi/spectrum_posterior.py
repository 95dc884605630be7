"""`SpectrumPosterior`: posteriors of named targets (stellar mass, redshift) from spectra.

Pipeline: fresh noise on noiseless simulations every batch → compressor (rest-frame
PCA templates fitted over redshift: log amplitude, ẑ, σ_ẑ, fit quality, template
amplitudes) → anchored targets → a conditional flow (``variant="dependent"``) or a
joint flow over [summary, targets] (``variant="augmented"``).

Anchoring: a flow cannot learn a 1e-5 redshift width on a 0.5-wide prior by brute
force, so each target is first expressed relative to an estimate from the summary,
r = (θ − μ(s)) / σ(s). Redshift: μ = ẑ; other targets: a linear regression on the
summary. σ(s) is heteroscedastic for every target, exp of a linear regression of
log |θ − μ| on the summary (the χ² curvature error of ẑ alone misses the template
mismatch that dominates at high S/N, and left the flow a tail 80× wider than its
core). Then t = asinh(r / 10), linear for ordinary galaxies and taming
catastrophic ones. This is an exact change of variables:
log q(θ | s) = log q(t | s) + log |dt/dθ|.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .compressors import RestFramePCA
from .flows import (
    FLOW_KINDS,
    ConditionalFlow,
    JointFlow,
    calibrate,
    robust_stats,
    set_standardization,
)
from .noise import NoiseModel
from .posterior import Posterior
from .priors import Prior
from .serialization import read_model, write_model
from .spectra import SpectraSet, Spectrum
from .training import History, TrainConfig, split, train

__all__ = ["SpectrumPosterior"]

COMPRESSORS = ("pca", "vae", "ae")

log = logging.getLogger(__name__)
_SOFT = 10.0  # r / _SOFT enters asinh: linear for |r| << 10 σ


class _Anchor(nn.Module):
    """θ ↔ t = asinh((θ − μ(s)) / (σ(s) · 10)), with μ, σ from the summary."""

    def __init__(self, targets: Sequence[str], summary_dim: int, z_col: int | None) -> None:
        super().__init__()
        d = len(targets)
        self.targets, self.z_col = list(targets), z_col
        self.z_index = self.targets.index("redshift") if "redshift" in self.targets else None
        self.register_buffer("weight", torch.zeros(summary_dim + 1, d))
        self.register_buffer("log_scale_weight", torch.zeros(summary_dim + 1, d))
        self.register_buffer("s_mean", torch.zeros(summary_dim))
        self.register_buffer("s_std", torch.ones(summary_dim))
        self.register_buffer("ood_threshold", torch.tensor(float("inf")))

    def _design(self, s: Tensor) -> Tensor:
        ones = torch.ones(len(s), 1, device=s.device, dtype=s.dtype)
        return torch.cat([(s - self.s_mean.to(s)) / self.s_std.to(s), ones], 1)

    def fit(self, s: Tensor, theta: Tensor) -> None:
        """Least-squares regressions of θ and of log |θ − μ| on the standardised summary."""
        # float32 like the saved buffers, so a loaded model computes exactly the same
        self.s_mean, self.s_std = s.mean(0).float(), s.std(0).clamp(min=1e-12).float()
        X = self._design(s.double())
        self.weight = torch.linalg.lstsq(X, theta.double()).solution.float()
        mu, _ = self.loc_scale(s)
        log_abs = torch.log((theta - mu).double().abs().clamp(min=1e-30))
        # one catastrophic failure must not set everyone's scale
        log_abs = torch.minimum(log_abs, torch.quantile(log_abs, 0.99, dim=0))
        # E log|ε| = log σ − 0.635 for Gaussian ε
        self.log_scale_weight = (torch.linalg.lstsq(X, log_abs).solution.float())
        self.log_scale_weight[-1] += 0.635
        self.ood_threshold = torch.quantile(self.ood_score(s).float(), 0.999)

    def ood_score(self, s: Tensor) -> Tensor:
        """Largest |z-score| of a summary against the training summaries."""
        return ((s - self.s_mean) / self.s_std).abs().amax(-1)

    def loc_scale(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """μ(s) and σ(s) in float64: θ − μ cancels to ~1e-3 of θ, below float32's digits."""
        s = s.double()
        X = self._design(s)
        mu = X @ self.weight.double()
        if self.z_index is not None and self.z_col is not None:
            mu[:, self.z_index] = s[:, self.z_col]
        return mu, torch.exp(X @ self.log_scale_weight.double())

    def to_t(self, theta: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """t and log|dt/dθ| (summed over targets)."""
        mu, sigma = self.loc_scale(s)
        r = (theta.double() - mu) / (sigma * _SOFT)
        t = torch.asinh(r)
        logdet = -(torch.log(sigma * _SOFT) + 0.5 * torch.log1p(r**2)).sum(-1)
        return t.to(theta.dtype), logdet.to(theta.dtype)

    def to_theta(self, t: Tensor, s: Tensor) -> Tensor:
        """θ from t: paired rows (B, d) and (B, dim), or draws (B, n, d) of each summary."""
        mu, sigma = self.loc_scale(s)
        if t.ndim == 3:  # μ and σ once per summary, not once per draw
            mu, sigma = mu[:, None], sigma[:, None]
        return (mu + sigma * _SOFT * torch.sinh(t.double())).to(t.dtype)


class SpectrumPosterior:
    """Amortized posterior of named targets (default log_mstar, redshift) from spectra.

    Args:
        targets: parameters to infer; the others are marginalised.
        compressor: "pca" (rest-frame PCA templates fitted over redshift), or "vae" / "ae"
            (the same template fit for ẑ and the amplitude, then the latent means of a
            rest-frame VAE / AE in place of the rest-frame PCA coefficients; trained on
            the simulations first, then frozen).
        compressor_options: settings of the "vae"/"ae" compressor (``latent_dim``,
            ``hidden``, ``max_epochs``, ``batch_size``, ``lr``, ``patience``,
            ``max_spectra``).
        variant: "dependent" (q(θ | s)) or "augmented" (q(s, θ)).
        flow: "nsf" or "maf"; hidden, transforms, bins: flow size.
        n_components: templates of the compressor.
        n_rest: rest-frame PCA coefficients of the compressor's second stage.
        embed: width of the MLP that embeds the summary before it conditions the
            flow ("dependent" only; 0: the standardised summary conditions directly).
        noise: noise model (default: the training file's S/N range, else U(5, 30)).
        noise_draws: None: fresh noise for every batch, compressed on the fly; K: K
            noisy copies of each simulation compressed once before training, one
            taken at random for every row of every batch (compression dominates
            training time; K copies cost K epochs of it).
        train_config: the shared training loop's settings.
        device, seed, progress: as everywhere in specsbi.

    Example:
        >>> model = SpectrumPosterior(targets=["log_mstar", "redshift"])  # doctest: +SKIP
        >>> model.fit(train).posterior(obs[17]).summary()                 # doctest: +SKIP
    """

    def __init__(self, targets: Sequence[str] = ("log_mstar", "redshift"),
                 compressor: str = "pca", variant: str = "dependent", flow: str = "nsf",
                 hidden: int = 96, transforms: int = 5, bins: int = 8, n_components: int = 12,
                 n_rest: int = 32, embed: int = 128, noise: NoiseModel | None = None,
                 noise_draws: int | None = None, train_config: TrainConfig | None = None,
                 device: str = "cpu", seed: int = 0, progress: bool = True,
                 compressor_options: dict[str, Any] | None = None) -> None:
        if compressor not in COMPRESSORS:
            raise ValueError(f"unknown compressor {compressor!r}; available: {COMPRESSORS}")
        if variant not in ("dependent", "augmented"):
            raise ValueError(f"`variant` must be 'dependent' or 'augmented'; got {variant!r}")
        if flow not in FLOW_KINDS:
            raise ValueError(f"`flow` must be one of {FLOW_KINDS}; got {flow!r}")
        if noise_draws is not None and not (isinstance(noise_draws, int) and noise_draws >= 1):
            raise ValueError(f"`noise_draws` must be None or an integer >= 1; got {noise_draws!r}")
        if not (isinstance(embed, int) and embed >= 0):
            raise ValueError(f"`embed` must be an integer >= 0; got {embed!r}")
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"`targets` must be distinct parameter names; got {targets!r}")
        self.targets, self.compressor_kind, self.variant = list(targets), compressor, variant
        self.flow_kind, self.hidden, self.transforms, self.bins = flow, hidden, transforms, bins
        self.n_components, self.n_rest = n_components, n_rest
        self.compressor_options = dict(compressor_options or {})
        self.embed = embed if variant == "dependent" else 0  # the joint flow has none
        self.noise, self.noise_draws = noise, noise_draws
        self.train_config = train_config or TrainConfig(batch_size=256, lr=1e-3, patience=15)
        self.device, self.seed, self.progress = torch.device(device), seed, progress
        self.net: nn.ModuleDict | None = None
        self.wavelength: np.ndarray | None = None
        self.prior: Prior | None = None
        self.history: History | None = None
        self.data_info: dict[str, Any] = {}

    # ------------------------------------------------------------- building
    def _build(self, wavelength: np.ndarray) -> nn.ModuleDict:
        if self.compressor_kind == "pca":
            comp = RestFramePCA(wavelength, self.n_components, n_rest=self.n_rest)
        else:
            from .generative.compressor import VAECompressor

            comp = VAECompressor(wavelength, n_templates=self.n_components,
                                 autoencoder=self.compressor_kind == "ae", noise=self.noise,
                                 seed=self.seed, progress=self.progress,
                                 **self.compressor_options)
        names = comp.summary_names
        anchor = _Anchor(self.targets, comp.dim,
                         names.index("z_hat") if "z_hat" in names else None)
        common = dict(kind=self.flow_kind, hidden=self.hidden, transforms=self.transforms,
                      bins=self.bins)
        d = len(self.targets)
        if self.variant == "augmented":
            flow = JointFlow(comp.dim, d, **common)
        elif self.embed:
            e = self.embed
            mlp = nn.Sequential(nn.Linear(comp.dim, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU(),
                                nn.Linear(e, e))
            flow = ConditionalFlow(d, comp.dim, embedding=mlp, embedding_dim=e, **common)
        else:
            flow = ConditionalFlow(d, comp.dim, **common)
        return nn.ModuleDict({"compressor": comp, "anchor": anchor, "flow": flow})

    def fit(self, train_set: SpectraSet, checkpoint: str | os.PathLike | None = None
            ) -> SpectrumPosterior:
        """Train on a simulated SpectraSet with ``flux_noiseless`` and the target parameters."""
        if not isinstance(train_set, SpectraSet):
            raise ValueError("fit takes a SpectraSet (e.g. ss.SpectraSet.read('train.h5'))")
        net, noiseless, s0 = self._prepare(train_set, self.targets)
        theta = torch.as_tensor(np.stack([train_set.params[t] for t in self.targets], 1),
                                dtype=torch.float32)
        n0 = len(s0)
        t0, _ = net["anchor"].to_t(theta[:n0], s0)
        flow = net["flow"]  # standardisation statistics from one noisy pass
        if self.variant == "augmented":
            set_standardization(flow, robust_stats(s0), robust_stats(t0))
        else:
            set_standardization(flow, robust_stats(t0), robust_stats(s0))
        lo, hi = theta.min(0).values, theta.max(0).values
        pad = 0.05 * (hi - lo)
        ranges = {t: (float(lo[j] - pad[j]), float(hi[j] + pad[j]))
                  for j, t in enumerate(self.targets)}
        if "redshift" in ranges:
            ranges["redshift"] = (max(0.0, ranges["redshift"][0]), ranges["redshift"][1])
        self.prior = Prior(ranges)
        self.net = net.to(self.device)
        x = self._training_x(noiseless)
        self.history = train(self.net, self._loss, [theta.to(self.device), x],
                             self.train_config, seed=self.seed, progress=self.progress,
                             checkpoint=checkpoint, params=list(flow.parameters()))
        self._calibrate(theta, x)
        self.data_info = {"n": len(train_set), "attrs": {k: train_set.attrs.get(k) for k in
                                                         ("simulator", "seed", "prior")}}
        return self

    def _prepare(self, train_set: SpectraSet, needed: Sequence[str]
                 ) -> tuple[nn.ModuleDict, Tensor, Tensor]:
        """Check the training set, build the networks, fit the compressor and the anchor.

        Returns the networks, the noiseless flux and the summaries of one noisy pass
        over (up to) the first 5,000 spectra, for standardisation statistics.
        """
        if train_set.flux_noiseless is None:
            raise ValueError("the training set has no noiseless flux (/raw/spec_noiseless); "
                             "simulate one with ss.simulate or `specsbi simulate`")
        missing = [t for t in needed if t not in train_set.params]
        if missing:
            raise ValueError(f"the training set lacks target(s) {missing}; it has "
                             f"{sorted(train_set.params)}")
        if len(train_set) < 100:
            raise ValueError(f"need at least 100 training spectra; got {len(train_set)}")
        if self.noise is None:
            snr = (train_set.attrs.get("noise") or {}).get("snr", (5.0, 30.0))
            self.noise = NoiseModel(snr=tuple(snr))
        torch.manual_seed(self.seed)
        self.wavelength = train_set.wavelength.copy()
        net = self._build(self.wavelength)
        noiseless = torch.as_tensor(train_set.flux_noiseless)
        net["compressor"].fit(train_set.flux_noiseless, train_set.params["redshift"])
        gen = torch.Generator().manual_seed(self.seed)
        n0 = min(len(noiseless), 5000)
        noisy, err, _ = self.noise.sample(noiseless[:n0], gen)
        s0 = net["compressor"](noisy, err)
        targets = np.stack([train_set.params[t][:n0] for t in self.targets], 1)
        net["anchor"].fit(s0, torch.as_tensor(targets, dtype=torch.float32))
        return net, noiseless, s0

    def _noisy_summaries(self, noiseless: Tensor, chunk: int = 512) -> Tensor:
        """Summaries of ``noise_draws`` noisy copies of every simulation: (n, K, dim)."""
        from tqdm.auto import tqdm

        comp, k = self._require()["compressor"], self.noise_draws
        gen = torch.Generator().manual_seed(self.seed + 7)
        out = torch.empty(len(noiseless), k, comp.dim)
        steps = [(j, i) for j in range(k) for i in range(0, len(noiseless), chunk)]
        for j, i in tqdm(steps, disable=not self.progress, desc="noisy summaries",
                         unit="chunk"):
            noisy, err, _ = self.noise.sample(noiseless[i : i + chunk], gen)
            out[i : i + chunk, j] = comp(noisy.to(self.device), err.to(self.device)).cpu()
        return out

    def _calibrate(self, theta: Tensor, x: Tensor) -> None:
        """Widen the flow's base to fit the validation simulations (held out from the
        weights): a flow fitted to 20k simulations is overconfident on new ones."""
        net = self._require()
        val, _ = split(len(theta), self.train_config, self.seed)
        if x.ndim == 3:  # every precomputed noisy copy of the validation simulations
            s = x[val].reshape(-1, x.shape[-1])
            th = theta[val].repeat_interleave(x.shape[1], 0).to(self.device)
        else:
            gen = torch.Generator().manual_seed(self.seed + 11)
            s = self._batch_summary(net, x[val], gen)
            th = theta[val].to(self.device)
        t, _ = net["anchor"].to_t(th, s)
        temp = calibrate(net["flow"], t, s)
        self.history.temperature = [round(float(v), 4) for v in temp]
        log.info("calibrated on %d validation simulations: base temperature %s", len(val),
                 self.history.temperature)

    def _training_x(self, noiseless: Tensor) -> Tensor:
        """What the training loop iterates over: noiseless flux, or noisy summaries."""
        x = noiseless if self.noise_draws is None else self._noisy_summaries(noiseless)
        return x.to(self.device)

    def _batch_summary(self, net: nn.ModuleDict, x: Tensor, gen: torch.Generator) -> Tensor:
        """Summaries of one batch: fresh noise compressed now, or one precomputed copy."""
        if x.ndim == 3:  # precomputed summaries of noisy copies: one at random per row
            pick = torch.randint(x.shape[1], (len(x),), generator=gen).to(x.device)
            return x[torch.arange(len(x), device=x.device), pick]
        noisy, err, _ = self.noise.sample(x, gen)
        return net["compressor"](noisy, err)

    def _loss(self, net: nn.ModuleDict, batch: Sequence[Tensor], gen: torch.Generator
              ) -> Tensor:
        theta, x = batch
        s = self._batch_summary(net, x, gen)
        t, logdet = net["anchor"].to_t(theta, s)
        if self.variant == "augmented":
            return -(net["flow"].log_prob(s, t) + logdet)
        return -(net["flow"].log_prob(t, s) + logdet)

    # ------------------------------------------------------------- inference
    def _require(self) -> nn.ModuleDict:
        if self.net is None:
            raise RuntimeError("this SpectrumPosterior is not trained; call fit or ss.load")
        return self.net

    def summarize(self, spectra: SpectraSet | Spectrum) -> Tensor:
        """Compress observed spectra to summaries (b, dim); checks the grid."""
        net = self._require()
        if isinstance(spectra, Spectrum):
            spectra = spectra.as_set()
        if not isinstance(spectra, SpectraSet):
            raise ValueError("posterior takes a Spectrum (obs[17]) or a SpectraSet (obs[10:20])")
        if spectra.npix != len(self.wavelength) or not np.allclose(
                spectra.wavelength, self.wavelength, rtol=1e-7):
            raise ValueError(
                f"the spectra are on another wavelength grid ({spectra.npix} pixels, "
                f"{spectra.wavelength[0]:.1f}–{spectra.wavelength[-1]:.1f} Å) than the model "
                f"({len(self.wavelength)} pixels); resample them first: "
                "spectra.resample(model.wavelength)")
        if spectra.mask.all(1).any():
            raise ValueError("a spectrum has every pixel masked; nothing to infer from")
        flux = torch.as_tensor(spectra.flux).to(self.device)
        err = torch.as_tensor(spectra.err).to(self.device)
        return net["compressor"](flux, err)

    def ood(self, summaries: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-distribution score per galaxy (largest |z| of its summary against the
        training summaries) and the flag: score above the 99.9th percentile seen on the
        noisy training set."""
        anchor = self._require()["anchor"]
        score = anchor.ood_score(summaries)
        return score.cpu().numpy(), (score > anchor.ood_threshold).cpu().numpy()

    def posterior(self, spectra: SpectraSet | Spectrum) -> Posterior:
        """The posterior of one galaxy (``obs[17]``) or of a batch (``obs[10:20]``)."""
        s = self.summarize(spectra)
        return Posterior(self, s, self.targets, self.prior, single=isinstance(spectra, Spectrum))

    def prepare_x(self, x: Any) -> Tensor:
        if isinstance(x, (SpectraSet, Spectrum)):
            return self.summarize(x)
        t = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(self.device)
        t = t[None] if t.ndim == 1 else t
        dim = self._require()["compressor"].dim
        if t.ndim != 2 or t.shape[1] != dim:
            raise ValueError(f"x must be spectra or summaries of shape (b, {dim})")
        return t

    @torch.no_grad()
    def draw(self, s: Tensor, n: int) -> Tensor:
        net = self._require()
        step = max(1, 2_000_000 // n)  # draws per pass: memory is set by this, not by s
        out = []
        for i in range(0, len(s), step):
            si = s[i : i + step]
            if self.variant == "augmented":
                t = net["flow"].conditional_sample(n, si)
            else:
                t = net["flow"].sample(n, si)
            out.append(net["anchor"].to_theta(t, si))
        return torch.cat(out)

    @torch.no_grad()
    def log_density(self, theta: Tensor, s: Tensor) -> Tensor:
        net = self._require()
        b, k, d = theta.shape
        flat, ss = theta.reshape(b * k, d).to(self.device), s.repeat_interleave(k, 0)
        t, logdet = net["anchor"].to_t(flat, ss)
        if self.variant == "augmented":
            lp = net["flow"].conditional_log_prob(t, ss, net["flow"].marginal_log_prob(s)
                                                  .repeat_interleave(k))
        else:
            lp = net["flow"].log_prob(t, ss)
        return (lp + logdet).reshape(b, k)

    # ------------------------------------------------------------- save/load
    def _restore(self, card: dict[str, Any]) -> None:
        """Set what a subclass needs from the card before the networks are rebuilt."""

    def card(self) -> dict[str, Any]:
        return {
            "class": "SpectrumPosterior",
            "targets": self.targets, "compressor": self.compressor_kind,
            "variant": self.variant, "flow": self.flow_kind, "hidden": self.hidden,
            "transforms": self.transforms, "bins": self.bins,
            "n_components": self.n_components, "n_rest": self.n_rest, "embed": self.embed,
            "noise_draws": self.noise_draws, "compressor_options": self.compressor_options,
            "noise": None if self.noise is None else self.noise.config(),
            "prior": None if self.prior is None else self.prior.to_json(),
            "wavelength": {"n": len(self.wavelength), "start": float(self.wavelength[0]),
                           "log10_step": float(np.log10(self.wavelength[1] /
                                                        self.wavelength[0]))},
            "preprocessing": "flux / median(flux); log10 median as its own input; " + (
                "rest-frame PCA χ² fit over redshift" if self.compressor_kind == "pca" else
                f"rest-frame templates for ẑ, then {self.compressor_kind.upper()} latent means "
                "of the rest-frame spectrum at ẑ (trained first, then frozen)"),
            "seed": self.seed,
            "training_data": self.data_info,
            "validation": None if self.history is None else self.history.summary(),
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save as a model folder: weights (safetensors) + JSON card."""
        net = self._require()
        state = dict(net.state_dict())
        state["wavelength"] = torch.as_tensor(self.wavelength)
        return write_model(path, self.card(), state, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> SpectrumPosterior:
        card, state = read_model(path)
        if card.get("class") != "SpectrumPosterior":
            raise ValueError(f"{path} holds a {card.get('class')!r}, not a SpectrumPosterior")
        return cls.from_card(card, state, device)

    @classmethod
    def from_card(cls, card: dict[str, Any], state: dict[str, Tensor],
                  device: str = "cpu") -> SpectrumPosterior:
        noise = card.get("noise")
        # models saved before the rest-frame stage and the embedding had neither
        model = cls(card["targets"], card["compressor"], card["variant"], card["flow"],
                    card["hidden"], card["transforms"], card["bins"], card["n_components"],
                    n_rest=card.get("n_rest", 0), embed=card.get("embed", 0),
                    noise_draws=card.get("noise_draws"),
                    compressor_options=card.get("compressor_options"),
                    noise=NoiseModel(snr=tuple(noise["snr"])) if noise else None,
                    device=device, seed=card.get("seed", 0), progress=False)
        model._restore(card)
        model.wavelength = state.pop("wavelength").double().numpy()
        model.prior = Prior.from_json(card["prior"]) if card.get("prior") else None
        model.data_info = card.get("training_data", {})
        net = model._build(model.wavelength)
        net.load_state_dict(state)
        model.net = net.to(model.device).eval()
        return model
