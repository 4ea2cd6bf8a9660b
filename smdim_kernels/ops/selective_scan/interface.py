"""The selective scan declared once as `torch.library` ops, with device dispatch.

    smdim::selective_scan_fwd  -> (out, last_state, checkpoints)
    smdim::selective_scan_bwd  -> gradients of every input (empty (0,) tensors for absent ones)

Implementations: CPU in C++ (csrc/selective_scan, registered when `smdim_kernels._C` loads),
CUDA in Triton (triton.py), any other device or a missing build on the reference (with a
warning). `checkpoints` holds the state before every CHECKPOINT_CHUNK steps; the backward
re-runs one chunk at a time from them instead of storing (batch, dim, L, N) states. Without
`save_checkpoints` (nothing needs a gradient) it has no chunks and the backward cannot run.
"""
from __future__ import annotations

import torch

from ...backends import register_implementations, warn_reference
from ...validation import FLOAT_DTYPES, check_float, check_same_device, check_shape, check_tensor
from .._autograd import register_autograd
from .constants import CHECKPOINT_CHUNK, MAX_DSTATE
from .reference import compute_dtype, selective_scan_ref

_FWD_SCHEMA = (
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
    "bool delta_softplus, Tensor? initial_state, Tensor? seq_idx, bool reverse, bool save_checkpoints) "
    "-> (Tensor, Tensor, Tensor)"
)
_BWD_SCHEMA = (
    "(Tensor dout, Tensor? dlast_state, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, "
    "Tensor? z, Tensor? delta_bias, bool delta_softplus, Tensor? initial_state, Tensor? seq_idx, "
    "bool reverse, Tensor checkpoints) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
torch.library.define("smdim::selective_scan_fwd", _FWD_SCHEMA)
torch.library.define("smdim::selective_scan_bwd", _BWD_SCHEMA)


def _n_chunks(length):
    return (length + CHECKPOINT_CHUNK - 1) // CHECKPOINT_CHUNK


def check_bc(name, M, batch, dim, dstate, length):
    """B/C: (dim, N) constant, (batch, N, L) or (batch, G, N, L) input-dependent; returns G."""
    n = M.dim()
    if n == 2:
        check_shape(name, M, (dim, dstate), "(dim, N)")
        return None
    if n == 3:
        check_shape(name, M, (batch, dstate, length), "(batch, N, L)")
        return 1
    if n == 4:
        groups = M.shape[1]
        if groups < 1 or dim % groups != 0:
            raise ValueError(f"{name}: the group count G={groups} (dim 1 of shape {tuple(M.shape)}) "
                             f"must divide dim={dim}")
        check_shape(name, M, (batch, groups, dstate, length), "(batch, G, N, L)")
        return groups
    raise ValueError(f"{name} must be (dim, N), (batch, N, L) or (batch, G, N, L); got shape {tuple(M.shape)}")


def check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx):
    """Validate the scan's arguments; raise ValueError/TypeError naming the argument."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        check_tensor(name, t)
    check_float("u", u, FLOAT_DTYPES)
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, L); got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if A.is_complex():
        raise TypeError("A: complex A is not supported (real A only)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim, N) = ({dim}, N); got shape {tuple(A.shape)}")
    dstate = A.shape[1]
    if not 1 <= dstate <= MAX_DSTATE:
        raise ValueError(f"A: N = A.shape[1] must be in [1, {MAX_DSTATE}]; got {dstate}")
    check_shape("delta", delta, (batch, dim, length), "(batch, dim, L) like u")
    groups_b = check_bc("B", B, batch, dim, dstate, length)
    groups_c = check_bc("C", C, batch, dim, dstate, length)
    if groups_b is not None and groups_c is not None and groups_b != groups_c:
        raise ValueError(f"B and C must have the same group count; got G={groups_b} for B and G={groups_c} for C")
    optional = {"D": (D, (dim,), "(dim,)"), "z": (z, (batch, dim, length), "(batch, dim, L) like u"),
                "delta_bias": (delta_bias, (dim,), "(dim,)"),
                "initial_state": (initial_state, (batch, dim, dstate), "(batch, dim, N)")}
    for name, (t, shape, text) in optional.items():
        if t is not None:
            check_tensor(name, t)
            check_shape(name, t, shape, text)
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias,
             "initial_state": initial_state}
    for name, t in named.items():
        if t is not None:
            check_float(name, t, FLOAT_DTYPES)
    if seq_idx is not None:
        check_tensor("seq_idx", seq_idx)
        check_shape("seq_idx", seq_idx, (batch, length), "(batch, L)")
        if seq_idx.is_floating_point() or seq_idx.is_complex() or seq_idx.dtype == torch.bool:
            raise TypeError(f"seq_idx must be an integer tensor (int32/int64); got {seq_idx.dtype}")
        named["seq_idx"] = seq_idx
    check_same_device(named)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, initial_state=None, reverse=False, seq_idx=None):
    """Selective scan (Mamba's S6 recurrence), fused; differentiable in every floating input.

    For each batch b, channel d and state n, in time order (or from L-1 down to 0 if reverse):
        dt_t = softplus(delta_t + delta_bias) if delta_softplus else delta_t + delta_bias
        h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        (h_{-1} = initial_state or 0)
        y_t  = sum_n C_t * h_t + D * u_t;   out_t = y_t * silu(z_t) if z is given
    The state resets to 0 where seq_idx changes (packed variable-length sequences).

    Args:
        u, delta: (batch, dim, L). A: (dim, N), N <= 256.
        B, C: (dim, N) constant, or (batch, N, L) / (batch, G, N, L) input-dependent (G divides dim).
        D, delta_bias: (dim,). z: (batch, dim, L). initial_state: (batch, dim, N).
        seq_idx: (batch, L) integer sequence ids.
    Returns:
        out (batch, dim, L) in u's dtype; with return_last_state also last_state (batch, dim, N)
        in fp32 (fp64 for fp64 inputs), which is differentiable.
    fp16/bf16 inputs are computed with fp32 accumulation.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx)
    # Inference needs no checkpoints: skip writing them (and allocating them).
    save_checkpoints = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    out, last_state, _ = torch.ops.smdim.selective_scan_fwd(
        u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), initial_state, seq_idx, bool(reverse),
        save_checkpoints)
    return (out, last_state) if return_last_state else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decoding step, updating `state` in place (mamba_ssm's selective_state_update).

    state: (batch, dim, N); x, dt, z: (batch, dim); A: (dim, N); B, C: (batch, N) or
    (batch, G, N); D, dt_bias: (dim,). Returns out (batch, dim) in x's dtype.
    Runs the fused scan for one step from `state`, so it shares its kernels and gradients.
    """
    check_tensor("state", state)
    check_tensor("x", x)
    if x.dim() != 2:
        raise ValueError(f"x must be (batch, dim); got shape {tuple(x.shape)}")
    if state.dim() != 3 or state.shape[:2] != x.shape:
        raise ValueError(f"state must be (batch, dim, N) = ({x.shape[0]}, {x.shape[1]}, N); got {tuple(state.shape)}")
    for name, M in (("B", B), ("C", C)):
        check_tensor(name, M)
        if M.dim() not in (2, 3):
            raise ValueError(f"{name} must be (batch, N) or (batch, G, N); got shape {tuple(M.shape)}")
    for name, t in (("dt", dt), ("z", z)):
        if t is not None:
            check_tensor(name, t)
            check_shape(name, t, tuple(x.shape), "(batch, dim) like x")
    out, last = selective_scan_fn(
        x[..., None], dt[..., None], A, B[..., None], C[..., None], D, None if z is None else z[..., None],
        dt_bias, dt_softplus, return_last_state=True, initial_state=state)
    with torch.no_grad():
        state.copy_(last)
    return out[..., 0]


# --- fake (meta) kernels: shapes and dtypes only -------------------------------------------

@torch.library.register_fake("smdim::selective_scan_fwd")
def _fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, reverse,
              save_checkpoints):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    state_dtype = compute_dtype(u, delta, A, B, C)
    out = u.new_empty((batch, dim, length))
    last = u.new_empty((batch, dim, dstate), dtype=state_dtype)
    ckpt = u.new_empty((batch, dim, _n_chunks(length) if save_checkpoints else 0, dstate), dtype=state_dtype)
    return out, last, ckpt


@torch.library.register_fake("smdim::selective_scan_bwd")
def _bwd_fake(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
              seq_idx, reverse, checkpoints):
    def grad_of(t):  # absent inputs get a fresh (0,) tensor each (outputs must not alias)
        return u.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)

    return tuple(grad_of(t) for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))


# --- autograd -------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, reverse, _save = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, output[2])
    ctx.delta_softplus = delta_softplus
    ctx.reverse = reverse
    ctx.mark_non_differentiable(output[2])


def _backward(ctx, dout, dlast_state, _dcheckpoints):
    u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, checkpoints = ctx.saved_tensors
    du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = torch.ops.smdim.selective_scan_bwd(
        dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, initial_state, seq_idx,
        ctx.reverse, checkpoints)
    return (du, ddelta, dA, dB, dC,
            None if D is None else dD,
            None if z is None else dz,
            None if delta_bias is None else dbias,
            None,
            None if initial_state is None else dinit,
            None, None, None)


register_autograd("smdim::selective_scan_fwd", _backward, setup_context=_setup_context)


# --- reference implementations: devices without a kernel, or a missing C++ build ------------

def _fwd_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx, reverse,
                   save_checkpoints):
    warn_reference("selective_scan", u.device.type)
    out, last = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, True,
                                   initial_state=initial_state, reverse=reverse, seq_idx=seq_idx)
    # The reference backward re-runs the reference: its checkpoints are placeholders of the right shape.
    n_chunks = _n_chunks(u.shape[2]) if save_checkpoints else 0
    ckpt = last.new_zeros((u.shape[0], u.shape[1], n_chunks, A.shape[1]))
    return out, last, ckpt


def _bwd_reference(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                   seq_idx, reverse, checkpoints):
    warn_reference("selective_scan", u.device.type)
    named = [u, delta, A, B, C, D, z, delta_bias, initial_state]
    leaves = [None if t is None else t.detach().requires_grad_(True) for t in named]
    with torch.enable_grad():
        out, last = selective_scan_ref(*leaves[:8], delta_softplus, True, initial_state=leaves[8],
                                       reverse=reverse, seq_idx=seq_idx)
        outputs, grads_out = [out], [dout]
        if dlast_state is not None:
            outputs.append(last)
            grads_out.append(dlast_state)
        wrt = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(outputs, wrt, grads_out, allow_unused=True))
    result = []
    for t in leaves:
        if t is None:
            result.append(u.new_empty((0,)))
        else:
            g = next(grads)
            result.append(torch.zeros_like(t) if g is None else g.contiguous())
    return tuple(result)


register_implementations("selective_scan", __package__, _fwd_reference, _bwd_reference)
