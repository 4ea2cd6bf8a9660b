"""MFABlock / MFAStack and the fused norm modules: composition, residual stream, options, errors."""
import pytest
import torch
import torch.nn.functional as F

from smdim_kernels import MFABlock, MFAStack
from smdim_kernels.modules import LayerNorm, RMSNorm


def test_layer_norm_module_matches_torch_and_returns_residual():
    torch.manual_seed(0)
    norm = LayerNorm(10, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x, r = torch.randn(3, 7, 10, dtype=torch.float64), torch.randn(3, 7, 10, dtype=torch.float64)
    out, residual = norm(x, r, prenorm=True)
    torch.testing.assert_close(residual, x + r, atol=0, rtol=0)
    torch.testing.assert_close(out, F.layer_norm(x + r, (10,), norm.weight, norm.bias, 1e-5), atol=1e-12, rtol=0)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (10,), norm.weight, norm.bias, 1e-5), atol=1e-12, rtol=0)


def test_rms_norm_module_matches_formula():
    torch.manual_seed(1)
    norm = RMSNorm(6, eps=1e-6).double()
    assert norm.bias is None
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 6, dtype=torch.float64)
    expected = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected, atol=1e-12, rtol=0)
    assert "6, eps=1e-06, bias=False" in repr(norm)


def small_block(**kwargs):
    args = dict(d_model=16, num_heads=2, d_state=4, attn_window=3)
    args.update(kwargs)
    return MFABlock(**args).double()


def randomise(module, scale=0.1):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


@pytest.mark.parametrize("residual_given", [False, True])
def test_block_is_prenorm_mamba_then_ffn_then_attention(residual_given):
    torch.manual_seed(2)
    block = small_block()
    randomise(block)
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    r = torch.randn(2, 13, 16, dtype=torch.float64) if residual_given else None

    def ln(norm, t):
        return F.layer_norm(t, (16,), norm.weight, norm.bias, norm.eps)

    r1 = x + r if residual_given else x
    h = block.mixer(ln(block.norm, r1))
    r2 = h + r1
    h = block.mlp(ln(block.norm2, r2))
    r3 = h + r2
    h = block.attn(ln(block.norm3, r3))
    out, residual = block(x, r)
    torch.testing.assert_close(out, h, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(residual, r3, atol=1e-12, rtol=1e-12)


def test_block_defaults():
    block = MFABlock(64, num_heads=4)
    assert block.mixer.bidirectional
    assert block.attn.window == 128 and not block.attn.causal
    assert block.mlp.fc1.out_features == 128  # GELU FFN of width 2 * d_model
    assert block.residual_in_fp32
    keys = set(block.state_dict())
    for key in ("norm.weight", "mixer.in_proj.weight", "mixer.conv1d_b.weight", "norm2.bias", "mlp.fc1.weight",
                "mlp.fc2.weight", "norm3.weight", "attn.in_proj.weight", "attn.out_proj.weight"):
        assert key in keys, key


def test_block_options_reach_the_sub_layers():
    block = MFABlock(32, num_heads=4, attn_window=None, ffn="swiglu", norm="rmsnorm", bidirectional=False,
                     causal=True)
    assert block.attn.window is None and block.attn.causal
    assert not block.mixer.bidirectional
    assert isinstance(block.norm, RMSNorm) and isinstance(block.norm3, RMSNorm)
    x = torch.randn(1, 9, 32)
    out, residual = block(x)
    assert out.shape == residual.shape == (1, 9, 32)
    # causal everywhere: the first output must not depend on later tokens
    x2 = x.clone()
    x2[:, 5:] += 1.0
    torch.testing.assert_close(block(x2)[0][:, :5], out[:, :5], atol=1e-6, rtol=1e-6)


def test_residual_in_fp32_keeps_the_stream_in_fp32():
    block = MFABlock(16, num_heads=2, d_state=4).bfloat16()
    out, residual = block(torch.randn(1, 8, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and residual.dtype == torch.float32


def test_stack_adds_the_last_output_in_the_final_norm():
    torch.manual_seed(3)
    stack = MFAStack(2, 16, num_heads=2, d_state=4, attn_window=4).double()
    randomise(stack)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    h, r = stack.layers[0](x)
    h, r = stack.layers[1](h, r)
    expected = F.layer_norm(h + r, (16,), stack.norm_f.weight, stack.norm_f.bias, stack.norm_f.eps)
    torch.testing.assert_close(stack(x), expected, atol=1e-12, rtol=1e-12)
    assert "layers.1.mixer.A_b_log" in stack.state_dict() and "norm_f.weight" in stack.state_dict()


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(4)
    stack = MFAStack(2, 16, num_heads=2, d_state=4, attn_window=4).double()
    x = torch.randn(1, 20, 16, dtype=torch.float64, requires_grad=True)

    def grads():
        out = stack(x)
        return torch.autograd.grad(out.square().sum(), [x] + list(stack.parameters()))

    plain = grads()
    stack.gradient_checkpointing = True
    checkpointed = grads()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_stack_torch_compile_fullgraph():
    torch.manual_seed(5)
    stack = MFAStack(2, 16, num_heads=2, d_state=4, attn_window=4).double()
    x = torch.randn(2, 15, 16, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(stack, fullgraph=True, backend="aot_eager")
    params = [x] + list(stack.parameters())
    got = torch.autograd.grad(compiled(x).square().sum(), params)
    want = torch.autograd.grad(stack(x).square().sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("make,call,error,pattern", [
    (lambda: MFABlock(16, num_heads=2), lambda m: m(torch.randn(1, 5, 8)), ValueError,
     r"hidden_states must be \(batch, L, d_model=16\); got shape \(1, 5, 8\)"),
    (lambda: MFABlock(16, num_heads=2), lambda m: m(torch.randn(1, 5, 16), torch.randn(1, 4, 16)), ValueError,
     r"residual"),
    (lambda: MFAStack(1, 16, num_heads=2), lambda m: m(torch.randn(5, 16)), ValueError,
     r"hidden_states must be \(batch, L, d_model=16\)"),
])
def test_bad_input_is_named(make, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(make())


@pytest.mark.parametrize("make,pattern", [
    (lambda: MFABlock(16, num_heads=2, norm="batchnorm"), r"norm must be one of \['layernorm', 'rmsnorm'\]"),
    (lambda: MFABlock(16, num_heads=3), r"num_heads"),
    (lambda: MFAStack(0, 16), r"n_layers must be a positive integer"),
])
def test_bad_constructor_arguments_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
