"""The Mamba chain conv -> x_proj -> dt_proj -> selective scan and its backward, written once.

`mamba_inner` runs it over the whole sequence (composite.py); `mamba_mixer` runs it over the
whole sequence in both directions (mamba_mixer/whole.py: reverse=True runs the conv on the flipped
input and the scan right to left) or chunk by chunk, carrying the scan state and the conv's input
history (mamba_mixer/chunked.py).

    u      = silu(causal_conv1d(x_in, conv_weight, conv_bias))[..., history:]   (batch, d_inner, n)
    x_dbl  = x_proj_weight @ u                      (batch, dt_rank + k*N, n): rows [dt | B? | C?]
    delta  = dt_proj_weight @ x_dbl[:, :dt_rank]     (batch, d_inner, n)
    B, C   = given (constant or input-dependent), or read from x_dbl (+ B_proj_bias / C_proj_bias)
    scan   = selective_scan(u, delta, A, B, C, D, z, dt_proj_bias, delta_softplus, initial_state)

x_dbl's rows are mamba_ssm's columns: dt first, a B read from x_proj at [dt_rank, dt_rank + N), a C
read from x_proj in the last N rows. So x_proj has dt_rank + 2N rows, or dt_rank + N when one of
B/C is given (rows nothing reads get a zero gradient). x_dbl is channel-major like the other
activations (mamba_ssm's is time-major, (batch, n, rows)): the thin GEMMs around it (x_proj, dt_proj
and their gradients) then have their long dimension n contiguous, 1.4-4.6x faster at (2, 256, 512)
than with transposed operands, and B, C and their gradients need no transposes.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .._gemm import batched_mm, batched_weight_grad


def empty(like: torch.Tensor) -> torch.Tensor:
    """The (0,) placeholder an op returns for an absent tensor or gradient."""
    return like.new_empty((0,))


class ChainWeights(NamedTuple):
    """What the chain is made of; conv_weight is (d_inner, d_conv). B/C None: read from x_proj."""
    conv_weight: torch.Tensor
    conv_bias: Optional[torch.Tensor]
    x_proj_weight: torch.Tensor
    dt_proj_weight: torch.Tensor
    dt_proj_bias: Optional[torch.Tensor]
    A: torch.Tensor
    D: Optional[torch.Tensor]
    B: Optional[torch.Tensor] = None
    C: Optional[torch.Tensor] = None
    B_proj_bias: Optional[torch.Tensor] = None
    C_proj_bias: Optional[torch.Tensor] = None


class Chain(NamedTuple):
    """One run's activations: u and delta (batch, d_inner, n), the scan's B and C, the conv input
    x_in (batch, d_inner, history + n) and x_dbl (batch, x_proj rows, n)."""
    u: torch.Tensor
    delta: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    x_in: torch.Tensor
    x_dbl: torch.Tensor


# Gradients of one run: x_in's, one per ChainWeights field, z's and initial_state's; None for an
# absent tensor (B/C: only when given; the proj biases: only when B/C are read from x_proj and the
# bias is given).
ChainGrads = NamedTuple("ChainGrads", [(name, Optional[torch.Tensor])
                                       for name in ("x_in", *ChainWeights._fields, "z", "initial_state")])


def _slot_B(w: ChainWeights) -> slice:
    dt_rank = w.dt_proj_weight.shape[1]
    return slice(dt_rank, dt_rank + w.A.shape[1])


def _slot_C(w: ChainWeights) -> slice:
    rows = w.x_proj_weight.shape[0]
    return slice(rows - w.A.shape[1], rows)


def _read_slot(x_dbl, slot, bias):
    """(batch, N, n) from x_dbl[:, slot] (+ bias (N,)); without a bias a strided view of x_dbl: the
    scan ops lay B and C out themselves (time-major on CPU) in one copy."""
    M = x_dbl[:, slot]
    return M if bias is None else M + bias.to(M.dtype)[:, None]


def prepare(x_in, w: ChainWeights, history: int = 0, x_dbl=None, u=None, delta=None, reverse=False) -> Chain:
    """Conv (its first `history` outputs dropped), x_proj and dt_proj; any of x_dbl, u and delta
    that a forward saved is reused instead of recomputed. reverse: the chain reads x_in right to
    left (the anti-causal conv; u, delta, B and C stay in x_in's order, for a scan with
    reverse=True)."""
    if u is None:
        if reverse and history:
            raise ValueError("prepare: a reverse chain has no history")
        u = torch.ops.smdim.causal_conv1d_fwd(x_in, w.conv_weight, w.conv_bias, True, reverse)
        if history:
            u = u[..., history:].contiguous()
    if x_dbl is None:
        x_dbl = batched_mm(w.x_proj_weight, u)
    if delta is None:
        delta = batched_mm(w.dt_proj_weight, x_dbl[:, :w.dt_proj_weight.shape[1]])
    B = w.B if w.B is not None else _read_slot(x_dbl, _slot_B(w), w.B_proj_bias)
    C = w.C if w.C is not None else _read_slot(x_dbl, _slot_C(w), w.C_proj_bias)
    return Chain(u, delta, B, C, x_in, x_dbl)


def scan(chain: Chain, w: ChainWeights, delta_softplus: bool, z=None, initial_state=None, save=False,
         reverse=False):
    """selective_scan_fwd of the chain: (out, last_state, checkpoints)."""
    return torch.ops.smdim.selective_scan_fwd(chain.u, chain.delta, w.A, chain.B, chain.C, w.D, z, w.dt_proj_bias,
                                              delta_softplus, initial_state, None, reverse, save)


def _x_dbl_grad(ddt, dB, dC, w: ChainWeights, rows: int):
    """d x_dbl (batch, rows, n) from the dt, B and C gradients (zero where x_proj feeds nothing)."""
    dt_rank = ddt.shape[1]
    if w.B is None and w.C is None and rows == dt_rank + 2 * w.A.shape[1]:
        return torch.cat([ddt, dB, dC], dim=1)
    dx_dbl = ddt.new_zeros((ddt.shape[0], rows, ddt.shape[2]))
    dx_dbl[:, :dt_rank] = ddt
    if w.B is None:
        dx_dbl[:, _slot_B(w)] = dB
    if w.C is None:
        dx_dbl[:, _slot_C(w)] = dC  # dt_rank + N rows: the slots coincide, one is written
    return dx_dbl


def backward(chain: Chain, w: ChainWeights, dout, dlast_state, delta_softplus, checkpoints, z=None,
             initial_state=None, history: int = 0, reverse=False) -> ChainGrads:
    """Back through the scan, dt_proj, x_proj and conv, given dout (the scan output's gradient) and
    dlast_state (the last state's, or None); checkpoints are the scan forward's; reverse as the
    chain was prepared."""
    du, ddelta, dA, dB, dC, dD, dz, ddt_bias, dinitial = torch.ops.smdim.selective_scan_bwd(
        dout, dlast_state, chain.u, chain.delta, w.A, chain.B, chain.C, w.D, z, w.dt_proj_bias, delta_softplus,
        initial_state, None, reverse, checkpoints)
    dt_rank = w.dt_proj_weight.shape[1]
    ddt = batched_mm(w.dt_proj_weight.t(), ddelta)  # (batch, dt_rank, n)
    # (dt_rank, d_inner) transposed: the long dimension n contiguous in both operands
    ddt_proj_weight = batched_weight_grad(chain.x_dbl[:, :dt_rank], ddelta.transpose(1, 2)).t().contiguous()
    del ddelta
    dx_dbl = _x_dbl_grad(ddt, dB, dC, w, chain.x_dbl.shape[1])
    du += batched_mm(w.x_proj_weight.t(), dx_dbl)
    dx_proj_weight = batched_weight_grad(dx_dbl, chain.u.transpose(1, 2))
    # With history, the conv's first outputs were discarded: their gradient is zero.
    if reverse and history:
        raise ValueError("backward: a reverse chain has no history")
    dx_in, dconv_weight, dconv_bias = torch.ops.smdim.causal_conv1d_bwd(
        F.pad(du, (history, 0)) if history else du, chain.x_in, w.conv_weight, w.conv_bias, True, reverse)

    def given(t, g):
        return None if t is None else g

    return ChainGrads(
        dx_in, dconv_weight, given(w.conv_bias, dconv_bias), dx_proj_weight, ddt_proj_weight,
        given(w.dt_proj_bias, ddt_bias), dA, given(w.D, dD), given(w.B, dB), given(w.C, dC),
        dB.sum((0, 2)) if w.B is None and w.B_proj_bias is not None else None,
        dC.sum((0, 2)) if w.C is None and w.C_proj_bias is not None else None,
        given(z, dz), given(initial_state, dinitial))
