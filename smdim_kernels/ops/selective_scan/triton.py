"""Triton selective scan (the CUDA path of smdim::selective_scan_fwd / selective_scan_bwd).

Same algorithm as the C++ CPU kernel (csrc/selective_scan/scan_kernel.h):
  * one program per (batch row, group, block of BLOCK_D channels of that group); it keeps the
    block's (BLOCK_D, BLOCK_N) state in fp32 (fp64 for fp64 inputs) and walks time sequentially
    (no tl.associative_scan, no autotune, no tl.dot);
  * the forward stores the state before every CHECKPOINT_CHUNK steps (in processing order);
  * the backward goes over the chunks from the last, re-runs each chunk's forward from its
    checkpoint into a per-program scratch tile (CHUNK + 1 states), then runs the adjoint scan
    backwards through it. No (batch, dim, L, N) tensor is ever built.
Reductions over channels (input-dependent dB/dC) and over batch (dA, dD, ddelta_bias,
constant dB/dC) go through per-program partial buffers summed with torch afterwards: the
result is deterministic (no atomics).

Adjoint recurrence (i in processing order, g_i = dL/dy_i, keep_i = 0 where the state resets):
    lam_i  = lam'_i + C_i g_i                       (lam'_i carried from step i + 1; dlast at the end)
    lam'_{i-1} = exp(dt_i A) keep_i lam_i           dinitial_state = lam'_{-1}
    dB_i = lam_i dt_i u_i,  dC_i = g_i h_i,  dA += q_i dt_i,  ddt_i = sum_n q_i A + u_i sum_n lam_i B_i
    with q_i = exp(dt_i A) keep_i lam_i h_{i-1};  du_i = dt_i sum_n lam_i B_i + D g_i.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import triton
import triton.language as tl

from .constants import CHECKPOINT_CHUNK
from .reference import compute_dtype

# ---------------------------------------------------------------------------------------------
# Device helpers shared by the forward and backward kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _softplus(x):
    """log(1 + e^x); x itself above 20, as torch.nn.functional.softplus."""
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _time_of(pos, L, REVERSE: tl.constexpr):
    """Time index of processing position `pos` (L-1 down to 0 when REVERSE)."""
    if REVERSE:
        t = L - 1 - pos
    else:
        t = pos
    return t


@triton.jit
def _load_step(u_row, delta_row, t, dmask, bias, DELTA_SOFTPLUS: tl.constexpr, COMPUTE: tl.constexpr):
    """u_t, dt_t and raw_t = delta_t + bias (before softplus) for the block, each (BLOCK_D,).

    Channels outside the block read 0 for u, so they contribute nothing anywhere.
    """
    u = tl.load(u_row + t, mask=dmask, other=0.0).to(COMPUTE)
    raw = tl.load(delta_row + t, mask=dmask, other=0.0).to(COMPUTE) + bias
    if DELTA_SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return u, dt, raw


@triton.jit
def _bc_at(M_ptr, M_const, bc_base, n, nmask, t, L, VARIABLE: tl.constexpr, COMPUTE: tl.constexpr):
    """B or C at time t: the constant (BLOCK_D, BLOCK_N) tile, or the group's (1, BLOCK_N) row."""
    if VARIABLE:
        m = tl.load(M_ptr + bc_base + n * L + t, mask=nmask, other=0.0).to(COMPUTE)[None, :]
    else:
        m = M_const
    return m


@triton.jit
def _keep_at(seq_row, t, pos, REVERSE: tl.constexpr, COMPUTE: tl.constexpr):
    """0.0 where seq_idx at t differs from the previously processed position, else 1.0."""
    if REVERSE:
        t_prev = t + 1
    else:
        t_prev = t - 1
    has_prev = pos > 0
    cur = tl.load(seq_row + t)
    prev = tl.load(seq_row + t_prev, mask=has_prev, other=0)
    return tl.where(has_prev & (cur != prev), 0.0, 1.0).to(COMPUTE)


@triton.jit
def _block_coords(dstate, groups, dim_per_group,
                  BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch row b, group g, block index, channels d (BLOCK_D,), states n and masks.

    Everything that enters an offset is int64, so tensors over 2**31 elements index correctly.
    """
    pid_bg = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1).to(tl.int64)
    b = pid_bg // groups
    g = pid_bg % groups
    local = block * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    dmask = local < dim_per_group
    d = g * dim_per_group + local
    n = tl.arange(0, BLOCK_N).to(tl.int64)
    nmask = n < dstate
    return b, g, block, d, dmask, n, nmask


@triton.jit
def _offsets(b, g, d, n, dim, L, dstate, groups, n_chunks):
    """Offsets of the block's data (int64).

    row (BLOCK_D,): start of each channel's time row in (batch, dim, L) tensors;
    bc_base: start of the group's (N, L) slab of input-dependent B/C (batch, groups, N, L);
    state_off (BLOCK_D, BLOCK_N): the block in (batch, dim, N) tensors;
    ckpt_off (BLOCK_D, BLOCK_N): chunk 0 of the block in (batch, dim, n_chunks, N) checkpoints.
    """
    channel = b * dim + d
    row = channel * L
    bc_base = (b * groups + g) * dstate * L
    state_off = channel[:, None] * dstate + n[None, :]
    ckpt_off = channel[:, None] * (n_chunks * dstate) + n[None, :]
    return row, bc_base, state_off, ckpt_off


@triton.jit
def _load_params(A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, d, dmask, n, nmask, dstate,
                 VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                 COMPUTE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """A, constant B / C (zeros when input-dependent) as (BLOCK_D, BLOCK_N); D, delta_bias (BLOCK_D,).

    Padded states read A = 0 and B = C = 0: their state stays 0 and adds nothing.
    """
    mat = d[:, None] * dstate + n[None, :]
    mask2 = dmask[:, None] & nmask[None, :]
    A = tl.load(A_ptr + mat, mask=mask2, other=0.0).to(COMPUTE)
    if VAR_B:
        B_const = tl.zeros((BLOCK_D, BLOCK_N), COMPUTE)
    else:
        B_const = tl.load(B_ptr + mat, mask=mask2, other=0.0).to(COMPUTE)
    if VAR_C:
        C_const = tl.zeros((BLOCK_D, BLOCK_N), COMPUTE)
    else:
        C_const = tl.load(C_ptr + mat, mask=mask2, other=0.0).to(COMPUTE)
    if HAS_D:
        D = tl.load(D_ptr + d, mask=dmask, other=0.0).to(COMPUTE)
    else:
        D = tl.zeros((BLOCK_D,), COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(COMPUTE)
    else:
        bias = tl.zeros((BLOCK_D,), COMPUTE)
    return A, B_const, C_const, D, bias


@triton.jit
def _advance(h, pos, L, u_row, delta_row, seq_row, B_ptr, B_const, bc_base, n, nmask, dmask, A, bias,
             VAR_B: tl.constexpr, HAS_SEQ: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr,
             REVERSE: tl.constexpr, COMPUTE: tl.constexpr):
    """One recurrence step at processing position pos: returns (new state, u_t, t)."""
    t = _time_of(pos, L, REVERSE)
    u, dt, raw = _load_step(u_row, delta_row, t, dmask, bias, DELTA_SOFTPLUS, COMPUTE)
    B_t = _bc_at(B_ptr, B_const, bc_base, n, nmask, t, L, VAR_B, COMPUTE)
    if HAS_SEQ:
        h = h * _keep_at(seq_row, t, pos, REVERSE, COMPUTE)
    h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * B_t
    return h, u, t


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, init_ptr, seq_ptr,
    out_ptr, last_ptr, ckpt_ptr,
    dim, L, dstate, groups, dim_per_group, n_chunks,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, COMPUTE: tl.constexpr, SAVE_CKPT: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (batch * groups, cdiv(dim_per_group, BLOCK_D)).

    u, delta, z, out: (batch, dim, L); A: (dim, N); B, C: (dim, N) or (batch, groups, N, L);
    D, bias: (dim,); init, last: (batch, dim, N); seq: (batch, L); ckpt: (batch, dim, n_chunks, N).
    """
    b, g, block, d, dmask, n, nmask = _block_coords(dstate, groups, dim_per_group, BLOCK_D, BLOCK_N)
    mask2 = dmask[:, None] & nmask[None, :]
    A, B_const, C_const, Dv, bias = _load_params(A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, d, dmask, n, nmask,
                                                 dstate, VAR_B, VAR_C, HAS_D, HAS_BIAS, COMPUTE,
                                                 BLOCK_D, BLOCK_N)
    row, bc_base, state_off, ckpt_off = _offsets(b, g, d, n, dim, L, dstate, groups, n_chunks)
    seq_row = seq_ptr + b * L

    if HAS_INIT:
        h = tl.load(init_ptr + state_off, mask=mask2, other=0.0).to(COMPUTE)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), COMPUTE)
    for c in range(n_chunks):
        if SAVE_CKPT:
            tl.store(ckpt_ptr + ckpt_off + c * dstate, h, mask=mask2)
        pos0 = c * CHUNK
        for pos in range(pos0, tl.minimum(pos0 + CHUNK, L)):
            h, u, t = _advance(h, pos, L, u_ptr + row, delta_ptr + row, seq_row, B_ptr, B_const, bc_base, n,
                               nmask, dmask, A, bias, VAR_B, HAS_SEQ, DELTA_SOFTPLUS, REVERSE, COMPUTE)
            C_t = _bc_at(C_ptr, C_const, bc_base, n, nmask, t, L, VAR_C, COMPUTE)
            y = tl.sum(h * C_t, axis=1) + Dv * u
            if HAS_Z:
                zv = tl.load(z_ptr + row + t, mask=dmask, other=0.0).to(COMPUTE)
                y = y * zv * _sigmoid(zv)
            tl.store(out_ptr + row + t, y.to(out_ptr.dtype.element_ty), mask=dmask)
    tl.store(last_ptr + state_off, h, mask=mask2)


@triton.jit
def _selective_scan_bwd_kernel(
    dout_ptr, dlast_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr, ckpt_ptr,
    scratch_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dinit_ptr, dA_part_ptr, dB_part_ptr, dC_part_ptr, dD_part_ptr, dbias_part_ptr,
    dim, L, dstate, groups, dim_per_group, n_chunks, n_blocks,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_DLAST: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, COMPUTE: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (batch * groups, n_blocks), n_blocks = cdiv(dim_per_group, BLOCK_D).

    Inputs as in the forward, plus dout (batch, dim, L), dlast (batch, dim, N) and
    ckpt (batch, dim, n_chunks, N). scratch: (programs, CHUNK + 1, BLOCK_D, BLOCK_N), slot i + 1
    holding the state after step i of the current chunk and slot 0 its checkpoint.
    Outputs: du, ddelta, dz (batch, dim, L); dinit (batch, dim, N); per-batch partials
    dA_part (batch, dim, N), dD_part / dbias_part (batch, dim), and dB_part / dC_part either
    (batch, dim, N) (constant) or per-block (batch, groups, n_blocks, N, L) (input-dependent).
    """
    b, g, block, d, dmask, n, nmask = _block_coords(dstate, groups, dim_per_group, BLOCK_D, BLOCK_N)
    mask2 = dmask[:, None] & nmask[None, :]
    A, B_const, C_const, Dv, bias = _load_params(A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, d, dmask, n, nmask,
                                                 dstate, VAR_B, VAR_C, HAS_D, HAS_BIAS, COMPUTE,
                                                 BLOCK_D, BLOCK_N)
    row, bc_base, state_off, ckpt_off = _offsets(b, g, d, n, dim, L, dstate, groups, n_chunks)
    seq_row = seq_ptr + b * L
    # Per-block rows of the input-dependent dB/dC partials: [b, g, block, n, t].
    part_base = ((b * groups + g) * n_blocks + block) * dstate * L
    program = (b * groups + g) * n_blocks + block
    tile = tl.arange(0, BLOCK_D).to(tl.int64)[:, None] * BLOCK_N + n[None, :]
    scratch = scratch_ptr + program * ((CHUNK + 1) * BLOCK_D * BLOCK_N) + tile

    if HAS_DLAST:
        lam = tl.load(dlast_ptr + state_off, mask=mask2, other=0.0).to(COMPUTE)
    else:
        lam = tl.zeros((BLOCK_D, BLOCK_N), COMPUTE)
    acc_A = tl.zeros((BLOCK_D, BLOCK_N), COMPUTE)
    acc_B = tl.zeros((BLOCK_D, BLOCK_N), COMPUTE)
    acc_C = tl.zeros((BLOCK_D, BLOCK_N), COMPUTE)
    acc_D = tl.zeros((BLOCK_D,), COMPUTE)
    acc_bias = tl.zeros((BLOCK_D,), COMPUTE)

    for k in range(n_chunks):
        c = n_chunks - 1 - k
        pos0 = c * CHUNK
        count = tl.minimum(CHUNK, L - pos0)
        # Re-run the chunk's forward from its checkpoint, keeping every state.
        h = tl.load(ckpt_ptr + ckpt_off + c * dstate, mask=mask2, other=0.0).to(COMPUTE)
        tl.debug_barrier()  # the previous chunk's adjoint pass has finished reading scratch
        tl.store(scratch, h)
        for i in range(count):
            h, u, t = _advance(h, pos0 + i, L, u_ptr + row, delta_ptr + row, seq_row, B_ptr, B_const, bc_base,
                               n, nmask, dmask, A, bias, VAR_B, HAS_SEQ, DELTA_SOFTPLUS, REVERSE, COMPUTE)
            tl.store(scratch + (i + 1) * (BLOCK_D * BLOCK_N), h)
        tl.debug_barrier()  # states written above are visible to every thread below
        # Adjoint scan through the chunk, last step first.
        for j in range(count):
            i = count - 1 - j
            pos = pos0 + i
            t = _time_of(pos, L, REVERSE)
            u, dt, raw = _load_step(u_ptr + row, delta_ptr + row, t, dmask, bias, DELTA_SOFTPLUS, COMPUTE)
            B_t = _bc_at(B_ptr, B_const, bc_base, n, nmask, t, L, VAR_B, COMPUTE)
            C_t = _bc_at(C_ptr, C_const, bc_base, n, nmask, t, L, VAR_C, COMPUTE)
            h_prev = tl.load(scratch + i * (BLOCK_D * BLOCK_N))
            h_cur = tl.load(scratch + (i + 1) * (BLOCK_D * BLOCK_N))
            grad_y = tl.load(dout_ptr + row + t, mask=dmask, other=0.0).to(COMPUTE)
            if HAS_Z:
                zv = tl.load(z_ptr + row + t, mask=dmask, other=0.0).to(COMPUTE)
                sig = _sigmoid(zv)
                y = tl.sum(h_cur * C_t, axis=1) + Dv * u
                dz = grad_y * y * sig * (1.0 + zv * (1.0 - sig))
                tl.store(dz_ptr + row + t, dz.to(dz_ptr.dtype.element_ty), mask=dmask)
                grad_y = grad_y * zv * sig
            lam = lam + C_t * grad_y[:, None]
            grad_B = lam * (dt * u)[:, None]
            grad_C = h_cur * grad_y[:, None]
            if VAR_B:
                tl.store(dB_part_ptr + part_base + n * L + t, tl.sum(grad_B, axis=0), mask=nmask)
            else:
                acc_B += grad_B
            if VAR_C:
                tl.store(dC_part_ptr + part_base + n * L + t, tl.sum(grad_C, axis=0), mask=nmask)
            else:
                acc_C += grad_C
            lam_B = tl.sum(lam * B_t, axis=1)
            lam = tl.exp(dt[:, None] * A) * lam  # carried through the decay to step i - 1
            if HAS_SEQ:
                lam = lam * _keep_at(seq_row, t, pos, REVERSE, COMPUTE)
            q = lam * h_prev
            acc_A += q * dt[:, None]
            ddt = tl.sum(q * A, axis=1) + lam_B * u
            if DELTA_SOFTPLUS:
                ddt = ddt * _sigmoid(raw)
            tl.store(du_ptr + row + t, (lam_B * dt + Dv * grad_y).to(du_ptr.dtype.element_ty), mask=dmask)
            tl.store(ddelta_ptr + row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=dmask)
            acc_D += grad_y * u
            acc_bias += ddt

    if HAS_INIT:
        tl.store(dinit_ptr + state_off, lam.to(dinit_ptr.dtype.element_ty), mask=mask2)
    tl.store(dA_part_ptr + state_off, acc_A, mask=mask2)
    if not VAR_B:
        tl.store(dB_part_ptr + state_off, acc_B, mask=mask2)
    if not VAR_C:
        tl.store(dC_part_ptr + state_off, acc_C, mask=mask2)
    if HAS_D:
        tl.store(dD_part_ptr + b * dim + d, acc_D, mask=dmask)
    if HAS_BIAS:
        tl.store(dbias_part_ptr + b * dim + d, acc_bias, mask=dmask)


# ---------------------------------------------------------------------------------------------
# Python wrappers (the CUDA implementations of the torch.library ops)
# ---------------------------------------------------------------------------------------------

_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def default_block_d(dim_per_group: int, block_n: int) -> int:
    """Channels per program: about 256 state elements per program, at most the group's width.

    Small blocks give many programs (the time loop is latency bound); a power of two.
    """
    return max(1, min(triton.next_power_of_2(max(dim_per_group, 1)), max(1, 256 // block_n)))


def _num_warps(block_d: int, block_n: int) -> int:
    return max(1, min(4, block_d * block_n // 64))


def _prepare(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, block_d):
    """Contiguous inputs (B/C input-dependent as (batch, G, N, L)), sizes and kernel flags."""
    batch, dim, length = u.shape
    dstate = A.shape[1]
    var_B, var_C = B.dim() >= 3, C.dim() >= 3

    def grouped(M):
        return M.unsqueeze(1) if M.dim() == 3 else M

    Bg, Cg = grouped(B), grouped(C)
    groups = Bg.shape[1] if var_B else (Cg.shape[1] if var_C else 1)
    dim_per_group = dim // groups
    compute = compute_dtype(u, delta, A, B, C)
    block_n = triton.next_power_of_2(dstate)
    block_d = block_d or default_block_d(dim_per_group, block_n)
    if block_d & (block_d - 1):
        raise ValueError(f"block_d must be a power of two; got {block_d}")

    def opt(t):
        return None if t is None else t.contiguous()

    args = SimpleNamespace(
        u=u.contiguous(), delta=delta.contiguous(), A=A.contiguous(), B=Bg.contiguous(), C=Cg.contiguous(),
        D=opt(D), z=opt(z), delta_bias=opt(delta_bias), initial_state=opt(initial_state), seq_idx=opt(seq_idx),
    )
    sizes = SimpleNamespace(
        batch=batch, dim=dim, length=length, dstate=dstate, groups=groups, dim_per_group=dim_per_group,
        n_chunks=triton.cdiv(length, CHECKPOINT_CHUNK), block_d=block_d, block_n=block_n,
        n_blocks=triton.cdiv(dim_per_group, block_d), compute=compute,
    )
    flags = dict(
        VAR_B=var_B, VAR_C=var_C, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_SEQ=seq_idx is not None, COMPUTE=_TL_DTYPES[compute],
        CHUNK=CHECKPOINT_CHUNK, BLOCK_D=block_d, BLOCK_N=block_n,
    )
    return args, sizes, flags


def _or(t, placeholder):
    """Absent optional tensors are passed as a placeholder pointer the kernel never reads."""
    return placeholder if t is None else t


def selective_scan_fwd_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx,
                              reverse, save_checkpoints=True, *, block_d=None):
    """Forward scan. Returns (out (batch, dim, L) in u's dtype, last_state (batch, dim, N),
    checkpoints (batch, dim, ceil(L / CHECKPOINT_CHUNK), N)), states in fp32 (fp64 for fp64 inputs).

    Shapes as in `selective_scan_fn`; block_d (a power of two) overrides the channels per program.
    """
    a, s, flags = _prepare(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, block_d)
    out = torch.empty((s.batch, s.dim, s.length), dtype=u.dtype, device=u.device)
    last = torch.empty((s.batch, s.dim, s.dstate), dtype=s.compute, device=u.device)
    ckpt = torch.empty((s.batch, s.dim, s.n_chunks if save_checkpoints else 0, s.dstate), dtype=s.compute,
                       device=u.device)
    if s.batch * s.dim == 0:
        return out, last, ckpt
    grid = (s.batch * s.groups, s.n_blocks)
    _selective_scan_fwd_kernel[grid](
        a.u, a.delta, a.A, a.B, a.C, _or(a.D, a.u), _or(a.z, a.u), _or(a.delta_bias, a.u),
        _or(a.initial_state, a.u), _or(a.seq_idx, a.u),
        out, last, ckpt,
        s.dim, s.length, s.dstate, s.groups, s.dim_per_group, s.n_chunks,
        HAS_INIT=initial_state is not None, DELTA_SOFTPLUS=bool(delta_softplus), REVERSE=bool(reverse),
        SAVE_CKPT=bool(save_checkpoints), num_warps=_num_warps(s.block_d, s.block_n), **flags,
    )
    return out, last, ckpt


def selective_scan_bwd_triton(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                              initial_state, seq_idx, reverse, checkpoints, *, block_d=None):
    """Backward scan from the forward's checkpoints.

    dout: (batch, dim, L); dlast_state: (batch, dim, N) or None (zero); checkpoints as returned by
    `selective_scan_fwd_triton`. Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias,
    dinitial_state), each shaped and typed like its input; an empty (0,) tensor for absent inputs.
    """
    a, s, flags = _prepare(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, block_d)
    dev, cdt = u.device, s.compute
    du = torch.empty_like(a.u)
    ddelta = torch.empty_like(a.delta)
    dz = None if z is None else torch.empty_like(a.z)
    dinit = None if initial_state is None else torch.empty_like(a.initial_state)
    dA_part = torch.zeros((s.batch, s.dim, s.dstate), dtype=cdt, device=dev)

    def bc_partial(variable):
        # Input-dependent: one (N, L) row per channel block; steps never written stay 0.
        if variable:
            return torch.zeros((s.batch, s.groups, s.n_blocks, s.dstate, s.length), dtype=cdt, device=dev)
        return torch.zeros((s.batch, s.dim, s.dstate), dtype=cdt, device=dev)

    dB_part, dC_part = bc_partial(flags["VAR_B"]), bc_partial(flags["VAR_C"])
    dD_part = None if D is None else torch.zeros((s.batch, s.dim), dtype=cdt, device=dev)
    dbias_part = None if delta_bias is None else torch.zeros((s.batch, s.dim), dtype=cdt, device=dev)

    if s.batch * s.dim > 0:
        programs = s.batch * s.groups * s.n_blocks
        scratch_steps = CHECKPOINT_CHUNK + 1 if s.length > 0 else 1
        scratch = torch.empty((programs, scratch_steps, s.block_d, s.block_n), dtype=cdt, device=dev)
        dlast = None if dlast_state is None else dlast_state.to(cdt).contiguous()
        ckpt = checkpoints.to(cdt).contiguous()
        grid = (s.batch * s.groups, s.n_blocks)
        _selective_scan_bwd_kernel[grid](
            dout.contiguous(), _or(dlast, a.u), a.u, a.delta, a.A, a.B, a.C, _or(a.D, a.u), _or(a.z, a.u),
            _or(a.delta_bias, a.u), _or(a.seq_idx, a.u), ckpt, scratch,
            du, ddelta, _or(dz, du), _or(dinit, du), dA_part, dB_part, dC_part, _or(dD_part, dA_part),
            _or(dbias_part, dA_part),
            s.dim, s.length, s.dstate, s.groups, s.dim_per_group, s.n_chunks, s.n_blocks,
            HAS_INIT=initial_state is not None, HAS_DLAST=dlast is not None,
            DELTA_SOFTPLUS=bool(delta_softplus), REVERSE=bool(reverse),
            num_warps=_num_warps(s.block_d, s.block_n), **flags,
        )

    def bc_grad(partial, M, variable):
        total = partial.sum(2) if variable else partial.sum(0)  # (batch, G, N, L) or (dim, N)
        return total.reshape(M.shape).to(M.dtype)

    def empty():
        return u.new_empty((0,))

    return (
        du,
        ddelta,
        dA_part.sum(0).to(A.dtype),
        bc_grad(dB_part, B, flags["VAR_B"]),
        bc_grad(dC_part, C, flags["VAR_C"]),
        empty() if D is None else dD_part.sum(0).to(D.dtype),
        empty() if z is None else dz,
        empty() if delta_bias is None else dbias_part.sum(0).to(delta_bias.dtype),
        empty() if initial_state is None else dinit,
    )
