"""Geometry of the blocked local-attention path: the padded qkv buffer, its query blocks, their
overlapping key spans and per-block masks.

The buffer is (time, 3, batch*heads, head_dim), time-major so that for batch 1 its rows are qkv's own
layout (the gradient needs no copy): along time, `window` zero rows, the L positions, then `back`
zero rows: the last block's padding (padded - L rows, padded = n_blocks * block) and, non-causal,
the `window` keys after it, so the last block's key span ends on the buffer's last row.
"""
from __future__ import annotations

import functools

import torch

# query rows per SDPA call of the local path (bounds its temporaries; 128 was up to 1.4x slower, fwd+bwd
# at head_dim 32; 512 and more: level or slower at head_dim 64)
GROUP_QUERIES = 256
MASK_CACHE_ENTRIES = 64  # group masks kept (group_mask): a few per sequence length, one for all interiors


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
    flash kernel, 2 threads, forward + backward, batch x L = 1024 steps; window 32: 4 heads of 32,
    window 64: 8 heads of 64; the blocked path with cached masks and fold_spans): dense is 2.2-2.5x
    faster at L = 0.67 spans, 1.2-1.9x at 0.8-1.6 spans, level at 2 spans; blocked is 1.3x faster at
    2.7 spans and 1.7-2.3x at 3.2-5.3. Measured on CPU only; CUDA takes the same rule.
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


def group_mask(layout, b0, b1, device, dtype=torch.bool):
    """local_mask of blocks b0..b1-1, bool (True = attend) or, for a float dtype, additive (0 / -inf, as
    SDPA's fused kernels take it). Cached, so every layer and step reuses it: never write into it. An
    interior group (all of its keys inside [0, L), hence no padded query) has the plain window band,
    whatever b0 and L: one entry serves them all."""
    n, block, window = b1 - b0, layout.block, layout.window
    if b0 * block >= window and (b1 - 1) * block + layout.span - window <= layout.length:
        return _cached_mask(None, n, block, layout.span, window, layout.causal, None, device, dtype)
    return _cached_mask(b0, n, block, layout.span, window, layout.causal, layout.length, device, dtype)


@functools.lru_cache(maxsize=MASK_CACHE_ENTRIES)
def _cached_mask(first_block, n_blocks, block, span, window, causal, length, device, dtype):
    """group_mask's entries; first_block = length = None: an interior group."""
    if first_block is None:  # place the blocks where every key is in range
        first_block = -(-window // block)
        length = (first_block + n_blocks) * block + span
    with torch.inference_mode(False):  # a plain tensor, usable wherever the op runs later
        keep = local_mask(first_block, n_blocks, block, span, window, causal, length, device)
        if dtype == torch.bool:
            return keep
        return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill_(~keep, float("-inf"))


def blocks(t, n, block):
    """(n * block, batch*heads, head_dim) -> the view (n, batch*heads, block, head_dim)."""
    return t.view(n, block, t.shape[1], t.shape[2]).transpose(1, 2)


def group_inputs(rows, layout, b0, b1, mask_dtype=None):
    """q (n, batch*heads, block, head_dim), k and v (n, batch*heads, span, head_dim) (overlapping views)
    and the mask of blocks b0..b1-1 (n = b1 - b0); rows = the buffer's rows(b0, b1). mask_dtype=None:
    a fresh bool local_mask; a dtype: group_mask's cached one in it (read-only)."""
    n, block, window = b1 - b0, layout.block, layout.window
    q = blocks(rows[window:window + n * block, 0], n, block)
    k = rows[:, 1].unfold(0, layout.span, block).transpose(-1, -2)
    v = rows[:, 2].unfold(0, layout.span, block).transpose(-1, -2)
    if mask_dtype is None:
        mask = local_mask(b0, n, block, layout.span, window, layout.causal, layout.length, rows.device)
    else:
        mask = group_mask(layout, b0, b1, rows.device, mask_dtype)
    return q, k, v, mask


def fold_spans(rows, grad, block):
    """The adjoint of group_inputs' overlapping key (or value) view, in place: adds grad (n,
    batch*heads, span, head_dim), the gradient of n blocks' key spans, onto rows (time, batch*heads,
    head_dim), block b's span starting at row b * block. One strided add per `block` columns of the
    span: the spans overlap, but within one such column range the n blocks' rows do not (aten's
    unfold_backward builds a zeroed copy of rows and scatters into it, 2-3x slower here)."""
    n, _, span, _ = grad.shape
    step_time, step_bh, step_dim = rows.stride()
    for first in range(0, span, block):
        width = min(block, span - first)
        target = rows[first:].as_strided((n, width, rows.shape[1], rows.shape[2]),
                                         (block * step_time, step_time, step_bh, step_dim))
        target.add_(grad[:, :, first:first + width].transpose(1, 2))


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
