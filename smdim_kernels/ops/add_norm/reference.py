"""Naive residual add + LayerNorm / RMSNorm: the oracle of the fused kernels."""
from __future__ import annotations

import torch


def stats_dtype(x, weight):
    """Dtype of the normalisation maths: fp64 if x or weight is fp64, else fp32."""
    return torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32


def residual_out_dtype(x, residual, weight, residual_in_fp32):
    """Dtype of the returned residual h: fp64 for fp64 maths, fp32 if asked, else residual's (x's)."""
    if stats_dtype(x, weight) == torch.float64:
        return torch.float64
    if residual_in_fp32:
        return torch.float32
    return x.dtype if residual is None else residual.dtype


def add_norm_ref(x, weight, bias=None, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False,
                 is_rms_norm=False):
    """Reference `add_norm_fn` (same signature).

    x, residual: (..., hidden); weight, bias: (hidden,). h = x + residual (x alone without residual);
    out = norm(h) * weight + bias with norm = LayerNorm or RMSNorm over the last dim, computed in
    fp32 (fp64 for fp64 inputs). Returns out in x's dtype, and with prenorm also h (the next
    block's residual: fp32 if residual_in_fp32, else residual's dtype).
    """
    dtype = stats_dtype(x, weight)
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
    return out, h.to(residual_out_dtype(x, residual, weight, residual_in_fp32))
