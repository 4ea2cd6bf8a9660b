"""The blocked local attention's forward and backward (the maths behind interface.py's ops).

Query blocks run in groups (layout.py); CPU calls PyTorch's flash kernels forward and backward and
keeps their log-sum-exp; other devices run SDPA forward and recompute a group's scores in the
backward (`attention_backward_math`). The backward folds each group's key/value gradients back onto
the buffer's rows, so temporaries stay one group's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layout import LocalLayout, fold_spans, group_inputs, query_blocks


def uses_cpu_flash(device):
    """Whether the op calls PyTorch's CPU flash kernels (and keeps their log-sum-exp)."""
    return device.type == "cpu"


def empty_lse(buf, n_blocks, block):
    """The log-sum-exp of every query row, (n_blocks, batch*heads, block) in the CPU flash kernel's
    accumulation dtype (fp64 for fp64, else fp32); (0,) where that kernel does not run."""
    if not uses_cpu_flash(buf.device):
        return buf.new_empty((0,))
    return buf.new_empty((n_blocks, buf.shape[2], block),
                         dtype=torch.float64 if buf.dtype == torch.float64 else torch.float32)


def _mask_dtype(buf):
    """The group masks' form: additive in the buffer's dtype for the CPU flash kernels, else bool."""
    return buf.dtype if uses_cpu_flash(buf.device) else torch.bool


def attention_backward_math(q, k, v, mask, out, dout):
    """Gradients (dq, dk, dv) of softmax(q k^T / sqrt(d) + mask) v, scores recomputed (one group);
    mask: bool, True = attend."""
    scale = q.shape[-1] ** -0.5
    additive = torch.zeros(mask.shape, dtype=q.dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    p = torch.softmax((q @ k.transpose(-1, -2)) * scale + additive, dim=-1)
    dv = p.transpose(-1, -2) @ dout
    dscores = p * (dout @ v.transpose(-1, -2) - (dout * out).sum(-1, keepdim=True))
    return (dscores @ k) * scale, (dscores.transpose(-1, -2) @ q) * scale, dv


def forward(buf, length, window, causal, block):
    layout = LocalLayout(length, window, causal, block)
    out = buf.new_empty((length, buf.shape[2], buf.shape[3]))
    lse = empty_lse(buf, layout.n_blocks, block)
    for b0, b1 in layout.groups():
        q, k, v, mask = group_inputs(buf[layout.rows(b0, b1)], layout, b0, b1, _mask_dtype(buf))
        if lse.numel():
            result, group_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, False, attn_mask=mask)
            lse[b0:b1] = group_lse
        else:
            result = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        first = b0 * block
        out[first:b1 * block] = result.transpose(1, 2).reshape(-1, *out.shape[1:])[:length - first]
    return out, lse


def backward(dout, buf, out, lse, length, window, causal, block):
    layout = LocalLayout(length, window, causal, block)
    dbuf = torch.zeros_like(buf, memory_format=torch.contiguous_format)
    for b0, b1 in layout.groups():
        rows = layout.rows(b0, b1)
        n = b1 - b0
        q, k, v, mask = group_inputs(buf[rows], layout, b0, b1, _mask_dtype(buf))
        dout_group = query_blocks(dout, b0, b1, block).contiguous()
        out_group = query_blocks(out, b0, b1, block)
        if lse.numel():
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                dout_group, q, k, v, out_group, lse[b0:b1], 0.0, False, attn_mask=mask)
        else:
            dq, dk, dv = attention_backward_math(q, k, v, mask, out_group, dout_group)
        drows = dbuf[rows]
        drows[window:window + n * block, 0] += dq.transpose(1, 2).reshape(n * block, *drows.shape[2:])
        for i, grad in ((1, dk), (2, dv)):  # fold the overlapping spans back onto the rows
            fold_spans(drows[:, i], grad, block)
    return dbuf
