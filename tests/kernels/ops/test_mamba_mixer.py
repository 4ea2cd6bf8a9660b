"""mamba_mixer_fn (the whole Mamba layer, optionally bidirectional) against its reference, in both of
its implementations (the sequence in one chunk: whole.py; in several: chunked.py): values, every
gradient, chunk-size invariance, what each saves, op checks, FLOPs, errors."""
import functools
import itertools

import pytest
import torch

import composite_checks
from smdim_kernels import mamba_mixer_fn, mamba_mixer_ref
from smdim_kernels.flops import count_flops, mamba_mixer_bwd_flops, mamba_mixer_flops

BRANCH = ("conv1d_weight", "conv1d_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A", "D")
NAMES = (("hidden_states", "in_proj_weight", "in_proj_bias") + BRANCH + ("out_proj_weight", "out_proj_bias")
         + tuple(n + "_b" for n in BRANCH))


def make_args(batch=2, d_model=5, d_inner=6, length=37, dstate=4, dt_rank=3, width=4, dtype=torch.float64,
              bidirectional=True, in_bias=True, conv_bias=True, dt_bias=True, D=True, out_bias=True, seed=0):
    """mamba_mixer_fn's tensor arguments (a dict) with leaves that require grad."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    args = dict(hidden_states=rand(batch, length, d_model), in_proj_weight=rand(2 * d_inner, d_model, scale=0.5),
                in_proj_bias=rand(2 * d_inner) if in_bias else None,
                out_proj_weight=rand(d_model, d_inner, scale=0.5), out_proj_bias=rand(d_model) if out_bias else None)
    for suffix in ("", "_b") if bidirectional else ("",):
        args.update({
            "conv1d_weight" + suffix: rand(d_inner, width, scale=0.5),
            "conv1d_bias" + suffix: rand(d_inner) if conv_bias else None,
            "x_proj_weight" + suffix: rand(dt_rank + 2 * dstate, d_inner, scale=0.4),
            "dt_proj_weight" + suffix: rand(d_inner, dt_rank, scale=0.4),
            "dt_proj_bias" + suffix: rand(d_inner, scale=0.5) if dt_bias else None,
            "A" + suffix: (-torch.rand(d_inner, dstate, generator=g, dtype=dtype) - 0.5).requires_grad_(),
            "D" + suffix: rand(d_inner) if D else None,
        })
    return args


# chunk_size for a length-37-ish test sequence: one chunk (whole.py) or several (chunked.py)
MODES = {"whole": 4096, "chunked": 8}


def leaves(args):
    return composite_checks.leaves(args, NAMES)


def assert_grads_match(args, out, ref, atol, rtol):
    composite_checks.assert_grads_match(args, NAMES, out, ref, atol, rtol)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("length,chunk_size", [(1, 64), (7, 3), (64, 64), (130, 64), (130, 1024), (50, 1)])
def test_matches_reference_fp64(bidirectional, length, chunk_size):
    args = make_args(length=length, bidirectional=bidirectional)
    out = mamba_mixer_fn(**args, chunk_size=chunk_size)
    assert out.shape == (2, length, 5)
    assert_grads_match(args, out, mamba_mixer_ref(**args), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("in_bias,conv_bias,dt_bias,D,out_bias,softplus",
                         list(itertools.product([True, False], repeat=6)))
@pytest.mark.parametrize("mode", MODES)
def test_every_option_combination(in_bias, conv_bias, dt_bias, D, out_bias, softplus, mode):
    args = make_args(batch=1, length=23, in_bias=in_bias, conv_bias=conv_bias, dt_bias=dt_bias, D=D,
                     out_bias=out_bias)
    out = mamba_mixer_fn(**args, delta_softplus=softplus, chunk_size=MODES[mode])
    assert_grads_match(args, out, mamba_mixer_ref(**args, delta_softplus=softplus), atol=1e-10, rtol=1e-10)


def test_chunk_size_does_not_change_results():
    """The chunks chain exactly: any chunk size gives the unchunked result (fp64 rounding only)."""
    args = make_args(length=150)
    names, wrt = zip(*leaves(args))
    dout = torch.randn(2, 150, 5, dtype=torch.float64)
    results = []
    for chunk_size in (1, 5, 64, 150, 4096):
        out = mamba_mixer_fn(**args, chunk_size=chunk_size)
        results.append((out,) + torch.autograd.grad(out, wrt, dout))
    for other in results[1:]:
        for name, a, b in zip(("out",) + names, results[0], other):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12, msg=lambda m, name=name: f"{name}: {m}")


def test_fp32_layer_sizes():
    """Realistic widths, fp32 against the fp64 reference, several chunks."""
    args = make_args(batch=2, d_model=32, d_inner=64, dstate=16, dt_rank=4, length=150, dtype=torch.float32)
    composite_checks.assert_fp32_matches_fp64(functools.partial(mamba_mixer_fn, chunk_size=64), mamba_mixer_ref, args,
                                              NAMES)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("chunk_size", [4, 9], ids=["chunked", "whole"])
def test_fp64_gradcheck(chunk_size, bidirectional):
    args = make_args(batch=2, d_model=3, d_inner=3, dstate=2, dt_rank=2, length=9, bidirectional=bidirectional)
    names = [n for n, _ in leaves(args)]

    def fn(*tensors):
        return mamba_mixer_fn(**dict(args, **dict(zip(names, tensors))), chunk_size=chunk_size)

    assert torch.autograd.gradcheck(fn, tuple(args[n] for n in names), atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_conv_weight_in_nn_conv1d_layout_and_non_contiguous_input(mode):
    args = make_args(length=20)
    hidden = args["hidden_states"].detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not hidden.is_contiguous()
    changed = dict(args, hidden_states=hidden, conv1d_weight=args["conv1d_weight"].unsqueeze(1),
                   conv1d_weight_b=args["conv1d_weight_b"].unsqueeze(1))
    out = mamba_mixer_fn(**changed, chunk_size=MODES[mode])
    torch.testing.assert_close(out, mamba_mixer_ref(**args), atol=1e-12, rtol=0)
    assert torch.autograd.grad(out.sum(), changed["conv1d_weight"])[0].shape == (6, 1, 4)


@pytest.mark.parametrize("mode", MODES)
def test_bf16_close_to_fp32(mode):
    args = make_args(dtype=torch.float32, length=40, d_model=8, d_inner=16, dstate=8, dt_rank=2)
    half = {k: None if v is None else v.detach().bfloat16() for k, v in args.items()}
    for name in ("A", "A_b", "D", "D_b", "dt_proj_bias", "dt_proj_bias_b"):  # fp32 in the Mamba layer
        half[name] = args[name].detach()
    out = mamba_mixer_fn(**half, chunk_size=MODES[mode])
    assert out.dtype == torch.bfloat16
    ref = mamba_mixer_ref(**{k: None if v is None else v.detach() for k, v in args.items()})
    assert ((out.float() - ref).norm() / ref.norm()).item() < 2e-2
    # the bf16 backward (fp32 scan inside) against fp32 gradients of the same loss
    leaves16 = {k: v.requires_grad_() for k, v in half.items() if v is not None}
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads16 = torch.autograd.grad((mamba_mixer_fn(**half, chunk_size=MODES[mode]).float() * g).sum(),
                                  list(leaves16.values()))
    grads32 = torch.autograd.grad((mamba_mixer_fn(**args, chunk_size=MODES[mode]) * g).sum(),
                                  [args[k] for k in leaves16])
    for name, a, b in zip(leaves16, grads16, grads32):
        assert a.dtype == half[name].dtype, name
        assert ((a.float() - b).norm() / b.norm()).item() < 5e-2, name


def _run_recording_saved(args, chunk_size):
    """(output, sorted shapes of what autograd saved besides the inputs) of one mamba_mixer_fn call."""
    inputs = {id(t) for t in args.values() if t is not None}
    extra = []

    def pack(t):
        if id(t) not in inputs:
            extra.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = mamba_mixer_fn(**args, chunk_size=chunk_size)
    return out, sorted(extra)


def test_saves_nothing_of_size_d_inner_times_length():
    """Chunked (L > chunk_size): the backward keeps x_dbl and one state per chunk per branch, besides
    the inputs: nothing of size batch * d_inner * L (the reason for the chunked path)."""
    batch, d_inner, length, dstate, dt_rank = 2, 6, 200, 4, 3
    args = make_args(batch=batch, d_inner=d_inner, length=length, dstate=dstate, dt_rank=dt_rank)
    _, extra = _run_recording_saved(args, chunk_size=64)
    n_chunks = 4
    assert extra == sorted([(batch, dt_rank + 2 * dstate, length)] * 2
                                   + [(batch, d_inner, n_chunks, dstate)] * 2)


def test_one_chunk_saves_its_activations_instead_of_re_running():
    """L <= chunk_size: the backward keeps x, z, the gated mean y (batch, d_inner, L) and per branch
    x_dbl and the scan's 64-step checkpoints, so nothing of the forward's scans runs again."""
    batch, d_inner, length, dstate, dt_rank = 2, 6, 130, 4, 3
    args = make_args(batch=batch, d_inner=d_inner, length=length, dstate=dstate, dt_rank=dt_rank)
    out, extra = _run_recording_saved(args, chunk_size=length)
    assert extra == sorted([(batch, d_inner, length)] * 3 + [(batch, dt_rank + 2 * dstate, length)] * 2
                                   + [(batch, d_inner, 3, dstate)] * 2)
    assert _scan_ops_in_backward(out) == {"smdim::selective_scan_bwd"}
    chunked = mamba_mixer_fn(**args, chunk_size=64)
    assert _scan_ops_in_backward(chunked) == {"smdim::selective_scan_bwd", "smdim::selective_scan_fwd"}


def _scan_ops_in_backward(out):
    with torch.profiler.profile() as prof:
        out.sum().backward()
    return {e.name for e in prof.events() if e.name.startswith("smdim::selective_scan")}


@pytest.mark.parametrize("mode", MODES)
def test_inference_matches_and_saves_nothing(mode):
    args = make_args()
    with torch.no_grad():
        out = mamba_mixer_fn(**args, chunk_size=MODES[mode])
    assert not out.requires_grad
    torch.testing.assert_close(out, mamba_mixer_ref(**args).detach(), atol=1e-12, rtol=0)


def _op_args(args, save=True, chunk_size=16):
    return tuple(args.get(name) for name in NAMES) + (True, chunk_size, save)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_opcheck(bidirectional, mode):
    args = make_args(batch=2, length=21, bidirectional=bidirectional, dtype=torch.float32)
    torch.library.opcheck(torch.ops.smdim.mamba_mixer_fwd.default, _op_args(args, chunk_size=MODES[mode]))
    detached = {k: None if v is None else v.detach() for k, v in args.items()}
    torch.library.opcheck(torch.ops.smdim.mamba_mixer_fwd.default,
                          _op_args(detached, save=False, chunk_size=MODES[mode]))


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph(mode):
    args = make_args(length=21)
    composite_checks.assert_compiles_fullgraph(functools.partial(mamba_mixer_fn, chunk_size=MODES[mode]),
                                               mamba_mixer_ref, args, NAMES)


@pytest.mark.parametrize("mode", ["whole", "chunked"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_flop_formulas(bidirectional, mode):
    """Counted FLOPs equal the documented formula; hand count of the forward's pieces."""
    batch, d_model, d_inner, length, dstate, dt_rank, width = 2, 8, 12, 40, 4, 3, 4
    args = make_args(batch=batch, d_model=d_model, d_inner=d_inner, length=length, dstate=dstate, dt_rank=dt_rank,
                     bidirectional=bidirectional, dtype=torch.float32)
    n = 2 if bidirectional else 1
    hand = (2 * batch * length * d_model * 2 * d_inner + 2 * batch * length * d_inner * d_model
            + n * (2 * batch * d_inner * length * width + 2 * batch * length * d_inner * (dt_rank + 2 * dstate)
                   + 2 * batch * length * dt_rank * d_inner + 9 * batch * length * d_inner * dstate
                   + batch * d_inner * length))
    dims = dict(batch=batch, length=length, d_model=d_model, d_inner=d_inner, dstate=dstate, dt_rank=dt_rank,
                d_conv=width, n_branches=n)
    assert mamba_mixer_flops(**dims) == hand
    names, wrt = zip(*leaves(args))
    chunk_size = length if mode == "whole" else 16

    def fn(*tensors):
        return mamba_mixer_fn(**dict(args, **dict(zip(names, tensors))), chunk_size=chunk_size)

    with torch.no_grad():
        assert count_flops(fn, *wrt).total == hand
    report = count_flops(fn, *wrt, backward=True)
    backward = mamba_mixer_bwd_flops(**dims, one_chunk=mode == "whole")
    assert report.total == hand + backward
    # one chunk re-runs neither in_proj nor the scan forward: the chunked backward does both
    scan = 9 * batch * length * d_inner * dstate + batch * d_inner * length
    rerun = 2 * batch * length * d_model * 2 * d_inner + (n + (n == 2)) * scan
    assert mamba_mixer_bwd_flops(**dims, one_chunk=False) - mamba_mixer_bwd_flops(**dims, one_chunk=True) \
        == rerun + (n == 2) * (2 * batch * d_inner * length * width + 2 * batch * length * dt_rank * d_inner)


def _bad(change):
    args = {k: None if v is None else v.detach()
            for k, v in make_args(batch=2, length=5, dtype=torch.float32).items()}
    args.update(change)
    return args


@pytest.mark.parametrize("change,error,pattern", [
    (dict(hidden_states=torch.zeros(2, 5)), ValueError, r"hidden_states must be \(batch, L, d_model\)"),
    (dict(in_proj_weight=torch.zeros(12, 4)), ValueError, r"in_proj_weight must be \(2\*d_inner, d_model=5\)"),
    (dict(in_proj_weight=torch.zeros(11, 5)), ValueError, r"in_proj_weight must be \(2\*d_inner"),
    (dict(in_proj_bias=torch.zeros(6)), ValueError, r"in_proj_bias must be \(2\*d_inner,\)"),
    (dict(A=torch.zeros(5, 4)), ValueError, r"A must be \(d_inner, N\)"),
    (dict(A_b=torch.zeros(6, 3)), ValueError, r"A_b must be \(d_inner, N\)"),
    (dict(x_proj_weight_b=torch.zeros(9, 6)), ValueError, r"x_proj_weight_b must be \(dt_rank \+ 2\*N, d_inner\)"),
    (dict(dt_proj_weight=torch.zeros(5, 3)), ValueError, r"dt_proj_weight must be \(d_inner, dt_rank\)"),
    (dict(conv1d_weight=torch.zeros(6, 2, 4)), ValueError, r"conv1d_weight must be"),
    (dict(out_proj_weight=torch.zeros(5, 7)), ValueError, r"out_proj_weight must be \(d_model, d_inner\)"),
    (dict(out_proj_bias=torch.zeros(4)), ValueError, r"out_proj_bias must be \(d_model,\)"),
    (dict(D_b=torch.zeros(5)), ValueError, r"D_b must be \(d_inner,\)"),
    (dict(conv1d_weight_b=None), ValueError, r"conv1d_weight_b is required"),
    (dict(hidden_states=torch.zeros(2, 5, 5, dtype=torch.int64)), TypeError, r"hidden_states must have a floating"),
    (dict(A=[[1.0]]), TypeError, r"A must be a torch.Tensor"),
    (dict(chunk_size=0), ValueError, r"chunk_size must be a positive integer"),
    (dict(chunk_size=2.5), ValueError, r"chunk_size must be a positive integer"),
])
def test_bad_input_is_named(change, error, pattern):
    with pytest.raises(error, match=pattern):
        mamba_mixer_fn(**_bad(change))
