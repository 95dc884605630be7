"""The simulator interface shared by bagpipes and the toy model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._checks import as_numpy
from ..spectra import sdss_wavelength

__all__ = ["PHYSICAL_PARAMETERS", "Simulator", "from_config"]

#: The parameters of the default physical model, in the default prior's order.
PHYSICAL_PARAMETERS = (
    "log_mformed", "redshift", "age_frac", "log_tau", "metallicity", "av", "veldisp", "log_u",
)


class Simulator:
    """Parameters → noiseless spectra in 1e-17 erg/s/cm²/Å on ``wavelength``.

    Subclasses set ``param_names`` (what they need), ``derived_names`` (what they
    return besides flux, e.g. ``log_mstar``), ``limits`` (the physically valid
    range of each parameter) and implement :meth:`_simulate` on a dict of arrays.
    A simulator is a small picklable description; heavy state (a bagpipes model)
    is built lazily inside each process that uses it.
    """

    param_names: tuple[str, ...] = ()
    derived_names: tuple[str, ...] = ()
    limits: dict[str, tuple[float, float]] = {}

    def __init__(self, wavelength: Any | None = None) -> None:
        wl = sdss_wavelength() if wavelength is None else as_numpy(wavelength, "wavelength")
        if wl.ndim != 1 or wl.size < 2 or np.any(np.diff(wl) <= 0) or wl[0] <= 0:
            raise ValueError("`wavelength` must be a positive, strictly increasing 1-D grid in Å")
        self.wavelength = wl

    def simulate(
        self, theta: Any, names: list[str] | None = None, progress: bool = False
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Simulate noiseless spectra.

        Args:
            theta: (n, d) array (numpy or torch) whose columns are ``names``
                (default :attr:`param_names`), or a mapping name → (n,) array.
            names: column names of ``theta`` when it is an array.
            progress: show a progress bar.

        Returns:
            ``(flux, derived)``: (n, npix) float64 flux and name → (n,) derived values.

        Raises:
            ValueError: wrong shape, missing parameters, NaN, or values outside
                :attr:`limits`.
        """
        params = self.parameters(theta, names)
        return self._simulate(params, progress)

    def prepare(self) -> None:
        """One-off set-up in the parent process before workers start (default: nothing).

        A simulator whose first use writes files (bagpipes builds a grid on its first
        import) does it here, so parallel workers never race to write and read them.
        """

    def parameters(self, theta: Any, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Validate ``theta`` and return name → (n,) float64 arrays of the needed parameters."""
        if isinstance(theta, Mapping):
            params = {k: np.atleast_1d(as_numpy(v, k)) for k, v in theta.items()}
        else:
            t = as_numpy(theta, "theta")
            t = t[None] if t.ndim == 1 else t
            cols = list(self.param_names) if names is None else list(names)
            if t.ndim != 2 or t.shape[1] != len(cols):
                raise ValueError(
                    f"θ must have shape (n, {len(cols)}) with columns {cols}; got {t.shape}"
                )
            params = {k: t[:, j] for j, k in enumerate(cols)}
        missing = [k for k in self.param_names if k not in params]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs parameters {missing}; fix them in the prior "
                "(prior.with_fixed(...)) or pass them"
            )
        params = {k: params[k] for k in self.param_names}
        sizes = {v.shape for v in params.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"every parameter must be a 1-D array of one length; got {sizes}")
        for k, v in params.items():
            if not np.isfinite(v).all():
                raise ValueError(f"parameter {k!r} holds NaN or inf")
            lo, hi = self.limits.get(k, (-np.inf, np.inf))
            bad = (v < lo) | (v > hi)
            if bad.any():
                raise ValueError(
                    f"{k} = {v[bad][0]:g} is outside the range {type(self).__name__} can "
                    f"simulate, [{lo:g}, {hi:g}] ({int(bad.sum())} value(s))"
                )
        return params

    def _simulate(
        self, params: dict[str, np.ndarray], progress: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able description: enough to rebuild the simulator with :func:`from_config`."""
        return {"class": type(self).__name__, **self._config()}

    def _config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"


def from_config(config: Mapping[str, Any], wavelength: Any | None = None) -> Simulator:
    """Rebuild a simulator from :meth:`Simulator.config` (the grid is passed separately)."""
    from . import BagpipesSimulator, ToySimulator

    classes = {"BagpipesSimulator": BagpipesSimulator, "ToySimulator": ToySimulator}
    kwargs = dict(config)
    name = kwargs.pop("class", None)
    if name not in classes:
        raise ValueError(f"unknown simulator class {name!r}; known: {sorted(classes)}")
    return classes[name](wavelength=wavelength, **kwargs)
