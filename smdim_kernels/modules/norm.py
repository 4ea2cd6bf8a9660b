"""LayerNorm / RMSNorm modules on the fused residual-add + norm op (mamba_ssm's fused norm API)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.add_norm import add_norm_fn


class _AddNorm(nn.Module):
    is_rms_norm = False

    def __init__(self, hidden_size, eps=1e-5, bias=True, device=None, dtype=None):
        super().__init__()
        if int(hidden_size) != hidden_size or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive integer; got {hidden_size!r}")
        self.hidden_size, self.eps = int(hidden_size), eps
        self.weight = nn.Parameter(torch.ones(self.hidden_size, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(self.hidden_size, device=device, dtype=dtype)) if bias else None

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        """x, residual: (..., hidden_size). Returns norm(x + residual), and with prenorm also the
        sum x + residual (fp32 if residual_in_fp32), which the next block adds its output to."""
        return add_norm_fn(x, self.weight, self.bias, residual=residual, eps=self.eps, prenorm=prenorm,
                           residual_in_fp32=residual_in_fp32, is_rms_norm=self.is_rms_norm)

    def extra_repr(self):
        return f"{self.hidden_size}, eps={self.eps}, bias={self.bias is not None}"


class LayerNorm(_AddNorm):
    """nn.LayerNorm over the last dim (parameters weight, bias) with an optional fused residual add."""


class RMSNorm(_AddNorm):
    """RMSNorm over the last dim (parameter weight; bias optional, off by default) with an optional
    fused residual add."""
    is_rms_norm = True

    def __init__(self, hidden_size, eps=1e-5, bias=False, device=None, dtype=None):
        super().__init__(hidden_size, eps=eps, bias=bias, device=device, dtype=dtype)


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def make_norm(kind, hidden_size, eps, device=None, dtype=None):
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}; got {kind!r}")
    return NORMS[kind](hidden_size, eps=eps, device=device, dtype=dtype)
