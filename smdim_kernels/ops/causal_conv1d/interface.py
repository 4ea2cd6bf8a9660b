"""Depthwise causal conv1d (+ optional SiLU) declared once as `torch.library` ops.

    smdim::causal_conv1d_fwd(x, weight, bias, silu, reverse=False) -> out
    smdim::causal_conv1d_bwd(dout, x, weight, bias, silu, reverse=False) -> (dx, dweight, dbias)

reverse=True is the anti-causal conv (the causal one run right to left, as flip(conv(flip(x))) but
without the two copies), for the reverse branch of bidirectional Mamba.

CPU: C++ (csrc/causal_conv1d). CUDA: Triton (triton.py). Other devices run the reference,
with a one-time warning. The backward recomputes the pre-activation instead of
saving it.
"""
from __future__ import annotations

import torch

from ...backends import register_implementations, warn_reference
from ...validation import FLOAT_DTYPES, check_float, check_same_device, check_shape, check_tensor
from .._autograd import register_autograd
from .reference import causal_conv1d_ref

torch.library.define("smdim::causal_conv1d_fwd",
                     "(Tensor x, Tensor weight, Tensor? bias, bool silu, bool reverse=False) -> Tensor")
torch.library.define("smdim::causal_conv1d_bwd",
                     "(Tensor dout, Tensor x, Tensor weight, Tensor? bias, bool silu, bool reverse=False) -> "
                     "(Tensor, Tensor, Tensor)")

ACTIVATIONS = (None, "silu", "swish")


def causal_conv1d_fn(x, weight, bias=None, activation=None, reverse=False):
    """Depthwise causal convolution over time, optionally followed by SiLU.

    x: (batch, dim, L); weight: (dim, width); bias: (dim,) or None; activation: None, "silu" or
    "swish" (= "silu"). out[b, d, t] = act(bias[d] + sum_k weight[d, k] x[b, d, t - width + 1 + k]),
    zeros before t = 0; reverse=True: the anti-causal conv, x[b, d, t + width - 1 - k] and zeros past
    the end (= flip(causal_conv1d_fn(flip(x))) along time). Returns (batch, dim, L) in x's dtype;
    differentiable in x, weight, bias.
    """
    check_tensor("x", x)
    check_tensor("weight", weight)
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, dim, L); got shape {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1] or weight.shape[1] < 1:
        raise ValueError(f"weight must be (dim, width) = ({x.shape[1]}, width >= 1); got shape {tuple(weight.shape)}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(name, t)
            check_float(name, t, FLOAT_DTYPES)
    if bias is not None:
        check_shape("bias", bias, (x.shape[1],), "(dim,)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish'; got {activation!r}")
    if not isinstance(reverse, bool):
        raise ValueError(f"reverse must be True or False; got {reverse!r}")
    check_same_device({"x": x, "weight": weight, "bias": bias})
    return torch.ops.smdim.causal_conv1d_fwd(x, weight, bias, activation is not None, reverse)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    """One decoding step of `causal_conv1d_fn`, updating `conv_state` in place.

    x: (batch, dim) the new input; conv_state: (batch, dim, width) the last `width` inputs (oldest
    first), shifted left and appended with x; weight: (dim, width); bias: (dim,). Returns the
    output at the new step, (batch, dim) in x's dtype. A few (batch, dim, width) tensor ops: no
    kernel to fuse at this size.
    """
    check_tensor("x", x)
    check_tensor("conv_state", conv_state)
    if x.dim() != 2:
        raise ValueError(f"x must be (batch, dim); got shape {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"weight must be (dim, width) = ({x.shape[1]}, width); got shape {tuple(weight.shape)}")
    check_shape("conv_state", conv_state, (x.shape[0], x.shape[1], weight.shape[1]), "(batch, dim, width)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish'; got {activation!r}")
    with torch.no_grad():
        conv_state.copy_(torch.cat([conv_state[..., 1:], x.unsqueeze(-1).to(conv_state.dtype)], dim=-1))
    out = (conv_state.to(weight.dtype) * weight).sum(-1)
    if bias is not None:
        out = out + bias
    if activation is not None:
        out = torch.nn.functional.silu(out)
    return out.to(x.dtype)


@torch.library.register_fake("smdim::causal_conv1d_fwd")
def _fwd_fake(x, weight, bias, silu, reverse=False):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("smdim::causal_conv1d_bwd")
def _bwd_fake(dout, x, weight, bias, silu, reverse=False):
    dbias = x.new_empty((0,)) if bias is None else torch.empty_like(bias, memory_format=torch.contiguous_format)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format), dbias)


def _setup_context(ctx, inputs, output):
    x, weight, bias, silu, reverse = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.silu, ctx.reverse = silu, reverse


def _backward(ctx, dout):
    x, weight, bias = ctx.saved_tensors
    dx, dweight, dbias = torch.ops.smdim.causal_conv1d_bwd(dout, x, weight, bias, ctx.silu, ctx.reverse)
    return dx, dweight, None if bias is None else dbias, None, None


register_autograd("smdim::causal_conv1d_fwd", _backward, setup_context=_setup_context)

def _fwd_reference(x, weight, bias, silu, reverse=False):
    warn_reference("causal_conv1d", x.device.type)
    return causal_conv1d_ref(x, weight, bias, "silu" if silu else None, reverse).contiguous()


def _bwd_reference(dout, x, weight, bias, silu, reverse=False):
    warn_reference("causal_conv1d", x.device.type)
    leaves = [t.detach().requires_grad_(True) for t in (x, weight)]
    b = None if bias is None else bias.detach().requires_grad_(True)
    with torch.enable_grad():
        out = causal_conv1d_ref(leaves[0], leaves[1], b, "silu" if silu else None, reverse)
        grads = torch.autograd.grad(out, leaves + ([b] if b is not None else []), dout)
    dbias = x.new_empty((0,)) if b is None else grads[2]
    return grads[0].contiguous(), grads[1].contiguous(), dbias


register_implementations("causal_conv1d", __package__, _fwd_reference, _bwd_reference)
