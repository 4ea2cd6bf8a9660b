"""A feed-forward layer's second half, fc2(act(h)), declared once as `torch.library` ops:

    smdim::activation_linear_fwd(h, weight, bias, activation) -> out
    smdim::activation_linear_bwd(dout, h, weight, has_bias, activation) -> (dh, dweight, dbias)
        dbias is (0,) without bias

The backward keeps only h (fc1's output) and the weight: act(h), as large as h (half for SwiGLU), is
recomputed there (elementwise, cheap) instead of being saved. One implementation for every device,
on PyTorch's kernels (GEMMs and elementwise activations).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...validation import FLOAT_DTYPES, check_float, check_same_device, check_shape, check_tensor
from .._autograd import register_autograd
from .reference import ACTIVATIONS, activate, activation_linear_ref

torch.library.define("smdim::activation_linear_fwd",
                     "(Tensor h, Tensor weight, Tensor? bias, str activation) -> Tensor")
torch.library.define("smdim::activation_linear_bwd",
                     "(Tensor dout, Tensor h, Tensor weight, bool has_bias, str activation) "
                     "-> (Tensor, Tensor, Tensor)")


def activation_linear(h, weight, bias=None, activation="gelu", inplace=False):
    """F.linear(act(h), weight, bias), act = exact GELU or SwiGLU (x * silu(gate), h = [x, gate]).

    h: (..., hidden) for "gelu", (..., 2 * hidden) for "swiglu"; weight: (out, hidden); bias: (out,)
    or None -> (..., out). Differentiable in h, weight and bias; the backward recomputes act(h).
    inplace=True with autograd off (torch.is_grad_enabled() False): h is overwritten with act(h),
    one h-sized tensor fewer at the peak (for an h nobody else reads, e.g. fc1's fresh output).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
    for name, t in (("h", h), ("weight", weight), ("bias", bias)):
        if t is not None or name != "bias":  # bias alone is optional
            check_tensor(name, t)
            check_float(name, t, FLOAT_DTYPES)
    if h.dim() < 1 or (activation == "swiglu" and h.shape[-1] % 2):
        raise ValueError(f"h must be (..., {'2 * ' if activation == 'swiglu' else ''}hidden) for {activation!r}; "
                         f"got shape {tuple(h.shape)}")
    hidden = h.shape[-1] // 2 if activation == "swiglu" else h.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != hidden:
        raise ValueError(f"weight must be (out, hidden={hidden}); got shape {tuple(weight.shape)}")
    if bias is not None:
        check_shape("bias", bias, (weight.shape[0],), "(out,)")
    check_same_device({"h": h, "weight": weight, "bias": bias})
    if inplace and not torch.is_grad_enabled():
        return F.linear(_activate_(h, activation), weight, bias)
    return torch.ops.smdim.activation_linear_fwd(h, weight, bias, activation)


def _activate_(h, activation):
    """`activate` overwriting h (no autograd); returns the activation (a view of h for SwiGLU)."""
    if activation == "gelu":
        return torch.ops.aten.gelu_(h)
    x, gate = h.chunk(2, dim=-1)
    return x.mul_(F.silu(gate, inplace=True))


def _activate_backward(da, h, activation):
    """The gradient w.r.t. h of activate(h) given the gradient da of its output."""
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(da, h)
    x, gate = h.chunk(2, dim=-1)
    return torch.cat([da * F.silu(gate), torch.ops.aten.silu_backward(da * x, gate)], dim=-1)


def _forward(h, weight, bias, activation):
    return activation_linear_ref(h, weight, bias, activation)


def _backward_of(dout, h, weight, has_bias, activation):
    a = activate(h, activation)
    dout_rows = dout.reshape(-1, dout.shape[-1])
    dweight = dout_rows.t() @ a.reshape(-1, a.shape[-1])
    dbias = dout_rows.sum(0) if has_bias else dout.new_empty((0,))
    del a  # before dh's temporaries
    return _activate_backward(dout @ weight, h, activation), dweight, dbias


torch.library.impl("smdim::activation_linear_fwd", "CompositeExplicitAutograd")(_forward)
torch.library.impl("smdim::activation_linear_bwd", "CompositeExplicitAutograd")(_backward_of)


@torch.library.register_fake("smdim::activation_linear_fwd")
def _fwd_fake(h, weight, bias, activation):
    return h.new_empty(h.shape[:-1] + (weight.shape[0],))


@torch.library.register_fake("smdim::activation_linear_bwd")
def _bwd_fake(dout, h, weight, has_bias, activation):
    dbias = dout.new_empty((weight.shape[0],) if has_bias else (0,))
    return (torch.empty_like(h, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format), dbias)


def _setup_context(ctx, inputs, output):
    h, weight, bias, activation = inputs
    ctx.save_for_backward(h, weight)
    ctx.has_bias, ctx.activation = bias is not None, activation


def _backward(ctx, dout):
    h, weight = ctx.saved_tensors
    dh, dweight, dbias = torch.ops.smdim.activation_linear_bwd(dout, h, weight, ctx.has_bias, ctx.activation)
    return dh, dweight, dbias if ctx.has_bias else None, None


register_autograd("smdim::activation_linear_fwd", _backward, setup_context=_setup_context)
