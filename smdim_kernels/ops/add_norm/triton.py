"""Triton residual add + LayerNorm/RMSNorm (the CUDA path of smdim::add_norm_fwd / _bwd).

One program per block of ROWS rows, the whole hidden dimension in one BLOCK_H tile (hidden up to
65536). Statistics in fp32 (fp64 for fp64 inputs). The backward accumulates the program's
weight/bias gradients in registers and writes one partial row per program, summed by torch
afterwards (deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import residual_out_dtype, stats_dtype

ROWS = 4
_TL = {torch.float32: tl.float32, torch.float64: tl.float64}


@triton.jit
def _fwd_kernel(x_ptr, res_ptr, w_ptr, b_ptr, out_ptr, res_out_ptr, mean_ptr, rstd_ptr, n_rows, hidden, eps,
                HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, RMS: tl.constexpr, COMPUTE: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < hidden
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(COMPUTE)
    if HAS_BIAS:
        bias = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(COMPUTE)
    for i in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + i
        if row < n_rows:
            off = row * hidden + cols
            h = tl.load(x_ptr + off, mask=cmask, other=0.0).to(COMPUTE)
            if HAS_RES:
                h += tl.load(res_ptr + off, mask=cmask, other=0.0).to(COMPUTE)
            if RMS:
                mean = 0.0
            else:
                mean = tl.sum(h, axis=0) / hidden
            centered = tl.where(cmask, h - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / hidden + eps)
            out = centered * rstd * w
            if HAS_BIAS:
                out += bias
            tl.store(out_ptr + off, out.to(out_ptr.dtype.element_ty), mask=cmask)
            tl.store(res_out_ptr + off, h.to(res_out_ptr.dtype.element_ty), mask=cmask)
            tl.store(mean_ptr + row, mean)
            tl.store(rstd_ptr + row, rstd)


@triton.jit
def _bwd_kernel(dout_ptr, dres_out_ptr, h_ptr, w_ptr, mean_ptr, rstd_ptr, dh_ptr, dw_part_ptr, db_part_ptr,
                n_rows, hidden, HAS_DRES: tl.constexpr, RMS: tl.constexpr, COMPUTE: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    cols = tl.arange(0, BLOCK_H)
    cmask = cols < hidden
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(COMPUTE)
    dw = tl.zeros((BLOCK_H,), COMPUTE)
    db = tl.zeros((BLOCK_H,), COMPUTE)
    for i in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + i
        if row < n_rows:
            off = row * hidden + cols
            mean = tl.load(mean_ptr + row)
            rstd = tl.load(rstd_ptr + row)
            xhat = tl.where(cmask, (tl.load(h_ptr + off, mask=cmask, other=0.0).to(COMPUTE) - mean) * rstd, 0.0)
            g = tl.load(dout_ptr + off, mask=cmask, other=0.0).to(COMPUTE)
            gw = g * w
            if RMS:
                mean_g = 0.0
            else:
                mean_g = tl.sum(gw, axis=0) / hidden
            mean_gx = tl.sum(gw * xhat, axis=0) / hidden
            dh = rstd * (gw - mean_g - xhat * mean_gx)
            if HAS_DRES:
                dh += tl.load(dres_out_ptr + off, mask=cmask, other=0.0).to(COMPUTE)
            tl.store(dh_ptr + off, dh, mask=cmask)
            dw += g * xhat
            db += g
    part = tl.program_id(0).to(tl.int64) * hidden + cols
    tl.store(dw_part_ptr + part, dw, mask=cmask)
    tl.store(db_part_ptr + part, db, mask=cmask)


def add_norm_fwd_triton(x, residual, weight, bias, eps, rms, residual_in_fp32):
    """(out, residual_out, mean (rows,), rstd (rows,)) as smdim::add_norm_fwd."""
    stats = stats_dtype(x, weight)
    res_dtype = residual_out_dtype(x, residual, weight, residual_in_fp32)
    hidden = x.shape[-1]
    n_rows = x.numel() // max(hidden, 1)
    xc = x.contiguous()
    out = torch.empty_like(xc)
    res_out = torch.empty(x.shape, dtype=res_dtype, device=x.device)
    mean = torch.empty(n_rows, dtype=stats, device=x.device)
    rstd = torch.empty(n_rows, dtype=stats, device=x.device)
    if n_rows > 0:
        _fwd_kernel[(triton.cdiv(n_rows, ROWS),)](
            xc, xc if residual is None else residual.contiguous(), weight.contiguous(),
            weight if bias is None else bias.contiguous(), out, res_out, mean, rstd, n_rows, hidden, eps,
            HAS_RES=residual is not None, HAS_BIAS=bias is not None, RMS=bool(rms), COMPUTE=_TL[stats],
            ROWS=ROWS, BLOCK_H=triton.next_power_of_2(hidden))
    return out, res_out, mean, rstd


def add_norm_bwd_triton(dout, dresidual_out, residual_out, weight, bias, mean, rstd, rms):
    """(dh, dweight, dbias) as smdim::add_norm_bwd; dbias is (0,) without bias."""
    hidden = residual_out.shape[-1]
    n_rows = mean.numel()
    programs = max(1, triton.cdiv(n_rows, ROWS))
    dh = torch.empty(residual_out.shape, dtype=mean.dtype, device=mean.device)
    dw_part = torch.zeros((programs, hidden), dtype=mean.dtype, device=mean.device)
    db_part = torch.zeros((programs, hidden), dtype=mean.dtype, device=mean.device)
    if n_rows > 0:
        dres = None if dresidual_out is None else dresidual_out.contiguous()
        _bwd_kernel[(programs,)](
            dout.contiguous(), dh if dres is None else dres, residual_out.contiguous(), weight.contiguous(), mean,
            rstd, dh, dw_part, db_part, n_rows, hidden, HAS_DRES=dres is not None, RMS=bool(rms),
            COMPUTE=_TL[mean.dtype], ROWS=ROWS, BLOCK_H=triton.next_power_of_2(hidden))
    dbias = weight.new_empty((0,)) if bias is None else db_part.sum(0).to(bias.dtype)
    return dh, dw_part.sum(0).to(weight.dtype), dbias
