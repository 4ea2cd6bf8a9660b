"""FLOP formulas (smdim_kernels.flops) for torch's FlopCounterMode and fvcore, against hand counts."""
import importlib.util
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import smdim_kernels as sk
from smdim_kernels import flops as skf
from smdim_kernels.flops import count_flops

BATCH, DIM, L, N = 2, 6, 37, 5  # odd sizes
ops = torch.ops.smdim


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def op_counts(fn, *args):
    """Run fn(*args) (forward + .sum().backward() if anything needs grad) under FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
        if out.requires_grad:
            out.sum().backward()
    return counter.get_flop_counts().get("Global", {}), counter.get_total_flops()


def fvcore_total(module, *inputs):
    pytest.importorskip("fvcore")
    report = count_flops(module, *inputs, backend="fvcore")
    assert not [op for op in report.unsupported if op.startswith("smdim::")], report.unsupported
    return report.total


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


# --- selective scan ------------------------------------------------------------------------

def scan_inputs(bc, with_D, with_z, seed=0):
    g = gen(seed)
    u = torch.randn(BATCH, DIM, L, generator=g)
    delta = 0.5 * torch.rand(BATCH, DIM, L, generator=g)
    A = -torch.rand(DIM, N, generator=g)
    shape = {"const": (DIM, N), "dep": (BATCH, N, L), "group": (BATCH, 3, N, L)}[bc]
    B, C = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    D = torch.randn(DIM, generator=g) if with_D else None
    z = torch.randn(BATCH, DIM, L, generator=g) if with_z else None
    bias = torch.rand(DIM, generator=g)
    leaves = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, z, bias) if t is not None]
    return (u, delta, A, B, C, D, z, bias), leaves


@pytest.mark.parametrize("bc", ["const", "dep", "group"])
@pytest.mark.parametrize("with_D", [False, True])
@pytest.mark.parametrize("with_z", [False, True])
def test_selective_scan(bc, with_D, with_z):
    args, _ = scan_inputs(bc, with_D, with_z)
    counts, total = op_counts(lambda *a: sk.selective_scan_fn(*a, delta_softplus=True), *args)
    fwd = 9 * 2 * 37 * 6 * 5 + (2 * 6 * 37 if with_D else 0) + (2 * 6 * 37 if with_z else 0)
    assert counts[ops.selective_scan_fwd] == fwd
    assert counts[ops.selective_scan_bwd] == 3 * fwd
    assert total == 4 * fwd
    if bc == "dep":
        u, delta, A, B, C, D, z, bias = (None if t is None else t.detach() for t in args)
        m = Fn(lambda *a: sk.selective_scan_fn(*a, delta_softplus=True))
        assert fvcore_total(m, u, delta, A, B, C, D, z, bias) == fwd // 2


def test_selective_scan_odd_count_and_state_update():
    # 9*1*5*37*5 = 8325 is odd: fvcore's half keeps the .5.
    g = gen(1)
    u, delta = torch.randn(1, 5, 37, generator=g), torch.rand(1, 5, 37, generator=g)
    A, B, C = -torch.rand(5, 5, generator=g), torch.randn(1, 5, 37, generator=g), torch.randn(1, 5, 37, generator=g)
    _, total = op_counts(sk.selective_scan_fn, u, delta, A, B, C)
    assert total == 8325
    assert fvcore_total(Fn(sk.selective_scan_fn), u, delta, A, B, C) == 4162.5
    # One decoding step is the scan at L = 1 (with D and z).
    state = torch.zeros(BATCH, DIM, N)
    x, dt, z = (torch.randn(BATCH, DIM, generator=g) for _ in range(3))
    _, total = op_counts(sk.selective_state_update, state, x, dt, -torch.rand(DIM, N, generator=g),
                         torch.randn(BATCH, N, generator=g), torch.randn(BATCH, N, generator=g),
                         torch.randn(DIM, generator=g), z)
    assert total == 9 * 2 * 6 * 5 + 2 * 6 + 2 * 6


# --- causal conv1d ---------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d(bias, activation):
    g = gen(2)
    x = torch.randn(BATCH, DIM, L, generator=g, requires_grad=True)
    w = torch.randn(DIM, 3, generator=g, requires_grad=True)
    b = torch.randn(DIM, generator=g, requires_grad=True) if bias else None
    counts, total = op_counts(lambda *a: sk.causal_conv1d_fn(*a, activation=activation), x, w, b)
    fwd = 2 * 2 * 6 * 37 * 3
    bwd = 4 * 2 * 6 * 37 * 3 + (2 * 2 * 6 * 37 * 3 if activation else 0)
    assert (counts[ops.causal_conv1d_fwd], counts[ops.causal_conv1d_bwd], total) == (fwd, bwd, fwd + bwd)
    m = Fn(lambda *a: sk.causal_conv1d_fn(*a, activation=activation))
    assert fvcore_total(m, x.detach(), w.detach(), None if b is None else b.detach()) == fwd // 2


# --- add + norm ------------------------------------------------------------------------------

@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_add_norm(rms, residual, bias):
    g = gen(3)
    shape = (3, 7, 37)
    n = 3 * 7 * 37
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(37, generator=g, requires_grad=True)
    b = torch.randn(37, generator=g, requires_grad=True) if bias else None
    r = torch.randn(*shape, generator=g, requires_grad=True) if residual else None
    fn = lambda *a: sk.add_norm_fn(*a, is_rms_norm=rms)  # noqa: E731
    counts, total = op_counts(fn, x, w, b, r)
    # forward: residual add, LayerNorm (mean, centre, square-sum 2, scale) or RMSNorm (square-sum 2,
    # scale), weight, bias
    fwd = n * ((1 if residual else 0) + (3 if rms else 5) + 1 + (1 if bias else 0))
    # backward: 12 (LayerNorm) / 9 (RMSNorm) per element, + dbias, + dresidual_out (autograd
    # always materialises it, as zeros when h is unused)
    bwd = n * ((9 if rms else 12) + (1 if bias else 0) + 1)
    assert (counts[ops.add_norm_fwd], counts[ops.add_norm_bwd], total) == (fwd, bwd, fwd + bwd)
    if residual:
        detached = [None if t is None else t.detach() for t in (x, w, b, r)]
        assert fvcore_total(Fn(fn), *detached) == fwd / 2


# --- mamba_inner ---------------------------------------------------------------------------

D_MODEL, D_INNER, D_STATE, DT_RANK, D_CONV = 7, 6, 5, 2, 4


def inner_inputs(out_proj, with_D, seed=4):
    g = gen(seed)
    t = {
        "xz": torch.randn(BATCH, 2 * D_INNER, L, generator=g),
        "conv_w": 0.5 * torch.randn(D_INNER, D_CONV, generator=g),
        "conv_b": torch.randn(D_INNER, generator=g),
        "x_proj_w": 0.3 * torch.randn(DT_RANK + 2 * D_STATE, D_INNER, generator=g),
        "dt_proj_w": 0.3 * torch.randn(D_INNER, DT_RANK, generator=g),
        "out_w": torch.randn(D_MODEL, D_INNER, generator=g) if out_proj else None,
        "out_b": torch.randn(D_MODEL, generator=g) if out_proj else None,
        "A": -torch.rand(D_INNER, D_STATE, generator=g),
        "D": torch.randn(D_INNER, generator=g) if with_D else None,
        "dt_b": torch.rand(D_INNER, generator=g),
    }
    for v in t.values():
        if v is not None:
            v.requires_grad_(True)
    return t


def fused(t, checkpoint_lvl=1):
    return sk.mamba_inner_fn(t["xz"], t["conv_w"], t["conv_b"], t["x_proj_w"], t["dt_proj_w"], t["out_w"],
                             t["out_b"], t["A"], None, None, t["D"], delta_bias=t["dt_b"], delta_softplus=True,
                             checkpoint_lvl=checkpoint_lvl)


def parts(t):
    """The same maths as separate public ops (nothing recomputed in backward)."""
    x, z = t["xz"].chunk(2, dim=1)
    u = sk.causal_conv1d_fn(x, t["conv_w"], t["conv_b"], "silu")
    x_dbl = F.linear(u.transpose(1, 2), t["x_proj_w"])
    dt, B, C = x_dbl.split([DT_RANK, D_STATE, D_STATE], dim=-1)
    delta = torch.matmul(t["dt_proj_w"], dt.transpose(1, 2))
    y = sk.selective_scan_fn(u, delta, t["A"], B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                             t["D"], z, t["dt_b"], delta_softplus=True)
    return y if t["out_w"] is None else F.linear(y.transpose(1, 2), t["out_w"], t["out_b"])


@pytest.mark.parametrize("out_proj", [False, True])
@pytest.mark.parametrize("with_D", [False, True])
def test_mamba_inner_is_the_sum_of_its_parts(out_proj, with_D):
    b, length, d, n, r, w, m = BATCH, L, D_INNER, D_STATE, DT_RANK, D_CONV, D_MODEL
    conv = 2 * b * d * length * w
    x_proj = 2 * b * length * d * (r + 2 * n)
    dt_proj = 2 * b * length * r * d
    scan = 9 * b * length * d * n + (b * d * length if with_D else 0) + b * d * length  # z is always there
    out = 2 * b * length * d * m if out_proj else 0
    fwd = conv + x_proj + dt_proj + scan + out
    bwd_parts = 6 * b * d * length * w + 2 * (x_proj + dt_proj + out) + 3 * scan  # conv bwd recomputes (SiLU)
    recompute = conv + dt_proj  # checkpoint_lvl=1: conv output and delta

    t = inner_inputs(out_proj, with_D)
    with torch.no_grad():
        assert op_counts(fused, t)[1] == op_counts(parts, t)[1] == fwd
    counts, total = op_counts(fused, t)
    assert counts[ops.mamba_inner_fwd] == fwd and counts[ops.mamba_inner_bwd] == bwd_parts + recompute
    assert set(counts) == {ops.mamba_inner_fwd, ops.mamba_inner_bwd}  # nothing counted twice inside
    assert op_counts(lambda t: fused(t, checkpoint_lvl=0), t)[1] == op_counts(parts, t)[1] == fwd + bwd_parts
    assert total == fwd + bwd_parts + recompute
    detached = {k: None if v is None else v.detach() for k, v in t.items()}
    assert fvcore_total(Fn(fused), detached) == fwd // 2


def mamba_forward_by_hand(batch, length, d_model=32, d_state=8, d_conv=4, directions=1, z_in_scan=True):
    """z_in_scan: the unfused layer gates inside each branch's scan (B·D·L each); the fused
    mamba_mixer gates once, outside the scans (elementwise, not counted)."""
    d_inner, dt_rank = 2 * d_model, -(-d_model // 16)
    bl = batch * length
    in_proj = 2 * bl * d_model * 2 * d_inner
    branch = (2 * batch * d_inner * length * d_conv  # conv
              + 2 * bl * d_inner * (dt_rank + 2 * d_state)  # x_proj
              + 2 * bl * dt_rank * d_inner  # dt_proj
              + 9 * bl * d_inner * d_state + (1 + z_in_scan) * batch * d_inner * length)  # scan with D [and z]
    out_proj = 2 * bl * d_inner * d_model
    return in_proj + directions * branch + out_proj


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_mamba_module(fast, bidirectional):
    torch.manual_seed(0)
    m = sk.Mamba(d_model=32, d_state=8, use_fast_path=fast, bidirectional=bidirectional)
    x = torch.randn(2, 11, 32)
    expected = mamba_forward_by_hand(2, 11, directions=2 if bidirectional else 1, z_in_scan=not fast)
    report = count_flops(m, x)
    assert report.total == report.by_module[""] == expected
    assert report.convention == "2 FLOPs per multiply-add (torch.utils.flop_counter)"
    assert fvcore_total(m, x) == expected // 2


def test_count_flops_by_module_and_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), sk.Mamba(d_model=32, d_state=8), nn.Linear(32, 16))
    x = torch.randn(2, 11, 16)
    lin = 2 * 2 * 11 * 16 * 32
    mamba = mamba_forward_by_hand(2, 11, z_in_scan=False)
    report = count_flops(model, x)
    assert report.backend == "torch" and report.unsupported == {}
    assert report.by_module == {"": 2 * lin + mamba, "0": lin, "1": mamba, "2": lin}
    assert report.by_operator["smdim::mamba_mixer_fwd"] == mamba

    # Unfused, the Mamba calls its x_proj child (nested path "1.x_proj"); the total differs only by
    # the gate, counted inside the unfused scan.
    model[1].use_fast_path = False
    unfused = count_flops(model, x)
    assert unfused.by_module["1.x_proj"] == 2 * 2 * 11 * 64 * (2 + 16)
    assert unfused.by_module["1"] == mamba_forward_by_hand(2, 11) == mamba + 2 * 64 * 11
    assert unfused.total == report.total + 2 * 64 * 11
    model[1].use_fast_path = True

    bwd = count_flops(model, x, backward=True)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    assert bwd.total == counter.get_total_flops()
    # The first Linear's input needs no grad: only its weight gradient (1x), the others 2x.
    assert bwd.by_module["0"] == 2 * lin and bwd.by_module["2"] == 3 * lin
    assert bwd.by_operator["smdim::mamba_mixer_bwd"] > 2 * report.by_operator["smdim::mamba_mixer_fwd"]
    grad = torch.randn(2, 11, 16)
    assert count_flops(model, x, backward=True, grad=grad).total == bwd.total

    pytest.importorskip("fvcore")
    fv = count_flops(model, x, backend="fvcore")
    assert fv.convention == "1 per multiply-add (fvcore)" and fv.backend == "fvcore"
    assert {k: fv.by_module[k] for k in ("", "0", "1", "2")} == {"": lin + mamba // 2, "0": lin // 2,
                                                                "1": mamba // 2, "2": lin // 2}
    assert set(fv.unsupported) <= {"aten::exp", "aten::neg"}  # -exp(A_log): elementwise, uncounted


# --- CPU SDPA --------------------------------------------------------------------------------

@pytest.mark.parametrize("is_causal", [False, True])
def test_cpu_sdpa(is_causal):
    g = gen(5)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g, requires_grad=True) for _ in range(3))
    counts, total = op_counts(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), q, k, v)
    fwd = 4 * 2 * 3 * 17 * 17 * 8  # QK^T and PV; the full square also when causal (as torch's CUDA formulas)
    fwd_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    bwd_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    assert counts[fwd_op] == fwd == skf.sdpa_flops(q.shape, k.shape, v.shape)
    assert counts[bwd_op] == 2.5 * fwd == skf.sdpa_bwd_flops(q.shape, q.shape, k.shape, v.shape)
    assert total == 3.5 * fwd
    m = Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal))
    assert fvcore_total(m, q.detach(), k.detach(), v.detach()) == fwd // 2


def test_cpu_sdpa_formula_registration():
    # torch 2.13 has no formula for the CPU flash ops (they count 0); ours is registered once.
    fwd_op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(display=False)
    counter.flop_registry.pop(fwd_op)
    q = torch.randn(1, 2, 5, 4)
    with counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 0
    skf._registered = False
    skf.register_flop_formulas()  # idempotent: an existing registration is kept, no duplicate error
    skf.register_flop_formulas()
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 4 * 2 * 5 * 5 * 4


# --- fvcore specifics and errors -------------------------------------------------------------

def test_fvcore_handles_and_matmul_batch():
    pytest.importorskip("fvcore")
    handles = skf.fvcore_handles()
    for op in ("selective_scan", "causal_conv1d", "add_norm", "mamba_inner", "mamba_mixer"):
        assert {f"smdim::{op}_fwd", f"smdim::{op}_bwd"} <= set(handles)
    assert "aten::scaled_dot_product_attention" in handles
    # fvcore's own matmul handle drops the batch of (5, 7) @ (3, 7, 11); ours counts it.
    w, x = torch.randn(5, 7), torch.randn(3, 7, 11)
    assert count_flops(Fn(torch.matmul), w, x, backend="fvcore").total == 3 * 5 * 7 * 11
    assert count_flops(Fn(torch.matmul), w, x).total == 2 * 3 * 5 * 7 * 11


def test_errors(monkeypatch):
    m, x = nn.Linear(4, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="backend must be"):
        count_flops(m, x, backend="jax")
    with pytest.raises(ValueError, match="no output of the module requires grad"):
        count_flops(Fn(torch.sin), x, backward=True)
    if importlib.util.find_spec("fvcore") is not None:
        with pytest.raises(ValueError, match="forward only"):
            count_flops(m, x, backend="fvcore", backward=True)
    for name in ("fvcore", "fvcore.nn", "fvcore.nn.jit_handles"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install fvcore"):
        skf.fvcore_handles()
    with pytest.raises(ImportError, match="pip install fvcore"):
        count_flops(m, x, backend="fvcore")
    assert count_flops(m, x).total == 2 * 2 * 4 * 4  # the torch backend needs no fvcore
