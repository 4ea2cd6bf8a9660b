"""The Mamba mixer after in_proj as one op, with recomputation in its backward.

    smdim::mamba_inner_fwd -> (out, x_dbl, y, checkpoints, conv_out, delta)
    smdim::mamba_inner_bwd -> gradients of every input (empty (0,) tensors for absent ones)

The op composes the fused ops (causal_conv1d, selective_scan) with GEMMs, so it runs on every
device those ops run on: one implementation, no per-backend copy. What the backward keeps:
xz, the weights, x_dbl (batch, L, dt_rank + 2N), the scan checkpoints (one state per 64 steps)
and, when out_proj is fused, the gated scan output y (for out_proj's weight gradient). The conv
output and delta (each (batch, d_inner, L)) are recomputed in the backward at checkpoint_lvl=1
(mamba_ssm's default) and saved at checkpoint_lvl=0.
"""
from __future__ import annotations

import torch

from .._gemm import batched_mm
from ...validation import check_float, check_same_device, check_shape, check_tensor
from ..selective_scan.interface import CHECKPOINT_CHUNK, MAX_DSTATE

_FWD_SCHEMA = (
    "(Tensor xz, Tensor conv1d_weight, Tensor? conv1d_bias, Tensor x_proj_weight, Tensor delta_proj_weight, "
    "Tensor? out_proj_weight, Tensor? out_proj_bias, Tensor A, Tensor? D, Tensor? delta_bias, "
    "Tensor? B_proj_bias, Tensor? C_proj_bias, bool delta_softplus, int checkpoint_lvl, bool save_for_backward) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_BWD_SCHEMA = (
    "(Tensor dout, Tensor xz, Tensor conv1d_weight, Tensor? conv1d_bias, Tensor x_proj_weight, "
    "Tensor delta_proj_weight, Tensor? out_proj_weight, Tensor? out_proj_bias, Tensor A, Tensor? D, "
    "Tensor? delta_bias, Tensor? B_proj_bias, Tensor? C_proj_bias, bool delta_softplus, Tensor x_dbl, "
    "Tensor y, Tensor checkpoints, Tensor conv_out, Tensor delta) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
torch.library.define("smdim::mamba_inner_fwd", _FWD_SCHEMA)
torch.library.define("smdim::mamba_inner_bwd", _BWD_SCHEMA)

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_inputs(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                  out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias, checkpoint_lvl):
    for name, t in (("xz", xz), ("conv1d_weight", conv1d_weight), ("x_proj_weight", x_proj_weight),
                    ("delta_proj_weight", delta_proj_weight), ("A", A)):
        check_tensor(name, t)
    if xz.dim() != 3 or xz.shape[1] % 2 != 0:
        raise ValueError(f"xz must be (batch, 2*d_inner, L) (in_proj output, x then z); got shape {tuple(xz.shape)}")
    batch, two_d, length = xz.shape
    d_inner = two_d // 2
    if A.dim() != 2 or A.shape[0] != d_inner or not 1 <= A.shape[1] <= MAX_DSTATE:
        raise ValueError(f"A must be (d_inner, N) = ({d_inner}, N <= {MAX_DSTATE}); got shape {tuple(A.shape)}")
    dstate = A.shape[1]
    if delta_proj_weight.dim() != 2 or delta_proj_weight.shape[0] != d_inner:
        raise ValueError(f"delta_proj_weight must be (d_inner, dt_rank) = ({d_inner}, dt_rank); "
                         f"got shape {tuple(delta_proj_weight.shape)}")
    dt_rank = delta_proj_weight.shape[1]
    check_shape("x_proj_weight", x_proj_weight, (dt_rank + 2 * dstate, d_inner), "(dt_rank + 2*N, d_inner)")
    if conv1d_weight.dim() not in (2, 3) or conv1d_weight.shape[0] != d_inner or conv1d_weight.shape[-1] < 1 \
            or (conv1d_weight.dim() == 3 and conv1d_weight.shape[1] != 1):
        raise ValueError(f"conv1d_weight must be (d_inner, d_conv) or (d_inner, 1, d_conv) with d_inner={d_inner}; "
                         f"got shape {tuple(conv1d_weight.shape)}")
    optional = {"conv1d_bias": (conv1d_bias, (d_inner,), "(d_inner,)"), "D": (D, (d_inner,), "(d_inner,)"),
                "delta_bias": (delta_bias, (d_inner,), "(d_inner,)"),
                "B_proj_bias": (B_proj_bias, (dstate,), "(N,)"), "C_proj_bias": (C_proj_bias, (dstate,), "(N,)")}
    if out_proj_weight is not None:
        check_tensor("out_proj_weight", out_proj_weight)
        if out_proj_weight.dim() != 2 or out_proj_weight.shape[1] != d_inner:
            raise ValueError(f"out_proj_weight must be (d_model, d_inner) = (d_model, {d_inner}); "
                             f"got shape {tuple(out_proj_weight.shape)}")
        optional["out_proj_bias"] = (out_proj_bias, (out_proj_weight.shape[0],), "(d_model,)")
    elif out_proj_bias is not None:
        raise ValueError("out_proj_bias was given without out_proj_weight")
    named = {"xz": xz, "conv1d_weight": conv1d_weight, "x_proj_weight": x_proj_weight,
             "delta_proj_weight": delta_proj_weight, "out_proj_weight": out_proj_weight, "A": A}
    for name, (t, shape, text) in optional.items():
        if t is not None:
            check_tensor(name, t)
            check_shape(name, t, shape, text)
            named[name] = t
    for name, t in named.items():
        if t is not None:
            check_float(name, t, _FLOAT_DTYPES)
    if checkpoint_lvl not in (0, 1):
        raise ValueError(f"checkpoint_lvl must be 0 (save conv output and delta) or 1 (recompute them); "
                         f"got {checkpoint_lvl!r}")
    check_same_device(named)


def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                   out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                   C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1):
    """The Mamba mixer after in_proj, fused into one differentiable op (mamba_ssm's signature).

        x, z     = xz[:, :d_inner], xz[:, d_inner:]
        u        = silu(causal_conv1d(x, conv1d_weight, conv1d_bias))
        x_dbl    = u^T @ x_proj_weight^T               -> [dt | B | C] per step
        delta    = delta_proj_weight @ dt
        y        = selective_scan(u, delta, A, B (+B_proj_bias), C (+C_proj_bias), D, z, delta_bias,
                                  delta_softplus)
        out      = y^T @ out_proj_weight^T + out_proj_bias

    Args:
        xz: (batch, 2*d_inner, L). conv1d_weight: (d_inner, d_conv) or (d_inner, 1, d_conv);
        conv1d_bias, D, delta_bias: (d_inner,). x_proj_weight: (dt_rank + 2*N, d_inner).
        delta_proj_weight: (d_inner, dt_rank). out_proj_weight: (d_model, d_inner) or None;
        out_proj_bias: (d_model,). A: (d_inner, N) (= -exp(A_log)). B_proj_bias, C_proj_bias: (N,).
        B, C: must be None: they come from x_proj (the Mamba layer's only use).
        checkpoint_lvl: 1 recomputes the conv output and delta in backward (less memory), 0 saves them.
    Returns:
        (batch, L, d_model); without out_proj_weight the gated scan output y (batch, d_inner, L).
    """
    if B is not None or C is not None:
        raise NotImplementedError("mamba_inner_fn: B and C are taken from x_proj (the Mamba layer's form); "
                                  "pass B=None and C=None, or call selective_scan_fn for external B/C")
    _check_inputs(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                  out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias, checkpoint_lvl)
    conv1d_weight = conv1d_weight.reshape(conv1d_weight.shape[0], conv1d_weight.shape[-1])
    tensors = (xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
               A, D, delta_bias, B_proj_bias, C_proj_bias)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return torch.ops.smdim.mamba_inner_fwd(*tensors, bool(delta_softplus), int(checkpoint_lvl), save)[0]


# --- the maths shared by the forward and backward implementations ---------------------------

def _split(xz):
    d_inner = xz.shape[1] // 2
    return xz[:, :d_inner], xz[:, d_inner:]


def _delta(x_dbl, delta_proj_weight):
    """delta (batch, d_inner, L) = delta_proj_weight @ the dt part of x_dbl (batch, L, dt_rank + 2N)."""
    return batched_mm(delta_proj_weight, x_dbl[..., :delta_proj_weight.shape[1]].transpose(1, 2))


def _B_C(x_dbl, dt_rank, dstate, B_proj_bias, C_proj_bias):
    """B and C (batch, N, L) from x_dbl (batch, L, dt_rank + 2N), plus their optional biases."""
    B = x_dbl[..., dt_rank:dt_rank + dstate].transpose(1, 2)
    C = x_dbl[..., dt_rank + dstate:].transpose(1, 2)
    if B_proj_bias is not None:
        B = B + B_proj_bias.to(B.dtype)[:, None]
    if C_proj_bias is not None:
        C = C + C_proj_bias.to(C.dtype)[:, None]
    return B.contiguous(), C.contiguous()


def _empty(like):
    return like.new_empty((0,))


@torch.library.impl("smdim::mamba_inner_fwd", "CompositeExplicitAutograd")
def _fwd(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A, D,
         delta_bias, B_proj_bias, C_proj_bias, delta_softplus, checkpoint_lvl, save_for_backward):
    x, z = _split(xz)
    conv_out = torch.ops.smdim.causal_conv1d_fwd(x, conv1d_weight, conv1d_bias, True)
    x_dbl = batched_mm(conv_out.transpose(1, 2), x_proj_weight.t())  # (batch, L, dt_rank + 2N)
    delta = _delta(x_dbl, delta_proj_weight)
    B, C = _B_C(x_dbl, delta_proj_weight.shape[1], A.shape[1], B_proj_bias, C_proj_bias)
    y, _, checkpoints = torch.ops.smdim.selective_scan_fwd(
        conv_out, delta, A, B, C, D, z, delta_bias, delta_softplus, None, None, False, save_for_backward)
    keep = save_for_backward and checkpoint_lvl == 0
    saved_conv, saved_delta = (conv_out, delta) if keep else (_empty(xz), _empty(xz))
    if out_proj_weight is None:
        return y, x_dbl, _empty(xz), checkpoints, saved_conv, saved_delta
    out = batched_mm(y.transpose(1, 2), out_proj_weight.t())
    if out_proj_bias is not None:
        out = out + out_proj_bias
    return out, x_dbl, y if save_for_backward else _empty(xz), checkpoints, saved_conv, saved_delta


def _batched_weight_grad(a, b):
    """sum over batch of a[i] @ b[i]: a (batch, m, L), b (batch, L, n) -> (m, n)."""
    if a.shape[0] == 1:
        return torch.mm(a[0], b[0])
    return torch.bmm(a, b).sum(0)


@torch.library.impl("smdim::mamba_inner_bwd", "CompositeExplicitAutograd")
def _bwd(dout, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
         A, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus, x_dbl, y, checkpoints, conv_out, delta):
    x, z = _split(xz)
    dt_rank = delta_proj_weight.shape[1]
    if conv_out.dim() == 1:  # checkpoint_lvl=1 saved (0,) placeholders: recompute
        conv_out = torch.ops.smdim.causal_conv1d_fwd(x, conv1d_weight, conv1d_bias, True)
        delta = _delta(x_dbl, delta_proj_weight)
    B, C = _B_C(x_dbl, dt_rank, A.shape[1], B_proj_bias, C_proj_bias)

    if out_proj_weight is None:
        dy = dout.contiguous()
        dout_proj_weight, dout_proj_bias = _empty(xz), _empty(xz)
    else:
        dy = batched_mm(out_proj_weight.t(), dout.transpose(1, 2))  # (batch, d_inner, L)
        dout_proj_weight = _batched_weight_grad(dout.transpose(1, 2), y.transpose(1, 2))
        dout_proj_bias = _empty(xz) if out_proj_bias is None else dout.sum((0, 1))

    du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, _ = torch.ops.smdim.selective_scan_bwd(
        dy, None, conv_out, delta, A, B, C, D, z, delta_bias, delta_softplus, None, None, False, checkpoints)

    ddt = batched_mm(ddelta.transpose(1, 2), delta_proj_weight)  # (batch, L, dt_rank)
    ddelta_proj_weight = _batched_weight_grad(ddelta, x_dbl[..., :dt_rank])
    dx_dbl = torch.cat([ddt, dB.transpose(1, 2), dC.transpose(1, 2)], dim=-1)  # (batch, L, dt_rank + 2N)
    du = du + batched_mm(x_proj_weight.t(), dx_dbl.transpose(1, 2))
    dx_proj_weight = _batched_weight_grad(dx_dbl.transpose(1, 2), conv_out.transpose(1, 2))
    dx, dconv_weight, dconv_bias = torch.ops.smdim.causal_conv1d_bwd(du, x, conv1d_weight, conv1d_bias, True)

    def grad_or_empty(t, g):
        return _empty(xz) if t is None else g

    return (torch.cat([dx, dz], dim=1), dconv_weight, grad_or_empty(conv1d_bias, dconv_bias), dx_proj_weight,
            ddelta_proj_weight, grad_or_empty(out_proj_weight, dout_proj_weight),
            grad_or_empty(out_proj_bias, dout_proj_bias), dA, grad_or_empty(D, dD),
            grad_or_empty(delta_bias, ddelta_bias), grad_or_empty(B_proj_bias, dB.sum((0, 2))),
            grad_or_empty(C_proj_bias, dC.sum((0, 2))))


# --- fake (meta) kernels --------------------------------------------------------------------

@torch.library.register_fake("smdim::mamba_inner_fwd")
def _fwd_fake(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
              A, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus, checkpoint_lvl, save_for_backward):
    batch, two_d, length = xz.shape
    d_inner, dstate = two_d // 2, A.shape[1]
    state_dtype = torch.float64 if torch.float64 in (xz.dtype, A.dtype, x_proj_weight.dtype) else torch.float32
    x_dbl = xz.new_empty((batch, length, x_proj_weight.shape[0]))
    n_chunks = -(-length // CHECKPOINT_CHUNK) if save_for_backward else 0
    checkpoints = xz.new_empty((batch, d_inner, n_chunks, dstate), dtype=state_dtype)
    keep = save_for_backward and checkpoint_lvl == 0
    saved = [xz.new_empty((batch, d_inner, length)) if keep else xz.new_empty((0,)) for _ in range(2)]
    y = xz.new_empty((batch, d_inner, length))
    if out_proj_weight is None:
        return y, x_dbl, xz.new_empty((0,)), checkpoints, saved[0], saved[1]
    out = xz.new_empty((batch, length, out_proj_weight.shape[0]))
    return out, x_dbl, y if save_for_backward else xz.new_empty((0,)), checkpoints, saved[0], saved[1]


@torch.library.register_fake("smdim::mamba_inner_bwd")
def _bwd_fake(dout, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
              out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus, x_dbl, y, checkpoints,
              conv_out, delta):
    def grad_of(t):
        return xz.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)

    return tuple(grad_of(t) for t in (xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                                      out_proj_weight, out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias))


# --- autograd -------------------------------------------------------------------------------

_N_TENSOR_INPUTS = 12


def _setup_context(ctx, inputs, output):
    tensors = inputs[:_N_TENSOR_INPUTS]
    ctx.delta_softplus = inputs[12]
    _, x_dbl, y, checkpoints, conv_out, delta = output
    ctx.save_for_backward(*tensors, x_dbl, y, checkpoints, conv_out, delta)
    ctx.mark_non_differentiable(x_dbl, y, checkpoints, conv_out, delta)


def _backward(ctx, dout, *_unused):
    saved = ctx.saved_tensors
    tensors, extra = saved[:_N_TENSOR_INPUTS], saved[_N_TENSOR_INPUTS:]
    grads = torch.ops.smdim.mamba_inner_bwd(dout, *tensors, ctx.delta_softplus, *extra)
    return tuple(None if t is None else g for t, g in zip(tensors, grads)) + (None, None, None)


torch.library.register_autograd("smdim::mamba_inner_fwd", _backward, setup_context=_setup_context)
