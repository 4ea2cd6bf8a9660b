"""Naive PyTorch selective scan: the oracle every fast implementation is tested against.

One Python step per time step, states (batch, dim, N) in fp32 (fp64 if any input is fp64);
input-dependent B/C are expanded to channels one step at a time, so no (batch, dim, L, N)
tensor is built. Slow by design; differentiable through autograd.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    """fp64 if any given tensor is fp64, else fp32 (half inputs accumulate in fp32)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _per_channel_at(M: torch.Tensor, t: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C at time t as (dim, N) (constant) or (batch, dim, N) (input-dependent)."""
    if M.dim() == 2:
        return M.to(dtype)
    if M.dim() == 3:
        M = M.unsqueeze(1)
    groups = M.shape[1]
    return M[..., t].to(dtype).repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, *, initial_state=None, reverse=False, seq_idx=None):
    """Reference selective scan (same signature as `selective_scan_fn`).

    u, delta, z: (batch, dim, L); A: (dim, N); B, C: (dim, N), (batch, N, L) or (batch, G, N, L);
    D, delta_bias: (dim,); initial_state: (batch, dim, N); seq_idx: (batch, L) integers.
    Returns out (batch, dim, L) in u's dtype, and with return_last_state the final state
    (batch, dim, N) in the compute dtype.
    """
    dtype = compute_dtype(u, delta, A, B, C)
    batch, dim, length = u.shape
    u_c = u.to(dtype)
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A_c = A.to(dtype)
    if initial_state is not None:
        h = initial_state.to(dtype)
    else:
        h = u_c.new_zeros(batch, dim, A.shape[1])
    ys = [None] * length
    order = range(length - 1, -1, -1) if reverse else range(length)
    prev = None
    for t in order:
        if seq_idx is not None and prev is not None:
            keep = (seq_idx[:, t] == seq_idx[:, prev]).to(dtype)
            h = h * keep[:, None, None]
        dA = torch.exp(dt[:, :, t, None] * A_c)
        dBu = (dt[:, :, t] * u_c[:, :, t])[..., None] * _per_channel_at(B, t, dim, dtype)
        h = dA * h + dBu
        ys[t] = (h * _per_channel_at(C, t, dim, dtype)).sum(-1)
        prev = t
    y = torch.stack(ys, dim=-1) if length > 0 else u_c.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + u_c * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decoding step of the recurrence, updating `state` in place (reference).

    state: (batch, dim, N); x, dt, z: (batch, dim); A: (dim, N); B, C: (batch, N) or
    (batch, G, N); D, dt_bias: (dim,). Returns out (batch, dim) in x's dtype.
    """
    dtype = compute_dtype(state, x, dt, A, B, C)
    dim = x.shape[1]
    dt_c = dt.to(dtype)
    if dt_bias is not None:
        dt_c = dt_c + dt_bias.to(dtype)
    if dt_softplus:
        dt_c = F.softplus(dt_c)

    def per_channel(M):
        M = M.to(dtype)
        if M.dim() == 2:
            M = M.unsqueeze(1)
        return M.repeat_interleave(dim // M.shape[1], dim=1)

    x_c = x.to(dtype)
    h = torch.exp(dt_c[..., None] * A.to(dtype)) * state.to(dtype) + (dt_c * x_c)[..., None] * per_channel(B)
    state.copy_(h.to(state.dtype))
    y = (h * per_channel(C)).sum(-1)
    if D is not None:
        y = y + x_c * D.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(x.dtype)
