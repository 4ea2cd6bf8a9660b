"""The Triton selective scan (CUDA path) against the PyTorch reference.

Runs on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1, the default set by conftest.py before
triton is imported), or compiled on a GPU with TRITON_INTERPRET=0 in the environment. The interpreter is
slow (~1 s per program per 70 steps of forward + backward), so shapes are tiny; odd sizes (dim not
a multiple of the channel block, N not a power of two, L crossing the 64-step checkpoint chunk)
exercise the masks and the checkpointed backward.
"""
import pytest
import torch
from triton_support import DEVICE, INTERPRET

from smdim_kernels import selective_scan_ref
from smdim_kernels.ops.selective_scan import CHECKPOINT_CHUNK
from smdim_kernels.ops.selective_scan import triton as scan_triton

from scan_inputs import OPTION_GRID, make_problem, option_id, problem_options

pytestmark = pytest.mark.triton
GRAD_NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]

# Observed errors are ~1e-7 relative; a wrong term is O(1e-1). mamba_ssm's target for out is
# rtol 6e-4 / atol 2e-3, far looser.
RTOL, ATOL = 2e-5, 2e-5


def on_device(p):
    for name in GRAD_NAMES + ["seq_idx"]:
        t = getattr(p, name)
        if t is not None:
            setattr(p, name, t.to(DEVICE))
    return p


def cotangents(out, last, seed=1):
    gen = torch.Generator().manual_seed(seed)
    g_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    g_last = torch.randn(last.shape, generator=gen).to(device=last.device, dtype=last.dtype)
    return g_out, g_last


def triton_fwd(p, softplus, reverse, block_d=None):
    return scan_triton.selective_scan_fwd_triton(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, softplus,
                                                 p.initial_state, p.seq_idx, reverse, block_d=block_d)


def triton_bwd(p, g_out, g_last, softplus, reverse, checkpoints, block_d=None):
    grads = scan_triton.selective_scan_bwd_triton(g_out, g_last, p.u, p.delta, p.A, p.B, p.C, p.D, p.z,
                                                  p.delta_bias, softplus, p.initial_state, p.seq_idx, reverse,
                                                  checkpoints, block_d=block_d)
    return dict(zip(GRAD_NAMES, grads))


def reference(p, softplus, reverse, g_out=None, g_last=None):
    """(out, last_state, {name: grad}) of the reference; grads of <out, g_out> + <last, g_last>."""
    leaves = {n: (None if getattr(p, n) is None else getattr(p, n).detach().requires_grad_(True))
              for n in GRAD_NAMES}
    out, last = selective_scan_ref(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                   leaves["D"], leaves["z"], leaves["delta_bias"], softplus, True,
                                   initial_state=leaves["initial_state"], reverse=reverse, seq_idx=p.seq_idx)
    if g_out is None:
        return out.detach(), last.detach(), {}
    outputs, grads_out = [out], [g_out]
    if g_last is not None:
        outputs.append(last)
        grads_out.append(g_last)
    present = [n for n in GRAD_NAMES if leaves[n] is not None]
    grads = torch.autograd.grad(outputs, [leaves[n] for n in present], grads_out, allow_unused=True)
    return out.detach(), last.detach(), {n: (torch.zeros_like(leaves[n]) if g is None else g)
                                          for n, g in zip(present, grads)}


def assert_grads_close(grads, ref_grads, p, rtol=RTOL, atol=ATOL):
    for name in GRAD_NAMES:
        t = getattr(p, name)
        if t is None:
            assert grads[name].numel() == 0, f"absent {name} must get an empty gradient"
            continue
        got, ref = grads[name], ref_grads[name]
        assert got.shape == t.shape and got.dtype == t.dtype, f"gradient of {name}: {got.shape} {got.dtype}"
        scale = ref.abs().max().item() + 1e-12
        torch.testing.assert_close(got, ref, rtol=rtol, atol=atol * scale,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


def check_against_reference(p, softplus=True, reverse=False, block_d=None, rtol=RTOL, atol=ATOL):
    """Forward (out, last_state, state dtype) and every gradient, last_state's cotangent included."""
    p = on_device(p)
    out, last, ckpt = triton_fwd(p, softplus, reverse, block_d)
    g_out, g_last = cotangents(out, last)
    ref_out, ref_last, ref_grads = reference(p, softplus, reverse, g_out, g_last)
    assert out.dtype == p.u.dtype and last.dtype == ref_last.dtype == ckpt.dtype
    length = p.u.shape[2]
    assert ckpt.shape == (*p.u.shape[:2], -(-length // CHECKPOINT_CHUNK), p.A.shape[1])
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
    torch.testing.assert_close(last, ref_last, rtol=rtol, atol=atol)
    grads = triton_bwd(p, g_out, g_last, softplus, reverse, ckpt, block_d)
    assert_grads_close(grads, ref_grads, p, rtol, atol)


BC_LAYOUTS = [  # (B kind, C kind, groups)
    ("const", "const", 1),
    ("var3", "var3", 1),
    ("var4", "var4", 2),
    ("var4", "const", 2),
    ("const", "var4", 2),
]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("bc", BC_LAYOUTS, ids=lambda bc: "-".join(map(str, bc)))
@pytest.mark.parametrize("length", [1, 7, 70])
def test_layouts_and_lengths(length, bc, reverse):
    """dim 6 = 2 groups of 3 channels (a partial channel block), N = 3, batch 2 (batch reductions)."""
    B_kind, C_kind, groups = bc
    p = make_problem(batch=2, dim=6, length=length, dstate=3, B_kind=B_kind, C_kind=C_kind, groups=groups,
                     seq_idx=length > 1, seed=length)
    check_against_reference(p, reverse=reverse)


@pytest.mark.parametrize("options", OPTION_GRID, ids=option_id)
def test_every_option_combination(options):
    """All 64 on/off combinations of D, z, delta_bias, initial_state, seq_idx and softplus."""
    flags, softplus = problem_options(options)
    p = make_problem(batch=1, dim=4, length=20, dstate=3, groups=2, seed=sum(options), **flags)
    if p.seq_idx is not None:  # make sure the state really resets inside the sequence
        p.seq_idx[:, 6:] += 1
        p.seq_idx[:, 13:] += 1
    check_against_reference(p, softplus=softplus, reverse=bool(sum(options) % 2))


@pytest.mark.parametrize("bc", [("var4", "var4", 2), ("const", "const", 1)], ids=["var-G2", "const"])
def test_several_channel_blocks_per_group(bc):
    """dim 12 in blocks of 4: partial last block (G=2: 6 channels per group), per-block dB/dC partials."""
    B_kind, C_kind, groups = bc
    p = make_problem(batch=2, dim=12, length=70, dstate=3, B_kind=B_kind, C_kind=C_kind, groups=groups,
                     seq_idx=True, seed=3)
    check_against_reference(p, reverse=groups == 2, block_d=4)


@pytest.mark.parametrize("dstate", [1, 5, 16, 17])
def test_state_sizes(dstate):
    p = make_problem(batch=1, dim=3, length=40, dstate=dstate, groups=3, seq_idx=True, seed=dstate)
    check_against_reference(p)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_checkpoints_are_states_before_each_chunk(reverse):
    """checkpoints[:, :, c] = state after c * 64 processed steps (for reverse, from the end)."""
    length = 2 * CHECKPOINT_CHUNK + 3
    p = on_device(make_problem(batch=1, dim=4, length=length, dstate=3, B_kind="var3", C_kind="const",
                               seq_idx=False, seed=5))
    _, _, ckpt = triton_fwd(p, True, reverse)
    assert ckpt.shape == (1, 4, 3, 3)
    torch.testing.assert_close(ckpt[:, :, 0], p.initial_state, rtol=0, atol=0)
    for c in (1, 2):
        steps = c * CHECKPOINT_CHUNK
        window = slice(length - steps, length) if reverse else slice(0, steps)
        B = p.B[..., window]
        _, state = selective_scan_ref(p.u[..., window], p.delta[..., window], p.A, B, p.C, p.D, p.z[..., window],
                                      p.delta_bias, True, True, initial_state=p.initial_state, reverse=reverse)
        torch.testing.assert_close(ckpt[:, :, c], state, rtol=RTOL, atol=ATOL)


def test_without_last_state_gradient():
    """dlast_state=None means no cotangent on last_state."""
    p = on_device(make_problem(batch=2, dim=4, length=20, dstate=3, groups=2, seq_idx=True, seed=7))
    out, last, ckpt = triton_fwd(p, True, False)
    g_out, _ = cotangents(out, last)
    _, _, ref_grads = reference(p, True, False, g_out, None)
    assert_grads_close(triton_bwd(p, g_out, None, True, False, ckpt), ref_grads, p)


def test_non_contiguous_inputs():
    p = on_device(make_problem(batch=2, dim=4, length=9, dstate=3, B_kind="var3", C_kind="var4", groups=1,
                               seq_idx=True, seed=8))
    for name in ("u", "delta", "z", "B", "C"):  # same values, permuted memory layout
        t = getattr(p, name)
        setattr(p, name, t.transpose(-1, -2).contiguous().transpose(-1, -2))
        assert not getattr(p, name).is_contiguous()
    p.A = p.A.t().contiguous().t()
    check_against_reference(p)


def test_backward_is_deterministic():
    p = on_device(make_problem(batch=2, dim=8, length=10, dstate=3, groups=2, seq_idx=True, seed=9))
    out, last, ckpt = triton_fwd(p, True, False, block_d=2)
    g_out, g_last = cotangents(out, last)
    first = triton_bwd(p, g_out, g_last, True, False, ckpt, block_d=2)
    second = triton_bwd(p, g_out, g_last, True, False, ckpt, block_d=2)
    for name in GRAD_NAMES:
        assert torch.equal(first[name], second[name]), name


def test_fp64_inputs_compute_in_fp64():
    p = make_problem(batch=2, dim=3, length=20, dstate=3, groups=1, seq_idx=True, dtype=torch.float64, seed=10)
    check_against_reference(p, rtol=1e-12, atol=1e-12)


def test_one_fp64_input_makes_states_fp64():
    p = make_problem(batch=1, dim=3, length=12, dstate=3, groups=1, seed=11)
    p.A = p.A.double()
    check_against_reference(p, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_fp32(dtype):
    """The reference upcasts the same half inputs to fp32, as the kernel does; outputs round once."""
    p = make_problem(batch=1, dim=8, length=70, dstate=4, groups=2, seq_idx=True, dtype=dtype, seed=12)
    check_against_reference(p, rtol=1e-2, atol=1e-2)


def test_zero_length():
    p = on_device(make_problem(batch=2, dim=3, length=0, dstate=3, groups=1, seed=13))
    out, last, ckpt = triton_fwd(p, True, False)
    assert out.shape == (2, 3, 0) and ckpt.shape == (2, 3, 0, 3)
    torch.testing.assert_close(last, p.initial_state)
    g_last = torch.randn_like(last)
    grads = triton_bwd(p, torch.zeros_like(out), g_last, True, False, ckpt)
    torch.testing.assert_close(grads["initial_state"], g_last)
    for name in ("A", "B", "C", "D", "delta_bias"):
        assert grads[name].shape == getattr(p, name).shape and not grads[name].any(), name


@pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(), reason="the op's CUDA registration needs a GPU")
def test_op_on_cuda_dispatches_to_triton():
    from smdim_kernels import selective_scan_fn

    p = on_device(make_problem(batch=2, dim=16, length=200, dstate=16, groups=2, seq_idx=True, seed=14))
    p.requires_grad_()
    out, last = selective_scan_fn(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, True, True,
                                  initial_state=p.initial_state, seq_idx=p.seq_idx)
    g_out, g_last = cotangents(out, last)
    names, tensors = zip(*p.differentiable())
    grads = dict(zip(names, torch.autograd.grad([out, last], tensors, [g_out, g_last])))
    ref_out, ref_last, ref_grads = reference(p, True, False, g_out, g_last)
    torch.testing.assert_close(out, ref_out, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(last, ref_last, rtol=RTOL, atol=ATOL)
    assert_grads_close(grads, ref_grads, p)
