"""mamba_inner_fn (the fused mixer op) against its reference: values, every gradient, op checks."""
import itertools

import pytest
import torch

import composite_checks
from smdim_kernels import mamba_inner_fn, mamba_inner_ref

GRAD_NAMES = ("xz", "conv1d_weight", "conv1d_bias", "x_proj_weight", "delta_proj_weight", "out_proj_weight",
              "out_proj_bias", "A", "B", "C", "D", "delta_bias", "B_proj_bias", "C_proj_bias")
# How B / C reach the scan: made by x_proj, or passed in constant or input-dependent (G groups).
BC_FORMS = (None, "constant", "variable", "grouped")


def make_mixer(batch=2, d_inner=6, length=37, dstate=4, dt_rank=3, d_model=5, width=4, dtype=torch.float64,
               conv_bias=True, out_proj=True, out_bias=True, D=True, delta_bias=True, bc_bias=False, B=None, C=None,
               x_proj_rows=None, seed=0):
    """Arguments of mamba_inner_fn (as a dict) with leaves that require grad. B, C: a BC_FORMS entry
    (None: made by x_proj, which then has dt_rank + 2N rows, or dt_rank + N when one is passed in,
    unless x_proj_rows says otherwise)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    def given(form):
        shapes = {"constant": (d_inner, dstate), "variable": (batch, dstate, length),
                  "grouped": (batch, 2, dstate, length)}
        return None if form is None else rand(*shapes[form], scale=0.7)

    if x_proj_rows is None:
        x_proj_rows = dt_rank + ((B is None) + (C is None) or 2) * dstate
    args = dict(
        xz=rand(batch, 2 * d_inner, length),
        conv1d_weight=rand(d_inner, width, scale=0.5),
        conv1d_bias=rand(d_inner) if conv_bias else None,
        x_proj_weight=rand(x_proj_rows, d_inner, scale=0.4),
        delta_proj_weight=rand(d_inner, dt_rank, scale=0.4),
        out_proj_weight=rand(d_model, d_inner) if out_proj else None,
        out_proj_bias=rand(d_model) if out_proj and out_bias else None,
        A=(-torch.rand(d_inner, dstate, generator=g, dtype=dtype) - 0.5).requires_grad_(),
        B=given(B),
        C=given(C),
        D=rand(d_inner) if D else None,
        delta_bias=rand(d_inner, scale=0.5) if delta_bias else None,
        B_proj_bias=rand(dstate) if bc_bias and B is None else None,
        C_proj_bias=rand(dstate) if bc_bias and C is None else None,
    )
    return args


def leaves(args):
    return composite_checks.leaves(args, GRAD_NAMES)


def assert_grads_match(args, out, ref, atol, rtol):
    composite_checks.assert_grads_match(args, GRAD_NAMES, out, ref, atol, rtol)


@pytest.mark.parametrize("length", [1, 7, 130])
@pytest.mark.parametrize("out_proj", [True, False])
@pytest.mark.parametrize("checkpoint_lvl", [0, 1])
def test_matches_reference_fp64(length, out_proj, checkpoint_lvl):
    args = make_mixer(length=length, out_proj=out_proj, bc_bias=True)
    out = mamba_inner_fn(**args, checkpoint_lvl=checkpoint_lvl)
    ref = mamba_inner_ref(**args)
    assert out.shape == ((2, length, 5) if out_proj else (2, 6, length))
    assert_grads_match(args, out, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("conv_bias,out_bias,D,delta_bias,bc_bias,softplus",
                         list(itertools.product([True, False], repeat=6)))
def test_every_option_combination(conv_bias, out_bias, D, delta_bias, bc_bias, softplus):
    args = make_mixer(length=19, batch=1, conv_bias=conv_bias, out_bias=out_bias, D=D, delta_bias=delta_bias,
                      bc_bias=bc_bias)
    out = mamba_inner_fn(**args, delta_softplus=softplus)
    ref = mamba_inner_ref(**args, delta_softplus=softplus)
    assert_grads_match(args, out, ref, atol=1e-10, rtol=1e-10)


def test_fp32_layer_sizes():
    """Realistic widths (d_inner 64, N 16, dt_rank 4), fp32 against the fp64 reference, 64-step checkpoints crossed."""
    args = make_mixer(batch=2, d_inner=64, dstate=16, dt_rank=4, d_model=32, length=150, dtype=torch.float32)
    composite_checks.assert_fp32_matches_fp64(mamba_inner_fn, mamba_inner_ref, args, GRAD_NAMES)


def test_fp64_gradcheck():
    args = make_mixer(batch=1, d_inner=3, dstate=2, dt_rank=2, d_model=2, length=9, bc_bias=True)
    names = [n for n, _ in leaves(args)]

    def fn(*tensors):
        kwargs = dict(args, **dict(zip(names, tensors)))
        return mamba_inner_fn(**kwargs)

    assert torch.autograd.gradcheck(fn, tuple(args[n] for n in names), atol=1e-7)


def test_conv_weight_in_nn_conv1d_layout():
    args = make_mixer()
    out = mamba_inner_fn(**dict(args, conv1d_weight=args["conv1d_weight"].unsqueeze(1)))
    torch.testing.assert_close(out, mamba_inner_ref(**args), atol=1e-12, rtol=0)


def test_non_contiguous_xz():
    args = make_mixer(batch=2, length=11)
    xz_t = args["xz"].detach().transpose(1, 2).contiguous().transpose(1, 2)  # same values, (L-major) strides
    assert not xz_t.is_contiguous()
    out = mamba_inner_fn(**dict(args, xz=xz_t))
    torch.testing.assert_close(out, mamba_inner_ref(**args), atol=1e-12, rtol=0)


def test_bf16_inputs_close_to_fp32():
    args = make_mixer(dtype=torch.float32, length=40, d_inner=16, dstate=8, dt_rank=2, d_model=8)
    half = {k: None if v is None else v.detach().bfloat16() for k, v in args.items()}
    half["A"] = args["A"].detach()  # A stays fp32 as in the Mamba layer
    out = mamba_inner_fn(**half)
    assert out.dtype == torch.bfloat16
    ref = mamba_inner_ref(**{k: None if v is None else v.detach() for k, v in args.items()})
    # bf16 rounds every GEMM input: compare the relative error of the whole output.
    assert ((out.float() - ref).norm() / ref.norm()).item() < 2e-2


def test_recompute_saves_less_for_backward():
    """checkpoint_lvl=1 keeps neither the conv output nor delta: 2 * batch * d_inner * L fewer elements."""
    args = make_mixer(batch=2, d_inner=6, length=50)

    def saved_numel(lvl):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            mamba_inner_fn(**args, checkpoint_lvl=lvl)
        return total

    assert saved_numel(0) - saved_numel(1) == 2 * 2 * 6 * 50


def test_inference_saves_nothing_and_matches():
    args = make_mixer()
    with torch.no_grad():
        out = mamba_inner_fn(**args)
    torch.testing.assert_close(out, mamba_inner_ref(**args).detach(), atol=1e-12, rtol=0)


def _op_args(args, softplus=True, lvl=1, save=True):
    a = dict(args)
    return (a["xz"], a["conv1d_weight"], a["conv1d_bias"], a["x_proj_weight"], a["delta_proj_weight"],
            a["out_proj_weight"], a["out_proj_bias"], a["A"], a["D"], a["delta_bias"], a["B_proj_bias"],
            a["C_proj_bias"], a["B"], a["C"], softplus, lvl, save)


@pytest.mark.parametrize("out_proj,lvl,B,C", [(True, 1, None, None), (False, 0, None, None),
                                              (True, 1, "constant", "variable"), (False, 0, "grouped", "constant")])
def test_opcheck(out_proj, lvl, B, C):
    args = make_mixer(batch=2, length=9, out_proj=out_proj, bc_bias=True, dtype=torch.float32, B=B, C=C)
    torch.library.opcheck(torch.ops.smdim.mamba_inner_fwd.default, _op_args(args, lvl=lvl))
    detached = {k: None if v is None else v.detach() for k, v in args.items()}
    torch.library.opcheck(torch.ops.smdim.mamba_inner_fwd.default, _op_args(detached, save=False))


@pytest.mark.parametrize("B,C", [(None, None), ("constant", "variable")])
def test_torch_compile_fullgraph(B, C):
    args = make_mixer(dtype=torch.float64, length=21, B=B, C=C)  # fp64: differences are the graph's, not rounding
    composite_checks.assert_compiles_fullgraph(mamba_inner_fn, mamba_inner_ref, args, GRAD_NAMES)


@pytest.mark.parametrize("change,error,pattern", [
    (dict(xz=torch.zeros(2, 7, 5)), ValueError, r"xz must be \(batch, 2\*d_inner, L\)"),
    (dict(A=torch.zeros(5, 4)), ValueError, r"A must be \(d_inner, N\)"),
    (dict(x_proj_weight=torch.zeros(9, 6)), ValueError, r"x_proj_weight must be \(dt_rank \+ 2\*N, d_inner\)"),
    (dict(delta_proj_weight=torch.zeros(5, 3)), ValueError, r"delta_proj_weight must be \(d_inner, dt_rank\)"),
    (dict(conv1d_weight=torch.zeros(6, 2, 4)), ValueError, r"conv1d_weight must be"),
    (dict(out_proj_weight=torch.zeros(5, 7)), ValueError, r"out_proj_weight must be \(d_model, d_inner\)"),
    (dict(out_proj_bias=torch.zeros(4)), ValueError, r"out_proj_bias must be \(d_model,\)"),
    (dict(out_proj_weight=None), ValueError, r"out_proj_bias was given without out_proj_weight"),
    (dict(D=torch.zeros(5)), ValueError, r"D must be \(d_inner,\)"),
    (dict(B_proj_bias=torch.zeros(3)), ValueError, r"B_proj_bias must be \(N,\)"),
    (dict(xz=torch.zeros(2, 12, 5, dtype=torch.int64)), TypeError, r"xz must have a floating dtype"),
    (dict(B=torch.zeros(6, 4), x_proj_weight=torch.zeros(9, 6)), ValueError,
     r"x_proj_weight must be \(dt_rank \+ 1\*N, d_inner\) = \(7, 6\) or "
     r"\(11, 6\)"),
    (dict(B=torch.zeros(6, 3), x_proj_weight=torch.zeros(7, 6)), ValueError, r"B must be \(dim, N\)"),
    (dict(B=torch.zeros(2, 4, 5), B_proj_bias=torch.zeros(4)), ValueError,
     r"B_proj_bias is added to the B that x_proj makes; it was given with B passed in"),
    (dict(B=torch.zeros(2, 2, 4, 5), C=torch.zeros(2, 3, 4, 5), x_proj_weight=torch.zeros(3, 6)), ValueError,
     r"B and C must have the same group count"),
    (dict(B=torch.zeros(2, 2, 4, 5)), ValueError, r"B and C must have the same group count; got G=2 for B and G=1"),
    (dict(checkpoint_lvl=2), ValueError, r"checkpoint_lvl must be 0 .* or 1"),
    (dict(A=[[1.0]]), TypeError, r"A must be a torch.Tensor"),
])
def test_bad_input_is_named(change, error, pattern):
    args = {k: None if v is None else v.detach()
            for k, v in make_mixer(batch=2, length=5, d_inner=6, dstate=4, dt_rank=3, dtype=torch.float32).items()}
    args.update(change)
    with pytest.raises(error, match=pattern):
        mamba_inner_fn(**args)


# Every pairing but (None, None) (tested above) and grouped beside a one-group B/C (an error, below).
GIVEN_PAIRS = [(b, c) for b in BC_FORMS for c in BC_FORMS if (b, c) != (None, None)
               and ("grouped" not in (b, c) or {b, c} <= {"grouped", "constant"})]


@pytest.mark.parametrize("B,C", GIVEN_PAIRS)
@pytest.mark.parametrize("checkpoint_lvl", [0, 1])
def test_given_B_C_match_the_fp64_reference(B, C, checkpoint_lvl):
    """mamba_ssm's contract: B and/or C passed in (constant or input-dependent), every gradient."""
    args = make_mixer(length=70, B=B, C=C, bc_bias=True)  # 70 steps: the scan's 64-step checkpoints crossed
    out = mamba_inner_fn(**args, checkpoint_lvl=checkpoint_lvl)
    assert_grads_match(args, out, mamba_inner_ref(**args), atol=1e-10, rtol=1e-10)


def test_constant_B_C_fp64_gradcheck():
    args = make_mixer(batch=1, d_inner=4, dstate=2, dt_rank=2, d_model=2, length=9, B="constant", C="constant")
    names = [n for n, _ in leaves(args)]
    assert {"B", "C"} <= set(names)

    def fn(*tensors):
        return mamba_inner_fn(**dict(args, **dict(zip(names, tensors))))

    assert torch.autograd.gradcheck(fn, tuple(args[n] for n in names), atol=1e-7)


def test_given_B_with_the_full_x_proj_reads_C_from_its_last_rows():
    """x_proj with dt_rank + 2N rows and B passed in: C is x_proj's last N rows (mamba_ssm's layout);
    the B rows feed nothing, so their gradient is zero."""
    args = make_mixer(length=12, B="variable", x_proj_rows=3 + 2 * 4)
    assert_grads_match(args, mamba_inner_fn(**args), mamba_inner_ref(**args), atol=1e-10, rtol=1e-10)
    (grad,) = torch.autograd.grad(mamba_inner_fn(**args).square().sum(), [args["x_proj_weight"]])
    assert grad[3:7].abs().max() == 0 and grad[7:].abs().max() > 0


def test_given_B_C_are_what_the_scan_uses():
    """Against selective_scan_ref on the same conv output and delta: the given B/C replace x_proj's."""
    from smdim_kernels import causal_conv1d_ref, selective_scan_ref

    args = {k: None if v is None else v.detach() for k, v in make_mixer(B="constant", C="variable").items()}
    x, z = args["xz"][:, :6], args["xz"][:, 6:]
    u = causal_conv1d_ref(x, args["conv1d_weight"], args["conv1d_bias"], "silu")
    delta = args["delta_proj_weight"] @ (args["x_proj_weight"][:3] @ u)
    y = selective_scan_ref(u, delta, args["A"], args["B"], args["C"], args["D"], z, args["delta_bias"], True)
    want = y.transpose(1, 2) @ args["out_proj_weight"].t() + args["out_proj_bias"]
    torch.testing.assert_close(mamba_inner_fn(**args), want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("B,C", [("constant", "constant"), ("variable", None), ("grouped", "grouped")])
def test_fp32_with_given_B_C_against_fp64(B, C):
    args = make_mixer(batch=2, d_inner=64, dstate=16, dt_rank=4, d_model=32, length=150, dtype=torch.float32,
                      B=B, C=C)
    composite_checks.assert_fp32_matches_fp64(mamba_inner_fn, mamba_inner_ref, args, GRAD_NAMES)


@pytest.mark.parametrize("name", ["b_rms_weight", "c_rms_weight", "dt_rms_weight"])
def test_rms_norms_on_B_C_dt_are_refused_in_one_line(name):
    args = make_mixer()
    with pytest.raises(NotImplementedError, match=r"b_rms_weight / c_rms_weight / dt_rms_weight"):
        mamba_inner_fn(**args, **{name: torch.ones(4)})
