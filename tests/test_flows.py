"""The flows themselves: the tempered base, its calibration, the grouped inverse and the
regression layer."""

from __future__ import annotations

import math

import pytest
import torch
from nflows.transforms import (
    MaskedAffineAutoregressiveTransform,
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
)

from specsbi.flow_inverse import invert_grouped
from specsbi.flows import ConditionalFlow, JointFlow, LinearShift, calibrate


def test_temperature_is_a_normalised_widening_and_calibration_recovers_it():
    torch.manual_seed(0)
    flow = ConditionalFlow(1, 2, kind="nsf", hidden=16, transforms=2)
    c = torch.randn(1, 2)
    grid = torch.linspace(-30, 30, 20001)[:, None]
    step = float(grid[1] - grid[0])
    flow.flow._distribution.temperature.fill_(2.0)
    with torch.no_grad():
        mass = flow.log_prob(grid, c.expand(len(grid), -1)).exp().sum() * step
        draws = flow.sample(20000, c)[0]
    assert float(mass) == pytest.approx(1.0, abs=2e-3)
    # draws at T = 2 have latents of RMS 2 at T = 1: calibrate finds T again
    flow.flow._distribution.temperature.fill_(1.0)
    temp = calibrate(flow, draws, c.expand(len(draws), -1))
    assert float(temp[0]) == pytest.approx(2.0, rel=0.02)
    assert float(flow.flow._distribution.temperature[0]) == pytest.approx(float(temp[0]))


def test_joint_flow_temperature_widens_theta_given_x_only():
    torch.manual_seed(1)
    flow = JointFlow(2, 1, kind="maf", hidden=16, transforms=2)
    x = torch.randn(1, 2)
    with torch.no_grad():
        narrow = flow.conditional_sample(20000, x)[0]
    qx = flow.marginal_log_prob(x).detach()
    temp = calibrate(flow, narrow, x.expand(len(narrow), -1))
    assert float(temp[0]) == pytest.approx(1.0, rel=0.03)  # its own draws: T ≈ 1
    flow.flow._distribution.temperature[-1] = 3.0
    assert torch.allclose(flow.marginal_log_prob(x), qx)  # log q(x) untouched
    with torch.no_grad():
        wide = flow.conditional_sample(20000, x)[0]
    # widening the base by 3 widens θ | x (not exactly 3×: the flow is nonlinear)
    assert float(wide.std() / narrow.std()) > 2.0
    grid = torch.linspace(-60, 60, 24001)[:, None]
    with torch.no_grad():
        lp = flow.conditional_log_prob(grid, x.expand(len(grid), -1), qx.expand(len(grid)))
    assert float(lp.exp().sum() * (grid[1] - grid[0])) == pytest.approx(1.0, abs=5e-3)
    assert math.isfinite(float(lp.max()))


def test_an_untrained_spline_flow_is_the_identity():
    # the splines start with equal bins and unit slopes, not as random warps
    torch.manual_seed(2)
    normal = torch.distributions.Normal(0.0, 1.0)
    flow = ConditionalFlow(3, 2, kind="nsf", hidden=32, transforms=3)  # two reversals
    y, c = 2 * torch.randn(500, 3), torch.randn(500, 2)
    with torch.no_grad():
        assert torch.allclose(flow.latent(y, c), y, atol=0.02)
        assert torch.allclose(flow.log_prob(y, c), normal.log_prob(y).sum(-1), atol=0.02)
        joint = JointFlow(2, 3, kind="nsf", hidden=32, transforms=4)
        x = torch.randn(500, 2)
        expected = normal.log_prob(torch.cat([x, y], -1)).sum(-1)
        assert torch.allclose(joint.log_prob(x, y), expected, atol=0.03)


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights, so that every layer is far from the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return module.eval()


@pytest.mark.parametrize("kind", ["nsf", "maf"])
@pytest.mark.parametrize("features, regression", [(1, False), (2, True), (3, False)])
def test_grouped_sampling_equals_nflows_inverse(kind, features, regression):
    flow = _perturbed(ConditionalFlow(features, 5, kind=kind, hidden=16, transforms=3,
                                      embedding=torch.nn.Linear(5, 7), embedding_dim=7,
                                      regression=regression))
    c = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    reference = flow.flow.sample(50, context=c)  # nflows: every row through every pass
    torch.manual_seed(2)
    with torch.no_grad():
        draws = flow.sample(50, c)
    torch.testing.assert_close(draws, reference.detach(), atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("kind, regression, share", [("nsf", True, 0.0), ("maf", False, 0.0),
                                                     ("nsf", False, 0.5)])
def test_joint_flow_draws_map_back_to_their_base_noise(kind, regression, share):
    flow = _perturbed(JointFlow(6, 2, kind=kind, hidden=16, transforms=3,
                                regression=regression, theta_units=share))
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    theta = flow.conditional_sample(50, x)
    torch.manual_seed(4)
    noise = torch.randn(200, 2)
    latent = flow.latent(theta.reshape(200, 2), x.repeat_interleave(50, 0))
    torch.testing.assert_close(latent, noise, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["nsf", "maf"])
def test_reserved_theta_units_see_all_of_x_and_keep_the_order(kind):
    x_dim, hidden = 20, 32
    flow = _perturbed(JointFlow(x_dim, 2, kind=kind, hidden=hidden, transforms=2,
                                theta_units=0.5))
    for layer in flow.flow._transform._transforms:
        if not hasattr(layer, "autoregressive_net"):
            continue
        made = layer.autoregressive_net
        assert int((made.initial_layer.degrees >= x_dim).sum()) == hidden // 2  # nflows: 2
        v = torch.randn(x_dim + 2)
        jac = torch.autograd.functional.jacobian(lambda u, net=made: net(u[None])[0], v)
        out_deg = made.final_layer.degrees
        for i, d in enumerate(out_deg.tolist()):  # an output sees only the features before it
            assert (jac[i, d - 1 :] == 0).all()
        assert (jac[out_deg > x_dim][:, :x_dim] != 0).any(0).all()  # θ's see every x
    if kind == "nsf":  # the perturbed splines are too sharp for a grid integral
        return
    x = torch.randn(3, x_dim, generator=torch.Generator().manual_seed(5))
    # q(x) from the x block alone still normalises q(θ | x): a grid over θ integrates to 1
    g = torch.linspace(-40, 40, 321)
    grid = torch.cartesian_prod(g, g)
    with torch.no_grad():
        log_qx = flow.marginal_log_prob(x).repeat_interleave(len(grid))
        dens = flow.conditional_log_prob(grid.repeat(3, 1), x.repeat_interleave(len(grid), 0),
                                         log_qx)
    total = dens.exp().reshape(3, len(g), len(g)).sum((1, 2)) * (g[1] - g[0]) ** 2
    torch.testing.assert_close(total, torch.ones(3), atol=2e-3, rtol=0)


def test_theta_units_must_be_a_share():
    with pytest.raises(ValueError, match="theta_units"):
        JointFlow(4, 2, theta_units=1.0)


@pytest.mark.parametrize("layer_class", [MaskedAffineAutoregressiveTransform,
                                         MaskedPiecewiseRationalQuadraticAutoregressiveTransform])
def test_grouped_inverse_with_residual_blocks_and_a_known_block(layer_class):
    extra = {"num_bins": 4, "tails": "linear"} if "Piecewise" in layer_class.__name__ else {}
    layer = _perturbed(layer_class(4, 8, context_features=2, use_residual_blocks=True, **extra))
    gen = torch.Generator().manual_seed(5)
    c, known, z = torch.randn(3, 2, generator=gen), torch.randn(3, 1, generator=gen), \
        torch.randn(30, 3, generator=gen)
    free = invert_grouped(layer, z, 3, context=c, known=known)
    inputs = torch.cat([known.repeat_interleave(10, 0), free], 1)
    out = layer(inputs, c.repeat_interleave(10, 0))[0]
    torch.testing.assert_close(out[:, 1:], z, atol=5e-5, rtol=1e-4)
    assert invert_grouped(torch.nn.Identity(), z, 3) is None  # not a MADE layer: caller falls back
    with pytest.raises(ValueError, match="equal groups"):
        invert_grouped(layer, z[:29], 3, context=c, known=known)


def _linear_gaussian(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """c ~ N(0, I_3); y = B c + 0.5 + N(0, 0.2² I_2): y | c is Gaussian with a linear mean."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]])
    c = torch.randn(n, 3, generator=gen)
    return c @ b.T + 0.5 + 0.2 * torch.randn(n, 2, generator=gen), c, b


def test_linear_shift_inverts_and_fits_a_linear_regression():
    y, c, b = _linear_gaussian(20_000, 3)
    shift = LinearShift(2, 3)
    shift.fit(y, c)
    assert torch.allclose(shift.weight, b, atol=0.01)
    assert torch.allclose(shift.bias, torch.full((2,), 0.5), atol=0.01)
    assert torch.allclose(shift.log_scale.exp(), torch.full((2,), 0.2), rtol=0.02)
    with torch.no_grad():
        z, logdet = shift(y, context=c)
        back, inv_logdet = shift.inverse(z, context=c)
    assert torch.allclose(back, y, atol=1e-5)
    assert torch.allclose(logdet, -inv_logdet)
    assert float(z.std()) == pytest.approx(1.0, abs=0.02)
    # in a joint vector the condition is the leading block and passes through unchanged
    joint = LinearShift(2, 3, split=3)
    joint.load_state_dict(shift.state_dict())
    with torch.no_grad():
        out, _ = joint(torch.cat([c, y], -1))
    assert torch.equal(out[:, :3], c) and torch.allclose(out[:, 3:], z)


def test_a_flow_with_regression_starts_at_the_linear_gaussian_fit():
    # untrained (identity splines), both flows already give y | c its exact density
    kind = "nsf"
    torch.manual_seed(4)
    y, c, b = _linear_gaussian(20_000, 5)
    yt, ct, _ = _linear_gaussian(500, 6)
    exact = torch.distributions.Normal(ct @ b.T + 0.5, 0.2).log_prob(yt).sum(-1)
    cond = ConditionalFlow(2, 3, kind=kind, hidden=16, transforms=2, y=y, c=c,
                           regression=True)
    joint = JointFlow(3, 2, kind=kind, hidden=16, transforms=2, x=c, theta=y,
                      regression=True)
    plain = ConditionalFlow(2, 3, kind=kind, hidden=16, transforms=2, y=y, c=c)
    with torch.no_grad():
        assert float((exact - cond.log_prob(yt, ct)).abs().mean()) < 0.1
        assert float((exact - joint.conditional_log_prob(yt, ct)).abs().mean()) < 0.1
        assert float((exact - plain.log_prob(yt, ct)).mean()) > 1.0  # without: far off
        draws = joint.conditional_sample(4000, ct[:3])
    assert torch.allclose(draws.mean(1), ct[:3] @ b.T + 0.5, atol=0.03)
    assert torch.allclose(draws.std(1), torch.full((3, 2), 0.2), rtol=0.1)
    # without data the shift is the identity, ready for a saved state
    bare = ConditionalFlow(2, 3, kind=kind, hidden=16, transforms=2, regression=True)
    assert set(bare.state_dict()) == set(cond.state_dict())
    assert not set(plain.state_dict()) >= set(cond.state_dict())


def test_linear_shift_refuses_mismatched_data():
    shift = LinearShift(2, 3)
    with pytest.raises(ValueError, match=r"y \(n, 2\) and c \(n, 3\)"):
        shift.fit(torch.zeros(10, 2), torch.zeros(9, 3))
    with pytest.raises(ValueError, match="n >= 2"):
        shift.fit(torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="got"):
        shift.fit(torch.zeros(10, 3), torch.zeros(10, 3))
