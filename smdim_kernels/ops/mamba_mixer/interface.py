"""The whole Mamba layer (in_proj -> one or two scan branches -> out_proj) as one op, run over the
sequence in chunks so that no (batch, d_inner, L) intermediate is kept or materialised per step.

    smdim::mamba_mixer_fwd -> (out, x_dbl, x_dbl_b, chunk_states, chunk_states_b)
    smdim::mamba_mixer_bwd -> gradients of every tensor input (empty (0,) tensors for absent ones)

Why: `mamba_inner_fn` (mamba_ssm's form) keeps xz (batch, 2*d_inner, L) for its backward and builds
its gradients at full length; a bidirectional layer built from two of them also keeps a flipped
copy of xz and the averaged scan output. This op keeps only x_dbl (batch, L, dt_rank + 2N) and
the scan state entering each chunk of each branch, plus hidden_states, which the caller holds
anyway. Its backward recomputes xz with one in_proj GEMM.

Chunking: each branch walks the sequence in its scan order in chunks of `chunk_size` steps,
carrying the scan state (initial_state / last_state) and the conv's d_conv - 1 input history from
chunk to chunk; the backward walks the chunks the other way carrying the state gradient,
re-running each chunk's scan forward from its entry state (that run gives the chunk's y, for
out_proj's weight gradient, and the scan's 64-step checkpoints, for its backward). The reverse
branch reads each chunk flipped, so both branches run the same causal kernels. Per-chunk
intermediates are (batch, d_inner, chunk). With two branches the reverse one runs first into a
(batch, d_inner, L) buffer; each forward chunk averages it in, applies the shared gate silu(z) (z
made per chunk) and runs out_proj once for both branches.
Results equal the unchunked computation up to float rounding (the chunks chain exactly).

One implementation for all devices: it composes the fused ops (causal_conv1d, selective_scan) and
GEMMs, so CPU runs the C++ kernels and CUDA the Triton ones.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .._gemm import batched_mm
from ...validation import check_float, check_same_device, check_shape, check_tensor
from ..selective_scan.interface import MAX_DSTATE

DEFAULT_CHUNK_SIZE = 512

_BRANCH = "Tensor{o} conv1d_weight{s}, Tensor? conv1d_bias{s}, Tensor{o} x_proj_weight{s}, " \
          "Tensor{o} dt_proj_weight{s}, Tensor? dt_proj_bias{s}, Tensor{o} A{s}, Tensor? D{s}"
_TENSORS = ("Tensor hidden_states, Tensor in_proj_weight, Tensor? in_proj_bias, " + _BRANCH.format(o="", s="")
            + ", Tensor out_proj_weight, Tensor? out_proj_bias, " + _BRANCH.format(o="?", s="_b"))
torch.library.define("smdim::mamba_mixer_fwd",
                     f"({_TENSORS}, bool delta_softplus, int chunk_size, bool save_for_backward) "
                     "-> (Tensor, Tensor, Tensor, Tensor, Tensor)")
torch.library.define("smdim::mamba_mixer_bwd",
                     f"(Tensor dout, {_TENSORS}, bool delta_softplus, int chunk_size, Tensor x_dbl, "
                     "Tensor x_dbl_b, Tensor chunk_states, Tensor chunk_states_b) -> (" + ", ".join(["Tensor"] * 19)
                     + ")")

_N_TENSOR_INPUTS = 19
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_BRANCH_NAMES = ("conv1d_weight", "conv1d_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A", "D")


class _Branch(NamedTuple):
    """One scan direction's parameters; conv_weight is (d_inner, d_conv)."""
    conv_weight: torch.Tensor
    conv_bias: Optional[torch.Tensor]
    x_proj_weight: torch.Tensor
    dt_proj_weight: torch.Tensor
    dt_proj_bias: Optional[torch.Tensor]
    A: torch.Tensor
    D: Optional[torch.Tensor]


def _check_branch(suffix, tensors, d_inner, d_state, dt_rank, named):
    conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A, D = tensors
    for name, t in zip(_BRANCH_NAMES, tensors):
        if t is not None:
            check_tensor(name + suffix, t)
            named[name + suffix] = t
    for name, t in (("conv1d_weight", conv_w), ("x_proj_weight", x_proj_w), ("dt_proj_weight", dt_proj_w),
                    ("A", A)):
        if t is None:
            raise ValueError(f"{name}{suffix} is required")
    check_shape("A" + suffix, A, (d_inner, d_state), "(d_inner, N)")
    check_shape("dt_proj_weight" + suffix, dt_proj_w, (d_inner, dt_rank), "(d_inner, dt_rank)")
    check_shape("x_proj_weight" + suffix, x_proj_w, (dt_rank + 2 * d_state, d_inner), "(dt_rank + 2*N, d_inner)")
    if conv_w.dim() not in (2, 3) or conv_w.shape[0] != d_inner or conv_w.shape[-1] < 1 \
            or (conv_w.dim() == 3 and conv_w.shape[1] != 1):
        raise ValueError(f"conv1d_weight{suffix} must be (d_inner, d_conv) or (d_inner, 1, d_conv) with "
                         f"d_inner={d_inner}; got shape {tuple(conv_w.shape)}")
    for name, t in (("conv1d_bias", conv_b), ("dt_proj_bias", dt_proj_b), ("D", D)):
        if t is not None:
            check_shape(name + suffix, t, (d_inner,), "(d_inner,)")


def _check_inputs(hidden_states, in_proj_weight, in_proj_bias, forward_branch, out_proj_weight, out_proj_bias,
                  reverse_branch, chunk_size):
    for name, t in (("hidden_states", hidden_states), ("in_proj_weight", in_proj_weight),
                    ("out_proj_weight", out_proj_weight)):
        check_tensor(name, t)
    if hidden_states.dim() != 3:
        raise ValueError(f"hidden_states must be (batch, L, d_model); got shape {tuple(hidden_states.shape)}")
    d_model = hidden_states.shape[-1]
    if in_proj_weight.dim() != 2 or in_proj_weight.shape[1] != d_model or in_proj_weight.shape[0] % 2:
        raise ValueError(f"in_proj_weight must be (2*d_inner, d_model={d_model}); got shape "
                         f"{tuple(in_proj_weight.shape)}")
    d_inner = in_proj_weight.shape[0] // 2
    for name, t in (("dt_proj_weight", forward_branch[3]), ("A", forward_branch[5])):
        if t is None:
            raise ValueError(f"{name} is required")
        check_tensor(name, t)
    A = forward_branch[5]
    if A.dim() != 2 or not 1 <= A.shape[-1] <= MAX_DSTATE:
        raise ValueError(f"A must be (d_inner, N <= {MAX_DSTATE}); got shape {tuple(A.shape)}")
    dt_w = forward_branch[3]
    if dt_w.dim() != 2:
        raise ValueError(f"dt_proj_weight must be (d_inner, dt_rank); got shape {tuple(dt_w.shape)}")
    d_state, dt_rank = A.shape[1], dt_w.shape[1]
    named = {"hidden_states": hidden_states, "in_proj_weight": in_proj_weight, "out_proj_weight": out_proj_weight}
    _check_branch("", forward_branch, d_inner, d_state, dt_rank, named)
    if any(t is not None for t in reverse_branch):
        _check_branch("_b", reverse_branch, d_inner, d_state, dt_rank, named)
    check_shape("out_proj_weight", out_proj_weight, (d_model, d_inner), "(d_model, d_inner)")
    for name, t, shape, text in (("in_proj_bias", in_proj_bias, (2 * d_inner,), "(2*d_inner,)"),
                                 ("out_proj_bias", out_proj_bias, (d_model,), "(d_model,)")):
        if t is not None:
            check_tensor(name, t)
            check_shape(name, t, shape, text)
            named[name] = t
    for name, t in named.items():
        check_float(name, t, _FLOAT_DTYPES)
    check_same_device(named)
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer (steps per chunk); got {chunk_size!r}")


def mamba_mixer_fn(hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
                   dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b=None,
                   conv1d_bias_b=None, x_proj_weight_b=None, dt_proj_weight_b=None, dt_proj_bias_b=None,
                   A_b=None, D_b=None, delta_softplus=True, chunk_size=DEFAULT_CHUNK_SIZE):
    """The Mamba layer from hidden_states to its output, optionally bidirectional, as one op.

        xz        = in_proj(hidden_states)                      -> x, z (batch, d_inner, L) each
        y         = mamba_inner(xz; conv1d, x_proj, dt_proj, A, D)  (gated scan output)
        y_b       = flip(mamba_inner(flip(xz); conv1d_b, ..., D_b))   if the *_b tensors are given
        out       = out_proj(y)  or  out_proj((y + y_b) / 2)

    Args:
        hidden_states: (batch, L, d_model). in_proj_weight: (2*d_inner, d_model); in_proj_bias:
        (2*d_inner,). conv1d_weight: (d_inner, d_conv) or (d_inner, 1, d_conv); conv1d_bias, D,
        dt_proj_bias: (d_inner,). x_proj_weight: (dt_rank + 2*N, d_inner). dt_proj_weight:
        (d_inner, dt_rank). A: (d_inner, N) (= -exp(A_log)). out_proj_weight: (d_model, d_inner);
        out_proj_bias: (d_model,). The *_b tensors: the reverse branch, same shapes (all of
        conv1d_weight_b, x_proj_weight_b, dt_proj_weight_b, A_b, or none).
        chunk_size: steps per chunk (temporaries grow with chunk_size, not L; small chunks run
        more, smaller kernels).
    Returns:
        (batch, L, d_model) in hidden_states' dtype.
    """
    forward_branch = (conv1d_weight, conv1d_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D)
    reverse_branch = (conv1d_weight_b, conv1d_bias_b, x_proj_weight_b, dt_proj_weight_b, dt_proj_bias_b, A_b, D_b)
    _check_inputs(hidden_states, in_proj_weight, in_proj_bias, forward_branch, out_proj_weight, out_proj_bias,
                  reverse_branch, chunk_size)
    tensors = (hidden_states, in_proj_weight, in_proj_bias) + forward_branch + (out_proj_weight, out_proj_bias) \
        + reverse_branch
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return torch.ops.smdim.mamba_mixer_fwd(*tensors, bool(delta_softplus), int(chunk_size), save)[0]


# --- the chunk walk shared by the forward and backward -------------------------------------

def _branches(tensors):
    """(forward _Branch, reverse _Branch or None) from the op's 19 tensor inputs."""
    def branch(values):
        values = list(values)
        values[0] = values[0].reshape(values[0].shape[0], values[0].shape[-1])
        return _Branch(*values)

    forward_branch = branch(tensors[3:10])
    reverse_values = tensors[12:19]
    return forward_branch, (branch(reverse_values) if reverse_values[0] is not None else None)


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


def _project(weight, bias, hidden_states):
    """weight @ hidden_states^T (+ bias): (batch, rows, n), channel-major as the kernels want it."""
    out = batched_mm(weight, hidden_states.transpose(1, 2))
    return out if bias is None else out + bias.to(out.dtype)[:, None]


class _InProj(NamedTuple):
    """in_proj split into its x rows and z rows (each (d_inner, d_model)) and their biases."""
    x_weight: torch.Tensor
    x_bias: Optional[torch.Tensor]
    z_weight: torch.Tensor
    z_bias: Optional[torch.Tensor]

    @staticmethod
    def of(weight, bias):
        d_inner = weight.shape[0] // 2
        return _InProj(weight[:d_inner], None if bias is None else bias[:d_inner], weight[d_inner:],
                       None if bias is None else bias[d_inner:])


class _Chunk(NamedTuple):
    """What a chunk's scan needs: u = silu(conv(x)) and delta (batch, d_inner, n), B/C (batch, N, n),
    the conv input with its history (batch, d_inner, n + d_conv - 1), x_dbl (batch, n, dt_rank + 2N)."""
    u: torch.Tensor
    delta: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    x_ext: torch.Tensor
    x_dbl: torch.Tensor


def _prepare_chunk(x, branch, lo, hi, reverse, x_dbl=None):
    """Conv (with the d_conv - 1 steps of history), x_proj (unless x_dbl is given), dt_proj."""
    width = branch.conv_weight.shape[1]
    dt_rank, d_state = branch.dt_proj_weight.shape[1], branch.A.shape[1]
    x_ext = _read(x, lo - (width - 1), hi, reverse)
    u = torch.ops.smdim.causal_conv1d_fwd(x_ext, branch.conv_weight, branch.conv_bias, True)
    u = u[..., width - 1:].contiguous()
    if x_dbl is None:
        x_dbl = batched_mm(u.transpose(1, 2), branch.x_proj_weight.t())  # (batch, n, dt_rank + 2N)
    delta = batched_mm(branch.dt_proj_weight, x_dbl[..., :dt_rank].transpose(1, 2))
    B = x_dbl[..., dt_rank:dt_rank + d_state].transpose(1, 2).contiguous()
    C = x_dbl[..., dt_rank + d_state:].transpose(1, 2).contiguous()
    return _Chunk(u, delta, B, C, x_ext, x_dbl)


def _scan_chunk(chunk, branch, delta_softplus, initial_state, save):
    """The ungated scan output (C h + D u) of the chunk, its last state and (save) its checkpoints."""
    return torch.ops.smdim.selective_scan_fwd(chunk.u, chunk.delta, branch.A, chunk.B, chunk.C, branch.D, None,
                                              branch.dt_proj_bias, delta_softplus, initial_state, None, False, save)


def _empty(like):
    return like.new_empty((0,))


def _state_dtype(*tensors):
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _saved_shapes(hidden_states, branch, chunk_size, save):
    """Shapes of x_dbl (batch, L, dt_rank + 2N) and chunk_states (batch, d_inner, n_chunks, N)."""
    batch, length, _ = hidden_states.shape
    d_inner, d_state = branch.A.shape
    if not save:
        return (0,), (0,)
    return (batch, length, branch.x_proj_weight.shape[0]), (batch, d_inner, -(-length // chunk_size), d_state)


def _entry_state(chunk_states, index, lo):
    return None if lo == 0 else chunk_states[:, :, index].contiguous()


class _Walk(NamedTuple):
    """One branch's direction and what it saves or saved: x_dbl in scan order, the entry states."""
    branch: _Branch
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
        chunk = _prepare_chunk(x, walk.branch, lo, hi, walk.reverse, walk.x_dbl[:, lo:hi] if recompute else None)
        if recompute:
            state = _entry_state(walk.chunk_states, index, lo)
        elif save:
            walk.x_dbl[:, lo:hi] = chunk.x_dbl
            walk.chunk_states[:, :, index] = 0 if state is None else state
        s, state, _ = _scan_chunk(chunk, walk.branch, delta_softplus, state, False)
        del chunk  # free the chunk's conv input, u and delta before the sink allocates its own
        start, end = _span(lo, hi, x.shape[-1], walk.reverse)
        sink(start, end, s.flip(-1) if walk.reverse else s)


@torch.library.impl("smdim::mamba_mixer_fwd", "CompositeExplicitAutograd")
def _fwd(hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight, dt_proj_weight,
         dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b, conv1d_bias_b, x_proj_weight_b,
         dt_proj_weight_b, dt_proj_bias_b, A_b, D_b, delta_softplus, chunk_size, save_for_backward):
    tensors = (hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
               dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b, conv1d_bias_b,
               x_proj_weight_b, dt_proj_weight_b, dt_proj_bias_b, A_b, D_b)
    forward_branch, reverse_branch = _branches(tensors)
    in_proj = _InProj.of(in_proj_weight, in_proj_bias)
    batch, length, d_model = hidden_states.shape
    x = _project(in_proj.x_weight, in_proj.x_bias, hidden_states)  # (batch, d_inner, L); z is made per chunk
    out = x.new_empty((batch, length, d_model))
    walks = []
    for branch, reverse in ((forward_branch, False), (reverse_branch, True)):
        if branch is None:
            walks.append(_Walk(None, reverse, _empty(x), _empty(x)))
            continue
        x_dbl_shape, states_shape = _saved_shapes(hidden_states, branch, chunk_size, save_for_backward)
        walks.append(_Walk(branch, reverse, x.new_empty(x_dbl_shape),
                           x.new_empty(states_shape, dtype=_state_dtype(x, branch.A, branch.x_proj_weight))))
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
    return out, walks[0].x_dbl, walks[1].x_dbl, walks[0].chunk_states, walks[1].chunk_states


def _batched_weight_grad(a, b):
    """sum over batch of a[i] @ b[i]: a (batch, m, n), b (batch, n, k) -> (m, k)."""
    if a.shape[0] == 1:
        return torch.mm(a[0], b[0])
    return torch.bmm(a, b).sum(0)


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

    def as_tuple(self, like, conv_weight_shape):
        def grad_or_empty(g):
            return _empty(like) if g is None else g

        return (self.conv_weight.reshape(conv_weight_shape), grad_or_empty(self.conv_bias), self.x_proj_weight,
                self.dt_proj_weight, grad_or_empty(self.dt_proj_bias), self.A, grad_or_empty(self.D))


def _chunk_backward(chunk, walk, lo, hi, ds, dstate, initial_state, checkpoints, grads, dx, delta_softplus):
    """Back through one chunk's scan, dt_proj, x_proj and conv, given the gradient ds of its ungated
    output (scan order) and dstate of the state leaving it; adds into grads and dx (batch, d_inner,
    L). Returns the gradient of the state entering the chunk (None for the first chunk)."""
    branch = walk.branch
    width, dt_rank = branch.conv_weight.shape[1], branch.dt_proj_weight.shape[1]
    du, ddelta, dA, dB, dC, dD, _, ddt_bias, dinitial = torch.ops.smdim.selective_scan_bwd(
        ds, dstate, chunk.u, chunk.delta, branch.A, chunk.B, chunk.C, branch.D, None, branch.dt_proj_bias,
        delta_softplus, initial_state, None, False, checkpoints)
    grads.A += dA
    if grads.D is not None:
        grads.D += dD
    if grads.dt_proj_bias is not None:
        grads.dt_proj_bias += ddt_bias
    ddt = batched_mm(ddelta.transpose(1, 2), branch.dt_proj_weight)  # (batch, n, dt_rank)
    grads.dt_proj_weight += _batched_weight_grad(ddelta, chunk.x_dbl[..., :dt_rank])
    del ddelta
    dx_dbl = torch.cat([ddt, dB.transpose(1, 2), dC.transpose(1, 2)], dim=-1)  # (batch, n, dt_rank + 2N)
    du += batched_mm(branch.x_proj_weight.t(), dx_dbl.transpose(1, 2))
    grads.x_proj_weight += _batched_weight_grad(dx_dbl.transpose(1, 2), chunk.u.transpose(1, 2))
    # The conv ran over the chunk plus its history; the history outputs were discarded (zero gradient).
    dx_ext, dconv_weight, dconv_bias = torch.ops.smdim.causal_conv1d_bwd(
        F.pad(du, (width - 1, 0)), chunk.x_ext, branch.conv_weight, branch.conv_bias, True)
    grads.conv_weight += dconv_weight
    if grads.conv_bias is not None:
        grads.conv_bias += dconv_bias
    _accumulate(dx, dx_ext, lo - (width - 1), hi, walk.reverse)
    return None if initial_state is None else dinitial


def _branch_backward(x, walk, grads, dx, chunk_size, delta_softplus, chunk_ds):
    """Walk the branch's chunks backwards; chunk_ds(start, end, s) gets the chunk's re-computed
    ungated output s (original order) and returns the gradient ds of it (original order)."""
    length = x.shape[-1]
    dstate = None  # gradient of the state leaving the chunk (None after the last chunk)
    for index, lo, hi in reversed(_chunks(length, chunk_size)):
        chunk = _prepare_chunk(x, walk.branch, lo, hi, walk.reverse, walk.x_dbl[:, lo:hi])
        initial_state = _entry_state(walk.chunk_states, index, lo)
        # Re-run the chunk's scan from its entry state: s, and the 64-step checkpoints of its backward.
        s, _, checkpoints = _scan_chunk(chunk, walk.branch, delta_softplus, initial_state, True)
        start, end = _span(lo, hi, length, walk.reverse)
        ds = chunk_ds(start, end, s.flip(-1) if walk.reverse else s)
        del s
        dstate = _chunk_backward(chunk, walk, lo, hi, ds.flip(-1) if walk.reverse else ds, dstate, initial_state,
                                 checkpoints, grads, dx, delta_softplus)


@torch.library.impl("smdim::mamba_mixer_bwd", "CompositeExplicitAutograd")
def _bwd(dout, hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
         dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b, conv1d_bias_b,
         x_proj_weight_b, dt_proj_weight_b, dt_proj_bias_b, A_b, D_b, delta_softplus, chunk_size, x_dbl, x_dbl_b,
         chunk_states, chunk_states_b):
    tensors = (hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
               dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b, conv1d_bias_b,
               x_proj_weight_b, dt_proj_weight_b, dt_proj_bias_b, A_b, D_b)
    forward_branch, reverse_branch = _branches(tensors)
    in_proj = _InProj.of(in_proj_weight, in_proj_bias)
    forward_walk = _Walk(forward_branch, False, x_dbl, chunk_states)
    reverse_walk = None if reverse_branch is None else _Walk(reverse_branch, True, x_dbl_b, chunk_states_b)
    scale = 1.0 if reverse_walk is None else 0.5
    dout = dout.contiguous()
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
        dout_proj_weight.add_(_batched_weight_grad(dout_chunk, (s * gate).transpose(1, 2)))
        dy = batched_mm(out_proj_weight.t(), dout_chunk)  # (batch, d_inner, n)
        dz = torch.ops.aten.silu_backward(dy * s, z)
        dhidden[:, start:end] += batched_mm(dz.transpose(1, 2), in_proj.z_weight)
        dz_weight.add_(_batched_weight_grad(dz, h_chunk))
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
    din_proj_weight = torch.cat([_batched_weight_grad(dx, hidden_states), dz_weight])
    din_proj_bias = _empty(dx) if in_proj.x_bias is None else torch.cat([dx.sum((0, 2)), dz_bias])
    dout_proj_bias = _empty(dout) if out_proj_bias is None else dout.sum((0, 1))
    reverse_tuple = (_empty(dx),) * 7 if reverse_grads is None else reverse_grads.as_tuple(dx, conv1d_weight_b.shape)
    return (dhidden, din_proj_weight, din_proj_bias, *forward_grads.as_tuple(dx, conv1d_weight.shape),
            dout_proj_weight, dout_proj_bias, *reverse_tuple)


# --- fake (meta) kernels --------------------------------------------------------------------

@torch.library.register_fake("smdim::mamba_mixer_fwd")
def _fwd_fake(hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
              dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b, conv1d_bias_b,
              x_proj_weight_b, dt_proj_weight_b, dt_proj_bias_b, A_b, D_b, delta_softplus, chunk_size,
              save_for_backward):
    batch, length, d_model = hidden_states.shape
    out = hidden_states.new_empty((batch, length, d_model))
    saved = []
    for x_proj_w, A_, present in ((x_proj_weight, A, True), (x_proj_weight_b, A_b, A_b is not None)):
        if not present:
            saved += [hidden_states.new_empty((0,)), hidden_states.new_empty((0,))]
            continue
        branch = _Branch(conv1d_weight, None, x_proj_w, dt_proj_weight, None, A_, None)
        x_dbl_shape, states_shape = _saved_shapes(hidden_states, branch, chunk_size, save_for_backward)
        saved += [hidden_states.new_empty(x_dbl_shape),
                  hidden_states.new_empty(states_shape, dtype=_state_dtype(hidden_states, A_, x_proj_w))]
    return out, saved[0], saved[2], saved[1], saved[3]


@torch.library.register_fake("smdim::mamba_mixer_bwd")
def _bwd_fake(dout, *args):
    tensors = args[:_N_TENSOR_INPUTS]

    def grad_of(t):
        return dout.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)

    return tuple(grad_of(t) for t in tensors)


# --- autograd -------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    ctx.delta_softplus, ctx.chunk_size = inputs[_N_TENSOR_INPUTS], inputs[_N_TENSOR_INPUTS + 1]
    _, x_dbl, x_dbl_b, chunk_states, chunk_states_b = output
    ctx.save_for_backward(*inputs[:_N_TENSOR_INPUTS], x_dbl, x_dbl_b, chunk_states, chunk_states_b)
    ctx.mark_non_differentiable(x_dbl, x_dbl_b, chunk_states, chunk_states_b)


def _backward(ctx, dout, *_unused):
    saved = ctx.saved_tensors
    tensors, extra = saved[:_N_TENSOR_INPUTS], saved[_N_TENSOR_INPUTS:]
    grads = torch.ops.smdim.mamba_mixer_bwd(dout, *tensors, ctx.delta_softplus, ctx.chunk_size, *extra)
    return tuple(None if t is None else g for t, g in zip(tensors, grads)) + (None, None, None)


torch.library.register_autograd("smdim::mamba_mixer_fwd", _backward, setup_context=_setup_context)
