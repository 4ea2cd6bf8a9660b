"""Random selective-scan problems shared by the scan tests."""
from __future__ import annotations

import itertools

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class ScanProblem:
    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: Optional[torch.Tensor]
    z: Optional[torch.Tensor]
    delta_bias: Optional[torch.Tensor]
    initial_state: Optional[torch.Tensor]
    seq_idx: Optional[torch.Tensor]

    def differentiable(self):
        """The floating inputs that receive gradients, in signature order."""
        names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]

    def requires_grad_(self):
        for _, t in self.differentiable():
            t.requires_grad_(True)
        return self


# Every on/off combination of the scan's options, as test parameters with readable ids.
OPTION_NAMES = ["D", "z", "delta_bias", "initial_state", "seq_idx", "softplus"]
OPTION_GRID = list(itertools.product([False, True], repeat=len(OPTION_NAMES)))


def option_id(options):
    return "".join("1" if x else "0" for x in options)


def problem_options(options):
    """(make_problem keyword flags, delta_softplus) of one OPTION_GRID entry."""
    flags = dict(zip(OPTION_NAMES, options))
    return flags, flags.pop("softplus")


def bc_tensor(kind: str, batch: int, dim: int, dstate: int, length: int, groups: int, dtype, gen):
    if kind == "const":
        return torch.randn(dim, dstate, dtype=dtype, generator=gen)
    if kind == "var3":
        return torch.randn(batch, dstate, length, dtype=dtype, generator=gen)
    return torch.randn(batch, groups, dstate, length, dtype=dtype, generator=gen)


def make_problem(batch=2, dim=36, length=129, dstate=16, *, B_kind="var4", C_kind="var4", groups=1,
                 D=True, z=True, delta_bias=True, initial_state=True, seq_idx=False,
                 dtype=torch.float32, seed=0) -> ScanProblem:
    """A well-conditioned problem: A < 0, small positive delta, O(1) everything else."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, generator=gen)

    u = randn(batch, dim, length)
    # dt > 0 with or without softplus: exp(dt * A) < 1 keeps the recurrence contractive.
    delta = 0.5 * torch.rand(batch, dim, length, dtype=dtype, generator=gen) + 0.01
    A = -(0.5 + torch.rand(dim, dstate, dtype=dtype, generator=gen))
    B = bc_tensor(B_kind, batch, dim, dstate, length, groups, dtype, gen)
    C = bc_tensor(C_kind, batch, dim, dstate, length, groups, dtype, gen)
    seq = None
    if seq_idx:
        starts = torch.rand(batch, length, generator=gen) < 0.08
        seq = torch.cumsum(starts.long(), dim=1).to(torch.int32)
    return ScanProblem(
        u=u, delta=delta, A=A, B=B, C=C,
        D=randn(dim) if D else None,
        z=randn(batch, dim, length) if z else None,
        delta_bias=0.1 * torch.rand(dim, dtype=dtype, generator=gen) if delta_bias else None,
        initial_state=randn(batch, dim, dstate) if initial_state else None,
        seq_idx=seq,
    )


def run_scan(fn, p: ScanProblem, delta_softplus=True, reverse=False):
    return fn(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, delta_softplus, True,
              initial_state=p.initial_state, reverse=reverse, seq_idx=p.seq_idx)


def outputs_and_grads(fn, p: ScanProblem, delta_softplus=True, reverse=False, seed=1):
    """(out, last_state, {name: grad}) for a fixed random cotangent on out and last_state."""
    out, last = run_scan(fn, p, delta_softplus, reverse)
    gen = torch.Generator().manual_seed(seed)
    g_out = torch.randn(out.shape, generator=gen).to(out.dtype)
    g_last = torch.randn(last.shape, generator=gen).to(last.dtype)
    loss = (out.float() * g_out.float()).sum() + (last.float() * g_last.float()).sum()
    names, tensors = zip(*p.differentiable())
    grads = torch.autograd.grad(loss, tensors)
    return out.detach(), last.detach(), dict(zip(names, grads))
