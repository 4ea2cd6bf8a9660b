"""SelfAttention (full and local-window) against an explicit L x L reference."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from smdim_kernels.modules.attention import SelfAttention, local_attention, local_block_size

FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu"
FLASH_BWD = "aten::_scaled_dot_product_flash_attention_for_cpu_backward"
MATH = "aten::_scaled_dot_product_attention_math"


def window_mask(L, window, causal):
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    keep = torch.ones(L, L, dtype=torch.bool)
    if causal:
        keep &= i >= j
    if window is not None:
        keep &= (i - j).abs() <= window
    return keep


def naive_core(qkv, window, causal):
    """qkv: (batch, L, 3, heads, head_dim) -> (batch, L, heads * head_dim), softmax(q k^T / sqrt(hd)) v."""
    batch, L, _, heads, head_dim = qkv.shape
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    scores = scores.masked_fill(~window_mask(L, window, causal), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, L, heads * head_dim)


def naive(m, x):
    batch, L, d = x.shape
    qkv = (x @ m.in_proj.weight.T + m.in_proj.bias).view(batch, L, 3, m.num_heads, d // m.num_heads)
    return naive_core(qkv, m.window, m.causal) @ m.out_proj.weight.T + m.out_proj.bias


def outputs_and_grads(fn, m, x, seed=5):
    out = fn(x)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad((out * go).sum(), [x] + list(m.parameters()))
    return out.detach(), grads


def make(L, window, causal, heads, dtype=torch.float64, d_model=16, batch=2, seed=0):
    torch.manual_seed(seed)
    m = SelfAttention(d_model, heads, causal=causal, window=window).to(dtype)
    x = torch.randn(batch, L, d_model, dtype=dtype, requires_grad=True)
    return m, x


def assert_matches_reference(m, x, tol):
    out, grads = outputs_and_grads(m, m, x)
    ref, ref_grads = outputs_and_grads(lambda t: naive(m, t), m, x)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol * max(1.0, r.abs().max().item()))


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, 1, 5, 64, 1000])
@pytest.mark.parametrize("L", [1, 7, 129, 300])
def test_fp64_matches_reference(L, window, causal, heads):
    m, x = make(L, window, causal, heads)
    assert_matches_reference(m, x, 1e-10)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, 3, 64])
@pytest.mark.parametrize("L", [129, 300])
def test_fp32_matches_fp64_reference(L, window, causal):
    m, x = make(L, window, causal, 4, dtype=torch.float32)
    out, grads = outputs_and_grads(m, m, x)
    m64, x64 = m.double(), x.detach().double().requires_grad_(True)
    ref, ref_grads = outputs_and_grads(lambda t: naive(m64, t), m64, x64)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-5 * max(1.0, r.abs().max().item()))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block, window, L", [(1, 1, 10), (3, 7, 50), (8, 20, 45), (16, 4, 33), (64, 2, 5)])
def test_local_attention_any_block_size(block, window, L, causal):
    """Blocks smaller or larger than the window, L not a multiple of the block, one block only."""
    torch.manual_seed(0)
    qkv = torch.randn(3, L, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    out = local_attention(qkv, window, causal, block=block)
    ref = naive_core(qkv, window, causal)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    go = torch.randn(out.shape, dtype=torch.float64)
    (g,) = torch.autograd.grad((out * go).sum(), qkv)
    (r,) = torch.autograd.grad((ref * go).sum(), qkv)
    torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_window_at_least_length_is_exactly_full_attention():
    for causal in (False, True):
        m, x = make(40, None, causal, 4)
        full = m(x)
        for window in (39, 40, 1000):
            m.window = window
            assert torch.equal(m(x), full)
        m.window = 38
        assert not torch.equal(m(x), full)


def sdpa_ops(m, x):
    with profile() as prof:
        m(x).sum().backward()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_full_attention_runs_unmasked_flash_kernel(causal, train, monkeypatch):
    m, x = make(96, None, causal, 4, dtype=torch.float32)
    m.train(train)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    ops = sdpa_ops(m, x)
    assert len(calls) == 1 and calls[0].get("attn_mask") is None and calls[0]["is_causal"] == causal
    assert calls[0]["dropout_p"] == 0.0
    assert FLASH in ops and FLASH_BWD in ops and MATH not in ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_runs_masked_flash_kernel(causal, dtype):
    """torch 2.13's CPU flash kernel takes the (n_blocks, 1, block, span) mask and strided k/v."""
    m, x = make(300, 16, causal, 4, dtype=dtype)
    ops = sdpa_ops(m, x)
    assert FLASH in ops and FLASH_BWD in ops and MATH not in ops


def test_dropout_only_in_training_and_keeps_the_window():
    m, x = make(64, 4, True, 2, dtype=torch.float32)
    m.dropout = 0.5
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    out = m(x)
    assert not torch.allclose(out, m.eval()(x))
    # with dropout the causal window still holds: output 20 depends on inputs 16..20 only
    m.train()
    (g,) = torch.autograd.grad(out[:, 20].sum(), x)
    touched = g.abs().sum((0, 2)).nonzero().flatten().tolist()
    assert set(touched) <= set(range(16, 21))


def allocated_bytes(m, x):
    """(sum of all allocations, largest single allocation) over a forward + backward."""
    with profile(profile_memory=True) as prof:
        m(x).sum().backward()
    sizes = [e.self_cpu_memory_usage for e in prof.events() if e.name != "[memory]"]
    return sum(s for s in sizes if s > 0), max(sizes)


def test_local_attention_memory_is_linear_in_length():
    torch.manual_seed(0)
    m = SelfAttention(64, 4, window=32)
    long_total, long_biggest = allocated_bytes(m, torch.randn(1, 16384, 64, requires_grad=True))
    short_total, _ = allocated_bytes(m, torch.randn(1, 4096, 64, requires_grad=True))
    square = 16384 * 16384 * 4  # one fp32 L x L score matrix: 1 GiB
    # everything allocated over forward + backward (an upper bound of the peak) is ~150 MB
    assert long_total < square / 4 and long_biggest < square / 32
    assert long_total / short_total < 5  # 4x the length: 4x the memory, not 16x


def test_bf16_forward_matches_fp32():
    for window in (None, 8):
        m, x = make(100, window, False, 4, dtype=torch.float32, d_model=64)
        ref = m(x).detach()
        out = m.bfloat16()(x.detach().bfloat16())
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2 * ref.abs().max().item())


@pytest.mark.parametrize("window", [None, 5])
def test_compile_fullgraph_aot_eager_forward_backward(window):
    m, x = make(50, window, False, 4, dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out, grads = outputs_and_grads(compiled, m, x)
    ref, ref_grads = outputs_and_grads(m, m, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_compile_inductor_forward():
    m, x = make(50, 5, True, 4, dtype=torch.float32)
    x = x.detach()
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(m, fullgraph=True)(x)
    torch.testing.assert_close(out, m(x), rtol=1e-5, atol=1e-5)


def test_parameters_repr_and_block_size():
    m = SelfAttention(32, 4, causal=True, window=7, bias=False, dtype=torch.float64)
    assert set(m.state_dict()) == {"in_proj.weight", "out_proj.weight"}
    assert m.in_proj.weight.shape == (96, 32) and m.in_proj.weight.dtype == torch.float64
    text = repr(m)
    for part in ("d_model=32", "num_heads=4", "causal=True", "window=7", "dropout=0.0"):
        assert part in text
    assert [local_block_size(w) for w in (1, 128, 256, 512, 4096)] == [32, 32, 32, 64, 128]


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(d_model=30, num_heads=4), ValueError, r"d_model must be divisible by num_heads"),
    (dict(d_model=32, num_heads=0), ValueError, r"num_heads must be a positive integer"),
    (dict(d_model=32, num_heads=4, window=0), ValueError, r"window must be >= 1"),
    (dict(d_model=32, num_heads=4, window=2.5), TypeError, r"window must be an int or None"),
    (dict(d_model=32, num_heads=4, window=True), TypeError, r"window must be an int or None"),
    (dict(d_model=32, num_heads=4, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
])
def test_bad_arguments_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        SelfAttention(**kwargs)


def test_bad_input_is_named():
    m = SelfAttention(8, 2)
    with pytest.raises(ValueError, match=r"x: expected \(batch, L, d_model=8\); got shape \(5, 8\)"):
        m(torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"got shape \(1, 5, 9\)"):
        m(torch.randn(1, 5, 9))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        m("x")


# --- the grouped local path: several SDPA calls, a backward one group at a time ----------------

import smdim_kernels.ops.local_attention.blocked as local_attention_op  # noqa: E402
import smdim_kernels.ops.local_attention.layout as local_layout  # noqa: E402


@pytest.mark.parametrize("group_queries", [1, 40, 64])
@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_in_several_groups(monkeypatch, group_queries, causal):
    """Groups of 1, 2 (not a divisor of the block count) and 4 blocks: same values and gradients."""
    monkeypatch.setattr(local_layout, "GROUP_QUERIES", group_queries)
    torch.manual_seed(0)
    qkv = torch.randn(2, 150, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    out = local_attention(qkv, 9, causal, block=16)
    ref = naive_core(qkv, 9, causal)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    go = torch.randn(out.shape, dtype=torch.float64)
    (g,) = torch.autograd.grad((out * go).sum(), qkv)
    (r,) = torch.autograd.grad((ref * go).sum(), qkv)
    torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_backward_without_the_cpu_flash_kernel(monkeypatch, causal):
    """Devices other than CPU: SDPA forward, scores recomputed in the backward (forced here on CPU)."""
    monkeypatch.setattr(local_layout, "GROUP_QUERIES", 32)
    monkeypatch.setattr(local_attention_op, "uses_cpu_flash", lambda device: False)
    m, x = make(100, 7, causal, 2)
    with profile() as prof:
        out, grads = outputs_and_grads(m, m, x)
    assert FLASH_BWD not in {e.name for e in prof.events()}
    ref, ref_grads = outputs_and_grads(lambda t: naive(m, t), m, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
def test_inference_projects_straight_into_the_buffer(bias):
    """Batch 1 without autograd: in_proj writes into the padded buffer (no separate qkv); same result."""
    torch.manual_seed(0)
    m = SelfAttention(16, 4, window=5, bias=bias).double()
    x = torch.randn(1, 40, 16, dtype=torch.float64)
    with torch.no_grad(), profile() as prof:
        out = m(x)
    ops = {e.name for e in prof.events()}
    assert ("aten::addmm" if bias else "aten::mm") in ops and "aten::cat" not in ops
    qkv = x @ m.in_proj.weight.T + (0 if m.in_proj.bias is None else m.in_proj.bias)
    ref = naive_core(qkv.view(1, 40, 3, 4, 4), 5, False) @ m.out_proj.weight.T
    torch.testing.assert_close(out, ref if m.out_proj.bias is None else ref + m.out_proj.bias, rtol=1e-12, atol=1e-12)


def test_dropout_path_still_trains():
    torch.manual_seed(0)
    m = SelfAttention(16, 2, window=4, dropout=0.5).double().train()
    x = torch.randn(2, 30, 16, dtype=torch.float64, requires_grad=True)
    out = m(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    m.eval()
    torch.testing.assert_close(m(x), naive(m, x), rtol=1e-10, atol=1e-10)


def test_local_backward_keeps_no_per_span_gradients():
    """One SDPA call over overlapping key views would make key/value gradients of
    (n_blocks, heads, span, head_dim): span/block = 9x the keys here. The grouped backward's largest
    allocation stays a small multiple of qkv."""
    torch.manual_seed(0)
    m = SelfAttention(64, 4, window=128)
    x = torch.randn(1, 4096, 64, requires_grad=True)
    qkv_bytes = 4096 * 3 * 64 * 4
    _, biggest = allocated_bytes(m, x)
    assert biggest <= 1.5 * qkv_bytes


def test_compile_fullgraph_inference_batch_one():
    """The batch-1 inference path (in_proj written into the buffer with out=) compiles without a break."""
    torch.manual_seed(0)
    m = SelfAttention(32, 4, window=5)
    x = torch.randn(1, 40, 32)
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
        torch.testing.assert_close(out, m(x), rtol=1e-6, atol=1e-6)
