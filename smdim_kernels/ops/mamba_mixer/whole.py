"""mamba_mixer over a sequence that fits in one chunk (L <= chunk_size): the whole layer at once,
keeping what its backward needs instead of re-running it.

This is the training regime of batches of short crops (e.g. 16 x 64 compressed steps), where the
chunked walk's recomputation (the scan re-run up to twice per branch in the backward, z and x
re-projected) costs more than the activations it spares. Here:

    forward   x, z = in_proj(hidden_states)               (batch, d_inner, L) each
              y_f  = scan(chain_f(x), z)                    gated by silu(z) inside the scan kernel
              y_b  = scan(chain_b(x), z, reverse=True)      anti-causal conv, scan right to left
              y    = (y_f + y_b) / 2;  out = out_proj(y)
    saves     x, z, y, and per branch x_dbl and the scan's 64-step checkpoints
    backward  one scan backward per branch (from its checkpoints; u and delta are recomputed: one
              conv and one rank-dt_rank GEMM), no scan forward.

Gating inside each scan is exact: silu(z) multiplies the mean linearly, so mean(s_f, s_b) * g =
mean(s_f * g, s_b * g), and the two scans' z gradients add.
"""
from __future__ import annotations

import torch

from .._gemm import batched_mm, batched_weight_grad
from ..mamba_inner.chain import backward as chain_backward
from ..mamba_inner.chain import prepare, scan
from ..selective_scan.constants import CHECKPOINT_CHUNK
from .layer import project


def activation_shapes(hidden_states, A):
    """Shapes of the saved x, z and y: (batch, d_inner, L) each."""
    batch, length, _ = hidden_states.shape
    return [(batch, A.shape[0], length)] * 3


def branch_shapes(hidden_states, x_proj_weight, A):
    """Shapes of one branch's saved x_dbl (batch, dt_rank + 2N, L) and scan checkpoints
    (batch, d_inner, ceil(L / CHECKPOINT_CHUNK), N)."""
    batch, length, _ = hidden_states.shape
    d_inner, d_state = A.shape
    return (batch, x_proj_weight.shape[0], length), (batch, d_inner, -(-length // CHECKPOINT_CHUNK), d_state)


def forward(hidden_states, in_proj, forward_branch, reverse_branch, out_proj_weight, out_proj_bias, delta_softplus,
            save_for_backward):
    """-> (out (batch, L, d_model), saved: [x, z, y, x_dbl, checkpoints (, x_dbl_b, checkpoints_b)] or [])."""
    x = project(in_proj.x_weight, in_proj.x_bias, hidden_states)
    z = project(in_proj.z_weight, in_proj.z_bias, hidden_states)
    saved = []
    y = None
    for branch, reverse in ((forward_branch, False), (reverse_branch, True)):
        if branch is None:
            continue
        chain = prepare(x, branch, reverse=reverse)
        y_branch, _, checkpoints = scan(chain, branch, delta_softplus, z=z, save=save_for_backward, reverse=reverse)
        saved += [chain.x_dbl, checkpoints]
        y = y_branch if y is None else torch.lerp(y, y_branch, 0.5, out=y)  # the mean, in one pass
        del chain, y_branch
    out = batched_mm(y.transpose(1, 2), out_proj_weight.t())
    if out_proj_bias is not None:
        out = out + out_proj_bias.to(out.dtype)
    return out, ([x, z, y] + saved if save_for_backward else [])


def backward_of(dout, hidden_states, in_proj, forward_branch, reverse_branch, out_proj_weight, out_proj_bias,
                delta_softplus, saved):
    """Gradients (dhidden, din_proj_weight, din_proj_bias or None, forward branch's ChainGrads,
    dout_proj_weight, dout_proj_bias or None, reverse branch's ChainGrads or None)."""
    x, z, y = saved[:3]
    dout_t = dout.transpose(1, 2)  # (batch, d_model, L)
    dout_proj_weight = batched_weight_grad(dout_t, y.transpose(1, 2))
    dout_proj_bias = None if out_proj_bias is None else dout.sum((0, 1))
    # (batch, d_inner, L); with two branches the mean's 1/2 rides on the (d_inner, d_model) weight
    dy = batched_mm(out_proj_weight.t() if reverse_branch is None else out_proj_weight.t() * 0.5, dout_t)
    grads = []
    for i, (branch, reverse) in enumerate(((forward_branch, False), (reverse_branch, True))):
        if branch is None:
            grads.append(None)
            continue
        x_dbl, checkpoints = saved[3 + 2 * i: 5 + 2 * i]
        chain = prepare(x, branch, x_dbl=x_dbl, reverse=reverse)
        grads.append(chain_backward(chain, branch, dy, None, delta_softplus, checkpoints, z=z, reverse=reverse))
        del chain
    forward_grads, reverse_grads = grads
    # (batch, 2*d_inner, L): one GEMM for each in_proj gradient; the branches' sums written in place
    d_inner = x.shape[1]
    dxz = forward_grads.x_in.new_empty((x.shape[0], 2 * d_inner, x.shape[2]))
    for half, name in ((dxz[:, :d_inner], "x_in"), (dxz[:, d_inner:], "z")):
        if reverse_grads is None:
            half.copy_(getattr(forward_grads, name))
        else:
            torch.add(getattr(forward_grads, name), getattr(reverse_grads, name), out=half)
    dhidden = batched_mm(dxz.transpose(1, 2), in_proj.weight)
    din_proj_weight = batched_weight_grad(dxz, hidden_states)
    din_proj_bias = None if in_proj.x_bias is None else dxz.sum((0, 2))
    return dhidden, din_proj_weight, din_proj_bias, forward_grads, dout_proj_weight, dout_proj_bias, reverse_grads
