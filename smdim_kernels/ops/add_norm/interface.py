"""Residual add fused with LayerNorm / RMSNorm (prenorm), declared once as `torch.library` ops.

    smdim::add_norm_fwd(x, residual, weight, bias, eps, rms, residual_in_fp32)
        -> (out, residual_out, mean, rstd)       mean/rstd: (rows,) statistics for the backward
    smdim::add_norm_bwd(dout, dresidual_out, residual_out, weight, bias, mean, rstd, rms)
        -> (dh, dweight, dbias)                  dh is the gradient of both x and residual

CPU: C++ (csrc/add_norm). CUDA: Triton (triton.py). Other devices run the reference with a
one-time warning.
"""
from __future__ import annotations

import torch

from ...backends import register_implementations, warn_reference
from ...validation import FLOAT_DTYPES, check_float, check_same_device, check_shape, check_tensor
from .._autograd import register_autograd
from .reference import add_norm_ref, residual_out_dtype, stats_dtype

torch.library.define(
    "smdim::add_norm_fwd",
    "(Tensor x, Tensor? residual, Tensor weight, Tensor? bias, float eps, bool rms, bool residual_in_fp32) "
    "-> (Tensor, Tensor, Tensor, Tensor)")
torch.library.define(
    "smdim::add_norm_bwd",
    "(Tensor dout, Tensor? dresidual_out, Tensor residual_out, Tensor weight, Tensor? bias, Tensor mean, "
    "Tensor rstd, bool rms) -> (Tensor, Tensor, Tensor)")


def add_norm_fn(x, weight, bias=None, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False,
                is_rms_norm=False):
    """h = x + residual; out = LayerNorm(h) (or RMSNorm) * weight + bias, in one pass.

    x, residual: (..., hidden); weight, bias: (hidden,). Returns out (x's dtype); with prenorm
    also h, the residual for the next block (fp32 if residual_in_fp32, else residual's dtype).
    Differentiable in x, residual, weight, bias and through h.
    """
    check_tensor("x", x)
    check_tensor("weight", weight)
    if x.dim() < 1 or weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight must be (hidden,) = ({x.shape[-1] if x.dim() else '?'},); got shape "
                         f"{tuple(weight.shape)} for x of shape {tuple(x.shape)}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("residual", residual)):
        if t is not None:
            check_tensor(name, t)
            check_float(name, t, FLOAT_DTYPES)
    if bias is not None:
        check_shape("bias", bias, tuple(weight.shape), "(hidden,)")
    if residual is not None:
        check_shape("residual", residual, tuple(x.shape), "x's shape")
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    check_same_device({"x": x, "weight": weight, "bias": bias, "residual": residual})
    out, residual_out, _, _ = torch.ops.smdim.add_norm_fwd(x, residual, weight, bias, float(eps),
                                                           bool(is_rms_norm), bool(residual_in_fp32))
    return (out, residual_out) if prenorm else out


@torch.library.register_fake("smdim::add_norm_fwd")
def _fwd_fake(x, residual, weight, bias, eps, rms, residual_in_fp32):
    stats = stats_dtype(x, weight)
    res_dtype = residual_out_dtype(x, residual, weight, residual_in_fp32)
    rows = x.numel() // max(x.shape[-1], 1)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(x, dtype=res_dtype, memory_format=torch.contiguous_format),
            x.new_empty((rows,), dtype=stats), x.new_empty((rows,), dtype=stats))


@torch.library.register_fake("smdim::add_norm_bwd")
def _bwd_fake(dout, dresidual_out, residual_out, weight, bias, mean, rstd, rms):
    dbias = weight.new_empty((0,)) if bias is None else torch.empty_like(bias)
    return (torch.empty_like(residual_out, dtype=mean.dtype, memory_format=torch.contiguous_format),
            torch.empty_like(weight), dbias)


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, eps, rms, residual_in_fp32 = inputs
    _, residual_out, mean, rstd = output
    ctx.save_for_backward(residual_out, weight, bias, mean, rstd)
    ctx.rms = rms
    ctx.x_dtype = x.dtype
    ctx.residual_dtype = None if residual is None else residual.dtype
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, dout, dresidual_out, _dmean, _drstd):
    residual_out, weight, bias, mean, rstd = ctx.saved_tensors
    dh, dweight, dbias = torch.ops.smdim.add_norm_bwd(dout, dresidual_out, residual_out, weight, bias, mean, rstd,
                                                      ctx.rms)
    dresidual = None if ctx.residual_dtype is None else dh.to(ctx.residual_dtype)
    return dh.to(ctx.x_dtype), dresidual, dweight, None if bias is None else dbias, None, None, None


register_autograd("smdim::add_norm_fwd", _backward, setup_context=_setup_context)

def _fwd_reference(x, residual, weight, bias, eps, rms, residual_in_fp32):
    warn_reference("add_norm", x.device.type)
    stats = stats_dtype(x, weight)
    out, h = add_norm_ref(x, weight, bias, residual, eps, True, residual_in_fp32, rms)
    hs = h.to(stats)
    mu = torch.zeros(hs.shape[:-1], dtype=stats, device=x.device) if rms else hs.mean(-1)
    centered = hs - mu[..., None]
    rstd = torch.rsqrt(centered.square().mean(-1) + eps)
    return out.contiguous(), h.contiguous(), mu.reshape(-1).contiguous(), rstd.reshape(-1).contiguous()


def _bwd_reference(dout, dresidual_out, residual_out, weight, bias, mean, rstd, rms):
    warn_reference("add_norm", residual_out.device.type)
    stats = mean.dtype
    hidden = residual_out.shape[-1]
    h = residual_out.to(stats).reshape(-1, hidden)
    xhat = (h - mean[:, None]) * rstd[:, None]
    g = dout.to(stats).reshape(-1, hidden)
    gw = g * weight.to(stats)
    mean_g = torch.zeros_like(rstd) if rms else gw.mean(-1)
    dh = rstd[:, None] * (gw - mean_g[:, None] - xhat * (gw * xhat).mean(-1, keepdim=True))
    if dresidual_out is not None:
        dh = dh + dresidual_out.to(stats).reshape(-1, hidden)
    dweight = (g * xhat).sum(0).to(weight.dtype)
    dbias = weight.new_empty((0,)) if bias is None else g.sum(0).to(bias.dtype)
    return dh.reshape(residual_out.shape).contiguous(), dweight, dbias


register_implementations("add_norm", __package__, _fwd_reference, _bwd_reference)
