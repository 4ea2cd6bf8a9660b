"""The channel-major GEMM helpers (smdim_kernels/ops/_gemm.py) against einsum, in every operand layout."""
import pytest
import torch

from smdim_kernels.ops import _gemm


def _operand(batch, rows, cols, transposed, gen):
    """(batch, rows, cols), contiguous or as the transposed view of a (batch, cols, rows) tensor."""
    if transposed:
        return torch.randn(batch, cols, rows, generator=gen, dtype=torch.float64).transpose(1, 2)
    return torch.randn(batch, rows, cols, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("summed", [True, False], ids=["summed-products", "one-gemm"])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_batched_weight_grad_sums_the_batch(monkeypatch, summed, a_transposed, b_transposed, batch):
    monkeypatch.setattr(_gemm, "SUMMED_PRODUCTS_MAX_ELEMENTS", 1 << 30 if summed else 0)
    gen = torch.Generator().manual_seed(0)
    a = _operand(batch, 5, 7, a_transposed, gen)
    b = _operand(batch, 7, 4, b_transposed, gen)
    torch.testing.assert_close(_gemm.batched_weight_grad(a, b), torch.einsum("imn,ink->mk", a, b),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weight_side", ["a", "b", "neither"])
def test_batched_mm_broadcasts_a_weight(weight_side):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(5, 7, generator=gen) if weight_side == "a" else torch.randn(3, 5, 7, generator=gen)
    b = torch.randn(7, 4, generator=gen) if weight_side == "b" else torch.randn(3, 7, 4, generator=gen)
    torch.testing.assert_close(_gemm.batched_mm(a, b), torch.matmul(a, b))
