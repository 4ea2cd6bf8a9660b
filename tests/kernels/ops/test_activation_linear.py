"""Fused activation + linear, fc2(act(h)) (smdim::activation_linear_fwd / _bwd), against the reference."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from smdim_kernels.ops.activation_linear import ACTIVATIONS, activation_linear, activation_linear_ref

ops = torch.ops.smdim
HIDDEN, OUT = 9, 11  # odd sizes


def make(lead=(3, 5), activation="gelu", bias=True, dtype=torch.float64, seed=0):
    """h (*lead, hidden or 2*hidden), weight (OUT, HIDDEN), bias (OUT,) or None, all requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    width = 2 * HIDDEN if activation == "swiglu" else HIDDEN
    h = torch.randn(*lead, width, generator=gen, dtype=dtype).requires_grad_(True)
    weight = (torch.randn(OUT, HIDDEN, generator=gen, dtype=dtype) / 3).requires_grad_(True)
    b = torch.randn(OUT, generator=gen, dtype=dtype).requires_grad_(True) if bias else None
    return h, weight, b


def out_and_grads(fn, h, weight, bias, activation):
    out = fn(h, weight, bias, activation)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(out.dtype)
    leaves = [t for t in (h, weight, bias) if t is not None]
    return out.detach(), torch.autograd.grad((out * go).sum(), leaves)


def test_reference_is_the_written_formula():
    for activation in ACTIVATIONS:
        h, weight, bias = make(activation=activation)
        if activation == "gelu":
            a = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        else:
            x, gate = h[..., :HIDDEN], h[..., HIDDEN:]
            a = x * gate * torch.sigmoid(gate)
        torch.testing.assert_close(activation_linear_ref(h, weight, bias, activation), a @ weight.T + bias,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(), (7,), (3, 5)])
def test_matches_reference(activation, bias, lead):
    h, weight, b = make(lead, activation, bias)
    out, grads = out_and_grads(activation_linear, h, weight, b, activation)
    ref, ref_grads = out_and_grads(activation_linear_ref, h, weight, b, activation)
    assert out.shape == lead + (OUT,)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(ref_grads) == (3 if bias else 2)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fp32_matches_fp64_and_bf16_forward(activation):
    h, weight, b = make((4, 6), activation)
    ref, ref_grads = out_and_grads(activation_linear_ref, h, weight, b, activation)
    leaves32 = [t.detach().float().requires_grad_(True) for t in (h, weight, b)]
    out, grads = out_and_grads(activation_linear, *leaves32, activation)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-5 * max(1.0, r.abs().max().item()))
    out16 = activation_linear(*(t.detach().bfloat16() for t in (h, weight, b)), activation)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.double(), ref, rtol=3e-2, atol=3e-2 * ref.abs().max().item())


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_fp64_gradcheck(activation, bias):
    h, weight, b = make((2, 3), activation, bias)
    inputs = (h, weight) if b is None else (h, weight, b)
    assert torch.autograd.gradcheck(lambda h, w, b=None: activation_linear(h, w, b, activation), inputs)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(activation, bias):
    h, weight, b = make((2, 3), activation, bias, dtype=torch.float32)
    torch.library.opcheck(ops.activation_linear_fwd.default, (h, weight, b, activation))
    dout = torch.randn(2, 3, OUT)
    torch.library.opcheck(ops.activation_linear_bwd.default,
                          (dout, h.detach(), weight.detach(), b is not None, activation))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_compile_fullgraph_forward_backward(activation):
    h, weight, b = make((2, 5), activation, dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(activation_linear, fullgraph=True, backend="aot_eager")
    out, grads = out_and_grads(compiled, h, weight, b, activation)
    ref, ref_grads = out_and_grads(activation_linear, h, weight, b, activation)
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_inplace_overwrites_h_only_without_autograd(activation):
    h, weight, b = (t.detach() for t in make((3, 4), activation))
    original = h.clone()
    expected = activation_linear_ref(original, weight, b, activation)
    torch.testing.assert_close(activation_linear(h, weight, b, activation, inplace=True), expected)
    assert torch.equal(h, original)  # autograd on: nothing is overwritten
    with torch.no_grad():
        torch.testing.assert_close(activation_linear(h, weight, b, activation), expected)
        assert torch.equal(h, original)  # not asked to
        torch.testing.assert_close(activation_linear(h, weight, b, activation, inplace=True), expected,
                                   rtol=1e-12, atol=1e-12)
    activated = F.gelu(original) if activation == "gelu" else original[..., :HIDDEN] * F.silu(original[..., HIDDEN:])
    torch.testing.assert_close(h[..., :activated.shape[-1]], activated, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_keeps_h_and_weight_not_the_activation(activation):
    h, weight, b = make((3, 5), activation)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        activation_linear(h, weight, b, activation)
    assert len(saved) == 2
    assert {t.data_ptr() for t in saved} == {h.data_ptr(), weight.data_ptr()}


def test_flop_formulas_count_the_gemms():
    """FlopCounterMode cannot look inside the op: the GEMM fc2 runs, 2 * rows * hidden * out, and
    the backward's two GEMMs of that size (dweight and d act(h))."""
    h, weight, b = make((3, 5), "swiglu", dtype=torch.float32)
    with FlopCounterMode(display=False) as counter:
        activation_linear(h, weight, b, "swiglu").sum().backward()
    counts = counter.get_flop_counts()["Global"]
    gemm = 2 * 15 * HIDDEN * OUT
    assert counts[ops.activation_linear_fwd] == gemm
    assert counts[ops.activation_linear_bwd] == 2 * gemm
    with FlopCounterMode(display=False) as plain:  # what the same maths counts without the op
        out = activation_linear_ref(h, weight, b, "swiglu")
        out.sum().backward()
    assert plain.get_total_flops() == 3 * gemm


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(h=torch.randn(2, 9), weight=torch.randn(4, 9), activation="relu"), ValueError, r"activation must be one of"),
    (dict(h=torch.randn(2, 9), weight=torch.randn(4, 8)), ValueError, r"weight must be \(out, hidden=9\)"),
    (dict(h=torch.randn(2, 18), weight=torch.randn(4, 18), activation="swiglu"), ValueError,
     r"weight must be \(out, hidden=9\)"),
    (dict(h=torch.randn(2, 9), weight=torch.randn(4, 9), activation="swiglu"), ValueError,
     r"h must be \(\.\.\., 2 \* hidden\) for 'swiglu'"),
    (dict(h=torch.randn(2, 9), weight=torch.randn(4, 9), bias=torch.randn(5)), ValueError, r"bias must be \(out,\)"),
    (dict(h=torch.ones(2, 9, dtype=torch.long), weight=torch.randn(4, 9)), TypeError, r"h must have a floating dtype"),
    (dict(h=[1.0] * 9, weight=torch.randn(4, 9)), TypeError, r"h must be a torch.Tensor"),
])
def test_bad_input_is_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        activation_linear(**kwargs)
