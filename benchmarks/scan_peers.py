"""The selective-scan suite's peers: mamba.py's selective scan (alxndrTL/mamba.py, `pip install
mambapy`) and the naive reference loop (naive_loop_scan, at the end).

mamba.py runs the scan in PyTorch: `MambaBlock.ssm` applies softplus(delta + dt_proj.bias), then
`MambaBlock.selective_scan` materialises deltaA = exp(delta*A) and BX = delta*B*x as
(B, L, D, N) tensors, runs the Blelloch parallel scan `pscan` over them and contracts the states
with C: y = (hs @ C).squeeze(3) + D*x. We call mamba.py's own `selective_scan` (it reads nothing
from the block), on the benchmark's inputs transposed once, outside the timing, to mamba.py's
(B, L, D) layout.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

MAMBAPY_MISSING = "mambapy is not installed (pip install 'mambapy==1.2.0', or pip install -e '.[bench]')"


def mambapy_available() -> bool:
    """Whether mamba.py can be imported here."""
    try:
        import mambapy.pscan  # noqa: F401
    except ImportError:
        return False
    return True


def mambapy_ssm(x, delta, A, B, C, D, dt_bias):
    """mamba.py's CPU `MambaBlock.ssm` after its projections.

    x, delta: (B, L, D) (delta before softplus and bias); A: (D, N); B, C: (B, L, N);
    D, dt_bias: (D,). Returns y: (B, L, D).
    """
    from mambapy.mamba import MambaBlock

    delta = F.softplus(delta + dt_bias)
    # MambaBlock.selective_scan never touches `self`: calling it unbound runs mamba.py's code as is.
    return MambaBlock.selective_scan(None, x, delta, A, B, C, D)


def to_mambapy_layout(u, delta, A, B, C, D, delta_bias) -> Tuple[torch.Tensor, ...]:
    """Our (batch, dim, L) / (batch, N, L) inputs as mamba.py's contiguous (B, L, D) / (B, L, N)."""
    def seq_last_to_seq_first(t):
        return t.detach().transpose(1, 2).contiguous()

    return (seq_last_to_seq_first(u), seq_last_to_seq_first(delta), A.detach().clone(),
            seq_last_to_seq_first(B), seq_last_to_seq_first(C), D.detach().clone(), delta_bias.detach().clone())


def grads_to_kernel_layout(grads):
    """Gradients of (x, delta, A, B, C, D, dt_bias) from mamba.py's layout back to ours (views)."""
    dx, ddelta, dA, dB, dC, dD, dbias = grads
    return (dx.transpose(1, 2), ddelta.transpose(1, 2), dA, dB.transpose(1, 2), dC.transpose(1, 2), dD, dbias)


def naive_loop_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The naive PyTorch scan in the style of mamba_ssm's reference (the peer of DESIGN §6).

    Materialises exp(delta*A) and delta*B*u as (batch, dim, L, N) tensors up front, then loops
    over time with one state update and one C-contraction per step. Same arguments and layout as
    `selective_scan_fn` (u, delta: (batch, dim, L); B, C: (batch, N, L)); returns out (batch, dim, L).
    """
    dt = delta if delta_bias is None else delta + delta_bias[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    decay = torch.exp(dt.unsqueeze(-1) * A[:, None, :])                       # (batch, dim, L, N)
    drive = (dt * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)           # (batch, dim, L, N)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        state = decay[:, :, t] * state + drive[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(ys, dim=2)
    return y if D is None else y + u * D[:, None]
