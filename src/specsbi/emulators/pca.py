"""`PCAEmulator`: PCA of ln rest-frame spectra and an MLP to the coefficients (Speculator)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..compressors import gappy_pca
from ..training import History, train
from .base import Emulator, masked_mse

__all__ = ["PCAEmulator", "check_settings", "linear_features", "project", "rest_basis"]

_TUNE = 0.01  # the basis and mean move at a hundredth of the MLP's step


class _PCADecoder(nn.Module):
    """Standardised features → ln rest spectrum: mean + MLP → scaled PCA coefficients → basis,
    plus, for features whose effect on the ln spectrum is exactly linear (bagpipes' dust),
    feature × a learned per-pixel vector. The PCA mean and basis are fine-tuned too,
    through small corrections (a hundredth of the step the MLP takes)."""

    def __init__(self, n_in: int, n_components: int, hidden: int, layers: int, n_out: int,
                 linear: Sequence[int] = ()) -> None:
        super().__init__()
        self.linear = [int(i) for i in linear]
        self.nonlinear = [i for i in range(n_in) if i not in self.linear]
        sizes = [len(self.nonlinear)] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            mods += [nn.Linear(a, b), nn.SiLU()]
        self.mlp = nn.Sequential(*mods, nn.Linear(hidden, n_components))
        self.register_buffer("mean", torch.zeros(n_out))
        self.register_buffer("basis", torch.zeros(n_components, n_out))
        self.register_buffer("scale", torch.ones(n_components))
        self.slopes = nn.Parameter(torch.zeros(len(self.linear), n_out))
        self.d_mean = nn.Parameter(torch.zeros(n_out))
        self.d_basis = nn.Parameter(torch.zeros(n_components, n_out))

    def forward(self, x: Tensor) -> Tensor:
        coeff = self.mlp(x[:, self.nonlinear]) * self.scale
        return project(coeff, x[:, self.linear], self.mean + _TUNE * self.d_mean,
                       self.basis + _TUNE * self.d_basis, self.slopes)


def project(coeff: Tensor, linear: Tensor, mean: Tensor, basis: Tensor, slopes: Tensor
            ) -> Tensor:
    """mean + coeff @ basis + linear @ slopes in one matrix product: (B, n_out)."""
    if linear.shape[1]:
        coeff, basis = torch.cat([coeff, linear], 1), torch.cat([basis, slopes], 0)
    return torch.addmm(mean, coeff, basis)


class PCAEmulator(Emulator):
    """Speculator-style emulator: an MLP from the nuisance parameters to PCA coefficients.

    The basis is a gappy (EM) PCA of the ln rest-frame spectra per M☉ formed (every
    simulation covers only part of the rest grid); the MLP is trained with the shared
    loop on the reconstructed ln spectrum over the covered pixels, so the loss is the
    fractional error of the spectrum itself. Redshift, distance and mass are applied
    by the shared physics layer (see :class:`~specsbi.emulators.base.Emulator`).

    Args:
        n_components: PCA components.
        hidden, layers: the MLP's width and number of hidden layers.
        pca_spectra: spectra used to find the basis (the MLP sees all).
        **kwargs: those of :class:`~specsbi.emulators.base.Emulator` (rest_grid,
            knots, train_config, device, seed, progress).

    Example:
        >>> import specsbi as ss
        >>> train = ss.simulate(ss.ToySimulator(), ss.default_prior(), n=200, progress=False)
        >>> cfg = ss.TrainConfig(max_epochs=2)
        >>> emu = PCAEmulator(n_components=8, hidden=32, train_config=cfg, progress=False)
        >>> theta = emu.fit(train).prior.draw(3, seed=0)
        >>> emu.predict(theta).shape, emu.predict_derived(theta)["log_mstar"].shape
        ((3, 3841), (3,))
    """

    def __init__(self, n_components: int = 96, hidden: int = 256, layers: int = 3,
                 pca_spectra: int = 10_000, linear: Any = "auto", **kwargs: Any) -> None:
        check_settings(type(self).__name__,
                       {"n_components": (n_components, isinstance(n_components, int)
                                         and 1 <= n_components <= 512, "in [1, 512]"),
                        "hidden": (hidden, isinstance(hidden, int) and hidden >= 1, ">= 1"),
                        "layers": (layers, isinstance(layers, int) and 1 <= layers <= 10,
                                   "in [1, 10]"),
                        "pca_spectra": (pca_spectra, isinstance(pca_spectra, int)
                                        and pca_spectra >= 10, ">= 10")}, linear)
        super().__init__(**kwargs)
        self.n_components, self.hidden, self.layers = n_components, hidden, layers
        self.pca_spectra, self.linear = pca_spectra, linear

    def _hyper(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "hidden": self.hidden,
                "layers": self.layers, "pca_spectra": self.pca_spectra,
                "linear": self.linear}

    def _build_decoder(self, n_features: int, n_out: int) -> nn.Module:
        idx = linear_features(self)
        return _PCADecoder(n_features, self.n_components, self.hidden, self.layers, n_out, idx)

    def _fit_decoder(self, features: Tensor, log_rest: Tensor, covered: Tensor,
                     veldisp: Tensor) -> History:
        dec = self.decoder
        coeff = rest_basis(self, features, log_rest, covered, veldisp)
        dec.scale.copy_(torch.as_tensor(coeff.std(0)).clamp(min=1e-6))
        with torch.no_grad():  # start at the mean spectrum
            dec.mlp[-1].weight.mul_(0.01)
            dec.mlp[-1].bias.zero_()

        def loss(decoder: nn.Module, batch: Sequence[Tensor], gen: torch.Generator) -> Tensor:
            x, target, cov_b, v = batch
            return masked_mse(self.observable(decoder(x), v), target, cov_b)

        return train(dec, loss, [features, log_rest, covered, veldisp], self.train_config,
                     seed=self.seed, progress=self.progress,
                     checkpoint=getattr(self, "_checkpoint", None))


def check_settings(cls: str, checks: dict[str, tuple[Any, bool, str]], linear: Any) -> None:
    """Raise one ValueError naming every bad setting: name → (value, ok, what is allowed)."""
    bad = [f"{k}={v!r} (must be {rule})" for k, (v, ok, rule) in checks.items() if not ok]
    if bad:
        raise ValueError(f"invalid {cls} settings: {', '.join(bad)}")
    if not (linear == "auto" or (isinstance(linear, (list, tuple))
                                 and all(isinstance(n, str) for n in linear))):
        raise ValueError(f"`linear` must be 'auto' or a list of parameter names; got {linear!r}")


def linear_features(emu: Emulator) -> list[int]:
    """Resolve ``emu.linear`` ("auto": bagpipes' ``av``, whose effect on ln L is exactly
    linear, a screen of dust) to columns of the decoder's features."""
    if emu.linear == "auto":
        emu.linear = ["av"] if emu.bagpipes and "av" in emu.decoder_names else []
    unknown = [n for n in emu.linear if n not in emu.decoder_names]
    if unknown:
        raise ValueError(f"`linear` names {unknown} that are not the decoder's features "
                         f"{emu.decoder_names}")
    return [emu.decoder_names.index(n) for n in emu.linear]


def rest_basis(emu: Emulator, features: Tensor, log_rest: Tensor, covered: Tensor,
               veldisp: Tensor) -> np.ndarray:
    """Fit the ln rest-frame basis of ``emu``'s decoder: its ``mean``, ``basis``, ``slopes``.

    Per-pixel least-squares slopes on the decoder's ``linear`` features (columns of
    ``features``), then a gappy PCA (``emu.n_components``) of what is left, on the
    first ``emu.pca_spectra`` rows (of the sharpest quarter, by ``veldisp``, when the
    physics layer broadens); all padded by the layer's margin.

    Returns:
        The mean-filled projections (m, k) of the rows used (for their scale).
    """
    dec, pad = emu.decoder, emu.physics.margin
    rows = torch.arange(len(log_rest))
    if pad:  # the basis of unbroadened spectra: the sharpest ones
        rows = torch.argsort(veldisp.cpu())[: max(len(rows) // 4, 10)]
    rows = rows[: emu.pca_spectra]
    y = log_rest[rows].double().cpu().numpy()
    cov = covered[rows].cpu().numpy()
    if dec.linear:  # per-pixel least squares on the linear features, then PCA of the rest
        xl = features[rows][:, dec.linear].double().cpu().numpy()
        slopes = _masked_regression(xl, y, cov)
        dec.slopes.data.copy_(torch.as_tensor(_pad(slopes, pad)))
        y = y - xl @ slopes
    mean, basis = gappy_pca(y, cov, emu.n_components, iterations=4)
    dec.mean.copy_(torch.as_tensor(_pad(mean, pad)))
    dec.basis.copy_(torch.as_tensor(_pad(basis, pad)))
    return (np.where(cov, y, mean) - mean) @ basis.T


def _pad(a: np.ndarray, pad: int) -> np.ndarray:
    """Repeat the last pixel ``pad`` times at each end (the decoder's broadening margin)."""
    return np.pad(a, [(0, 0)] * (a.ndim - 1) + [(pad, pad)], mode="edge")


def _masked_regression(x: np.ndarray, y: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Per-column least-squares slopes (k, m) of y (n, m) on centred x (n, k), covered rows only."""
    w = covered.astype(np.float64)
    n = w.sum(0).clip(min=1)
    y_mean = (w * y).sum(0) / n
    x_mean = (w.T @ x / n[:, None])  # (m, k): x's mean over each column's covered rows
    slopes = np.zeros((x.shape[1], y.shape[1]))
    for j in np.nonzero(w.sum(0) > x.shape[1] + 1)[0]:
        rows = covered[:, j]
        xc = x[rows] - x_mean[j]
        slopes[:, j] = np.linalg.lstsq(xc, y[rows, j] - y_mean[j], rcond=None)[0]
    return slopes

