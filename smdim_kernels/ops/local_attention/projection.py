"""The qkv projection of local attention written straight into the padded buffer (layout.py), and its
backward read straight from the buffer's gradient: no separate qkv tensor and no layout copy either way
(for batches too: the buffer's L positions are one (position, entry) row each).

    forward   buf[window + t, b] = x[b, t] @ weight^T + bias       one GEMM per batch entry, out= its rows
    backward  dq_b = dbuf[window:window + L, b]                      (L, 3*d_model), a strided view
              dx[b] = dq_b @ weight;  dweight = sum_b dq_b^T @ x[b];  dbias = sum of dq over (t, b)
"""
from __future__ import annotations

import torch

from .layout import empty_buffer


def forward(x, weight, bias, heads, window, back):
    """x (batch, L, d_in), weight (3*d_model, d_in), bias (3*d_model,) or None -> the buffer
    (window + L + back, batch, 3, heads, d_model // heads)."""
    batch, length, _ = x.shape
    rows = weight.shape[0]
    buf = empty_buffer(x, batch, length, heads, rows // 3 // heads, window, back)
    qkv = buf[window:window + length].view(length, batch, rows)
    for b in range(batch):
        if bias is None:
            torch.mm(x[b], weight.t(), out=qkv[:, b])
        else:
            torch.addmm(bias, x[b], weight.t(), out=qkv[:, b])
    return buf


def backward(dbuf, x, weight, has_bias, window):
    """Gradients (dx (batch, L, d_in), dweight (3*d_model, d_in), dbias (3*d_model,) or (0,)) from the
    buffer's gradient dbuf (time, batch, 3, heads, head_dim); the padding rows' gradient is dropped."""
    batch, length, _ = x.shape
    rows = weight.shape[0]
    dqkv = dbuf.contiguous()[window:window + length].view(length, batch, rows)
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dweight = None
    for b in range(batch):
        torch.mm(dqkv[:, b], weight, out=dx[b])
        if dweight is None:
            dweight = torch.mm(dqkv[:, b].t(), x[b])
        else:
            dweight.addmm_(dqkv[:, b].t(), x[b])
    if dweight is None:  # an empty batch
        dweight = torch.zeros_like(weight)
    dbias = dqkv.sum((0, 1)) if has_bias else dbuf.new_empty((0,))
    return dx, dweight, dbias
