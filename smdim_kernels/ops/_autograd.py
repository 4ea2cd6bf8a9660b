"""`register_autograd`: torch.library.register_autograd's behaviour for this package's ops, at a
fraction of its per-call cost.

torch's generic kernel re-reads the op's schema on every call (`fill_defaults` walks
`schema.arguments`, which builds a new list of every argument on each access: quadratic in the
argument count) and routes ops with a `Tensor[]` in their signature through pytree. For
mamba_mixer_fwd (22 arguments, a `Tensor[]` output) that was ~110-130 us of Python per forward
with grad, more than the layer's compute at 16 steps. And autograd.Function's default fills a zero
tensor for the gradient of every output the loss does not reach, saved activations included (for
mamba_mixer x, z and y, each (batch, d_inner, L), on every backward). This kernel does the same
thing as torch's (redispatch below autograd, the caller's setup_context and backward with every
argument filled in, a `Tensor[]` output flattened through the autograd.Function and regrouped) with
the schema read once at registration, and zeros only for differentiable outputs. It is registered
like torch's, as the op's Autograd kernel with the dispatch key set, so torch.compile and opcheck
see an ordinary autograd registration.
"""
from __future__ import annotations

from typing import Callable, List

import torch

_LIBRARIES: List[torch.library.Library] = []  # kept alive: a Library drops its registrations when collected


def register_autograd(qualname: str, backward: Callable, setup_context: Callable) -> None:
    """Register backward(ctx, *grads) and setup_context(ctx, inputs, output) as the autograd formula
    of `qualname` ("smdim::<op>"), whose arguments are positional and whose outputs are tensors or
    Tensor[] lists; same contract as torch.library.register_autograd."""
    namespace, name = qualname.split("::")
    op = getattr(getattr(torch.ops, namespace), name).default
    schema = op._schema
    if any(arg.kwarg_only for arg in schema.arguments):
        raise ValueError(f"register_autograd: {qualname} has keyword-only arguments; this helper takes positional ones")
    defaults = tuple(arg.default_value for arg in schema.arguments)  # None where there is none
    list_outputs = tuple(str(ret.type).startswith("List[") for ret in schema.returns)
    if sum(list_outputs) > 1:
        raise ValueError(f"register_autograd: {qualname} returns more than one Tensor[]; this helper takes one")
    single_output = len(schema.returns) == 1

    def flatten(result):
        """The outputs as one flat tuple of tensors."""
        flat = []
        for part, is_list in zip((result,) if single_output else result, list_outputs):
            flat.extend(part) if is_list else flat.append(part)
        return tuple(flat)

    def regroup(flat):
        """The outputs' structure back from the flat tuple (the Tensor[] takes what the tensors leave)."""
        list_length = len(flat) - (len(list_outputs) - sum(list_outputs))
        parts, at = [], 0
        for is_list in list_outputs:
            if is_list:
                parts.append(list(flat[at:at + list_length]))
                at += list_length
            else:
                parts.append(flat[at])
                at += 1
        return parts[0] if single_output else tuple(parts)

    def formula_forward(ctx, keyset, *args):
        with torch._C._AutoDispatchBelowAutograd():
            result = op.redispatch(keyset & torch._C._after_autograd_keyset, *args)
        # The dispatcher drops trailing arguments equal to their defaults: setup_context sees them all.
        non_differentiable = _recording_non_differentiable(ctx)
        try:
            setup_context(ctx=ctx, inputs=args + defaults[len(args):], output=result)
        finally:
            del ctx.mark_non_differentiable
        flat = flatten(result)
        # Undefined output gradients become zeros only for differentiable outputs (what backward
        # formulas expect); torch's default would also fill zeros for every saved activation.
        ctx.set_materialize_grads(False)
        ctx.zeros_for = [None if id(t) in non_differentiable else (t.shape, t.dtype, t.device) for t in flat]
        return flat

    def formula_backward(ctx, *grads):
        grads = tuple(torch.zeros(like[0], dtype=like[1], device=like[2]) if g is None and like is not None
                      else g for g, like in zip(grads, ctx.zeros_for))
        needs_input_grad = ctx.needs_input_grad
        try:
            ctx.needs_input_grad = needs_input_grad[1:]  # without the keyset's
            parts = regroup(grads)
            result = backward(ctx, *((parts,) if single_output else parts))
        finally:
            ctx.needs_input_grad = needs_input_grad
        return (None, *result) if isinstance(result, tuple) else (None, result)

    # named after the op: profiles show "<op>_autograd" and "<op>_autogradBackward"
    Formula = type(f"{name}_autograd", (torch.autograd.Function,),
                   {"forward": staticmethod(formula_forward), "backward": staticmethod(formula_backward)})

    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            flat = Formula.apply(keyset, *args)
            return regroup(flat if isinstance(flat, tuple) else (flat,))
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)

    library = torch.library.Library(namespace, "IMPL")
    library.impl(name, autograd_kernel, "Autograd", with_keyset=True)
    _LIBRARIES.append(library)


def _recording_non_differentiable(ctx):
    """Shadow ctx.mark_non_differentiable with one that also records the marked tensors' ids (the
    caller deletes the shadow afterwards); returns the set it fills."""
    marked = set()
    mark = ctx.mark_non_differentiable

    def recording(*tensors):
        marked.update(id(t) for t in tensors)
        mark(*tensors)

    ctx.mark_non_differentiable = recording
    return marked
