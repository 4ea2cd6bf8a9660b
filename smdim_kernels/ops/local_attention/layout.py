"""Geometry of the blocked local-attention path: the padded qkv buffer, its query blocks, their
overlapping key spans and per-block masks.

The buffer is (time, 3, batch*heads, head_dim), time-major so that for batch 1 its rows are qkv's own
layout (the gradient needs no copy): along time, `window` zero rows, the L positions, then `back`
zero rows: the last block's padding (padded - L rows, padded = n_blocks * block) and, non-causal,
the `window` keys after it, so the last block's key span ends on the buffer's last row.
"""
from __future__ import annotations

import torch

GROUP_QUERIES = 128  # query rows per SDPA call of the local path (bounds its temporaries)


def local_block_size(window: int) -> int:
    """Query rows per block of the local path: 32, up to 128 for windows beyond 256.

    Each query block reads block + 2*window keys (block + window causal), so the work per query is
    (block + 2w) / (2w + 1) times the window's: small blocks waste less. Measured on CPU (torch 2.13
    flash kernel, 2 threads, d_model 768, 12 heads, L 4096/8192): 32-row blocks are the fastest for
    windows 8..256 (16 rows: more per-tile overhead; 64: +0-10 %, 128: +10-40 %); at window 1024,
    64-128 rows are ~5 % faster than 32.
    """
    return min(max(32, int(window) // 8), 128)


DENSE_SPANS = 2  # up to this many key spans of length, one dense masked SDPA call beats the blocked path


def dense_is_cheaper(length, window, causal):
    """Whether one SDPA call over the whole sequence with an L x L window mask is faster than the
    blocked path (local_attention's choice when no block size is given).

    The blocked path reads span = block + 2*window keys per query in blocks of 32 rows and calls SDPA
    per group; the dense call reads L keys per query in one fused kernel. Measured on CPU (torch 2.13
    flash kernel, 2 threads, forward + backward; window 32: 4 heads of 32, window 64: 8 heads of 64):
    dense is 3.2x faster at L = 0.67 spans (batch 16 x 64 steps), 1.6x at 1.6 spans, level at
    2.7-4 spans, 1.2-1.9x slower from 3.2 spans on. Measured on CPU only; CUDA takes the same rule.
    """
    span = local_block_size(window) + (window if causal else 2 * window)
    return length <= DENSE_SPANS * span


class LocalLayout:
    """The blocked path's sizes for a sequence of `length` (all plain ints, so the op can take them).

    n_blocks query blocks of `block` rows (padded = n_blocks * block); each reads a key span of
    block + 2*window rows (block + window causal) starting `window` rows before it; `back` zero rows
    follow the L positions in the buffer; `group` blocks go to one SDPA call.
    """

    def __init__(self, length, window, causal, block):
        self.length, self.window, self.causal, self.block = length, window, causal, block
        self.n_blocks = -(-length // block)
        self.padded = self.n_blocks * block
        self.span = block + (window if causal else 2 * window)
        self.back = self.padded - length + (0 if causal else window)
        self.group = max(1, GROUP_QUERIES // block)  # blocks per SDPA call

    @property
    def time(self):
        """Rows of the buffer along time: the last block's key span ends on the last row."""
        return self.window + self.length + self.back

    def groups(self):
        """(b0, b1) for each group of blocks b0..b1-1, in order."""
        return [(b0, min(b0 + self.group, self.n_blocks)) for b0 in range(0, self.n_blocks, self.group)]

    def rows(self, b0, b1):
        """The buffer's time rows that blocks b0..b1-1 read (their queries and key spans)."""
        return slice(b0 * self.block, (b1 - 1) * self.block + self.span)


def local_mask(first_block, n_blocks, block, span, window, causal, length, device):
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


def blocks(t, n, block):
    """(n * block, batch*heads, head_dim) -> the view (n, batch*heads, block, head_dim)."""
    return t.view(n, block, t.shape[1], t.shape[2]).transpose(1, 2)


def group_inputs(rows, layout, b0, b1):
    """q (n, batch*heads, block, head_dim), k and v (n, batch*heads, span, head_dim) (overlapping views)
    and the mask of blocks b0..b1-1 (n = b1 - b0); rows = the buffer's rows(b0, b1)."""
    n, block, window = b1 - b0, layout.block, layout.window
    q = blocks(rows[window:window + n * block, 0], n, block)
    k = rows[:, 1].unfold(0, layout.span, block).transpose(-1, -2)
    v = rows[:, 2].unfold(0, layout.span, block).transpose(-1, -2)
    mask = local_mask(b0, n, block, layout.span, window, layout.causal, layout.length, rows.device)
    return q, k, v, mask


def query_blocks(t, b0, b1, block):
    """Blocks b0..b1-1 of t (L, batch*heads, head_dim) as (n, batch*heads, block, head_dim), the rows
    past L (the last block's padding) as zeros."""
    rows = t[b0 * block:b1 * block]
    missing = (b1 - b0) * block - rows.shape[0]
    if missing:
        rows = torch.cat([rows, rows.new_zeros((missing,) + rows.shape[1:])])
    return blocks(rows, b1 - b0, block)


def qkv_buffer(qkv, layout):
    """Packed qkv (batch, L, 3, heads, head_dim) -> the buffer (time, 3, batch*heads, head_dim),
    contiguous: the one copy of qkv. Batch and heads share the mask, so they fold together."""
    batch, length, _, heads, head_dim = qkv.shape
    buf = qkv.new_empty((layout.time, 3, batch * heads, head_dim))
    buf[:layout.window].zero_()
    buf[layout.window + length:].zero_()
    # one strided copy (a permuted reshape, then a cat with the zero rows, would copy twice)
    buf[layout.window:layout.window + length].view(length, 3, batch, heads, head_dim).copy_(qkv.permute(1, 2, 0, 3, 4))
    return buf


def projected_buffer(x, weight, bias, heads, layout):
    """The buffer with the qkv projection x @ weight^T + bias computed straight into its rows (batch 1,
    no autograd: `out=`): qkv never exists on its own. x: (1, L, d_model); weight: (3*d_model,
    d_model); bias: (3*d_model,) or None -> (time, 3, heads, d_model // heads)."""
    length, d_model = x.shape[1], x.shape[2]
    buf = x.new_empty((layout.time, 3, heads, d_model // heads))
    buf[:layout.window].zero_()
    buf[layout.window + length:].zero_()
    rows = buf[layout.window:layout.window + length].view(length, 3 * d_model)
    if bias is None:
        torch.mm(x[0], weight.t(), out=rows)
    else:
        torch.addmm(bias, x[0], weight.t(), out=rows)
    return buf
