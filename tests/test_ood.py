"""Other physical models for out-of-distribution tests: bagpipes SFH shapes and dust laws."""

from __future__ import annotations

import pytest

from specsbi import BagpipesSimulator
from specsbi.cli import main
from specsbi.simulators import from_config

P = {"log_mformed": 10.0, "redshift": 0.1, "age_frac": 0.5, "log_tau": 0.0,
     "metallicity": 1.0, "av": 0.5, "veldisp": 100.0, "log_u": -3.0}


def test_sfh_and_dust_options_build_the_bagpipes_components():
    default = BagpipesSimulator()
    assert default.config() == {"class": "BagpipesSimulator", "R_spec": 1000.0}  # unchanged
    comp = default.components(P, 5.0)
    assert comp["delayed"]["tau"] == 1.0 and comp["dust"] == {"type": "Calzetti", "Av": 0.5}
    const = BagpipesSimulator(sfh="constant", dust="SMC")
    comp = const.components(P, 5.0)
    assert "delayed" not in comp and comp["constant"]["age_max"] == 5.0
    assert comp["constant"]["age_min"] == 0.0 and comp["dust"]["type"] == "SMC"
    assert BagpipesSimulator(sfh="exponential").components(P, 2.0)["exponential"]["age"] == 2.0
    again = from_config(const.config())
    assert (again.sfh, again.dust) == ("constant", "SMC")


@pytest.mark.parametrize("kwargs, message", [({"sfh": "burst"}, "`sfh`"),
                                             ({"dust": "CF00"}, "`dust`")])
def test_unknown_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BagpipesSimulator(**kwargs)


def test_cli_refuses_an_unknown_dust_law(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--n", "2", "--out", str(tmp_path / "x.h5"), "--dust", "MW"])
    assert "invalid choice" in capsys.readouterr().err
