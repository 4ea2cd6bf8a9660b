"""The selective-scan suite's problem and cases, and one runnable per (implementation, pass).

The problem is a Mamba block's scan: batch 1, dim 1536 (d_inner of a 768-wide model), N = 16,
fp32, input-dependent B and C (batch, N, L), delta_softplus with delta_bias, and D, initialised
as mamba.py's MambaBlock does (A = -(1..N), softplus(delta_bias) log-uniform in [1e-3, 1e-1], D = 1).

Implementations:
    ours   smdim_kernels.selective_scan_fn (the fused C++ kernels)
    naive  scan_peers.naive_loop_scan: mamba_ssm's reference style (exp(delta*A) and delta*B*u
           materialised as (batch, dim, L, N), then a Python loop over time)
    pscan  mamba.py's selective scan with its parallel scan (see scan_peers.py)
    bound  torch.ops.smdim_native.scan_arith_bound: the scan's arithmetic on registers only
           (forward only), the speed limit of this machine for the scan's maths
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from .passes import FORWARD, PASSES

BATCH, DIM, DSTATE = 1, 1536, 16
DTYPE = torch.float32
DT_MIN, DT_MAX = 1e-3, 1e-1
SCAN_SUITE = "selective_scan"  # extra_info["suite"] of these benchmarks, and their groups' prefix

OURS, NAIVE, PSCAN, BOUND = "ours", "naive", "pscan", "bound"
SCAN_IMPLEMENTATIONS = (OURS, NAIVE, PSCAN, BOUND)
SCAN_INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


@dataclass(frozen=True)
class ScanCase:
    """One benchmark of the scan suite: an implementation running one pass at one sequence length."""

    impl: str
    pass_name: str
    length: int

    @property
    def group(self) -> str:
        """pytest-benchmark group: every implementation of one (pass, L) side by side."""
        return f"{SCAN_SUITE} {self.pass_name} L={self.length}"

    @property
    def id(self) -> str:
        """Test id, usable in `-k` expressions (no '+')."""
        return f"{self.pass_name.replace('+', '')}-L{self.length}-{self.impl}"


@dataclass(frozen=True)
class ScanProblem:
    """Inputs of one selective scan in our layout, and the output gradient for the backward.

    u, delta, grad_out: (batch, dim, L); A: (dim, N); B, C: (batch, N, L); D, delta_bias: (dim,).
    """

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    delta_bias: torch.Tensor
    grad_out: Optional[torch.Tensor]

    @property
    def inputs(self) -> Tuple[torch.Tensor, ...]:
        """(u, delta, A, B, C, D, delta_bias), the tensors the backward differentiates."""
        return tuple(getattr(self, name) for name in SCAN_INPUT_NAMES)

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """(batch, dim, L, N)."""
        batch, dim, length = self.u.shape
        return batch, dim, length, self.A.shape[1]


def make_scan_problem(length: int, *, requires_grad: bool, seed: int = 0,
                 batch: int = BATCH, dim: int = DIM, dstate: int = DSTATE) -> ScanProblem:
    """Deterministic inputs for sequence length `length` (the same for every implementation)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=gen, dtype=DTYPE)

    log_dt = torch.rand(dim, generator=gen, dtype=DTYPE) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
    dt = torch.exp(log_dt)
    inputs = {
        "u": randn(batch, dim, length),
        "delta": randn(batch, dim, length, scale=0.5),  # dt_proj's output, before bias and softplus
        "A": -torch.arange(1, dstate + 1, dtype=DTYPE).repeat(dim, 1),
        "B": randn(batch, dstate, length),
        "C": randn(batch, dstate, length),
        "D": torch.ones(dim, dtype=DTYPE),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # softplus^-1(dt)
    }
    for tensor in inputs.values():
        tensor.requires_grad_(requires_grad)
    grad_out = randn(batch, dim, length) if requires_grad else None
    return ScanProblem(grad_out=grad_out, **inputs)


@dataclass(frozen=True)
class _LayoutScan:
    """A scan over inputs already in its implementation's layout, and the maps back to ours."""

    scan: Callable[[], torch.Tensor]
    leaves: Tuple[torch.Tensor, ...]
    grad_out: Optional[torch.Tensor]
    output_to_ours: Callable[[torch.Tensor], torch.Tensor]
    grads_to_ours: Callable[[Tuple[torch.Tensor, ...]], Tuple[torch.Tensor, ...]]


def _identity(x):
    return x


def _kernel_layout_scan(scan_fn, problem: ScanProblem) -> _LayoutScan:
    """ours / naive: `scan_fn` has selective_scan_fn's signature and takes our layout."""
    u, delta, A, B, C, D, delta_bias = problem.inputs
    scan = functools.partial(scan_fn, u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True)
    return _LayoutScan(scan, problem.inputs, problem.grad_out, _identity, _identity)


def _mambapy_scan(problem: ScanProblem) -> _LayoutScan:
    """pscan: mamba.py's selective scan on inputs transposed (here, untimed) to its layout."""
    from . import scan_peers

    requires_grad = problem.u.requires_grad
    leaves = tuple(t.requires_grad_(requires_grad) for t in scan_peers.to_mambapy_layout(*problem.inputs))
    grad_out = None if problem.grad_out is None else problem.grad_out.transpose(1, 2).contiguous()
    return _LayoutScan(functools.partial(scan_peers.mambapy_ssm, *leaves), leaves, grad_out,
                       lambda y: y.transpose(1, 2), scan_peers.grads_to_kernel_layout)


def _layout_scan(impl: str, problem: ScanProblem) -> _LayoutScan:
    import smdim_kernels

    if impl == OURS:
        return _kernel_layout_scan(smdim_kernels.selective_scan_fn, problem)
    if impl == NAIVE:
        from . import scan_peers

        return _kernel_layout_scan(scan_peers.naive_loop_scan, problem)
    if impl == PSCAN:
        return _mambapy_scan(problem)
    raise ValueError(f"unknown scan implementation {impl!r}; expected one of {SCAN_IMPLEMENTATIONS}")


def make_scan_runner(impl: str, pass_name: str, problem: ScanProblem) -> Callable[[], object]:
    """A no-argument callable that runs `impl`'s `pass_name` on `problem`.

    Returns the output (forward) or (output, gradients of SCAN_INPUT_NAMES) (forward+backward),
    in our layout, so every implementation's results compare directly; `bound` returns its checksum.
    Layout conversions of the inputs happen here, once, not in the callable.
    """
    if pass_name not in PASSES:
        raise ValueError(f"unknown pass {pass_name!r}; expected one of {PASSES}")
    if impl == BOUND:
        if pass_name != FORWARD:
            raise ValueError("the arithmetic bound exists for the forward pass only")
        batch, dim, length, dstate = problem.shape
        return functools.partial(torch.ops.smdim_native.scan_arith_bound, batch, dim, length, dstate)
    layout = _layout_scan(impl, problem)
    if pass_name == FORWARD:
        return lambda: layout.output_to_ours(layout.scan())
    if layout.grad_out is None:
        raise ValueError("forward+backward needs a problem made with requires_grad=True")

    def forward_backward():
        out = layout.scan()
        grads = torch.autograd.grad(out, layout.leaves, layout.grad_out)
        return layout.output_to_ours(out.detach()), layout.grads_to_ours(grads)

    return forward_backward
