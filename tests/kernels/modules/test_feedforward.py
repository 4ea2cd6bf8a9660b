"""FeedForward (GELU MLP and SwiGLU) against the written-out formula."""
import math

import pytest
import torch

from smdim_kernels.modules.feedforward import FeedForward


def manual(ff, x):
    h = x @ ff.fc1.weight.T + ff.fc1.bias
    if ff.activation == "swiglu":
        a, gate = h[..., : ff.hidden_features], h[..., ff.hidden_features:]
        h = a * gate * torch.sigmoid(gate)
    else:
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return h @ ff.fc2.weight.T + ff.fc2.bias


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
@pytest.mark.parametrize("shape", [(24,), (3, 24), (2, 5, 24)])
def test_matches_formula_with_gradients(activation, shape):
    torch.manual_seed(0)
    ff = FeedForward(24, hidden_features=40, activation=activation).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    out, ref = ff(x), manual(ff, x)
    assert out.shape == shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    go = torch.randn(shape, dtype=torch.float64)
    leaves = [x] + list(ff.parameters())
    grads = torch.autograd.grad((out * go).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * go).sum(), leaves)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_default_and_explicit_hidden_sizes():
    assert FeedForward(64).fc1.out_features == 256
    assert FeedForward(64).fc2.in_features == 256
    # int(8 * 64 / 3) = 170 -> 256; int(8 * 768 / 3) = 2048 already a multiple of 128
    ff = FeedForward(64, activation="swiglu")
    assert ff.hidden_features == 256 and ff.fc1.out_features == 512 and ff.fc2.in_features == 256
    assert FeedForward(768, activation="swiglu").hidden_features == 2048
    assert FeedForward(100, activation="swiglu", multiple_of=8).hidden_features == 272
    # explicit widths are used as given
    assert FeedForward(64, hidden_features=100, activation="swiglu").fc1.out_features == 200
    assert FeedForward(64, hidden_features=100).fc1.out_features == 100


def test_state_dict_keys_match_gated_mlp():
    ff = FeedForward(32, activation="swiglu")
    shapes = {k: tuple(v.shape) for k, v in ff.state_dict().items()}
    assert shapes == {"fc1.weight": (256, 32), "fc1.bias": (256,), "fc2.weight": (32, 128), "fc2.bias": (32,)}
    assert set(FeedForward(32, bias=False).state_dict()) == {"fc1.weight", "fc2.weight"}
    # a GatedMLP-style state dict ([x, gate] rows of fc1) loads and computes x * silu(gate)
    torch.manual_seed(1)
    sd = {"fc1.weight": torch.randn(256, 32), "fc2.weight": torch.randn(32, 128)}
    ff = FeedForward(32, activation="swiglu", bias=False)
    ff.load_state_dict(sd)
    x = torch.randn(4, 32)
    y, gate = (x @ sd["fc1.weight"].T).chunk(2, dim=-1)
    torch.testing.assert_close(ff(x), (y * torch.nn.functional.silu(gate)) @ sd["fc2.weight"].T)


def test_extra_repr_and_factory_kwargs():
    ff = FeedForward(16, activation="swiglu", dtype=torch.float64)
    assert "d_model=16" in repr(ff) and "hidden_features=128" in repr(ff) and "'swiglu'" in repr(ff)
    assert ff.fc1.weight.dtype == torch.float64


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_compile_fullgraph_forward_backward(activation):
    torch.manual_seed(0)
    ff = FeedForward(16, hidden_features=24, activation=activation)
    x = torch.randn(2, 5, 16, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(ff, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), [x] + list(ff.parameters()))
    ref = ff(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x] + list(ff.parameters()))
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_bf16_forward_matches_fp32(activation):
    torch.manual_seed(0)
    ff = FeedForward(64, activation=activation)
    x = torch.randn(2, 9, 64)
    ref = ff(x)
    out = ff.bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(d_model=8, activation="relu"), ValueError, r"activation must be one of"),
    (dict(d_model=0), ValueError, r"d_model must be a positive integer"),
    (dict(d_model=8, hidden_features=0), ValueError, r"hidden_features must be a positive integer"),
    (dict(d_model=8, activation="swiglu", multiple_of=0), ValueError, r"multiple_of must be a positive integer"),
])
def test_bad_arguments_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        FeedForward(**kwargs)


def test_bad_input_is_named():
    ff = FeedForward(8)
    with pytest.raises(ValueError, match=r"x: expected \(\.\.\., d_model=8\); got shape \(2, 7\)"):
        ff(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        ff(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        ff([[1.0] * 8])


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_backward_keeps_fc1_output_not_the_activation(activation):
    """The activation is recomputed in the backward: saved are x (fc1), fc1's output and fc2's weight."""
    torch.manual_seed(0)
    ff = FeedForward(8, hidden_features=16, activation=activation)
    x = torch.randn(3, 5, 8, requires_grad=True)
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        ff(x)
    fc1_out = (3, 5, 32 if activation == "swiglu" else 16)
    # fc1 keeps x (flattened) and its weight (transposed view); fc2's autograd keeps fc1's output and its weight.
    assert sorted(shapes) == sorted([(15, 8), (8, fc1_out[-1]), fc1_out, (8, 16)])


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_inference_activates_in_place_with_the_same_result(activation):
    torch.manual_seed(0)
    ff = FeedForward(24, hidden_features=40, activation=activation).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    with torch.no_grad():
        out = ff(x)
    torch.testing.assert_close(out, manual(ff, x), rtol=1e-12, atol=1e-12)
