"""The whole Mamba layer (in_proj -> one or two scan branches -> out_proj) as one op.

    smdim::mamba_mixer_fwd -> (out, saved: Tensor[])   what the backward needs ([] without save)
    smdim::mamba_mixer_bwd -> gradients of every tensor input (empty (0,) tensors for absent ones)

Two implementations, one for every device, chosen by the sequence length (fits_one_chunk):

- L <= chunk_size (whole.py): the layer at once. The reverse branch runs the scan kernel right to
  left (its conv anti-causal); both scans apply the gate silu(z); out_proj reads their mean.
  It saves x, z, the gated mean y (batch, d_inner, L) and per branch x_dbl and the scan's
  checkpoints, so its backward runs each branch's scan backward once and nothing of the forward
  again: the regime of training on batches of crops, where re-running costs more than keeping.
- L > chunk_size (chunked.py): the sequence in chunks, so that no (batch, d_inner, L)
  intermediate is kept: `mamba_inner_fn` (mamba_ssm's form) keeps xz (batch, 2*d_inner, L) for
  its backward and builds its gradients at full length; a bidirectional layer built from two of
  them also keeps a flipped copy of xz and the averaged scan output. This keeps only x_dbl
  (batch, dt_rank + 2N, L) and the scan state entering each chunk of each branch, plus
  hidden_states, which the caller holds anyway; its backward recomputes x and z with in_proj GEMMs.
  Each branch walks the sequence in its scan order in chunks of `chunk_size` steps, carrying the
  scan state (initial_state / last_state) and the conv's d_conv - 1 input history from chunk to
  chunk; the backward walks the chunks the other way carrying the state gradient, re-running each
  chunk's scan forward from its entry state (that run gives the chunk's y, for out_proj's weight
  gradient, and the scan's 64-step checkpoints, for its backward). The reverse branch reads each
  chunk flipped, so both branches run the same causal kernels. Per-chunk intermediates are
  (batch, d_inner, chunk). With two branches the reverse one runs first into a (batch, d_inner, L)
  buffer; each forward chunk averages it in, applies the shared gate silu(z) (z made per chunk)
  and runs out_proj once for both branches.
Both equal the unchunked computation up to float rounding (the chunks chain exactly). Both compose
the fused ops (causal_conv1d, selective_scan) and GEMMs over the chain that mamba_inner shares
(mamba_inner/chain.py), so CPU runs the C++ kernels and CUDA the Triton ones.
"""
from __future__ import annotations

import torch

from ...validation import FLOAT_DTYPES, check_float, check_same_device, check_shape, check_tensor
from .._autograd import register_autograd
from ..mamba_inner.chain import empty
from ..selective_scan.constants import MAX_DSTATE
from ..selective_scan.reference import compute_dtype
from . import chunked, whole
from .layer import InProj, branches

# Up to 1024 steps (4096 tokens of SMDIM, batch 1) the layer runs at once and keeps its activations
# (faster training: measured 1.42x the transformer's step for SMDIM-tiny at 1 x 4096 tokens with 512,
# when that length still ran chunked); longer sequences run in chunks of this many steps, whose
# temporaries, (batch, d_inner, 1024), stay small next to the model's activations.
DEFAULT_CHUNK_SIZE = 1024

_BRANCH = "Tensor{o} conv1d_weight{s}, Tensor? conv1d_bias{s}, Tensor{o} x_proj_weight{s}, " \
          "Tensor{o} dt_proj_weight{s}, Tensor? dt_proj_bias{s}, Tensor{o} A{s}, Tensor? D{s}"
_TENSORS = ("Tensor hidden_states, Tensor in_proj_weight, Tensor? in_proj_bias, " + _BRANCH.format(o="", s="")
            + ", Tensor out_proj_weight, Tensor? out_proj_bias, " + _BRANCH.format(o="?", s="_b"))
torch.library.define("smdim::mamba_mixer_fwd",
                     f"({_TENSORS}, bool delta_softplus, int chunk_size, bool save_for_backward) "
                     "-> (Tensor, Tensor[])")
torch.library.define("smdim::mamba_mixer_bwd",
                     f"(Tensor dout, {_TENSORS}, bool delta_softplus, int chunk_size, Tensor[] saved) -> ("
                     + ", ".join(["Tensor"] * 19) + ")")

_N_TENSOR_INPUTS = 19
_BRANCH_NAMES = ("conv1d_weight", "conv1d_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A", "D")


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
        check_float(name, t, FLOAT_DTYPES)
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
        more, smaller kernels). L <= chunk_size runs the sequence at once and keeps its
        activations for the backward (see the module docstring).
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


# --- the implementation (whole.py or chunked.py), one for every device -----------------------

def fits_one_chunk(length, chunk_size):
    """Whether the op runs whole.py (the sequence fits one chunk) rather than chunked.py."""
    return length <= chunk_size


def _parts(tensors):
    forward_branch, reverse_branch = branches(tensors)
    return InProj.of(tensors[1], tensors[2]), forward_branch, reverse_branch, tensors[10], tensors[11]


def _forward(*args):
    tensors, (delta_softplus, chunk_size, save) = args[:_N_TENSOR_INPUTS], args[_N_TENSOR_INPUTS:]
    hidden_states = tensors[0]
    if fits_one_chunk(hidden_states.shape[1], chunk_size):
        return whole.forward(hidden_states, *_parts(tensors), delta_softplus, save)
    return chunked.forward(hidden_states, *_parts(tensors), delta_softplus, chunk_size, save)


def _branch_grads(grads, like, conv_weight, present):
    """One branch's 7 gradients (conv1d_weight in its given shape; (0,) for absent tensors)."""
    if not present:
        return tuple(empty(like) for _ in range(7))
    values = []
    for name in ("conv_weight", "conv_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A", "D"):
        g = getattr(grads, name)
        values.append(empty(like) if g is None else g)
    values[0] = values[0].reshape(conv_weight.shape)
    return tuple(values)


def _backward_impl(dout, *args):
    tensors = args[:_N_TENSOR_INPUTS]
    delta_softplus, chunk_size, saved = args[_N_TENSOR_INPUTS:]
    hidden_states = tensors[0]
    dout = dout.contiguous()
    if fits_one_chunk(hidden_states.shape[1], chunk_size):
        result = whole.backward_of(dout, hidden_states, *_parts(tensors), delta_softplus, saved)
    else:
        result = chunked.backward_of(dout, hidden_states, *_parts(tensors), delta_softplus, chunk_size, saved)
    dhidden, din_w, din_b, forward_grads, dout_w, dout_b, reverse_grads = result
    return (dhidden, din_w, empty(dout) if din_b is None else din_b,
            *_branch_grads(forward_grads, dout, tensors[3], True), dout_w, empty(dout) if dout_b is None else dout_b,
            *_branch_grads(reverse_grads, dout, tensors[12], reverse_grads is not None))


torch.library.impl("smdim::mamba_mixer_fwd", "CompositeExplicitAutograd")(_forward)
torch.library.impl("smdim::mamba_mixer_bwd", "CompositeExplicitAutograd")(_backward_impl)


# --- fake (meta) kernels --------------------------------------------------------------------

@torch.library.register_fake("smdim::mamba_mixer_fwd")
def _fwd_fake(hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
              dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b, conv1d_bias_b,
              x_proj_weight_b, dt_proj_weight_b, dt_proj_bias_b, A_b, D_b, delta_softplus, chunk_size,
              save_for_backward):
    batch, length, d_model = hidden_states.shape
    out = hidden_states.new_empty((batch, length, d_model))
    if not save_for_backward:
        return out, []
    one_chunk = fits_one_chunk(length, chunk_size)
    saved = []
    if one_chunk:
        saved += [hidden_states.new_empty(shape) for shape in whole.activation_shapes(hidden_states, A)]
    for x_proj_w, A_ in ((x_proj_weight, A), (x_proj_weight_b, A_b)):
        if A_ is None:
            continue
        states = compute_dtype(hidden_states, A_, x_proj_w)
        x_dbl_shape, states_shape = whole.branch_shapes(hidden_states, x_proj_w, A_) if one_chunk \
            else chunked.saved_shapes(hidden_states, x_proj_w, A_, chunk_size)
        saved += [hidden_states.new_empty(x_dbl_shape), hidden_states.new_empty(states_shape, dtype=states)]
    return out, saved


@torch.library.register_fake("smdim::mamba_mixer_bwd")
def _bwd_fake(dout, *args):
    tensors = args[:_N_TENSOR_INPUTS]

    def grad_of(t):
        return dout.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)

    return tuple(grad_of(t) for t in tensors)


# --- autograd -------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    ctx.delta_softplus, ctx.chunk_size = inputs[_N_TENSOR_INPUTS], inputs[_N_TENSOR_INPUTS + 1]
    saved = output[1]
    ctx.save_for_backward(*inputs[:_N_TENSOR_INPUTS], *saved)
    ctx.mark_non_differentiable(*saved)


def _backward(ctx, dout, *_unused):
    saved = ctx.saved_tensors
    tensors, extra = saved[:_N_TENSOR_INPUTS], list(saved[_N_TENSOR_INPUTS:])
    grads = torch.ops.smdim.mamba_mixer_bwd(dout, *tensors, ctx.delta_softplus, ctx.chunk_size, extra)
    return tuple(None if t is None else g for t, g in zip(tensors, grads)) + (None, None, None)


register_autograd("smdim::mamba_mixer_fwd", _backward, setup_context=_setup_context)
