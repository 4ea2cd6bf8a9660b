"""Blocked local-window attention (smdim::local_attention_fwd / _bwd) against the masked-SDPA reference."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import smdim_kernels  # noqa: F401  (registers the CPU SDPA flop formulas the FLOP test compares with)
import smdim_kernels.ops.local_attention.blocked as local_attention_op
import smdim_kernels.ops.local_attention.layout as local_layout
from smdim_kernels.ops.local_attention import local_attention, local_attention_ref, local_block_size
from smdim_kernels.ops.local_attention.layout import LocalLayout, projected_buffer, qkv_buffer

ops = torch.ops.smdim


def make(batch=3, L=45, heads=3, head_dim=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, L, 3, heads, head_dim, generator=gen, dtype=dtype).requires_grad_(True)


def out_and_grad(fn, qkv, *args, **kwargs):
    out = fn(qkv, *args, **kwargs)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(out.dtype)
    (grad,) = torch.autograd.grad((out * go).sum(), qkv)
    return out.detach(), grad


def assert_matches(fn_result, ref_result, tol):
    (out, grad), (ref, ref_grad) = fn_result, ref_result
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(grad, ref_grad, rtol=tol, atol=tol * max(1.0, ref_grad.abs().max().item()))


def buffer_args(qkv, window, causal, block):
    """The op's arguments for qkv: a leaf buffer and the layout's ints."""
    layout = LocalLayout(qkv.shape[1], window, causal, block)
    buf = qkv_buffer(qkv.detach(), layout).requires_grad_(qkv.requires_grad)
    return buf, layout.length, window, causal, block


def test_reference_is_the_windowed_softmax():
    """The oracle itself against softmax(q k^T / sqrt(d)) v with |i - j| <= w written out."""
    qkv = make(batch=2, L=11, heads=2, head_dim=4)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    i, j = torch.arange(11)[:, None], torch.arange(11)[None, :]
    for causal, keep in ((False, (i - j).abs() <= 3), (True, (i - j >= 0) & (i - j <= 3))):
        scores = (q @ k.transpose(-1, -2) / math.sqrt(4)).masked_fill(~keep, float("-inf"))
        expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 11, 8)
        torch.testing.assert_close(local_attention_ref(qkv, 3, causal), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L, window, block", [
    (1, 1, None),     # one query, one block
    (7, 3, None),     # one block, padded
    (45, 4, 8),       # L not a multiple of the block
    (45, 20, 16),     # window wider than the block
    (50, 2, 64),      # block wider than L
    (150, 9, None),   # default block 32: 5 blocks in two groups (4 + 1)
    (37, 100, None),  # window beyond L: every key
    (13, 0, 4),       # window 0: the diagonal only
])
def test_matches_reference(L, window, block, causal):
    qkv = make(L=L)
    assert_matches(out_and_grad(local_attention, qkv, window, causal, block=block),
                   out_and_grad(local_attention_ref, qkv, window, causal), 1e-12)


@pytest.mark.parametrize("group_queries", [1, 40])
@pytest.mark.parametrize("flash", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_groups_and_the_path_without_cpu_flash(monkeypatch, group_queries, flash, causal):
    """Groups of 1 and 2 blocks (2 does not divide the 10 blocks); CPU flash kernels or, as on other
    devices, SDPA forward with the backward's scores recomputed (forced here on CPU)."""
    monkeypatch.setattr(local_layout, "GROUP_QUERIES", group_queries)
    monkeypatch.setattr(local_attention_op, "uses_cpu_flash", lambda device: flash)
    qkv = make(L=150)
    assert_matches(out_and_grad(local_attention, qkv, 9, causal, block=16),
                   out_and_grad(local_attention_ref, qkv, 9, causal), 1e-12)
    _, lse = ops.local_attention_fwd(*buffer_args(qkv, 9, causal, 16))
    assert lse.shape == ((10, 9, 16) if flash else (0,))


@pytest.mark.parametrize("causal", [False, True])
def test_fp32_matches_fp64_reference_and_bf16_forward(causal):
    qkv64 = make(L=130, heads=4, head_dim=8)
    ref, ref_grad = out_and_grad(local_attention_ref, qkv64, 7, causal)
    qkv32 = qkv64.detach().float().requires_grad_(True)
    out, grad = out_and_grad(local_attention, qkv32, 7, causal)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-5 * ref_grad.abs().max().item())
    out16 = local_attention(qkv64.detach().bfloat16(), 7, causal)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.double(), ref, rtol=3e-2, atol=3e-2 * ref.abs().max().item())
    for dtype, lse_dtype in ((torch.bfloat16, torch.float32), (torch.float32, torch.float32),
                             (torch.float64, torch.float64)):  # the flash kernel's accumulation dtype
        _, lse = ops.local_attention_fwd(*buffer_args(qkv64.detach().to(dtype), 7, causal, 32))
        assert lse.dtype == lse_dtype


def test_dropout_drops_within_the_window():
    """dropout_p > 0: one SDPA call with plain autograd; outputs change, the window still holds."""
    qkv = make(batch=2, L=64, heads=2, head_dim=4, dtype=torch.float32)
    torch.manual_seed(0)
    dropped = local_attention(qkv, 4, True, dropout_p=0.5)
    torch.manual_seed(0)
    assert torch.equal(local_attention(qkv, 4, True, dropout_p=0.5), dropped)  # the seed decides
    assert not torch.allclose(dropped, local_attention(qkv, 4, True))
    (grad,) = torch.autograd.grad(dropped[:, 20].sum(), qkv)
    touched = grad.abs().sum((0, 2, 3, 4)).nonzero().flatten().tolist()
    assert touched and set(touched) <= set(range(16, 21))


@pytest.mark.parametrize("flash", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_fp64_gradcheck(monkeypatch, flash, causal):
    monkeypatch.setattr(local_layout, "GROUP_QUERIES", 8)  # blocks of 4: two per group, three groups
    monkeypatch.setattr(local_attention_op, "uses_cpu_flash", lambda device: flash)
    qkv = make(batch=1, L=21, heads=2, head_dim=3)
    assert torch.autograd.gradcheck(lambda t: local_attention(t, 3, causal, block=4), (qkv,))


@pytest.mark.parametrize("flash", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_opcheck(monkeypatch, flash, causal):
    monkeypatch.setattr(local_attention_op, "uses_cpu_flash", lambda device: flash)
    args = buffer_args(make(batch=2, L=19, heads=2, head_dim=4), 3, causal, 8)
    torch.library.opcheck(ops.local_attention_fwd.default, args)
    out, lse = ops.local_attention_fwd(*args)
    dout = torch.randn_like(out)
    torch.library.opcheck(ops.local_attention_bwd.default, (dout, args[0].detach(), out.detach(), lse) + args[1:])


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_forward_backward(dynamic):
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: local_attention(t, 5, True), fullgraph=True, backend="aot_eager",
                             dynamic=dynamic)
    for L in (37, 50):  # with dynamic shapes, one graph for both lengths
        qkv = make(batch=2, L=L, heads=2, head_dim=4, dtype=torch.float32)
        assert_matches(out_and_grad(compiled, qkv), out_and_grad(local_attention, qkv, 5, True), 1e-6)


def test_flop_formulas_count_the_blocks_spans():
    """FlopCounterMode cannot look inside the op: its formulas give what the SDPA calls inside run,
    4 * n_blocks * batch*heads * block * span * head_dim forward and 2.5x that backward."""
    qkv = make(batch=2, L=45, heads=3, head_dim=5, dtype=torch.float32)
    with FlopCounterMode(display=False) as counter:
        local_attention(qkv, 4, False, block=8).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    forward = 4 * 6 * (2 * 3) * 8 * (8 + 2 * 4) * 5  # 6 blocks of 8 queries, spans of 16 keys
    assert counts[ops.local_attention_fwd] == forward
    assert counts[ops.local_attention_bwd] == 2.5 * forward
    buf, *ints = buffer_args(qkv.detach(), 4, False, 8)
    layout = LocalLayout(*ints)
    with FlopCounterMode(display=False) as inside:  # the same work as plain SDPA calls, one per group
        for b0, b1 in layout.groups():
            q, k, v, mask = local_layout.group_inputs(buf[layout.rows(b0, b1)], layout, b0, b1)
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert inside.get_total_flops() == forward


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L, window, block", [(1, 1, 32), (45, 4, 8), (64, 5, 32), (10, 30, 4)])
def test_layout_buffer_ends_with_the_last_span(L, window, block, causal):
    layout = LocalLayout(L, window, causal, block)
    qkv = make(batch=1, L=L, heads=2, head_dim=3)
    buf = qkv_buffer(qkv.detach(), layout)
    assert buf.shape == (layout.time, 3, 2, 3) and layout.time == window + L + layout.back
    assert layout.rows(*layout.groups()[-1]).stop == layout.time  # the last key span ends on the last row
    assert torch.equal(buf[window:window + L], qkv.detach()[0])  # batch 1: qkv's own rows
    assert not buf[:window].any() and not buf[window + L:].any()
    weight, bias = torch.randn(18, 6, dtype=torch.float64), torch.randn(18, dtype=torch.float64)
    x = torch.randn(1, L, 6, dtype=torch.float64)
    expected = qkv_buffer((x @ weight.T + bias).view(1, L, 3, 2, 3), layout)
    torch.testing.assert_close(projected_buffer(x, weight, bias, 2, layout), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, block, span", [(1, 4, 4), (3, 4, 12), (5, 8, 13), (4, 32, 96), (2, 16, 7)])
def test_fold_spans_is_the_adjoint_of_the_overlapping_view(n, block, span):
    """fold_spans adds the spans' gradient where aten's unfold_backward puts it, into a strided view of
    the buffer (one of qkv's three planes), leaving what was there and the other planes."""
    gen = torch.Generator().manual_seed(n * 100 + span)
    time, bh, head_dim = (n - 1) * block + span, 3, 5
    buf = torch.randn(time, 3, bh, head_dim, generator=gen, dtype=torch.float64)
    grad = torch.randn(n, bh, span, head_dim, generator=gen, dtype=torch.float64)
    expected = buf.clone()
    expected[:, 1] += torch.ops.aten.unfold_backward(grad.transpose(-1, -2), [time, bh, head_dim], 0, span, block)
    local_layout.fold_spans(buf[:, 1], grad, block)
    torch.testing.assert_close(buf, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L, window, block", [(45, 4, 8), (300, 32, 32), (50, 20, 16), (7, 3, 32)])
def test_group_masks_are_cached_local_masks(monkeypatch, L, window, block, causal):
    """Every group's cached mask (bool and additive) equals local_mask of its blocks; the interior
    groups of any length share one entry; a mask first made under inference_mode is a plain tensor."""
    monkeypatch.setattr(local_layout, "GROUP_QUERIES", 2 * block)  # groups of two blocks
    local_layout._cached_mask.cache_clear()
    layout = LocalLayout(L, window, causal, block)
    for b0, b1 in layout.groups():
        expected = local_layout.local_mask(b0, b1 - b0, block, layout.span, window, causal, L, torch.device("cpu"))
        with torch.inference_mode():
            keep = local_layout.group_mask(layout, b0, b1, torch.device("cpu"))
        assert not keep.is_inference() and torch.equal(keep, expected)
        additive = local_layout.group_mask(layout, b0, b1, torch.device("cpu"), torch.float32)
        assert additive.dtype == torch.float32 and torch.equal(additive == 0, expected)
        assert torch.equal(additive[~expected], torch.full_like(additive[~expected], float("-inf")))
    interior = [(b0, b1) for b0, b1 in layout.groups()
                if b0 * block >= window and (b1 - 1) * block + layout.span - window <= L]
    entries = local_layout._cached_mask.cache_info().currsize
    longer = LocalLayout(L + 10 * block, window, causal, block)
    for b0, b1 in interior:  # the same interior groups of a longer sequence: no new entry
        local_layout.group_mask(longer, b0, b1, torch.device("cpu"))
    assert local_layout._cached_mask.cache_info().currsize == entries
    if L == 300:
        assert len(interior) >= 2  # the case exercises sharing


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L, window", [(64, 32), (40, 3), (150, 32)])
def test_short_sequences_take_one_dense_call_with_the_blocked_results(L, window, causal):
    """block=None picks one masked SDPA call while L <= DENSE_SPANS key spans; its values and
    gradients equal the blocked path's (block given) and the blocked op does not run."""
    qkv = make(batch=2, L=L, heads=2, head_dim=4)
    with torch.profiler.profile() as prof:
        chosen = out_and_grad(local_attention, qkv, window, causal)
    blocked_ran = any(e.name == "smdim::local_attention_fwd" for e in prof.events())
    assert blocked_ran == (not local_layout.dense_is_cheaper(L, window, causal))
    assert_matches(chosen, out_and_grad(local_attention, qkv, window, causal, block=local_block_size(window)), 1e-10)


def test_dense_choice_crosses_over_at_two_spans():
    for window, causal in ((32, False), (64, False), (32, True)):
        span = local_block_size(window) + (window if causal else 2 * window)
        assert local_layout.dense_is_cheaper(2 * span, window, causal)
        assert not local_layout.dense_is_cheaper(2 * span + 1, window, causal)


def test_block_size():
    assert [local_block_size(w) for w in (1, 128, 256, 512, 1000, 4096)] == [32, 32, 32, 64, 125, 128]


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(qkv=torch.randn(2, 5, 3, 8), window=2), ValueError, r"qkv must be \(batch, L, 3, heads, head_dim\)"),
    (dict(qkv=torch.randn(2, 5, 2, 2, 4), window=2), ValueError, r"qkv must be \(batch, L, 3, heads, head_dim\)"),
    (dict(qkv=torch.ones(2, 5, 3, 2, 4, dtype=torch.long), window=2), TypeError, r"qkv must have a floating dtype"),
    (dict(qkv="qkv", window=2), TypeError, r"qkv must be a torch.Tensor"),
    (dict(qkv=torch.randn(2, 5, 3, 2, 4), window=-1), ValueError, r"window must be an integer >= 0"),
    (dict(qkv=torch.randn(2, 5, 3, 2, 4), window=2.5), ValueError, r"window must be an integer >= 0"),
    (dict(qkv=torch.randn(2, 5, 3, 2, 4), window=2, block=0), ValueError, r"block must be a positive integer"),
    (dict(qkv=torch.randn(2, 5, 3, 2, 4), window=2, dropout_p=1.0), ValueError, r"dropout_p must be in \[0, 1\)"),
])
def test_bad_input_is_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        local_attention(**kwargs)
