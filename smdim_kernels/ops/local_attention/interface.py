"""Local-window attention, blocked: O(L * window) time and memory, nothing of size L x L (a sequence of
at most layout.DENSE_SPANS key spans takes one SDPA call with an L x L window mask instead: still
O(L * window) there, and faster). The blocked path is declared once as `torch.library` ops over the
padded qkv buffer (layout.py) and the layout's ints:

    smdim::local_attention_fwd(buf, length, window, causal, block) -> (out, lse)
        buf (time, 3, batch*heads, head_dim); out (L, batch*heads, head_dim); lse: the CPU flash
        kernel's log-sum-exp (n_blocks, batch*heads, block), or (0,) where that kernel does not run
    smdim::local_attention_bwd(dout, buf, out, lse, length, window, causal, block) -> dbuf

Query blocks run in groups of GROUP_QUERIES query rows per SDPA call. Autograd through one SDPA call
over the overlapping key views would build the key and value gradients per block span,
(n_blocks, batch*heads, span, head_dim) each: span/block times the size of k (9x for the default
window). The backward op instead runs one group at a time and folds its key/value gradients into the
buffer's rows, so temporaries are one group's. It keeps only the buffer, the output and (CPU) the
log-sum-exp. One implementation for every device, on PyTorch's kernels: CPU runs PyTorch's flash
kernels forward and backward; other devices run SDPA forward and recompute the group's scores in the
backward (blocked.py). Without dropout only: with dropout, one SDPA call with plain autograd (its mask drawn once).
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ...validation import FLOAT_DTYPES, check_float, check_tensor
from .._autograd import register_autograd
from . import blocked
from .layout import LocalLayout, dense_is_cheaper, group_inputs, local_block_size, qkv_buffer
from .reference import local_attention_ref

torch.library.define("smdim::local_attention_fwd",
                     "(Tensor buf, SymInt length, int window, bool causal, int block) -> (Tensor, Tensor)")
torch.library.define("smdim::local_attention_bwd",
                     "(Tensor dout, Tensor buf, Tensor out, Tensor lse, SymInt length, int window, bool causal, "
                     "int block) -> Tensor")


def local_attention(qkv, window, causal=False, dropout_p=0.0, block=None):
    """Local-window attention of packed qkv (batch, L, 3, heads, head_dim) -> (batch, L, heads*head_dim).

    Non-causal: query i sees keys j with |i - j| <= window; causal: 0 <= i - j <= window. Scores are
    scaled by 1/sqrt(head_dim). With block=None a short sequence (layout.dense_is_cheaper: L up to
    two key spans) runs as one SDPA call with an L x L window mask (the reference's maths), which is
    faster there; otherwise, or with a block size given, the blocked path runs: the sequence is
    padded to n_blocks * block (block defaults to local_block_size(window)); query block b attends
    to the `span` keys starting `window` before it (span = block + 2*window, or block + window
    causal), taken as an overlapping strided view of the padded keys (no copy), with a per-block
    mask. Batch and heads share the mask, so they are folded
    together into SDPA's head dimension. Memory stays O(L * d_model), not O(L * span * heads) (the
    dense short-sequence call holds its L x L mask: L <= 2 spans).
    Differentiable in qkv.
    """
    check_tensor("qkv", qkv)
    if qkv.dim() != 5 or qkv.shape[2] != 3:
        raise ValueError(f"qkv must be (batch, L, 3, heads, head_dim); got shape {tuple(qkv.shape)}")
    check_float("qkv", qkv, FLOAT_DTYPES)
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 0:
        raise ValueError(f"window must be an integer >= 0; got {window!r}")
    if block is not None and (isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 1):
        raise ValueError(f"block must be a positive integer or None; got {block!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p!r}")
    if block is None and dense_is_cheaper(qkv.shape[1], window, causal):
        return local_attention_ref(qkv, window, causal, dropout_p)
    layout = LocalLayout(qkv.shape[1], window, causal, local_block_size(window) if block is None else block)
    return local_attention_of_buffer(qkv_buffer(qkv, layout), layout, qkv.shape[0], dropout_p)


def local_attention_of_buffer(buf, layout, batch, dropout_p=0.0):
    """Local attention of the buffer (time, 3, batch*heads, head_dim) laid out by `layout`
    (layout.qkv_buffer or layout.projected_buffer) -> (batch, L, heads*head_dim)."""
    heads, head_dim = buf.shape[2] // batch, buf.shape[3]
    if dropout_p == 0.0:
        out, _ = torch.ops.smdim.local_attention_fwd(buf, layout.length, layout.window, layout.causal, layout.block)
    else:  # plain autograd: one SDPA call, its dropout mask drawn once
        q, k, v, mask = group_inputs(buf, layout, 0, layout.n_blocks)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p).transpose(1, 2)
        out = out.reshape(layout.padded, batch * heads, head_dim)[:layout.length]
    return out.reshape(layout.length, batch, heads * head_dim).transpose(0, 1)  # out: (L, batch*heads, head_dim)


torch.library.impl("smdim::local_attention_fwd", "CompositeExplicitAutograd")(blocked.forward)
torch.library.impl("smdim::local_attention_bwd", "CompositeExplicitAutograd")(blocked.backward)


@torch.library.register_fake("smdim::local_attention_fwd")
def _fwd_fake(buf, length, window, causal, block):
    return buf.new_empty((length, buf.shape[2], buf.shape[3])), blocked.empty_lse(buf, -(-length // block), block)


@torch.library.register_fake("smdim::local_attention_bwd")
def _bwd_fake(dout, buf, out, lse, length, window, causal, block):
    return torch.empty_like(buf, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    buf, length, window, causal, block = inputs
    out, lse = output
    ctx.save_for_backward(buf, out, lse)
    ctx.layout_ints = (length, window, causal, block)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    buf, out, lse = ctx.saved_tensors
    return torch.ops.smdim.local_attention_bwd(dout, buf, out, lse, *ctx.layout_ints), None, None, None, None


register_autograd("smdim::local_attention_fwd", _backward, setup_context=_setup_context)
