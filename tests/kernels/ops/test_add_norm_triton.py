"""The Triton add + norm (CUDA path) against the reference, under the Triton interpreter."""
import pytest
import torch
from triton_support import DEVICE

from smdim_kernels import add_norm_ref
from smdim_kernels.ops.add_norm import triton as norm_triton

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(rms, residual, bias, dtype):
    gen = torch.Generator().manual_seed(int(rms) + 2 * int(residual))
    shape = (3, 3, 37)  # 9 rows: a partial last program; hidden 37: a masked tile
    x = torch.randn(*shape, generator=gen, dtype=dtype).to(DEVICE).requires_grad_(True)
    r = torch.randn(*shape, generator=gen, dtype=dtype).to(DEVICE).requires_grad_(True) if residual else None
    w = (1 + 0.1 * torch.randn(37, generator=gen, dtype=dtype)).to(DEVICE).requires_grad_(True)
    b = torch.randn(37, generator=gen, dtype=dtype).to(DEVICE).requires_grad_(True) if bias else None
    g_out, g_res = (torch.randn(*shape, generator=gen, dtype=dtype).to(DEVICE) for _ in range(2))
    detached = [None if t is None else t.detach() for t in (x, r, w, b)]
    out, res_out, mean, rstd = norm_triton.add_norm_fwd_triton(*detached, 1e-5, rms, False)
    dh, dw, db = norm_triton.add_norm_bwd_triton(g_out, g_res, res_out, detached[2], detached[3], mean, rstd, rms)
    ref_out, ref_h = add_norm_ref(x, w, b, r, 1e-5, True, False, rms)
    leaves = [t for t in (x, w, b) if t is not None]
    ref_grads = torch.autograd.grad([ref_out, ref_h], leaves, [g_out, g_res])
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref_out.detach(), **tol)
    torch.testing.assert_close(res_out, ref_h.detach(), **tol)
    torch.testing.assert_close(dh.to(dtype), ref_grads[0], **tol)
    torch.testing.assert_close(dw, ref_grads[1], rtol=tol["rtol"], atol=10 * tol["atol"])
    if bias:
        torch.testing.assert_close(db, ref_grads[2], rtol=tol["rtol"], atol=10 * tol["atol"])
