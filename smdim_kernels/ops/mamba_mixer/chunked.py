"""mamba_mixer's chunked forward and backward (the algorithm interface.py declares).

Each branch walks the sequence in chunks, running the shared chain (mamba_inner/chain.py) on each
with the conv's d_conv - 1 steps of input history and the scan state carried in; see
interface.py for what is kept and why.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._gemm import batched_mm, batched_weight_grad
from ..mamba_inner.chain import Chain, ChainWeights, backward, empty, prepare, scan
from ..selective_scan.reference import compute_dtype
from .layer import project as _project


def _chunks(length, chunk_size):
    """[(index, lo, hi)] in scan order."""
    return [(index, lo, min(lo + chunk_size, length)) for index, lo in enumerate(range(0, length, chunk_size))]


def _span(lo, hi, length, reverse):
    """The original-order slice [start, end) holding scan positions [lo, hi)."""
    return (length - hi, length - lo) if reverse else (lo, hi)


def _read(t, lo, hi, reverse):
    """t[..., scan positions lo..hi-1] (flipped if reverse), positions < 0 read as zeros."""
    start, end = _span(max(lo, 0), hi, t.shape[-1], reverse)
    window = t[..., start:end]
    window = window.flip(-1) if reverse else window.contiguous()
    return F.pad(window, (-lo, 0)) if lo < 0 else window


def _accumulate(dst, src, lo, hi, reverse):
    """dst[..., scan positions lo..hi-1] += src, dropping positions < 0."""
    if lo < 0:
        src, lo = src[..., -lo:], 0
    start, end = _span(lo, hi, dst.shape[-1], reverse)
    dst[..., start:end] += src.flip(-1) if reverse else src


def _prepare_chunk(x, branch, lo, hi, reverse, x_dbl=None) -> Chain:
    """The chain's activations of scan positions [lo, hi): the conv reads d_conv - 1 steps of
    history before lo (zeros before the start); x_proj is skipped when x_dbl is given."""
    history = branch.conv_weight.shape[1] - 1
    return prepare(_read(x, lo - history, hi, reverse), branch, history, x_dbl=x_dbl)


def saved_shapes(hidden_states, x_proj_weight, A, chunk_size):
    """Shapes of one branch's saved x_dbl (batch, dt_rank + 2N, L) and chunk_states (batch, d_inner,
    n_chunks, N)."""
    batch, length, _ = hidden_states.shape
    d_inner, d_state = A.shape
    return (batch, x_proj_weight.shape[0], length), (batch, d_inner, -(-length // chunk_size), d_state)


def _entry_state(chunk_states, index, lo):
    return None if lo == 0 else chunk_states[:, :, index].contiguous()


class _Walk(NamedTuple):
    """One branch's direction and what it saves or saved: x_dbl in scan order, the entry states."""
    branch: ChainWeights
    reverse: bool
    x_dbl: torch.Tensor
    chunk_states: torch.Tensor


def _scan_outputs(x, walk, chunk_size, delta_softplus, save, sink):
    """Run the branch over all chunks from zero state; sink(start, end, s) receives each chunk's
    ungated scan output s (batch, d_inner, n) in original order. With save, fill walk.x_dbl and
    walk.chunk_states; with saved ones (backward), every chunk starts from its saved entry state."""
    state = None
    recompute = walk.chunk_states.numel() > 0 and not save
    for index, lo, hi in _chunks(x.shape[-1], chunk_size):
        chunk = _prepare_chunk(x, walk.branch, lo, hi, walk.reverse, walk.x_dbl[..., lo:hi] if recompute else None)
        if recompute:
            state = _entry_state(walk.chunk_states, index, lo)
        elif save:
            walk.x_dbl[..., lo:hi] = chunk.x_dbl
            walk.chunk_states[:, :, index] = 0 if state is None else state
        s, state, _ = scan(chunk, walk.branch, delta_softplus, initial_state=state)
        del chunk  # free the chunk's conv input, u and delta before the sink allocates its own
        start, end = _span(lo, hi, x.shape[-1], walk.reverse)
        sink(start, end, s.flip(-1) if walk.reverse else s)


def forward(hidden_states, in_proj, forward_branch, reverse_branch, out_proj_weight, out_proj_bias, delta_softplus,
            chunk_size, save_for_backward):
    """-> (out (batch, L, d_model), saved: [x_dbl, chunk_states] per branch, or [] without save)."""
    batch, length, d_model = hidden_states.shape
    x = _project(in_proj.x_weight, in_proj.x_bias, hidden_states)  # (batch, d_inner, L); z is made per chunk
    out = x.new_empty((batch, length, d_model))
    walks = []
    for branch, reverse in ((forward_branch, False), (reverse_branch, True)):
        if branch is None:
            walks.append(_Walk(None, reverse, empty(x), empty(x)))
            continue
        x_dbl_shape, states_shape = saved_shapes(hidden_states, branch.x_proj_weight, branch.A, chunk_size) \
            if save_for_backward else ((0,), (0,))
        walks.append(_Walk(branch, reverse, x.new_empty(x_dbl_shape),
                           x.new_empty(states_shape, dtype=compute_dtype(x, branch.A, branch.x_proj_weight))))
    partner = None
    if reverse_branch is not None:  # the reverse branch first, into a buffer: the forward branch adds it
        partner = torch.empty_like(x)

        def keep(start, end, s):
            partner[..., start:end] = s
        _scan_outputs(x, walks[1], chunk_size, delta_softplus, save_for_backward, keep)

    def gate_and_project(start, end, s):
        # Both branches share the gate: out = out_proj(mean(s_fwd, s_rev) * silu(z)), one GEMM per chunk.
        if partner is not None:
            s = s.add_(partner[..., start:end]).mul_(0.5)
        y = s.mul_(F.silu(_project(in_proj.z_weight, in_proj.z_bias, hidden_states[:, start:end]), inplace=True))
        out[:, start:end] = batched_mm(y.transpose(1, 2), out_proj_weight.t())
    _scan_outputs(x, walks[0], chunk_size, delta_softplus, save_for_backward, gate_and_project)
    if out_proj_bias is not None:
        out += out_proj_bias.to(out.dtype)
    if not save_for_backward:
        return out, []
    return out, [t for walk in walks if walk.branch is not None for t in (walk.x_dbl, walk.chunk_states)]


class _BranchGrads:
    """Accumulators of one branch's parameter gradients."""

    def __init__(self, branch):
        self.conv_weight = torch.zeros_like(branch.conv_weight)
        self.conv_bias = None if branch.conv_bias is None else torch.zeros_like(branch.conv_bias)
        self.x_proj_weight = torch.zeros_like(branch.x_proj_weight)
        self.dt_proj_weight = torch.zeros_like(branch.dt_proj_weight)
        self.dt_proj_bias = None if branch.dt_proj_bias is None else torch.zeros_like(branch.dt_proj_bias)
        self.A = torch.zeros_like(branch.A)
        self.D = None if branch.D is None else torch.zeros_like(branch.D)

    def add(self, g):
        """Add one chunk's ChainGrads."""
        for name in ("conv_weight", "conv_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A", "D"):
            total = getattr(self, name)
            if total is not None:
                total += getattr(g, name)


def _chunk_backward(chunk, walk, lo, hi, ds, dstate, initial_state, checkpoints, grads, dx, delta_softplus):
    """Back through one chunk's chain, given the gradient ds of its ungated output (scan order)
    and dstate of the state leaving it; adds into grads and dx (batch, d_inner, L). Returns the
    gradient of the state entering the chunk (None for the first chunk)."""
    history = walk.branch.conv_weight.shape[1] - 1
    g = backward(chunk, walk.branch, ds, dstate, delta_softplus, checkpoints, initial_state=initial_state,
                 history=history)
    grads.add(g)
    _accumulate(dx, g.x_in, lo - history, hi, walk.reverse)
    return g.initial_state


def _branch_backward(x, walk, grads, dx, chunk_size, delta_softplus, chunk_ds):
    """Walk the branch's chunks backwards; chunk_ds(start, end, s) gets the chunk's re-computed
    ungated output s (original order) and returns the gradient ds of it (original order)."""
    length = x.shape[-1]
    dstate = None  # gradient of the state leaving the chunk (None after the last chunk)
    for index, lo, hi in reversed(_chunks(length, chunk_size)):
        chunk = _prepare_chunk(x, walk.branch, lo, hi, walk.reverse, walk.x_dbl[..., lo:hi])
        initial_state = _entry_state(walk.chunk_states, index, lo)
        # Re-run the chunk's scan from its entry state: s, and the 64-step checkpoints of its backward.
        s, _, checkpoints = scan(chunk, walk.branch, delta_softplus, initial_state=initial_state, save=True)
        start, end = _span(lo, hi, length, walk.reverse)
        ds = chunk_ds(start, end, s.flip(-1) if walk.reverse else s)
        del s
        dstate = _chunk_backward(chunk, walk, lo, hi, ds.flip(-1) if walk.reverse else ds, dstate, initial_state,
                                 checkpoints, grads, dx, delta_softplus)


def backward_of(dout, hidden_states, in_proj, forward_branch, reverse_branch, out_proj_weight, out_proj_bias,
                delta_softplus, chunk_size, saved):
    """Gradients (dhidden, din_proj_weight, din_proj_bias or None, forward branch's _BranchGrads,
    dout_proj_weight, dout_proj_bias or None, reverse branch's _BranchGrads or None); dout contiguous
    (the op's backward makes it so for both modes)."""
    forward_walk = _Walk(forward_branch, False, saved[0], saved[1])
    reverse_walk = None if reverse_branch is None else _Walk(reverse_branch, True, saved[2], saved[3])
    scale = 1.0 if reverse_walk is None else 0.5
    x = _project(in_proj.x_weight, in_proj.x_bias, hidden_states)
    dx = torch.zeros_like(x)
    dhidden = torch.zeros_like(hidden_states, memory_format=torch.contiguous_format)
    dz_weight = torch.zeros_like(in_proj.z_weight)
    dz_bias = None if in_proj.z_bias is None else torch.zeros_like(in_proj.z_bias)
    dout_proj_weight = torch.zeros_like(out_proj_weight)
    # partner: the forward branch's scaled output, then (after the gate) the gradient ds both branches share.
    partner = None
    if reverse_walk is not None:
        partner = torch.empty_like(x)

        def keep(start, end, s):
            partner[..., start:end] = s.mul_(scale)
        _scan_outputs(x, forward_walk, chunk_size, delta_softplus, False, keep)

    def through_gate(start, end, s):
        """The gate and out_proj of chunk [start, end); s = this branch's output. Returns ds."""
        nonlocal dz_bias
        s = s.mul_(scale) if partner is None else s.mul_(scale).add_(partner[..., start:end])
        h_chunk = hidden_states[:, start:end]
        z = _project(in_proj.z_weight, in_proj.z_bias, h_chunk)
        gate = F.silu(z)
        dout_chunk = dout[:, start:end].transpose(1, 2)  # (batch, d_model, n)
        dout_proj_weight.add_(batched_weight_grad(dout_chunk, (s * gate).transpose(1, 2)))
        dy = batched_mm(out_proj_weight.t(), dout_chunk)  # (batch, d_inner, n)
        dz = torch.ops.aten.silu_backward(dy * s, z)
        dhidden[:, start:end] += batched_mm(dz.transpose(1, 2), in_proj.z_weight)
        dz_weight.add_(batched_weight_grad(dz, h_chunk))
        if dz_bias is not None:
            dz_bias += dz.sum((0, 2))
        ds = dy.mul_(gate).mul_(scale)
        if partner is not None:
            partner[..., start:end] = ds  # the forward branch's ds, read by its own backward below
        return ds

    def branch_grads(walk, chunk_ds):
        grads = _BranchGrads(walk.branch)
        _branch_backward(x, walk, grads, dx, chunk_size, delta_softplus, chunk_ds)
        return grads

    if reverse_walk is None:
        forward_grads = branch_grads(forward_walk, through_gate)
        reverse_grads = None
    else:  # the reverse branch meets the gate (its chunks see partner = the forward branch's s), then
        # the forward branch runs its own backward on the ds that through_gate left in partner
        reverse_grads = branch_grads(reverse_walk, through_gate)
        forward_grads = branch_grads(forward_walk, lambda start, end, s: partner[..., start:end])
    x = partner = None  # free them before the in_proj gradient GEMMs
    dhidden += batched_mm(dx.transpose(1, 2), in_proj.x_weight)
    din_proj_weight = torch.cat([batched_weight_grad(dx, hidden_states), dz_weight])
    din_proj_bias = None if in_proj.x_bias is None else torch.cat([dx.sum((0, 2)), dz_bias])
    dout_proj_bias = None if out_proj_bias is None else dout.sum((0, 1))
    return dhidden, din_proj_weight, din_proj_bias, forward_grads, dout_proj_weight, dout_proj_bias, reverse_grads
