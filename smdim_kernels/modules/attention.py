"""Multi-head self-attention, full or local-window, on PyTorch's fused SDPA kernels.

Full attention calls `F.scaled_dot_product_attention` without a mask (`is_causal` for causal), so the
fused flash kernel runs (on CPU `aten::_scaled_dot_product_flash_attention_for_cpu`). Local-window
attention is `smdim_kernels.ops.local_attention`: O(L * window) time and memory, blocked (nothing of
size L x L), or for a sequence of at most two key spans one SDPA call with an L x L window mask.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.local_attention.interface import local_attention, local_attention_of_buffer
from ..ops.local_attention.layout import LocalLayout, dense_is_cheaper, local_block_size, projected_buffer
from ..validation import check_tensor

__all__ = ["SelfAttention", "local_attention", "local_block_size"]


class SelfAttention(nn.Module):
    """Multi-head self-attention: (batch, L, d_model) -> (batch, L, d_model).

    in_proj (d_model -> 3*d_model) packs q, k, v in that order, each head-major
    (`qkv.view(batch, L, 3, num_heads, head_dim)`, as in mamba_ssm's MHA); out_proj maps back.
    Scores are scaled by 1/sqrt(head_dim). window=None: full attention (causal if `causal`).
    window=w: local attention, query i sees keys j with |i - j| <= w (0 <= i - j <= w if causal),
    in O(L * w) time and memory; for w >= L - 1 it is exactly full attention. `dropout` drops
    attention probabilities in training mode only (with dropout > 0, CPU SDPA takes its unfused
    math path, which materialises the scores: L x L for full attention, L x ~(block + 2w) local).
    """

    def __init__(self, d_model, num_heads, causal=False, window=None, bias=True, dropout=0.0,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("d_model", d_model), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        d_model, num_heads = int(d_model), int(num_heads)
        if d_model % num_heads:
            raise ValueError(f"d_model must be divisible by num_heads; got d_model={d_model}, num_heads={num_heads}")
        if window is not None:
            if isinstance(window, bool) or not isinstance(window, numbers.Integral):
                raise TypeError(f"window must be an int or None; got {type(window).__name__}")
            if window < 1:
                raise ValueError(f"window must be >= 1 (or None for full attention); got {window}")
            window = int(window)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.causal, self.window, self.dropout = bool(causal), window, float(dropout)
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias, **factory)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **factory)

    def forward(self, x):
        """x: (batch, L, d_model) -> (batch, L, d_model)."""
        check_tensor("x", x)
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected (batch, L, d_model={self.d_model}); got shape {tuple(x.shape)}")
        batch, length, _ = x.shape
        dropout_p = self.dropout if self.training else 0.0
        local = self.window is not None and self.window < length - 1
        if local and batch == 1 and not self._projection_needs_grad(x) \
                and not dense_is_cheaper(length, self.window, self.causal):
            layout = LocalLayout(length, self.window, self.causal, local_block_size(self.window))
            buf = projected_buffer(x, self.in_proj.weight, self.in_proj.bias, self.num_heads, layout)
            return self.out_proj(local_attention_of_buffer(buf, layout, 1, dropout_p))
        qkv = self.in_proj(x).view(batch, length, 3, self.num_heads, self.head_dim)
        if not local:
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # (batch, heads, L, head_dim) views
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal)
            out = out.transpose(1, 2).reshape(batch, length, self.d_model)
        else:
            out = local_attention(qkv, self.window, self.causal, dropout_p)
        return self.out_proj(out)

    def _projection_needs_grad(self, x):
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.in_proj.parameters()))

    def extra_repr(self):
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, causal={self.causal}, "
                f"window={self.window}, dropout={self.dropout}")
