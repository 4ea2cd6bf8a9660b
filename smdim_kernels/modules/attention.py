"""Multi-head self-attention, full or local-window, on PyTorch's fused SDPA kernels.

Full attention calls `F.scaled_dot_product_attention` without a mask (`is_causal` for causal), so the
fused flash kernel runs (on CPU `aten::_scaled_dot_product_flash_attention_for_cpu`). Local-window
attention is blocked: O(L * window) time and memory, nothing of size L x L.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..validation import check_tensor


def local_block_size(window: int) -> int:
    """Query rows per block of the local path: 32, up to 128 for windows beyond 256.

    Each query block reads block + 2*window keys (block + window causal), so the work per query is
    (block + 2w) / (2w + 1) times the window's: small blocks waste less. Measured on CPU (torch 2.13
    flash kernel, 2 threads, d_model 768, 12 heads, L 4096/8192): 32-row blocks are the fastest for
    windows 8..256 (16 rows: more per-tile overhead; 64: +0-10 %, 128: +10-40 %); at window 1024,
    64-128 rows are ~5 % faster than 32.
    """
    return min(max(32, int(window) // 8), 128)


def _local_mask(n_blocks, block, span, window, causal, length, device):
    """(n_blocks, 1, block, span) bool, True = attend: query r of block b against key c of its span.

    Query position i = b*block + r; key position j = b*block + c - window, so i - j = r - c + window.
    Keys outside [0, length) are masked; padded queries (i >= length) keep their whole window so no
    row is fully masked (a fully masked row gives NaN, which would leak into the backward).
    """
    r = torch.arange(block, device=device)[:, None]
    c = torch.arange(span, device=device)[None, :]
    offset = c - r
    in_window = (offset >= 0) & (offset <= (window if causal else 2 * window))
    start = torch.arange(n_blocks, device=device)[:, None, None] * block
    j = start + c - window
    keep = in_window & (((j >= 0) & (j < length)) | (start + r >= length))
    return keep[:, None]


def local_attention(qkv, window, causal=False, dropout_p=0.0, block=None):
    """Local-window attention of packed qkv (batch, L, 3, heads, head_dim) -> (batch, L, heads*head_dim).

    Non-causal: query i sees keys j with |i - j| <= window; causal: 0 <= i - j <= window.
    The sequence is padded to n_blocks * block; query block b attends to the `span` keys starting
    `window` before it (span = block + 2*window, or block + window causal), taken as an overlapping
    strided view of the padded keys (no copy), in one batched SDPA call with a per-block mask.
    Batch and heads share the mask, so they are folded together into SDPA's head dimension.
    """
    batch, length, _, heads, head_dim = qkv.shape
    if block is None:
        block = local_block_size(window)
    n_blocks = -(-length // block)
    padded = n_blocks * block
    span = block + (window if causal else 2 * window)
    back = padded - length + (0 if causal else window)
    # (3, window + padded + back, batch * heads, head_dim), contiguous: the one copy of qkv.
    buf = torch.cat([qkv.new_zeros(3, window, batch, heads, head_dim), qkv.permute(2, 1, 0, 3, 4),
                     qkv.new_zeros(3, back, batch, heads, head_dim)], dim=1)
    buf = buf.view(3, buf.shape[1], batch * heads, head_dim)
    q = buf[0, window:window + padded].view(n_blocks, block, batch * heads, head_dim).transpose(1, 2)
    k = buf[1].unfold(0, span, block).transpose(-1, -2)  # (n_blocks, batch*heads, span, head_dim)
    v = buf[2].unfold(0, span, block).transpose(-1, -2)
    mask = _local_mask(n_blocks, block, span, window, causal, length, qkv.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    out = out.transpose(1, 2).reshape(padded, batch, heads * head_dim)[:length]
    return out.transpose(0, 1)


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
        qkv = self.in_proj(x).view(batch, length, 3, self.num_heads, self.head_dim)
        dropout_p = self.dropout if self.training else 0.0
        if self.window is None or self.window >= length - 1:
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # (batch, heads, L, head_dim) views
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal)
            out = out.transpose(1, 2).reshape(batch, length, self.d_model)
        else:
            out = local_attention(qkv, self.window, self.causal, dropout_p)
        return self.out_proj(out)

    def extra_repr(self):
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, causal={self.causal}, "
                f"window={self.window}, dropout={self.dropout}")
