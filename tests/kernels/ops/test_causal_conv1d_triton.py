"""The Triton causal conv1d (CUDA path) against the reference, under the Triton interpreter."""
import pytest
import torch
from triton_support import DEVICE

from smdim_kernels import causal_conv1d_ref
from smdim_kernels.ops.causal_conv1d import triton as conv_triton

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("width", [1, 4])
@pytest.mark.parametrize("length", [1, 70])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("silu", [False, True])
def test_matches_reference(width, length, bias, silu, reverse):
    gen = torch.Generator().manual_seed(width + length)
    x = torch.randn(2, 19, length, generator=gen).to(DEVICE).requires_grad_(True)  # 19: partial channel block
    w = torch.randn(19, width, generator=gen).to(DEVICE).requires_grad_(True)
    b = torch.randn(19, generator=gen).to(DEVICE).requires_grad_(True) if bias else None
    g = torch.randn(2, 19, length, generator=gen).to(DEVICE)
    act = "silu" if silu else None
    out = conv_triton.causal_conv1d_fwd_triton(x.detach(), w.detach(), None if b is None else b.detach(), silu,
                                               reverse)
    dx, dw, db = conv_triton.causal_conv1d_bwd_triton(g, x.detach(), w.detach(), None if b is None else b.detach(),
                                                      silu, reverse)
    ref = causal_conv1d_ref(x, w, b, act, reverse)
    leaves = [t for t in (x, w, b) if t is not None]
    ref_grads = torch.autograd.grad(ref, leaves, g)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, ref_grads[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw, ref_grads[1], rtol=1e-5, atol=1e-4)
    if bias:
        torch.testing.assert_close(db, ref_grads[2], rtol=1e-5, atol=1e-4)
    else:
        assert db.numel() == 0
