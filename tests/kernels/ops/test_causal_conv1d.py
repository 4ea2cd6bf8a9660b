"""The C++ causal conv1d against the PyTorch reference: values, gradients, options, errors."""
import pytest
import torch

from smdim_kernels import causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update


def make(batch=2, dim=7, length=130, width=4, bias=True, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, length, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(dim, width, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(dim, generator=gen, dtype=dtype, requires_grad=True) if bias else None
    return x, w, b


def outputs_and_grads(fn, x, w, b, activation, reverse=False):
    out = fn(x, w, b, activation, reverse)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    leaves = [t for t in (x, w, b) if t is not None]
    return out.detach(), torch.autograd.grad((out.float() * g.float()).sum(), leaves)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [1, 3, 19, 20, 130])  # 19, 20 at width 4: one AVX-512 vector inside (+1)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_matches_reference(width, length, bias, activation, reverse):
    x, w, b = make(length=length, width=width, bias=bias, seed=width * length)
    out, grads = outputs_and_grads(causal_conv1d_fn, x, w, b, activation, reverse)
    ref, ref_grads = outputs_and_grads(causal_conv1d_ref, x, w, b, activation, reverse)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())


@pytest.mark.parametrize("reverse", [False, True])
def test_silu_saturates_like_the_reference(reverse):
    """Pre-activations far out on both sides (the fused SiLU's exp clamps), values and gradients."""
    x, w, b = make(length=67, seed=5)
    with torch.no_grad():
        x.mul_(60)
    out, grads = outputs_and_grads(causal_conv1d_fn, x, w, b, "silu", reverse)
    ref, ref_grads = outputs_and_grads(causal_conv1d_ref, x, w, b, "silu", reverse)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())


def test_reverse_is_the_flipped_causal_conv():
    """reverse=True is the causal conv of the flipped sequence, flipped back (exactly the same sums)."""
    x, w, b = make(length=37, width=4)
    x, w, b = x.detach(), w.detach(), b.detach()
    expected = causal_conv1d_fn(x.flip(-1), w, b, "silu").flip(-1)
    torch.testing.assert_close(causal_conv1d_fn(x, w, b, "silu", reverse=True), expected, rtol=1e-6, atol=1e-6)
    ref = torch.zeros_like(x)  # written out: out[t] = silu(b + sum_k w[k] x[t + 3 - k]), zeros past the end
    for t in range(37):
        for k in range(4):
            if t + 3 - k < 37:
                ref[..., t] += w[:, k] * x[..., t + 3 - k]
    torch.testing.assert_close(expected, torch.nn.functional.silu(ref + b[:, None]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_fp64_gradcheck(reverse):
    x, w, b = make(batch=2, dim=3, length=9, width=4, dtype=torch.float64)
    for activation in (None, "silu"):
        assert torch.autograd.gradcheck(
            lambda *a, activation=activation: causal_conv1d_fn(*a, activation=activation, reverse=reverse), (x, w, b))


def test_half_inputs():
    x, w, b = make(dtype=torch.bfloat16)
    out = causal_conv1d_fn(x, w, b, "silu")
    ref = causal_conv1d_ref(x.float(), w.float(), b.float(), "silu")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_non_contiguous_input():
    x, w, b = make(length=40)
    x_t = x.detach().transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_t.is_contiguous()
    assert torch.equal(causal_conv1d_fn(x_t, w, b, "silu"), causal_conv1d_fn(x.detach(), w, b, "silu"))


@pytest.mark.parametrize("reverse", [False, True])
def test_opcheck_and_compile(reverse):
    x, w, b = make(length=33)
    torch.library.opcheck(torch.ops.smdim.causal_conv1d_fwd.default, (x, w, b, True, reverse))
    torch.library.opcheck(torch.ops.smdim.causal_conv1d_fwd.default, (x, w, None, False, reverse))
    g = torch.randn_like(x)
    torch.library.opcheck(torch.ops.smdim.causal_conv1d_bwd.default,
                          (g, x.detach(), w.detach(), b.detach(), True, reverse))
    torch._dynamo.reset()
    step = torch.compile(lambda x, w, b: causal_conv1d_fn(x, w, b, "silu", reverse).square().sum(), fullgraph=True,
                         backend="aot_eager")
    grads = torch.autograd.grad(step(x, w, b), (x, w, b))
    ref = torch.autograd.grad(causal_conv1d_ref(x, w, b, "silu", reverse).square().sum(), (x, w, b))
    for a, r in zip(grads, ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_deterministic_across_thread_counts():
    x, w, b = make(batch=3, dim=16, length=300)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(outputs_and_grads(causal_conv1d_fn, x, w, b, "silu"))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, c) for a, c in zip(results[0][1], results[1][1]))


@pytest.mark.parametrize("args, error, pattern", [
    ((torch.randn(4, 10), torch.randn(4, 3)), ValueError, r"x must be \(batch, dim, L\)"),
    ((torch.randn(1, 4, 10), torch.randn(5, 3)), ValueError, r"weight must be \(dim, width\) = \(4, width >= 1\)"),
    ((torch.randn(1, 4, 10), torch.randn(4, 3), torch.randn(3)), ValueError, r"bias must be \(dim,\) = \(4,\)"),
    ((torch.ones(1, 4, 10, dtype=torch.long), torch.randn(4, 3)), TypeError, r"x must have a floating dtype"),
    ((torch.randn(1, 4, 10), torch.randn(4, 3), None, "relu"), ValueError, r"activation must be None, 'silu'"),
    ((torch.randn(1, 4, 10), torch.randn(4, 3), None, None, "yes"), ValueError, r"reverse must be True or False"),
    ((torch.randn(1, 4, 10), torch.randn(4, 3, device="meta")), ValueError, r"one device"),
])
def test_bad_input_is_named(args, error, pattern):
    with pytest.raises(error, match=pattern):
        causal_conv1d_fn(*args)


def test_native_op_rejects_a_zero_width_weight():
    # Direct op calls skip the Python checks; the C++ kernel checks the width itself.
    with pytest.raises(RuntimeError, match=r"weight width must be >= 1"):
        torch.ops.smdim.causal_conv1d_fwd(torch.randn(1, 4, 10), torch.randn(4, 0), None, True)


def test_update_steps_reproduce_the_convolution():
    x, w, b = make(batch=2, dim=5, length=12, width=4)
    x, w, b = x.detach(), w.detach(), b.detach()
    full = causal_conv1d_fn(x, w, b, "silu")
    state = torch.zeros(2, 5, 4)
    steps = [causal_conv1d_update(x[..., t], state, w, b, "silu") for t in range(12)]
    torch.testing.assert_close(torch.stack(steps, -1), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, x[..., -4:])
    with pytest.raises(ValueError, match=r"conv_state must be \(batch, dim, width\) = \(2, 5, 4\)"):
        causal_conv1d_update(x[..., 0], torch.zeros(2, 5, 3), w, b)
