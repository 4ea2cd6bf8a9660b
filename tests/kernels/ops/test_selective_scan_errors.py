"""Bad input to the selective scan: every mistake names the argument and what was expected."""
import pytest
import torch

from smdim_kernels import selective_scan_fn

from scan_inputs import make_problem


def call(p, **overrides):
    kw = dict(u=p.u, delta=p.delta, A=p.A, B=p.B, C=p.C, D=p.D, z=p.z, delta_bias=p.delta_bias)
    extra = dict(initial_state=p.initial_state, seq_idx=p.seq_idx)
    for k, v in overrides.items():
        (kw if k in kw else extra)[k] = v
    return selective_scan_fn(**kw, delta_softplus=True, **extra)


@pytest.fixture
def p():
    return make_problem(batch=2, dim=6, length=10, dstate=4, groups=2, seq_idx=True)


@pytest.mark.parametrize("name, value, error, pattern", [
    ("u", torch.randn(6, 10), ValueError, r"u must be \(batch, dim, L\)"),
    ("u", [[1.0]], TypeError, r"u must be a torch.Tensor"),
    ("u", torch.ones(2, 6, 10, dtype=torch.int64), TypeError, r"u must have a floating dtype"),
    ("delta", torch.randn(2, 6, 9), ValueError, r"delta must be \(batch, dim, L\) like u = \(2, 6, 10\)"),
    ("A", torch.randn(5, 4), ValueError, r"A must be \(dim, N\) = \(6, N\)"),
    ("A", torch.randn(6, 300), ValueError, r"A: N = A.shape\[1\] must be in \[1, 256\]"),
    ("A", torch.randn(6, 4, dtype=torch.complex64), TypeError, r"complex A is not supported"),
    ("B", torch.randn(2, 4, 4, 10), ValueError, r"B: the group count G=4 .* must divide dim=6"),
    ("B", torch.randn(2, 5, 10), ValueError, r"B must be \(batch, N, L\) = \(2, 4, 10\)"),
    ("B", torch.randn(6, 4, 1, 1, 1), ValueError, r"B must be \(dim, N\), \(batch, N, L\) or"),
    ("C", torch.randn(2, 3, 4, 10), ValueError, r"same group count; got G=2 for B and G=3 for C"),
    ("C", torch.randn(6, 5), ValueError, r"C must be \(dim, N\) = \(6, 4\)"),
    ("D", torch.randn(5), ValueError, r"D must be \(dim,\) = \(6,\)"),
    ("z", torch.randn(2, 6, 11), ValueError, r"z must be \(batch, dim, L\) like u"),
    ("delta_bias", torch.randn(6, 1), ValueError, r"delta_bias must be \(dim,\)"),
    ("initial_state", torch.randn(2, 6, 5), ValueError, r"initial_state must be \(batch, dim, N\) = \(2, 6, 4\)"),
    ("seq_idx", torch.zeros(2, 9, dtype=torch.int64), ValueError, r"seq_idx must be \(batch, L\)"),
    ("seq_idx", torch.zeros(2, 10), TypeError, r"seq_idx must be an integer tensor"),
    ("D", torch.ones(6, dtype=torch.int32), TypeError, r"D must have a floating dtype"),
    ("u", torch.randn(2, 6, 10, device="meta"), ValueError, r"one device; got u on meta"),
])
def test_bad_argument_is_named(p, name, value, error, pattern):
    with pytest.raises(error, match=pattern):
        call(p, **{name: value})


def test_mixed_precision_inputs_are_accepted(p):
    """Weights in fp32 with bf16 activations (the usual AMP layout) work without casts."""
    out = call(p, u=p.u.bfloat16(), delta=p.delta.bfloat16(), z=p.z.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_direct_op_call_is_checked_in_cpp(p):
    """Callers that bypass the Python wrapper still get a named error, not a crash."""
    with pytest.raises(RuntimeError, match=r"delta must match u"):
        torch.ops.smdim.selective_scan_fwd(p.u, p.delta[..., :5], p.A, p.B, p.C, None, None, None, False,
                                           None, None, False, False)
