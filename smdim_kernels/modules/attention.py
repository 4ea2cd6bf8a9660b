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


GROUP_QUERIES = 128  # query rows per SDPA call of the local path (bounds its temporaries)


def _local_mask(first_block, n_blocks, block, span, window, causal, length, device):
    """(n_blocks, 1, block, span) bool, True = attend: query r of block b against key c of its span,
    for blocks first_block .. first_block + n_blocks - 1.

    Query position i = b*block + r; key position j = b*block + c - window, so i - j = r - c + window.
    Keys outside [0, length) are masked; padded queries (i >= length) keep their whole window so no
    row is fully masked (a fully masked row gives NaN, which would leak into the backward).
    """
    r = torch.arange(block, device=device)[:, None]
    c = torch.arange(span, device=device)[None, :]
    offset = c - r
    in_window = (offset >= 0) & (offset <= (window if causal else 2 * window))
    start = torch.arange(first_block, first_block + n_blocks, device=device)[:, None, None] * block
    j = start + c - window
    keep = in_window & (((j >= 0) & (j < length)) | (start + r >= length))
    return keep[:, None]


class _LocalLayout:
    """Geometry of the blocked local path. The buffer is (time, 3, batch*heads, head_dim), time-major
    so that for batch 1 its rows are qkv's own layout (the gradient needs no copy): along time,
    `window` zeros, the `padded` = n_blocks * block query positions, then zeros up to the last
    block's span."""

    def __init__(self, length, window, causal, block):
        self.length, self.window, self.causal, self.block = length, window, causal, block
        self.n_blocks = -(-length // block)
        self.padded = self.n_blocks * block
        self.span = block + (window if causal else 2 * window)
        self.back = self.padded - length + (0 if causal else window)
        self.group = max(1, GROUP_QUERIES // block)  # blocks per SDPA call

    def groups(self):
        return [(b0, min(b0 + self.group, self.n_blocks)) for b0 in range(0, self.n_blocks, self.group)]

    def rows(self, b0, b1):
        """The buffer's time rows that blocks b0..b1-1 read (their queries and key spans)."""
        return slice(b0 * self.block, (b1 - 1) * self.block + self.span)


def _group_inputs(rows, layout, b0, b1):
    """q (n, batch*heads, block, head_dim), k and v (n, batch*heads, span, head_dim) (overlapping views)
    and the mask of blocks b0..b1-1 (n = b1 - b0); rows = the buffer's rows(b0, b1)."""
    n, block, window = b1 - b0, layout.block, layout.window
    q = _blocks(rows[window:window + n * block, 0], n, block)
    k = rows[:, 1].unfold(0, layout.span, block).transpose(-1, -2)
    v = rows[:, 2].unfold(0, layout.span, block).transpose(-1, -2)
    mask = _local_mask(b0, n, block, layout.span, window, layout.causal, layout.length, rows.device)
    return q, k, v, mask


def _blocks(t, n, block):
    """(n * block, batch*heads, head_dim) -> the view (n, batch*heads, block, head_dim)."""
    return t.view(n, block, t.shape[1], t.shape[2]).transpose(1, 2)


def _query_blocks(t, b0, b1, block):
    """Blocks b0..b1-1 of t (L, batch*heads, head_dim) as (n, batch*heads, block, head_dim), the rows
    past L (the last block's padding) as zeros."""
    rows = t[b0 * block:b1 * block]
    missing = (b1 - b0) * block - rows.shape[0]
    if missing:
        rows = torch.cat([rows, rows.new_zeros((missing,) + rows.shape[1:])])
    return _blocks(rows, b1 - b0, block)


def _attend(rows, layout, b0, b1, dropout_p):
    """SDPA of blocks b0..b1-1 -> (b1 - b0, batch*heads, block, head_dim)."""
    q, k, v, mask = _group_inputs(rows, layout, b0, b1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def _additive(mask, dtype):
    """bool mask (True = attend) -> additive float mask, as SDPA converts it for its fused kernels."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _attention_backward_math(q, k, v, mask, out, dout):
    """Gradients (dq, dk, dv) of softmax(q k^T / sqrt(d) + mask) v, scores recomputed (one group)."""
    scale = q.shape[-1] ** -0.5
    p = torch.softmax((q @ k.transpose(-1, -2)) * scale + _additive(mask, q.dtype), dim=-1)
    dv = p.transpose(-1, -2) @ dout
    dscores = p * (dout @ v.transpose(-1, -2) - (dout * out).sum(-1, keepdim=True))
    return (dscores @ k) * scale, (dscores.transpose(-1, -2) @ q) * scale, dv


def _uses_cpu_flash(device):
    """Whether the grouped path calls PyTorch's CPU flash kernels (and keeps their log-sum-exp)."""
    return device.type == "cpu"


class _GroupedLocalAttention(torch.autograd.Function):
    """Local attention over groups of blocks, keeping the qkv buffer, the output and (CPU) the
    log-sum-exp for the backward.

    Autograd through one SDPA call over overlapping key views would build the key and value
    gradients per block span, (n_blocks, batch*heads, span, head_dim) each: span/block times the
    size of k (9x for the default window). Here the backward runs one group at a time and folds its
    key/value gradients into the buffer's rows, so temporaries are one group's (GROUP_QUERIES
    queries). CPU runs PyTorch's flash kernels forward and backward; other devices use SDPA forward
    and recompute the group's scores in the backward. Without dropout only.
    """

    @staticmethod
    def forward(ctx, buf, layout):
        """buf (time, 3, batch*heads, head_dim) -> out (L, batch*heads, head_dim)."""
        out = buf.new_empty((layout.length, buf.shape[2], buf.shape[3]))
        flash_cpu = _uses_cpu_flash(buf.device)
        lse = buf.new_empty((0,))
        for b0, b1 in layout.groups():
            q, k, v, mask = _group_inputs(buf[layout.rows(b0, b1)], layout, b0, b1)
            if flash_cpu:
                result, group_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    q, k, v, 0.0, False, attn_mask=_additive(mask, q.dtype))
                if not lse.numel():  # its dtype is the kernel's accumulation type
                    lse = group_lse.new_empty((layout.n_blocks,) + group_lse.shape[1:])
                lse[b0:b1] = group_lse
            else:
                result = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            first = b0 * layout.block
            out[first:b1 * layout.block] = result.transpose(1, 2).reshape(-1, *out.shape[1:])[:layout.length - first]
        ctx.save_for_backward(buf, out, lse)
        ctx.layout = layout
        return out

    @staticmethod
    def backward(ctx, dout):
        buf, out, lse = ctx.saved_tensors
        layout = ctx.layout
        dbuf = torch.zeros_like(buf)
        for b0, b1 in layout.groups():
            rows = layout.rows(b0, b1)
            n, block, window = b1 - b0, layout.block, layout.window
            q, k, v, mask = _group_inputs(buf[rows], layout, b0, b1)
            dout_group = _query_blocks(dout, b0, b1, block).contiguous()
            out_group = _query_blocks(out, b0, b1, block)
            if lse.numel():
                dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                    dout_group, q, k, v, out_group, lse[b0:b1], 0.0, False, attn_mask=_additive(mask, q.dtype))
            else:
                dq, dk, dv = _attention_backward_math(q, k, v, mask, out_group, dout_group)
            drows = dbuf[rows]
            drows[window:window + n * block, 0] += dq.transpose(1, 2).reshape(n * block, *drows.shape[2:])
            for i, grad in ((1, dk), (2, dv)):  # fold the overlapping spans back onto the rows
                drows[:, i] += torch.ops.aten.unfold_backward(grad.transpose(-1, -2), list(drows[:, i].shape), 0,
                                                              layout.span, block)
        return dbuf, None


def local_attention(qkv, window, causal=False, dropout_p=0.0, block=None):
    """Local-window attention of packed qkv (batch, L, 3, heads, head_dim) -> (batch, L, heads*head_dim).

    Non-causal: query i sees keys j with |i - j| <= window; causal: 0 <= i - j <= window.
    The sequence is padded to n_blocks * block; query block b attends to the `span` keys starting
    `window` before it (span = block + 2*window, or block + window causal), taken as an overlapping
    strided view of the padded keys (no copy), with a per-block mask. Batch and heads share the
    mask, so they are folded together into SDPA's head dimension. Blocks run in groups of
    GROUP_QUERIES queries per SDPA call; without dropout the backward re-runs one group at a time
    (_GroupedLocalAttention), so memory stays O(L * d_model), not O(L * span * heads).
    """
    batch, length, _, heads, head_dim = qkv.shape
    layout = _LocalLayout(length, window, causal, local_block_size(window) if block is None else block)
    # (window + padded + back, 3, batch * heads, head_dim), contiguous: the one copy of qkv.
    rows = qkv.permute(1, 2, 0, 3, 4).reshape(length, 3, batch * heads, head_dim)
    buf = torch.cat([rows.new_zeros(window, 3, batch * heads, head_dim), rows,
                     rows.new_zeros(layout.back, 3, batch * heads, head_dim)])
    return _local_attention_of_buffer(buf, layout, batch, dropout_p)


def _projected_buffer(x, weight, bias, heads, layout):
    """The local path's buffer with in_proj computed straight into its rows (batch 1, no autograd):
    qkv never exists on its own. x: (1, L, d_model)."""
    length, d_model = x.shape[1], x.shape[2]
    buf = x.new_empty((layout.window + layout.padded + layout.back, 3, heads, d_model // heads))
    buf[:layout.window].zero_()
    buf[layout.window + length:].zero_()
    rows = buf[layout.window:layout.window + length].view(length, 3 * d_model)
    if bias is None:
        torch.mm(x[0], weight.t(), out=rows)
    else:
        torch.addmm(bias, x[0], weight.t(), out=rows)
    return buf


def _local_attention_of_buffer(buf, layout, batch, dropout_p):
    """Local attention of the buffer (time, 3, batch*heads, head_dim) -> (batch, L, heads*head_dim)."""
    heads, head_dim = buf.shape[2] // batch, buf.shape[3]
    if dropout_p == 0.0:
        out = _GroupedLocalAttention.apply(buf, layout)  # (L, batch*heads, head_dim)
    else:  # plain autograd: one SDPA call, its dropout mask drawn once
        out = _attend(buf, layout, 0, layout.n_blocks, dropout_p).transpose(1, 2)
        out = out.reshape(layout.padded, batch * heads, head_dim)[:layout.length]
    return out.reshape(layout.length, batch, heads * head_dim).transpose(0, 1)


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
        if local and batch == 1 and not self._projection_needs_grad(x):
            layout = _LocalLayout(length, self.window, self.causal, local_block_size(self.window))
            buf = _projected_buffer(x, self.in_proj.weight, self.in_proj.bias, self.num_heads, layout)
            return self.out_proj(_local_attention_of_buffer(buf, layout, 1, dropout_p))
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
