"""Naive PyTorch depthwise causal convolution: the oracle of the fused kernels."""
from __future__ import annotations

import torch.nn.functional as F


def causal_conv1d_ref(x, weight, bias=None, activation=None, reverse=False):
    """Reference `causal_conv1d_fn` (same signature).

    x: (batch, dim, L); weight: (dim, width); bias: (dim,). out[b, d, t] =
    act(bias[d] + sum_k weight[d, k] * x[b, d, t - width + 1 + k]) with zeros before t = 0;
    act is SiLU for activation="silu", identity for None; reverse=True: the same on the flipped
    sequence, flipped back (anti-causal). Returns (batch, dim, L) in x's dtype.
    """
    if reverse:
        return causal_conv1d_ref(x.flip(-1), weight, bias, activation).flip(-1)
    dim, width = weight.shape
    out = F.conv1d(x, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                   padding=width - 1, groups=dim)[..., : x.shape[-1]]
    return F.silu(out) if activation == "silu" else out
