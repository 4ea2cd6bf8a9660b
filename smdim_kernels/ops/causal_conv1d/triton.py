"""Triton depthwise causal conv1d (the CUDA path of smdim::causal_conv1d_fwd / _bwd).

Grid (batch, cdiv(dim, BLOCK_D), cdiv(L, BLOCK_L)); each program owns a (BLOCK_D, BLOCK_L)
tile of the output and loops over the `width` taps (REVERSE: the anti-causal taps, t + width - 1 - k).
The backward first forms
dpre = dout * act'(pre) (re-computing pre), then dx from shifted dpre and per-tile partial
sums of dweight/dbias, which torch reduces afterwards (deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_D, BLOCK_L = 16, 64


@triton.jit
def _tile(L, dim, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """This program's batch row, channels (BLOCK_D,), times (BLOCK_L,), masks and row offsets."""
    b = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    t = tl.program_id(2).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L).to(tl.int64)
    dmask, tmask = d < dim, t < L
    rows = (b * dim + d) * L
    return b, d, t, dmask, tmask, rows


@triton.jit
def _pre_activation(x_ptr, w_ptr, bias_ptr, rows, d, t, dmask, tmask, width, L, HAS_BIAS: tl.constexpr,
                    REVERSE: tl.constexpr):
    """bias + sum_k w[d, k] x[d, t -/+ (width - 1 - k)] over the tile, in fp32 (BLOCK_D, BLOCK_L)."""
    acc = tl.zeros((d.shape[0], t.shape[0]), tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)[:, None]
    for k in range(width):
        if REVERSE:
            src = t + (width - 1 - k)
        else:
            src = t - (width - 1 - k)
        wk = tl.load(w_ptr + d * width + k, mask=dmask, other=0.0).to(tl.float32)
        xv = tl.load(x_ptr + rows[:, None] + src[None, :],
                     mask=dmask[:, None] & (tmask & (src >= 0) & (src < L))[None, :], other=0.0).to(tl.float32)
        acc += wk[:, None] * xv
    return acc


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, dim, L, width, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    b, d, t, dmask, tmask, rows = _tile(L, dim, BLOCK_D, BLOCK_L)
    pre = _pre_activation(x_ptr, w_ptr, bias_ptr, rows, d, t, dmask, tmask, width, L, HAS_BIAS, REVERSE)
    if SILU:
        pre = pre / (1.0 + tl.exp(-pre))
    tl.store(out_ptr + rows[:, None] + t[None, :], pre.to(out_ptr.dtype.element_ty),
             mask=dmask[:, None] & tmask[None, :])


@triton.jit
def _dpre_kernel(dout_ptr, x_ptr, w_ptr, bias_ptr, dpre_ptr, dim, L, width, HAS_BIAS: tl.constexpr,
                 SILU: tl.constexpr, REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """dpre = dout * silu'(pre) (or dout), fp32."""
    b, d, t, dmask, tmask, rows = _tile(L, dim, BLOCK_D, BLOCK_L)
    mask = dmask[:, None] & tmask[None, :]
    g = tl.load(dout_ptr + rows[:, None] + t[None, :], mask=mask, other=0.0).to(tl.float32)
    if SILU:
        pre = _pre_activation(x_ptr, w_ptr, bias_ptr, rows, d, t, dmask, tmask, width, L, HAS_BIAS, REVERSE)
        sig = 1.0 / (1.0 + tl.exp(-pre))
        g = g * sig * (1.0 + pre * (1.0 - sig))
    tl.store(dpre_ptr + rows[:, None] + t[None, :], g, mask=mask)


@triton.jit
def _dx_kernel(dpre_ptr, x_ptr, w_ptr, dx_ptr, dw_part_ptr, db_part_ptr, dim, L, width, n_tblocks,
               REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """dx[t] = sum_k w[k] dpre[t + width - 1 - k] (REVERSE: t - (width - 1 - k)); per-tile partials of
    dweight and dbias."""
    b, d, t, dmask, tmask, rows = _tile(L, dim, BLOCK_D, BLOCK_L)
    mask = dmask[:, None] & tmask[None, :]
    tile = b * n_tblocks + tl.program_id(2).to(tl.int64)  # partials: (batch * n_tblocks, dim, width)
    g = tl.load(dpre_ptr + rows[:, None] + t[None, :], mask=mask, other=0.0)
    tl.store(db_part_ptr + tile * dim + d, tl.sum(g, axis=1), mask=dmask)
    dx = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
    for k in range(width):
        shift = width - 1 - k
        wk = tl.load(w_ptr + d * width + k, mask=dmask, other=0.0).to(tl.float32)
        if REVERSE:  # the steps that read x[t] with tap k, and the input tap k reads at step t
            reader = t - shift
            source = t + shift
        else:
            reader = t + shift
            source = t - shift
        g_reader = tl.load(dpre_ptr + rows[:, None] + reader[None, :],
                           mask=dmask[:, None] & ((reader >= 0) & (reader < L))[None, :], other=0.0)
        dx += wk[:, None] * g_reader
        xv = tl.load(x_ptr + rows[:, None] + source[None, :],
                     mask=dmask[:, None] & (tmask & (source >= 0) & (source < L))[None, :], other=0.0).to(tl.float32)
        tl.store(dw_part_ptr + (tile * dim + d) * width + k, tl.sum(g * xv, axis=1), mask=dmask)
    tl.store(dx_ptr + rows[:, None] + t[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _grid(x):
    batch, dim, length = x.shape
    return (batch, triton.cdiv(dim, BLOCK_D), max(1, triton.cdiv(length, BLOCK_L)))


def causal_conv1d_fwd_triton(x, weight, bias, silu, reverse=False):
    """out (batch, dim, L) in x's dtype; x: (batch, dim, L), weight: (dim, width), bias: (dim,) or None."""
    x, weight = x.contiguous(), weight.contiguous()
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    _fwd_kernel[_grid(x)](x, weight, x if bias is None else bias.contiguous(), out, x.shape[1], x.shape[2],
                          weight.shape[1], HAS_BIAS=bias is not None, SILU=bool(silu), REVERSE=bool(reverse),
                          BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L)
    return out


def causal_conv1d_bwd_triton(dout, x, weight, bias, silu, reverse=False):
    """(dx, dweight, dbias) shaped and typed like (x, weight, bias); dbias is (0,) without bias."""
    x, weight, dout = x.contiguous(), weight.contiguous(), dout.contiguous()
    batch, dim, length = x.shape
    width = weight.shape[1]
    grid = _grid(x)
    n_tblocks = grid[2]
    dx = torch.empty_like(x)
    dw_part = torch.zeros((batch * n_tblocks, dim, width), dtype=torch.float32, device=x.device)
    db_part = torch.zeros((batch * n_tblocks, dim), dtype=torch.float32, device=x.device)
    if x.numel() > 0:
        dpre = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        bias_arg = x if bias is None else bias.contiguous()
        _dpre_kernel[grid](dout, x, weight, bias_arg, dpre, dim, length, width, HAS_BIAS=bias is not None,
                           SILU=bool(silu), REVERSE=bool(reverse), BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L)
        _dx_kernel[grid](dpre, x, weight, dx, dw_part, db_part, dim, length, width, n_tblocks, REVERSE=bool(reverse),
                         BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L)
    else:
        dx.zero_()
    dbias = x.new_empty((0,)) if bias is None else db_part.sum(0).to(bias.dtype)
    return dx, dw_part.sum(0).to(weight.dtype), dbias
