"""mamba_inner's forward and backward: the chain (chain.py) over the whole sequence, gated by z,
with out_proj fused when its weight is given."""
from __future__ import annotations

import torch

from .._gemm import batched_mm, batched_weight_grad
from .chain import ChainWeights, backward, empty, prepare, scan


def _split(xz):
    d_inner = xz.shape[1] // 2
    return xz[:, :d_inner], xz[:, d_inner:]


def _weights(conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, D, delta_bias, B_proj_bias,
             C_proj_bias, B, C):
    return ChainWeights(conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, delta_bias, A, D, B, C,
                        B_proj_bias, C_proj_bias)


def forward(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A, D,
            delta_bias, B_proj_bias, C_proj_bias, B, C, delta_softplus, checkpoint_lvl, save_for_backward):
    """-> (out, x_dbl, y or (0,), checkpoints, conv_out or (0,), delta or (0,)); see interface.py."""
    x, z = _split(xz)
    w = _weights(conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, D, delta_bias, B_proj_bias,
                 C_proj_bias, B, C)
    chain = prepare(x, w)
    y, _, checkpoints = scan(chain, w, delta_softplus, z=z, save=save_for_backward)
    keep = save_for_backward and checkpoint_lvl == 0
    saved_conv, saved_delta = (chain.u, chain.delta) if keep else (empty(xz), empty(xz))
    if out_proj_weight is None:
        return y, chain.x_dbl, empty(xz), checkpoints, saved_conv, saved_delta
    out = batched_mm(y.transpose(1, 2), out_proj_weight.t())
    if out_proj_bias is not None:
        out = out + out_proj_bias.to(out.dtype)  # transformers passes an fp32 bias with a bf16 model
    return out, chain.x_dbl, y if save_for_backward else empty(xz), checkpoints, saved_conv, saved_delta


def backward_of(dout, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias, B, C, delta_softplus, x_dbl, y,
                checkpoints, conv_out, delta):
    """Gradients of the 14 tensor inputs ((0,) for absent ones)."""
    x, z = _split(xz)
    w = _weights(conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, D, delta_bias, B_proj_bias,
                 C_proj_bias, B, C)
    saved = conv_out.dim() > 1  # checkpoint_lvl=1 saved (0,) placeholders: recompute
    chain = prepare(x, w, x_dbl=x_dbl, u=conv_out if saved else None, delta=delta if saved else None)
    if out_proj_weight is None:
        dy = dout.contiguous()
        dout_proj_weight = dout_proj_bias = None
    else:
        dy = batched_mm(out_proj_weight.t(), dout.transpose(1, 2))  # (batch, d_inner, L)
        dout_proj_weight = batched_weight_grad(dout.transpose(1, 2), y.transpose(1, 2))
        dout_proj_bias = None if out_proj_bias is None else dout.sum((0, 1))
    g = backward(chain, w, dy, None, delta_softplus, checkpoints, z=z)

    def or_empty(t):
        return empty(xz) if t is None else t

    return (torch.cat([g.x_in, g.z], dim=1), g.conv_weight, or_empty(g.conv_bias), g.x_proj_weight,
            g.dt_proj_weight, or_empty(dout_proj_weight), or_empty(dout_proj_bias), g.A, or_empty(g.D),
            or_empty(g.dt_proj_bias), or_empty(g.B_proj_bias), or_empty(g.C_proj_bias), or_empty(g.B), or_empty(g.C))
