"""The Mamba mixer after in_proj as one op, with recomputation in its backward.

    smdim::mamba_inner_fwd -> (out, x_dbl, y, checkpoints, conv_out, delta)
    smdim::mamba_inner_bwd -> gradients of every input (empty (0,) tensors for absent ones)

The op composes the fused ops (causal_conv1d, selective_scan) with GEMMs, so it runs on every
device those ops run on: one implementation (composite.py, over the chain in chain.py that
mamba_mixer shares), no per-backend copy. What the backward keeps:
xz, the weights, x_dbl (batch, x_proj rows, L), the scan checkpoints (one state per 64 steps)
and, when out_proj is fused, the gated scan output y (for out_proj's weight gradient). The conv
output and delta (each (batch, d_inner, L)) are recomputed in the backward at checkpoint_lvl=1
(mamba_ssm's default) and saved at checkpoint_lvl=0.
"""
from __future__ import annotations

import torch

from ...validation import FLOAT_DTYPES, check_float, check_same_device, check_shape, check_tensor
from .._autograd import register_autograd
from ..selective_scan.constants import CHECKPOINT_CHUNK, MAX_DSTATE
from ..selective_scan.interface import check_bc
from ..selective_scan.reference import compute_dtype
from . import composite

_FWD_SCHEMA = (
    "(Tensor xz, Tensor conv1d_weight, Tensor? conv1d_bias, Tensor x_proj_weight, Tensor delta_proj_weight, "
    "Tensor? out_proj_weight, Tensor? out_proj_bias, Tensor A, Tensor? D, Tensor? delta_bias, "
    "Tensor? B_proj_bias, Tensor? C_proj_bias, Tensor? B, Tensor? C, bool delta_softplus, int checkpoint_lvl, "
    "bool save_for_backward) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_BWD_SCHEMA = (
    "(Tensor dout, Tensor xz, Tensor conv1d_weight, Tensor? conv1d_bias, Tensor x_proj_weight, "
    "Tensor delta_proj_weight, Tensor? out_proj_weight, Tensor? out_proj_bias, Tensor A, Tensor? D, "
    "Tensor? delta_bias, Tensor? B_proj_bias, Tensor? C_proj_bias, Tensor? B, Tensor? C, bool delta_softplus, "
    "Tensor x_dbl, Tensor y, Tensor checkpoints, Tensor conv_out, Tensor delta) -> (" + ", ".join(["Tensor"] * 14)
    + ")"
)
torch.library.define("smdim::mamba_inner_fwd", _FWD_SCHEMA)
torch.library.define("smdim::mamba_inner_bwd", _BWD_SCHEMA)


def _check_inputs(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                  out_proj_bias, A, B, C, D, delta_bias, B_proj_bias, C_proj_bias, checkpoint_lvl):
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
    named = {"xz": xz, "conv1d_weight": conv1d_weight, "x_proj_weight": x_proj_weight,
             "delta_proj_weight": delta_proj_weight, "out_proj_weight": out_proj_weight, "A": A}
    groups = {}
    for name, M, proj_bias in (("B", B, B_proj_bias), ("C", C, C_proj_bias)):
        if M is not None:
            check_tensor(name, M)
            groups[name] = check_bc(name, M, batch, d_inner, dstate, length)
            named[name] = M
            if proj_bias is not None:
                raise ValueError(f"{name}_proj_bias is added to the {name} that x_proj makes; it was given with "
                                 f"{name} passed in (add it to {name} yourself, or pass {name}=None)")
    groups_b, groups_c = groups.get("B", 1), groups.get("C", 1)  # x_proj's B/C: one group; constant: None
    if groups_b is not None and groups_c is not None and groups_b != groups_c:
        raise ValueError(f"B and C must have the same group count; got G={groups_b} for B and G={groups_c} for C "
                         "(a B or C made by x_proj has G=1)")
    from_x_proj = (B is None) + (C is None)  # B/C read from x_proj: dt, then B, then C (mamba_ssm's layout)
    rows = sorted({dt_rank + from_x_proj * dstate, dt_rank + 2 * dstate})
    if x_proj_weight.dim() != 2 or x_proj_weight.shape[1] != d_inner or x_proj_weight.shape[0] not in rows:
        expected = " or ".join(f"({r}, {d_inner})" for r in rows)
        raise ValueError(f"x_proj_weight must be (dt_rank + {from_x_proj}*N, d_inner) = {expected} "
                         f"(dt_rank={dt_rank}, N={dstate}, {from_x_proj} of B/C from x_proj); "
                         f"got shape {tuple(x_proj_weight.shape)}")
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
    for name, (t, shape, text) in optional.items():
        if t is not None:
            check_tensor(name, t)
            check_shape(name, t, shape, text)
            named[name] = t
    for name, t in named.items():
        if t is not None:
            check_float(name, t, FLOAT_DTYPES)
    if checkpoint_lvl not in (0, 1):
        raise ValueError(f"checkpoint_lvl must be 0 (save conv output and delta) or 1 (recompute them); "
                         f"got {checkpoint_lvl!r}")
    check_same_device(named)


def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                   out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                   C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1, b_rms_weight=None, c_rms_weight=None,
                   dt_rms_weight=None, b_c_dt_rms_eps=1e-6):
    """The Mamba mixer after in_proj, fused into one differentiable op (mamba_ssm's signature).

        x, z     = xz[:, :d_inner], xz[:, d_inner:]
        u        = silu(causal_conv1d(x, conv1d_weight, conv1d_bias))
        x_dbl    = x_proj_weight @ u                   -> [dt | B | C] per step
        B, C     = the given ones, or x_dbl's (+ B_proj_bias / C_proj_bias)
        delta    = delta_proj_weight @ dt
        y        = selective_scan(u, delta, A, B, C, D, z, delta_bias,
                                  delta_softplus)
        out      = y^T @ out_proj_weight^T + out_proj_bias

    Args:
        xz: (batch, 2*d_inner, L). conv1d_weight: (d_inner, d_conv) or (d_inner, 1, d_conv);
        conv1d_bias, D, delta_bias: (d_inner,). delta_proj_weight: (d_inner, dt_rank).
        x_proj_weight: (dt_rank + 2*N, d_inner), or (dt_rank + N, d_inner) when one of B/C is given;
        its output is [dt | B | C] (a B from x_proj at dt_rank..dt_rank+N, a C in the last N).
        out_proj_weight: (d_model, d_inner) or None; out_proj_bias: (d_model,).
        A: (d_inner, N) (= -exp(A_log)), N <= 256.
        B, C: None (made by x_proj, input-dependent), or given: (d_inner, N) constant, or
        (batch, N, L) / (batch, G, N, L) input-dependent (G divides d_inner); differentiable.
        B_proj_bias, C_proj_bias: (N,), added to the B / C that x_proj makes (not with B / C given).
        checkpoint_lvl: 1 recomputes the conv output and delta in backward (less memory), 0 saves them.
        b_rms_weight, c_rms_weight, dt_rms_weight, b_c_dt_rms_eps: mamba_ssm's RMS norms on B, C and
        dt (FalconMamba's form): not supported; given weights raise NotImplementedError.
    Returns:
        (batch, L, d_model); without out_proj_weight the gated scan output y (batch, d_inner, L).
    """
    if b_rms_weight is not None or c_rms_weight is not None or dt_rms_weight is not None:
        raise NotImplementedError("mamba_inner_fn: b_rms_weight / c_rms_weight / dt_rms_weight (RMS norms on B, C "
                                  "and dt, FalconMamba's form) are not supported by smdim_kernels")
    _check_inputs(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                  out_proj_bias, A, B, C, D, delta_bias, B_proj_bias, C_proj_bias, checkpoint_lvl)
    conv1d_weight = conv1d_weight.reshape(conv1d_weight.shape[0], conv1d_weight.shape[-1])
    tensors = (xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
               A, D, delta_bias, B_proj_bias, C_proj_bias, B, C)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return torch.ops.smdim.mamba_inner_fwd(*tensors, bool(delta_softplus), int(checkpoint_lvl), save)[0]


# --- the implementation (composite.py), one for every device --------------------------------

torch.library.impl("smdim::mamba_inner_fwd", "CompositeExplicitAutograd")(composite.forward)
torch.library.impl("smdim::mamba_inner_bwd", "CompositeExplicitAutograd")(composite.backward_of)


# --- fake (meta) kernels --------------------------------------------------------------------

@torch.library.register_fake("smdim::mamba_inner_fwd")
def _fwd_fake(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
              A, D, delta_bias, B_proj_bias, C_proj_bias, B, C, delta_softplus, checkpoint_lvl, save_for_backward):
    batch, two_d, length = xz.shape
    d_inner, dstate = two_d // 2, A.shape[1]
    state_dtype = compute_dtype(xz, A, x_proj_weight, B, C)
    x_dbl = xz.new_empty((batch, x_proj_weight.shape[0], length))
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
              out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias, B, C, delta_softplus, x_dbl, y,
              checkpoints, conv_out, delta):
    def grad_of(t):
        return xz.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)

    return tuple(grad_of(t) for t in (xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                                      out_proj_weight, out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias, B, C))


# --- autograd -------------------------------------------------------------------------------

_N_TENSOR_INPUTS = 14


def _setup_context(ctx, inputs, output):
    tensors = inputs[:_N_TENSOR_INPUTS]
    ctx.delta_softplus = inputs[_N_TENSOR_INPUTS]
    _, x_dbl, y, checkpoints, conv_out, delta = output
    ctx.save_for_backward(*tensors, x_dbl, y, checkpoints, conv_out, delta)
    ctx.mark_non_differentiable(x_dbl, y, checkpoints, conv_out, delta)


def _backward(ctx, dout, *_unused):
    saved = ctx.saved_tensors
    tensors, extra = saved[:_N_TENSOR_INPUTS], saved[_N_TENSOR_INPUTS:]
    grads = torch.ops.smdim.mamba_inner_bwd(dout, *tensors, ctx.delta_softplus, *extra)
    return tuple(None if t is None else g for t, g in zip(tensors, grads)) + (None, None, None)


register_autograd("smdim::mamba_inner_fwd", _backward, setup_context=_setup_context)
