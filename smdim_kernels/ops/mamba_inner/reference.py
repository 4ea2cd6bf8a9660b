"""Naive PyTorch Mamba mixer (everything after in_proj): the oracle of `mamba_inner_fn`."""
from __future__ import annotations

import torch.nn.functional as F

from ..causal_conv1d.reference import causal_conv1d_ref
from ..selective_scan.reference import selective_scan_ref


def mamba_inner_ref(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                    out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                    C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1):
    """Reference `mamba_inner_fn` (same signature; plain autograd, nothing recomputed).

    xz: (batch, 2*d_inner, L) = in_proj output, x then z. conv1d_weight: (d_inner, d_conv) or
    (d_inner, 1, d_conv); conv1d_bias: (d_inner,). x_proj_weight: (dt_rank + k*N, d_inner) with
    output [dt | B | C] (k = 2, or 1 when B or C is given); delta_proj_weight: (d_inner, dt_rank);
    out_proj_weight: (d_model, d_inner) or None; out_proj_bias: (d_model,). A: (d_inner, N);
    B, C: None (from x_proj) or (d_inner, N) / (batch, N, L) / (batch, G, N, L); D, delta_bias:
    (d_inner,); B_proj_bias, C_proj_bias: (N,), added to x_proj's B / C.
    Returns (batch, L, d_model), or the gated scan output (batch, d_inner, L) without out_proj.
    """
    d_inner = xz.shape[1] // 2
    dt_rank = delta_proj_weight.shape[1]
    dstate = A.shape[1]
    x, z = xz[:, :d_inner], xz[:, d_inner:]
    weight = conv1d_weight.reshape(d_inner, -1)
    conv_out = causal_conv1d_ref(x, weight, conv1d_bias, "silu")
    x_dbl = F.linear(conv_out.transpose(1, 2), x_proj_weight)  # (batch, L, rows)
    delta = F.linear(x_dbl[..., :dt_rank], delta_proj_weight).transpose(1, 2)  # (batch, d_inner, L)
    if B is None:
        B = x_dbl[..., dt_rank:dt_rank + dstate]
        B = (B if B_proj_bias is None else B + B_proj_bias.to(B.dtype)).transpose(1, 2)
    if C is None:
        C = x_dbl[..., x_dbl.shape[-1] - dstate:]
        C = (C if C_proj_bias is None else C + C_proj_bias.to(C.dtype)).transpose(1, 2)
    y = selective_scan_ref(conv_out, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if out_proj_weight is None:
        return y
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)
