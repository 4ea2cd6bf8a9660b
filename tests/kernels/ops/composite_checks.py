"""Checks shared by the composite ops' tests (mamba_inner, mamba_mixer): the op `fn(**args)` against
its reference `ref(**args)`, where `args` maps argument names to tensors (None when absent) and
`names` lists, in order, the arguments that may take gradients."""
import torch


def leaves(args, names):
    """[(name, tensor)] of the arguments given, in `names`' order."""
    return [(name, args[name]) for name in names if args.get(name) is not None]


def assert_close_each(names, got, want, atol, rtol, what="gradient of "):
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, name=name: f"{what}{name}: {m}")


def assert_grads_match(args, names, out, ref, atol, rtol):
    """out == ref, and so is every gradient (one random output gradient)."""
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    names, wrt = zip(*leaves(args, names))
    dout = torch.randn_like(out)
    assert_close_each(names, torch.autograd.grad(out, wrt, dout), torch.autograd.grad(ref, wrt, dout), atol, rtol)


def assert_fp32_matches_fp64(fn, ref, args, names):
    """fn on fp32 `args` against ref on their fp64 copies: output and every gradient to 2e-6 of each
    tensor's largest value (relative 1e-4)."""
    args64 = {k: None if v is None else v.detach().double().requires_grad_() for k, v in args.items()}
    out, want_out = fn(**args), ref(**args64)
    dout = torch.randn_like(want_out)
    names, wrt = zip(*leaves(args, names))
    got = torch.autograd.grad(out, wrt, dout.float())
    want = torch.autograd.grad(want_out, [args64[n] for n in names], dout)
    for name, a, b in zip(("out",) + names, (out,) + got, (want_out,) + want):
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double(), b, atol=2e-6 * scale, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def assert_compiles_fullgraph(fn, ref, args, names):
    """torch.compile(fullgraph=True): aot_eager in fp64 gives the eager gradients (the differences
    would be the graph's, not rounding); inductor in fp32 gives the reference's output."""
    names, wrt = zip(*leaves(args, names))

    def loss(*tensors):
        return fn(**dict(args, **dict(zip(names, tensors)))).square().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    assert_close_each(names, torch.autograd.grad(compiled(*wrt), wrt), torch.autograd.grad(loss(*wrt), wrt),
                      atol=1e-10, rtol=1e-10, what="")
    args32 = {k: None if v is None else v.detach().float() for k, v in args.items()}
    inductor = torch.compile(lambda *t: fn(**dict(args32, **dict(zip(names, t)))), fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(inductor(*(args32[n] for n in names)), ref(**args32), atol=1e-4, rtol=1e-4)
