"""`BagpipesSimulator`: BC03 populations with dust, nebular emission and velocity dispersion."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np

from .base import PHYSICAL_PARAMETERS, Simulator

__all__ = ["BagpipesSimulator", "import_bagpipes"]

log = logging.getLogger(__name__)

# One bagpipes model per process and configuration: building one costs ~1-2 s,
# `update()` ~20-30 ms, so a worker builds it once and updates it per spectrum.
_MODELS: dict[tuple, Any] = {}
#: Star-formation histories and dust laws a BagpipesSimulator can use (the default first).
SFH_SHAPES = ("delayed", "exponential", "constant")
DUST_LAWS = ("Calzetti", "Cardelli", "SMC")


def import_bagpipes() -> Any:
    """Import bagpipes quietly (it prints banners on import); raise a clear error if absent."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import bagpipes
        except ImportError as err:  # pragma: no cover - bagpipes is a dependency
            raise ImportError("BagpipesSimulator needs bagpipes: pip install bagpipes") from err
    return bagpipes


class BagpipesSimulator(Simulator):
    """bagpipes (BC03 MILES grids): delayed-τ SFH, Calzetti dust, nebular emission, veldisp.

    Other physical models, for out-of-distribution tests of models trained on the
    default: ``sfh="exponential"`` (τ-model, same age and τ) or ``"constant"``
    (constant star formation over the whole age; τ unused), and ``dust="Cardelli"``
    (Milky Way) or ``"SMC"`` (steeper in the UV), with the same A_V.

    Parameters are those of the default prior (DESIGN.md); the derived outputs are
    ``log_mstar`` (bagpipes' ``sfh.stellar_mass``, log10 M☉ surviving) and ``age``
    (Gyr, ``age_frac`` × the age of the universe at the redshift).

    Args:
        wavelength: observed-frame grid in Å; the SDSS grid by default.
        R_spec: bagpipes' internal spectral resolution (its ``config.R_spec``,
            default 1000 ≈ 150 km/s per pixel; SDSS is ≈ 69 km/s per pixel). Higher
            is sharper and slower (measured in ``benchmarks/simulate.py``).
        sfh: star-formation history, one of :data:`SFH_SHAPES`.
        dust: attenuation law, one of :data:`DUST_LAWS`.

    Example:
        >>> sim = BagpipesSimulator()                      # doctest: +SKIP
        >>> flux, derived = sim.simulate(default_prior().sample((2,)))  # doctest: +SKIP
    """

    param_names = PHYSICAL_PARAMETERS
    derived_names = ("log_mstar", "age")

    def __init__(self, wavelength: Any | None = None, R_spec: float = 1000.0,
                 sfh: str = "delayed", dust: str = "Calzetti") -> None:
        super().__init__(wavelength)
        if not 100 <= R_spec <= 20_000:
            raise ValueError(f"`R_spec` must lie in [100, 20000]; got {R_spec}")
        if sfh not in SFH_SHAPES:
            raise ValueError(f"`sfh` must be one of {SFH_SHAPES}; got {sfh!r}")
        if dust not in DUST_LAWS:
            raise ValueError(f"`dust` must be one of {DUST_LAWS}; got {dust!r}")
        self.R_spec, self.sfh, self.dust = float(R_spec), sfh, dust
        self.limits = {
            "log_mformed": (0.0, 15.0),
            "redshift": (1e-3, 10.0),
            "age_frac": (1e-3, 0.999),
            "log_tau": (-3.0, 2.0),
            "metallicity": (0.005, 5.0),
            "av": (0.0, 10.0),
            "veldisp": (1.0, 2000.0),
            "log_u": (-4.0, 0.0),
        }

    def _config(self) -> dict[str, Any]:
        if (self.sfh, self.dust) == (SFH_SHAPES[0], DUST_LAWS[0]):
            return {"R_spec": self.R_spec}  # as before these options: same files, same hashes
        return {"R_spec": self.R_spec, "sfh": self.sfh, "dust": self.dust}

    def prepare(self) -> None:
        """Import bagpipes once here: its first import writes its IGM grid, and two workers
        importing it together on a fresh install read that file half-written."""
        import_bagpipes()

    def components(self, p: dict[str, float], age: float) -> dict[str, Any]:
        """The bagpipes ``model_components`` dict for one set of parameters."""
        sfh = {"massformed": p["log_mformed"], "metallicity": p["metallicity"]}
        if self.sfh == "constant":
            sfh.update(age_max=age, age_min=0.0)
        else:
            sfh.update(age=age, tau=10.0 ** p["log_tau"])
        return {
            "redshift": p["redshift"],
            "veldisp": p["veldisp"],
            self.sfh: sfh,
            "dust": {"type": self.dust, "Av": p["av"]},
            "nebular": {"logU": p["log_u"]},
        }

    def _model(self, pipes: Any, components: dict[str, Any]) -> Any:
        key = (self.R_spec, self.sfh, self.dust, self.wavelength.size, self.wavelength[0],
               self.wavelength[-1])
        model = _MODELS.get(key)
        if model is None:
            log.info("building a bagpipes model (R_spec=%g)", self.R_spec)
            with contextlib.redirect_stdout(io.StringIO()):
                model = pipes.model_galaxy(components, spec_wavs=self.wavelength)
            _MODELS[key] = model
        else:
            model.update(components)
        return model

    def _simulate(
        self, params: dict[str, np.ndarray], progress: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from tqdm.auto import tqdm

        pipes = import_bagpipes()
        pipes.config.R_spec = self.R_spec  # read at update() time for the veldisp kernel
        n = len(params["redshift"])
        age = params["age_frac"] * np.interp(
            params["redshift"], pipes.utils.z_array, pipes.utils.age_at_z
        )
        flux = np.empty((n, self.wavelength.size))
        log_mstar = np.empty(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in tqdm(range(n), disable=not progress, desc="bagpipes", unit="spec"):
                p = {k: float(v[i]) for k, v in params.items()}
                model = self._model(pipes, self.components(p, float(age[i])))
                flux[i] = model.spectrum[:, 1] * 1e17
                log_mstar[i] = model.sfh.stellar_mass
        bad = ~np.isfinite(flux).all(1) | ~(flux > 0).any(1)
        if bad.any():
            i = int(np.argmax(bad))
            raise RuntimeError(
                f"bagpipes returned an empty or non-finite spectrum for "
                f"{ {k: float(v[i]) for k, v in params.items()} }"
            )
        return flux, {"log_mstar": log_mstar, "age": age}
