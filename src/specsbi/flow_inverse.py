"""Exact inversion of nflows' autoregressive (MADE) layers for many draws per condition.

nflows inverts an autoregressive layer by running its MADE over every row once per
feature. When the rows come in groups of ``n`` draws that share a condition (one
galaxy's summary, or the known x block of a joint flow over [x, θ]), most of that
work is the same within a group: the context's contribution to the hidden units,
the known block's part of the first masked layer, and, for the first free feature,
the whole network (its parameters depend on nothing that varies within a group).
:func:`invert_grouped` computes those once per group, evaluates per row only what
depends on the draws, and only the output rows of the feature being solved. The
result is the same inverse (to float rounding); layers it does not know (batch
norm, random masks, other transforms) return ``None`` and the caller falls back to
nflows' own inverse.
"""

from __future__ import annotations

import torch
from nflows.transforms import (
    MaskedAffineAutoregressiveTransform,
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
)
from nflows.transforms.made import MADE, MaskedFeedforwardBlock, MaskedResidualBlock
from torch import Tensor, nn

__all__ = ["invert_grouped"]

_LAYERS = (MaskedAffineAutoregressiveTransform,
           MaskedPiecewiseRationalQuadraticAutoregressiveTransform)


def _supported(layer: nn.Module) -> bool:
    made = getattr(layer, "autoregressive_net", None)
    if not isinstance(layer, _LAYERS) or not isinstance(made, MADE):
        return False
    for block in made.blocks:
        if isinstance(block, MaskedFeedforwardBlock):
            if block.batch_norm is not None:
                return False
        elif not isinstance(block, MaskedResidualBlock) or block.use_batch_norm:
            return False
    return True


def _masked(linear: nn.Module) -> tuple[Tensor, Tensor]:
    return linear.weight * linear.mask, linear.bias


def _hidden(made: MADE, base: Tensor, free: Tensor, w_free: Tensor,
            block_context: list[Tensor | None]) -> Tensor:
    """The MADE's last hidden layer: (G, r, H) from the per-group part ``base`` (G, H) of
    the first layer's pre-activation and the per-row free inputs (G, r, F)."""
    h = base[:, None] + free @ w_free.T
    if not made.use_residual_blocks:
        h = made.activation(h)
    for block, ctx in zip(made.blocks, block_context, strict=True):
        if isinstance(block, MaskedResidualBlock):
            t = block.linear_layers[0](block.activation(h))
            if ctx is not None:
                t = t + ctx[:, None]
            t = block.linear_layers[1](block.dropout(block.activation(t)))
            h = h + t
        else:
            h = block.dropout(block.activation(block.linear(h)))
    return h


def _invert_feature(layer: nn.Module, z: Tensor, params: Tensor) -> Tensor:
    """Solve one feature of the layer: its outputs z (N,) and its parameters (N, P)."""
    if isinstance(layer, MaskedPiecewiseRationalQuadraticAutoregressiveTransform):
        # the spline reads the number of features from its input: solve the one column
        return layer._elementwise_inverse(z[:, None], params)[0][:, 0]
    # the affine layer views its parameters with every feature: pad the others with zeros
    full = params.new_zeros(len(z), layer.features, params.shape[1])
    full[:, -1] = params
    zs = z.new_zeros(len(z), layer.features)
    zs[:, -1] = z
    return layer._elementwise_inverse(zs, full.reshape(len(z), -1))[0][:, -1]


@torch.no_grad()
def invert_grouped(layer: nn.Module, z: Tensor, groups: int, context: Tensor | None = None,
                   known: Tensor | None = None) -> Tensor | None:
    """Invert an autoregressive layer for ``groups`` equal groups of rows sharing a condition.

    Args:
        layer: an nflows masked affine or rational-quadratic autoregressive transform.
        z: (groups · n, F) the layer's output for the free features (the last F),
            rows of a group contiguous.
        groups: number of groups G.
        context: (G, C) the embedded condition of each group (or None).
        known: (G, S) the layer's input for its first S features, known per group
            (the x block of a joint flow), or None (S = 0).

    Returns:
        (G · n, F): the layer's input for the free features, or None when the layer
        is of a kind this does not handle (use ``layer.inverse`` then).

    Example:
        >>> from nflows.transforms import MaskedAffineAutoregressiveTransform as MAF
        >>> layer = MAF(3, 8, context_features=2, use_residual_blocks=False).eval()
        >>> c, z = torch.randn(2, 2), torch.randn(10, 3)
        >>> x = invert_grouped(layer, z, 2, context=c)
        >>> bool(torch.allclose(layer(x, c.repeat_interleave(5, 0))[0], z, atol=1e-5))
        True
    """
    if not _supported(layer):
        return None
    made = layer.autoregressive_net
    n_free = z.shape[1]
    n_known = 0 if known is None else known.shape[1]
    n = len(z) // groups
    if n * groups != len(z):
        raise ValueError(f"{len(z)} rows do not split into {groups} equal groups")
    w0, b0 = _masked(made.initial_layer)
    base = b0.expand(groups, -1)
    if known is not None:
        base = base + known @ w0[:, :n_known].T
    if context is not None:
        base = base + made.activation(made.context_layer(context))
    block_context = [block.context_layer(context)
                     if context is not None and hasattr(block, "context_layer") else None
                     for block in made.blocks]
    w_free = w0[:, n_known:]
    wf, bf = _masked(made.final_layer)
    p = wf.shape[0] // (n_known + n_free)
    zg = z.view(groups, n, n_free)
    out = z.new_zeros(groups, n, n_free)
    for k in range(n_free):
        # the first free feature depends on nothing that varies within a group
        free = out[:, :1] if k == 0 else out
        h = _hidden(made, base, free, w_free, block_context)
        rows = slice((n_known + k) * p, (n_known + k + 1) * p)
        params = (h @ wf[rows].T + bf[rows]).expand(groups, n, p).reshape(groups * n, p)
        out[:, :, k] = _invert_feature(layer, zg[:, :, k].reshape(-1), params).view(groups, n)
    return out.reshape(groups * n, n_free)
