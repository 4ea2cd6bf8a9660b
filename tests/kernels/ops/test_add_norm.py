"""Fused residual add + LayerNorm/RMSNorm (C++ CPU) against the reference."""
import pytest
import torch

from smdim_kernels import add_norm_fn, add_norm_ref


def make(shape=(3, 7, 37), dtype=torch.float32, residual=True, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype, requires_grad=True)
    r = torch.randn(*shape, generator=gen, dtype=dtype, requires_grad=True) if residual else None
    w = (1 + 0.1 * torch.randn(shape[-1], generator=gen, dtype=dtype)).requires_grad_(True)
    b = (0.1 * torch.randn(shape[-1], generator=gen, dtype=dtype)).requires_grad_(True) if bias else None
    return x, w, b, r


def run(fn, x, w, b, r, rms, residual_in_fp32=False):
    out, h = fn(x, w, b, r, 1e-5, True, residual_in_fp32, rms)
    gen = torch.Generator().manual_seed(5)
    go = torch.randn(out.shape, generator=gen).to(out.dtype)
    gh = torch.randn(h.shape, generator=gen).to(h.dtype)
    leaves = [t for t in (x, w, b, r) if t is not None]
    grads = torch.autograd.grad((out.float() * go.float()).sum() + (h.float() * gh.float()).sum(), leaves)
    return out.detach(), h.detach(), grads


@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7, 37), (130, 256)])
def test_matches_reference(rms, residual, bias, shape):
    x, w, b, r = make(shape, residual=residual, bias=bias, seed=len(shape))
    out, h, grads = run(add_norm_fn, x, w, b, r, rms)
    ref_out, ref_h, ref_grads = run(add_norm_ref, x, w, b, r, rms)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, ref_h)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-5 * max(1.0, ref.abs().max().item()))


def test_fp64_gradcheck_and_half_residual_in_fp32():
    for rms in (False, True):
        x, w, b, r = make((4, 9), dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda *a, rms=rms: add_norm_fn(*a, eps=1e-5, prenorm=True, is_rms_norm=rms),
                                        (x, w, b, r))
    x, w, b, r = make((4, 32), dtype=torch.bfloat16)
    out, h = add_norm_fn(x, w, b, r, prenorm=True, residual_in_fp32=True)
    assert out.dtype == torch.bfloat16 and h.dtype == torch.float32
    torch.testing.assert_close(h, x.float() + r.float())


def test_opcheck_compile_and_determinism():
    x, w, b, r = make((6, 40))
    torch.library.opcheck(torch.ops.smdim.add_norm_fwd.default, (x, r, w, b, 1e-5, False, False))
    torch.library.opcheck(torch.ops.smdim.add_norm_fwd.default, (x, None, w, None, 1e-5, True, True))
    torch._dynamo.reset()
    f = torch.compile(lambda x, w, b, r: add_norm_fn(x, w, b, r, prenorm=True)[0].sum(), fullgraph=True,
                      backend="aot_eager")
    grads = torch.autograd.grad(f(x, w, b, r), (x, w, b, r))
    ref = torch.autograd.grad(add_norm_ref(x, w, b, r, prenorm=True)[0].sum(), (x, w, b, r))
    for g, e in zip(grads, ref):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    x, w, b, r = make((300, 64))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(run(add_norm_fn, x, w, b, r, False))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, c) for a, c in zip(results[0][2], results[1][2]))


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(x=torch.randn(2, 8), weight=torch.randn(7)), ValueError, r"weight must be \(hidden,\) = \(8,\)"),
    (dict(x=torch.randn(2, 8), weight=torch.randn(8), bias=torch.randn(3)), ValueError, r"bias must be \(hidden,\)"),
    (dict(x=torch.randn(2, 8), weight=torch.randn(8), residual=torch.randn(2, 9)), ValueError,
     r"residual must be x's shape"),
    (dict(x=torch.ones(2, 8, dtype=torch.long), weight=torch.randn(8)), TypeError, r"x must have a floating dtype"),
    (dict(x=torch.randn(2, 8), weight=torch.randn(8), eps=0.0), ValueError, r"eps must be > 0"),
])
def test_bad_input_is_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        add_norm_fn(**kwargs)
