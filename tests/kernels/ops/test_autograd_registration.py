"""smdim_kernels.ops._autograd.register_autograd on a small op of its own: the same contract as
torch.library.register_autograd (filled-in defaults, Tensor[] outputs, opcheck, compile), no
per-call schema walk, and no zero gradients made for non-differentiable outputs."""
import pytest
import torch

import torch._library.utils as library_utils
from smdim_kernels.ops._autograd import register_autograd

torch.library.define("smdim_test::scale_fwd", "(Tensor x, Tensor w, float factor=2.0, bool keep=True) "
                     "-> (Tensor, Tensor, Tensor[])")
SEEN = {}


@torch.library.impl("smdim_test::scale_fwd", "CompositeExplicitAutograd")
def _scale_fwd(x, w, factor=2.0, keep=True):
    # out = x * w * factor (differentiable), side = x.sum(-1) (differentiable), saved: [x * w] or []
    return x * w * factor, x.sum(-1), ([x * w] if keep else [])


@torch.library.register_fake("smdim_test::scale_fwd")
def _scale_fake(x, w, factor=2.0, keep=True):
    return torch.empty_like(x), x.new_empty(x.shape[:-1]), ([torch.empty_like(x)] if keep else [])


def _setup_context(ctx, inputs, output):
    x, w, factor, keep = inputs
    SEEN["inputs"] = (factor, keep)
    ctx.factor = factor
    ctx.save_for_backward(x, w)
    ctx.mark_non_differentiable(*output[2])


def _backward(ctx, dout, dside, dsaved):
    SEEN["grads"] = (dout, dside, dsaved)
    x, w = ctx.saved_tensors
    dx = dout * w * ctx.factor + dside[..., None]
    dw = dout * x * ctx.factor
    return dx, dw, None, None


register_autograd("smdim_test::scale_fwd", _backward, setup_context=_setup_context)


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(3, 5, dtype=dtype, generator=g, requires_grad=True),
            torch.randn(3, 5, dtype=dtype, generator=g, requires_grad=True))


def test_defaults_are_filled_and_lists_regrouped():
    x, w = _inputs()
    out, side, saved = torch.ops.smdim_test.scale_fwd(x, w)
    assert SEEN["inputs"] == (2.0, True)  # the dispatcher dropped both defaults; setup_context sees them
    assert isinstance(saved, list) and len(saved) == 1 and not saved[0].requires_grad
    assert out.requires_grad and side.requires_grad
    torch.testing.assert_close(out, x * w * 2)
    _, _, none_saved = torch.ops.smdim_test.scale_fwd(x, w, 3.0, False)
    assert SEEN["inputs"] == (3.0, False) and none_saved == []


def test_gradients_and_which_output_grads_are_made():
    x, w = _inputs()
    out, side, saved = torch.ops.smdim_test.scale_fwd(x, w, 1.5)
    dx, dw = torch.autograd.grad(out.sum(), (x, w))
    dout, dside, dsaved = SEEN["grads"]
    # side was not used: a zero gradient (as torch would make); saved is non-differentiable: None
    assert torch.equal(dside, torch.zeros_like(side)) and dsaved == [None]
    torch.testing.assert_close(dx, w * 1.5)
    torch.testing.assert_close(dw, x * 1.5)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.smdim_test.scale_fwd(a, b, 1.5)[:2], (x, w))


def test_no_per_call_schema_walk(monkeypatch):
    def walked(*args, **kwargs):
        raise AssertionError("fill_defaults called")

    monkeypatch.setattr(library_utils, "fill_defaults", walked)
    x, w = _inputs()
    out, side, _ = torch.ops.smdim_test.scale_fwd(x, w)
    (out.sum() + side.sum()).backward()
    assert x.grad is not None


def test_opcheck():
    x, w = _inputs()
    torch.library.opcheck(torch.ops.smdim_test.scale_fwd.default, (x, w, 1.5, True))
    torch.library.opcheck(torch.ops.smdim_test.scale_fwd.default, (x, w))


@pytest.mark.parametrize("keep", [True, False])
def test_compile_fullgraph(keep):
    def loss(a, b):
        out, side, saved = torch.ops.smdim_test.scale_fwd(a, b, 1.5, keep)
        return out.sum() + 2 * side.sum() + sum(s.sum().detach() for s in saved)

    x, w = _inputs(torch.float32)
    eager = torch.autograd.grad(loss(x, w), (x, w))
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(x, w), (x, w))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)
