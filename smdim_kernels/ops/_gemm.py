"""GEMMs on channel-major activations without layout copies."""
from __future__ import annotations

import torch


def batched_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b per batch entry, where one side may be an unbatched (m, k) / (k, n) weight.

    torch.matmul copies a transposed 3-D operand before folding it into one GEMM; bmm takes
    transposed strides directly, and a weight expanded over the batch costs nothing.
    """
    batch = a.shape[0] if a.dim() == 3 else b.shape[0]
    if a.dim() == 2:
        a = a.expand(batch, -1, -1)
    if b.dim() == 2:
        b = b.expand(batch, -1, -1)
    return torch.bmm(a, b)


def batched_weight_grad(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A weight's gradient summed over the batch: sum_i a[i] @ b[i], a (batch, m, n), b (batch, n, k) -> (m, k)."""
    if a.shape[0] == 1:
        return torch.mm(a[0], b[0])
    return torch.bmm(a, b).sum(0)
