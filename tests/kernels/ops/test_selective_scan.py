"""The C++ CPU selective scan against the PyTorch reference: values, gradients, options."""
import pytest
import torch

import smdim_kernels
from smdim_kernels import selective_scan_fn, selective_scan_ref
from smdim_kernels import backends

from scan_inputs import OPTION_GRID, make_problem, option_id, outputs_and_grads, problem_options, run_scan

# mamba_ssm's fp32 tolerance for out is rtol 6e-4 / atol 2e-3; the kernel is far tighter,
# so these would catch a real bug (a wrong term is O(1e-1) here).
RTOL, ATOL = 2e-5, 2e-5


def test_native_extension_is_loaded():
    assert backends.native_available(), f"C++ extension missing: {backends.native_unavailable_reason()}"
    assert backends.cpu_isa() in ("generic", "avx2", "avx512")
    info = smdim_kernels.backend_info()["selective_scan"]
    assert info["cpu"].startswith("C++")


def assert_matches_reference(p, delta_softplus=True, reverse=False, rtol=RTOL, atol=ATOL):
    p.requires_grad_()
    out, last, grads = outputs_and_grads(selective_scan_fn, p, delta_softplus, reverse)
    ref_out, ref_last, ref_grads = outputs_and_grads(selective_scan_ref, p, delta_softplus, reverse)
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
    torch.testing.assert_close(last, ref_last, rtol=rtol, atol=atol)
    for name, ref_grad in ref_grads.items():
        scale = ref_grad.abs().max().item() + 1e-12
        torch.testing.assert_close(grads[name], ref_grad, rtol=rtol, atol=atol * scale,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


BC_LAYOUTS = [  # (B kind, C kind, groups)
    ("const", "const", 1),
    ("var3", "var3", 1),
    ("var4", "var4", 3),
    ("var4", "const", 2),
    ("const", "var4", 2),
]


@pytest.mark.parametrize("length", [1, 7, 129, 2049])
@pytest.mark.parametrize("bc", BC_LAYOUTS, ids=lambda bc: "-".join(map(str, bc)))
@pytest.mark.parametrize("reverse", [False, True])
def test_all_layouts_and_lengths(length, bc, reverse):
    B_kind, C_kind, groups = bc
    dim = 18 if length > 1000 else 36  # 18 / 36 channels: partial SIMD blocks in every group
    p = make_problem(batch=2, dim=dim, length=length, dstate=16, B_kind=B_kind, C_kind=C_kind,
                     groups=groups, seq_idx=length > 1, seed=length)
    assert_matches_reference(p, reverse=reverse)


@pytest.mark.parametrize("options", OPTION_GRID, ids=option_id)
def test_every_option_combination(options):
    flags, softplus = problem_options(options)
    p = make_problem(batch=2, dim=20, length=70, dstate=5, groups=2, seed=sum(options), **flags)
    assert_matches_reference(p, delta_softplus=softplus, reverse=bool(sum(options) % 2))


@pytest.mark.parametrize("dstate", [1, 3, 16, 17, 64, 256])
def test_state_sizes(dstate):
    p = make_problem(batch=1, dim=9, length=67, dstate=dstate, groups=3, seq_idx=True, seed=dstate)
    assert_matches_reference(p)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_fp32(dtype):
    p = make_problem(batch=2, dim=24, length=100, dstate=8, dtype=dtype)
    out, last = run_scan(selective_scan_fn, p)
    # The reference upcasts the same half inputs to fp32, as the kernel does.
    ref_out, ref_last = run_scan(selective_scan_ref, p)
    assert out.dtype == dtype and last.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref_out.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(last, ref_last, rtol=1e-4, atol=1e-4)
    p.requires_grad_()
    _, _, grads = outputs_and_grads(selective_scan_fn, p)
    _, _, ref_grads = outputs_and_grads(selective_scan_ref, p)
    for name, ref_grad in ref_grads.items():
        assert grads[name].dtype == dtype
        torch.testing.assert_close(grads[name].float(), ref_grad.float(), rtol=2e-2,
                                   atol=2e-2 * ref_grad.abs().max().item())


def test_non_contiguous_inputs():
    p = make_problem(batch=2, dim=12, length=40, dstate=4, groups=2, seq_idx=True)
    base = run_scan(selective_scan_fn, p)

    def strided(t):  # same values, transposed storage
        return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 else t[::1]

    for name in ["u", "delta", "A", "B", "C", "z", "initial_state", "seq_idx"]:
        setattr(p, name, strided(getattr(p, name)))
    assert not p.u.is_contiguous() and not p.B.is_contiguous()
    out = run_scan(selective_scan_fn, p)
    torch.testing.assert_close(out[0], base[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1], base[1], rtol=0, atol=0)


def test_fp64_gradcheck_all_inputs():
    for reverse, B_kind in [(False, "var4"), (True, "const")]:
        p = make_problem(batch=2, dim=6, length=9, dstate=3, B_kind=B_kind, C_kind="var4", groups=2,
                         seq_idx=True, dtype=torch.float64, seed=7)
        p.requires_grad_()
        names, tensors = zip(*p.differentiable())

        def f(*ts, names=names, reverse=reverse, p=p):
            kw = dict(zip(names, ts))
            return selective_scan_fn(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"],
                                     kw["delta_bias"], True, True, initial_state=kw["initial_state"],
                                     reverse=reverse, seq_idx=p.seq_idx)

        assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_opcheck_forward_and_backward_ops():
    for kwargs in [dict(), dict(B_kind="const", C_kind="var3", D=False, z=False, seq_idx=True)]:
        p = make_problem(batch=2, dim=8, length=70, dstate=4, **kwargs)
        p.requires_grad_()
        args = (p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, True, p.initial_state, p.seq_idx, False, True)
        torch.library.opcheck(torch.ops.smdim.selective_scan_fwd.default, args)
        inference_args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args[:-1]) + (False,)
        torch.library.opcheck(torch.ops.smdim.selective_scan_fwd.default, inference_args)
        with torch.no_grad():
            _, last, ckpt = torch.ops.smdim.selective_scan_fwd(*args)
        bwd_args = (torch.randn_like(p.u), torch.randn_like(last)) + args[:11] + (False, ckpt)
        bwd_args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in bwd_args)
        torch.library.opcheck(torch.ops.smdim.selective_scan_bwd.default, bwd_args)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    p = make_problem(batch=2, dim=16, length=65, dstate=8, seq_idx=True).requires_grad_()

    def step(u, delta, A, B, C, D, z, bias, h0):
        out, last = selective_scan_fn(u, delta, A, B, C, D, z, bias, True, True, initial_state=h0,
                                      seq_idx=p.seq_idx)
        return (out * out).sum() + last.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    names, tensors = zip(*p.differentiable())
    loss = compiled(*tensors)
    grads = torch.autograd.grad(loss, tensors)
    ref_loss = step(*tensors)
    ref_grads = torch.autograd.grad(ref_loss, tensors)
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_torch_compile_inductor_forward():
    torch._dynamo.reset()
    p = make_problem(batch=1, dim=8, length=33, dstate=4)
    f = torch.compile(lambda *a: selective_scan_fn(*a, delta_softplus=True) * 2, fullgraph=True)
    out = f(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias)
    ref = 2 * selective_scan_fn(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, True)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups, reverse", [(1, False), (2, True)])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_slots_of_several_channel_blocks(dtype, groups, reverse, batch):
    """More channel blocks per group than the backward's slots (dim / groups > 16 vectors; 4-16 slots
    by batch x groups), so a slot's first block writes its input-dependent dB/dC rows and the next
    ones add to them."""
    p = make_problem(batch=batch, dim=600, length=70, dstate=5, groups=groups, dtype=dtype)
    assert_matches_reference(p, reverse=reverse, **({} if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)))


def test_deterministic_across_runs_and_thread_counts():
    p = make_problem(batch=2, dim=40, length=300, dstate=16, groups=2, seq_idx=True).requires_grad_()
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            results.append(outputs_and_grads(selective_scan_fn, p))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert torch.equal(other[0], results[0][0]) and torch.equal(other[1], results[0][1])
        for name in results[0][2]:
            assert torch.equal(other[2][name], results[0][2][name]), name


def test_zero_length():
    p = make_problem(batch=2, dim=4, length=0, dstate=3).requires_grad_()
    out, last = run_scan(selective_scan_fn, p)
    assert out.shape == (2, 4, 0)
    torch.testing.assert_close(last, p.initial_state.detach())
    (g,) = torch.autograd.grad(last.sum(), [p.initial_state])
    torch.testing.assert_close(g, torch.ones_like(g))
    out = selective_scan_fn(p.u, p.delta, p.A, p.B, p.C)
    assert out.shape == (2, 4, 0)


def test_nan_and_inf_propagate_without_crash():
    p = make_problem(batch=1, dim=3, length=20, dstate=4, D=False, z=False, initial_state=False)
    p.u[0, 1, 5] = float("nan")
    p.delta[0, 2, 7] = float("inf")
    out = selective_scan_fn(p.u, p.delta, p.A, p.B, p.C)
    ref = selective_scan_ref(p.u, p.delta, p.A, p.B, p.C)
    assert torch.isnan(out[0, 1, 5:]).all() and torch.isfinite(out[0, 1, :5]).all()
    assert torch.isfinite(out[0, 0]).all()
    torch.testing.assert_close(out, ref, equal_nan=True)


def test_decay_factor_is_exp_over_the_whole_float_range():
    """One step from initial_state 1 with B = 0, C = 1, N = 1 gives y = exp(delta * A): the kernel's
    exp (its own polynomial and 2^n scaling per ISA) against float64, from underflow through
    subnormals to overflow. Every channel block of 16/8/4 lanes and the scalar tail are covered."""
    x = torch.cat([torch.linspace(-110.0, 89.0, 997, dtype=torch.float64),
                   torch.tensor([-1e4, -104.0, -87.5, 0.0, -0.0, 1e-30, 88.7, 88.8, 1e4], dtype=torch.float64)])
    dim = x.numel()
    one = torch.ones(1, dim, 1)
    A = torch.ones(dim, 1)
    out, last = selective_scan_fn(torch.zeros(1, dim, 1), x.float().view(1, dim, 1), A, torch.zeros(1, 1, 1),
                                  torch.ones(1, 1, 1), return_last_state=True, initial_state=one)
    expected = torch.exp(x.float().double())  # the input as the kernel sees it (rounded to fp32)
    got = out.view(-1).double()
    fp32 = torch.finfo(torch.float32)
    normal = (expected >= fp32.tiny) & (expected <= fp32.max)
    # exp(x) = 2^(x log2 e) with x log2 e rounded to fp32: the result's relative error grows with |x|
    relative = ((got - expected) / expected)[normal].abs()
    assert (relative <= 1e-6 + 2.0 ** -23 * x.abs()[normal]).all(), float(relative.max())
    tiny = expected < fp32.tiny
    assert (got[tiny] >= 0).all() and (got[tiny] <= 2 * fp32.tiny).all()
    assert torch.isinf(got[expected > fp32.max]).all()
    torch.testing.assert_close(last.view(-1), out.view(-1))


def test_long_sequence_matches_chained_halves():
    """L = 65536: a single call equals two calls chained through last_state -> initial_state."""
    length = 65536
    p = make_problem(batch=1, dim=4, length=length, dstate=16, z=False, seq_idx=False, initial_state=False)
    out, last = selective_scan_fn(p.u, p.delta, p.A, p.B, p.C, p.D, None, p.delta_bias, True, True)
    h = length // 2 + 3
    first, mid = selective_scan_fn(p.u[..., :h], p.delta[..., :h], p.A, p.B[..., :h], p.C[..., :h], p.D,
                                   None, p.delta_bias, True, True)
    second, end = selective_scan_fn(p.u[..., h:], p.delta[..., h:], p.A, p.B[..., h:], p.C[..., h:], p.D,
                                    None, p.delta_bias, True, True, initial_state=mid)
    torch.testing.assert_close(out, torch.cat([first, second], -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, end, rtol=1e-5, atol=1e-5)
    p.requires_grad_()
    out = selective_scan_fn(p.u, p.delta, p.A, p.B, p.C, p.D, None, p.delta_bias, True)
    grads = torch.autograd.grad(out.sum(), [p.u, p.A, p.B])
    assert all(torch.isfinite(g).all() for g in grads)


def test_reverse_equals_flipped_forward():
    p = make_problem(batch=2, dim=10, length=90, dstate=4, seq_idx=True)
    rev = run_scan(selective_scan_fn, p, reverse=True)
    flip = lambda t: None if t is None else t.flip(-1)  # noqa: E731
    flipped = make_problem(batch=2, dim=10, length=90, dstate=4, seq_idx=True)
    for name in ["u", "delta", "B", "C", "z", "seq_idx"]:
        setattr(flipped, name, flip(getattr(p, name)))
    fwd = run_scan(selective_scan_fn, flipped.__class__(**{**flipped.__dict__, "A": p.A, "D": p.D,
                                                          "delta_bias": p.delta_bias,
                                                          "initial_state": p.initial_state}))
    torch.testing.assert_close(rev[0], fwd[0].flip(-1))
    torch.testing.assert_close(rev[1], fwd[1])


def test_inference_forward_skips_checkpoints():
    p = make_problem(batch=2, dim=8, length=130, dstate=4, seq_idx=True)
    args = (p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.delta_bias, True, p.initial_state, p.seq_idx, False)
    out_saved, last_saved, ckpt = torch.ops.smdim.selective_scan_fwd(*args, True)
    out, last, no_ckpt = torch.ops.smdim.selective_scan_fwd(*args, False)
    assert ckpt.shape == (2, 8, 3, 4) and no_ckpt.shape == (2, 8, 0, 4)
    assert torch.equal(out, out_saved) and torch.equal(last, last_saved)
    torch.testing.assert_close(ckpt[:, :, 0], p.initial_state)  # the state before the first chunk
    with pytest.raises(RuntimeError, match="checkpoints must be .* from a forward that saved them"):
        torch.ops.smdim.selective_scan_bwd(torch.ones_like(p.u), None, *args, no_ckpt)
