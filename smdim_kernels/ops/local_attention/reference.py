"""Naive local-window attention: one SDPA call with an L x L window mask, the oracle of the blocked op
(and local_attention's path for short sequences, where this one fused call is the faster)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def local_window_mask(length, window, causal, device=None):
    """(L, L) bool, True = attend: query i sees key j with |i - j| <= window (0 <= i - j <= window if
    causal). The diagonal is always kept, so no row is fully masked."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    offset = i - j
    return (offset >= 0) & (offset <= window) if causal else offset.abs() <= window


def local_attention_ref(qkv, window, causal=False, dropout_p=0.0, block=None):
    """Reference `local_attention` (same signature; `block` is accepted and unused: no blocks here).

    qkv: (batch, L, 3, heads, head_dim), q, k, v packed in that order -> (batch, L, heads*head_dim):
    softmax(q k^T / sqrt(head_dim) + window mask) v, autograd through SDPA. O(L^2) time and memory.
    """
    batch, length, _, heads, head_dim = qkv.shape
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # (batch, heads, L, head_dim)
    mask = local_window_mask(length, window, causal, qkv.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(batch, length, heads * head_dim)
