"""transformers' Mamba-1 (`MambaMixer`: MambaModel, MambaForCausalLM and models reusing the mixer)
on smdim's fused kernels, with no change to weights or outputs.

    from smdim_kernels.integrations import transformers as smdim_tf
    smdim_tf.enable()            # every MambaMixer, from now on
    ...
    smdim_tf.disable()           # back to transformers' own functions
    with smdim_tf.enabled():     # or for a block only
        model.generate(...)

How (Liger-Kernel's way of patching transformers): `MambaMixer.forward` calls five functions of
`transformers.models.mamba.modeling_mamba` by their module names; enable() points those names at
smdim's ops, disable() restores the originals. transformers keeps its own control flow: padding
masks, the cache (`cache_params`: prefill, then one-token decode), dtype casts.

    mamba_inner_fn                training without a cache: the fused mixer (conv -> x_proj ->
                                  dt_proj -> scan -> out_proj), recomputing in its backward
    causal_conv1d_fn              the depthwise conv (+ SiLU) of inference, prefill and padded training
    mamba_selective_scan          the scan (+ D, gate), returning the last state for the cache
    causal_conv1d_update          one-token decode: the conv state shifted in place
    mamba_selective_state_update  one-token decode: the scan state advanced in place

transformers' CPU path runs the scan as a Python loop over time; with enable() it runs the C++
kernels (CUDA: Triton). Two differences in transformers itself are kept out, so the patched model
matches the unpatched one: its fused training path skips the padding mask after the conv that its
other path applies, and it always applies SiLU after the conv (as mamba_ssm's kernel does) where
the other path applies config.hidden_act. So a padded training batch (attention_mask with zeros)
and a mixer whose activation is not SiLU take the conv + scan route here.

Under torch.compile any attention_mask takes the conv + scan route (no data-dependent branch in a
graph): still fused kernels, but not the one fused mixer op. Decoding goes as transformers drives
it: one token per step through the conv and scan state updates; a cached call with several new
tokens re-runs conv + scan over them from the cached conv state, as transformers' own path does.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect

import torch

from ..ops.causal_conv1d.interface import ACTIVATIONS, causal_conv1d_fn, causal_conv1d_update
from ..ops.mamba_inner.interface import mamba_inner_fn
from ..ops.selective_scan.interface import selective_scan_fn, selective_state_update

__all__ = ["disable", "enable", "enabled", "is_enabled"]

TESTED_VERSIONS = ("5.18.0",)

# The parameters transformers passes each function (what this module must accept).
_EXPECTED = {
    "mamba_inner_fn": ("xz", "conv1d_weight", "conv1d_bias", "x_proj_weight", "delta_proj_weight",
                       "out_proj_weight", "out_proj_bias", "A", "B", "C", "D", "delta_bias", "delta_softplus"),
    "causal_conv1d_fn": ("hidden_states", "weight", "bias", "activation"),
    "causal_conv1d_update": ("hidden_states", "conv_state", "weight", "bias", "activation"),
    "mamba_selective_scan": ("hidden_states", "dt", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus",
                             "return_last_state"),
    "mamba_selective_state_update": ("state", "hidden_states", "dt", "A", "B", "C", "D", "dt_bias", "dt_softplus",
                                     "z"),
}

_originals = {}  # name -> transformers' function while enabled (and "forward" -> MambaMixer.forward)
# Whether the current MambaMixer.forward may take the fused mixer (not padded, SiLU after the conv).
_fused_mixer_allowed = contextvars.ContextVar("smdim_fused_mixer_allowed", default=True)
_SILU = ("silu", "swish")


def _activation(activation, run):
    """run(x, smdim_activation) with transformers' dtype handling; activations other than SiLU
    (config.hidden_act) follow the conv as transformers' ACT2FN."""
    if activation in ACTIVATIONS:
        return run(activation)
    from transformers.activations import ACT2FN

    return ACT2FN[activation](run(None))


def _conv(hidden_states, weight, bias=None, activation=None, **kwargs):
    """(batch, dim, L) -> (batch, dim, L), computed in the weight's dtype like transformers'."""
    x = hidden_states.to(weight.dtype)
    out = _activation(activation, lambda act: causal_conv1d_fn(x, weight, bias, act))
    return out.to(hidden_states.dtype)


def _conv_update(hidden_states, conv_state, weight, bias=None, activation=None, **kwargs):
    """(batch, dim, L) new inputs -> (batch, dim, L) outputs; conv_state (batch, dim, width) shifted in place."""
    steps = []
    for t in range(hidden_states.shape[-1]):
        x = hidden_states[..., t].to(weight.dtype)
        steps.append(_activation(activation,
                                 lambda act, x=x: causal_conv1d_update(x, conv_state, weight, bias, act)))
    return torch.stack(steps, dim=-1).to(hidden_states.dtype)


def _scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
          **kwargs):
    """transformers' mamba_selective_scan: u (batch, dim, L), B/C (batch, N, L); the last state in
    fp32 (as transformers' own loop leaves it, A being fp32), for its cache."""
    return selective_scan_fn(hidden_states, dt, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _state_update(state, hidden_states, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, z=None, **kwargs):
    return selective_state_update(state, hidden_states, dt, A, B, C, D, z, dt_bias, dt_softplus)


def _inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A,
           B=None, C=None, D=None, delta_bias=None, delta_softplus=True, **kwargs):
    """The fused mixer; None (transformers then runs conv + scan, also on smdim's ops) for a padded
    batch or a mixer whose activation is not SiLU. The RMS-norm arguments (FalconMamba's form) go to
    mamba_inner_fn, which refuses given weights; transformers' other keyword arguments are not ours."""
    if not _fused_mixer_allowed.get():
        return None
    rms = {k: v for k, v in kwargs.items() if k in ("b_rms_weight", "c_rms_weight", "dt_rms_weight", "b_c_dt_rms_eps")}
    return mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                          out_proj_bias, A, B, C, D, delta_bias, delta_softplus=delta_softplus, **rms)


_REPLACEMENTS = {"mamba_inner_fn": _inner, "causal_conv1d_fn": _conv, "causal_conv1d_update": _conv_update,
                 "mamba_selective_scan": _scan, "mamba_selective_state_update": _state_update}


def _is_padded(attention_mask):
    if attention_mask is None:
        return False
    if torch.compiler.is_compiling():
        return True  # no data-dependent branch in a graph: the conv + scan route is right either way
    return not bool(attention_mask.bool().all())


def _forward_noting_padding(forward):
    @functools.wraps(forward)
    def wrapper(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
        allowed = getattr(self, "activation", "silu") in _SILU and not _is_padded(attention_mask)
        token = _fused_mixer_allowed.set(allowed)
        try:
            return forward(self, hidden_states, cache_params=cache_params, attention_mask=attention_mask, **kwargs)
        finally:
            _fused_mixer_allowed.reset(token)
    return wrapper


def _modeling_mamba():
    try:
        import transformers
        from transformers.models.mamba import modeling_mamba
    except ImportError as exc:
        raise RuntimeError(f"smdim_kernels.integrations.transformers needs transformers ({exc}); "
                           f"pip install transformers=={TESTED_VERSIONS[-1]}") from exc
    missing = []
    for name, parameters in _EXPECTED.items():
        fn = getattr(modeling_mamba, name, None)
        have = () if fn is None else tuple(inspect.signature(fn).parameters)
        if fn is None or any(p not in have for p in parameters):
            missing.append(name)
    if missing:
        raise RuntimeError(f"transformers {transformers.__version__}'s MambaMixer does not call "
                           f"{', '.join(missing)} as this integration expects (tested with transformers "
                           f"{', '.join(TESTED_VERSIONS)})")
    return modeling_mamba


def is_enabled() -> bool:
    return bool(_originals)


def enable() -> None:
    """Run every transformers MambaMixer on smdim's kernels (idempotent)."""
    if _originals:
        return
    modeling_mamba = _modeling_mamba()
    for name, replacement in _REPLACEMENTS.items():
        _originals[name] = getattr(modeling_mamba, name)
        setattr(modeling_mamba, name, replacement)
    _originals["forward"] = modeling_mamba.MambaMixer.forward
    modeling_mamba.MambaMixer.forward = _forward_noting_padding(_originals["forward"])


def disable() -> None:
    """Give transformers its own functions back (idempotent)."""
    if not _originals:
        return
    from transformers.models.mamba import modeling_mamba

    modeling_mamba.MambaMixer.forward = _originals.pop("forward")
    for name, original in _originals.items():
        setattr(modeling_mamba, name, original)
    _originals.clear()


@contextlib.contextmanager
def enabled():
    """enable() for the block, then back to what was before it."""
    was = is_enabled()
    enable()
    try:
        yield
    finally:
        if not was:
            disable()
