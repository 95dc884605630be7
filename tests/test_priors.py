"""Prior: sampling, densities, bounds, named and fixed parameters, sbi compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specsbi import Prior, default_prior
from specsbi.priors import DEFAULT_RANGES


def test_default_prior_matches_design():
    prior = default_prior()
    assert prior.names == list(DEFAULT_RANGES)
    assert DEFAULT_RANGES["redshift"] == (0.01, 0.5)
    theta = prior.sample((1000,))
    assert theta.shape == (1000, 8)
    assert bool((theta >= prior.low).all() and (theta <= prior.high).all())
    volume = np.prod([hi - lo for lo, hi in DEFAULT_RANGES.values()])
    assert prior.log_prob(theta[:3]).numpy() == pytest.approx(np.full(3, -np.log(volume)))


def test_log_prob_is_minus_inf_outside_and_checks_shape():
    prior = default_prior()
    theta = prior.mean.clone()[None].repeat(2, 1)
    theta[1, 1] = 0.9  # redshift above 0.5
    lp = prior.log_prob(theta)
    assert bool(torch.isfinite(lp[0])) and lp[1].item() == -np.inf
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        prior.log_prob(torch.zeros(3, 5))


def test_check_names_the_parameter_out_of_range():
    prior = default_prior()
    theta = prior.mean.numpy()[None].copy()
    theta[0, 5] = 2.0
    with pytest.raises(ValueError, match=r"av = 2 is outside \[0, 1.5\]"):
        prior.check(theta)
    with pytest.raises(ValueError, match="NaN"):
        prior.check(np.full((1, 8), np.nan))


def test_fixed_parameters_and_new_ranges():
    prior = default_prior().with_fixed(log_u=-3.0, av=0.2).with_ranges(redshift=(0.05, 0.1))
    assert "log_u" not in prior.names and len(prior.names) == 6
    theta = prior.sample((50,))
    d = prior.to_dict(theta)
    assert np.all(d["log_u"] == -3.0) and np.all(d["av"] == 0.2)
    assert d["redshift"].min() >= 0.05 and d["redshift"].max() <= 0.1
    freed = prior.with_ranges(av=(0.0, 1.0))
    assert "av" in freed.names and "av" not in freed.fixed
    with pytest.raises(ValueError, match="unknown parameters"):
        prior.with_fixed(dust=1.0)
    with pytest.raises(ValueError, match="outside its range"):
        default_prior().with_fixed(redshift=3.0)
    with pytest.raises(ValueError, match="low < high"):
        Prior({"a": (1.0, 0.0)})


def test_draw_is_reproducible_and_leaves_torch_alone():
    prior = default_prior()
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = prior.draw(10, seed=3)
    after = torch.rand(1)
    assert np.array_equal(a, prior.draw(10, seed=3))
    assert not np.array_equal(a, prior.draw(10, seed=4))
    assert before == after


def test_json_round_trip():
    prior = default_prior().with_fixed(log_u=-2.5)
    back = Prior.from_json(prior.to_json())
    assert back.names == prior.names and back.fixed == prior.fixed
    assert torch.equal(back.low, prior.low)


def test_custom_base_distribution_is_truncated_to_ranges():
    base = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    prior = Prior({"a": (-1.0, 1.0), "b": (0.0, 3.0)}, base=base)
    x = prior.sample((500,))
    assert bool((x[:, 0].abs() <= 1).all() and (x[:, 1] >= 0).all())
    assert prior.log_prob(torch.tensor([0.0, -1.0])) == -np.inf


def test_usable_as_an_sbi_prior():
    from sbi.utils.user_input_checks import process_prior

    prior, d, _ = process_prior(default_prior())
    assert d == 8
    assert prior.sample((4,)).shape == (4, 8)
