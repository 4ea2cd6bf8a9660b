"""Naive activation + linear, fc2(act(h)) of a feed-forward layer: the oracle of the fused op."""
from __future__ import annotations

import torch.nn.functional as F

ACTIVATIONS = ("gelu", "swiglu")


def activate(h, activation):
    """gelu(h) (exact, erf) -> (..., hidden); or x * silu(gate) with h = [x, gate] (..., 2 * hidden),
    x first as in mamba_ssm's GatedMLP -> (..., hidden)."""
    if activation == "gelu":
        return F.gelu(h)
    x, gate = h.chunk(2, dim=-1)
    return x * F.silu(gate)


def activation_linear_ref(h, weight, bias=None, activation="gelu"):
    """Reference `activation_linear` (same signature, no `inplace`): F.linear(activate(h), weight, bias).

    h: (..., hidden) for "gelu", (..., 2 * hidden) for "swiglu"; weight: (out, hidden); bias: (out,)
    or None. Returns (..., out); autograd keeps the activation for the backward.
    """
    return F.linear(activate(h, activation), weight, bias)
