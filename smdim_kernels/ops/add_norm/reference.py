"""Naive residual add + LayerNorm / RMSNorm: the oracle of the fused kernels."""
from __future__ import annotations

import torch


def add_norm_ref(x, weight, bias=None, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False,
                 is_rms_norm=False):
    """Reference `add_norm_fn` (same signature).

    x, residual: (..., hidden); weight, bias: (hidden,). h = x + residual (x alone without residual);
    out = norm(h) * weight + bias with norm = LayerNorm or RMSNorm over the last dim, computed in
    fp32 (fp64 for fp64 inputs). Returns out in x's dtype, and with prenorm also h (the next
    block's residual: fp32 if residual_in_fp32, else residual's dtype).
    """
    dtype = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    h = x.to(dtype) if residual is None else x.to(dtype) + residual.to(dtype)
    if is_rms_norm:
        xhat = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)
    else:
        mu = h.mean(-1, keepdim=True)
        xhat = (h - mu) * torch.rsqrt((h - mu).square().mean(-1, keepdim=True) + eps)
    out = xhat * weight.to(dtype)
    if bias is not None:
        out = out + bias.to(dtype)
    out = out.to(x.dtype)
    if not prenorm:
        return out
    res_dtype = dtype if dtype == torch.float64 else (torch.float32 if residual_in_fp32 else
                                                      (x.dtype if residual is None else residual.dtype))
    return out, h.to(res_dtype)
