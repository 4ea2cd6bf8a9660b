"""FLOP formulas for this library's custom ops and CPU SDPA, for torch.utils.flop_counter and fvcore.

Conventions (the two tools differ by a factor of two; each formula is registered in its tool's own
convention, so our counts add up consistently with the tool's built-in GEMM counts):

- torch (`torch.utils.flop_counter.FlopCounterMode`): 2 FLOPs per multiply-add (an (M,K)@(K,N) GEMM
  is 2·M·N·K). The formulas below are written in this convention.
- fvcore (`fvcore.nn.FlopCountAnalysis`): 1 per multiply-add (its "flops" are MACs). Every fvcore
  handle here returns exactly half of the torch formula (an odd count gives an x.5).

Symbols: B batch, D channels (d_inner), L length, N d_state, W conv width, R dt_rank, M d_model
(out_proj rows), n = number of elements of add_norm's x. [cond] is 1 if cond else 0. Bias adds,
activations and O(B·D)-sized work are not counted, as in torch's own GEMM/conv formulas. Counts are
the work the kernels execute, recomputation in backward included (as torch's attention backward
formulas count the recomputed scores).

    selective_scan_fwd   9·B·L·D·N + B·D·L·[D] + B·D·L·[z]   (mamba_ssm's flops_selective_scan_ref)
    selective_scan_bwd   3 × fwd: recomputed forward (1×) + adjoint scan (2×, the backward = 2× forward rule)
    causal_conv1d_fwd    2·B·D·L·W                            (torch's depthwise conv count)
    causal_conv1d_bwd    4·B·D·L·W (dx, dweight) + 2·B·D·L·W·[silu] (pre-activation recompute)
    add_norm_fwd         n·([residual] + s + 1 + [bias]), s = 5 LayerNorm (mean, centre, square-sum, scale)
                         or 3 RMSNorm (square-sum, scale); the 1 is the weight multiply
    add_norm_bwd         n·(t + [bias] + [dresidual_out]), t = 12 LayerNorm or 9 RMSNorm (x̂ recompute,
                         g·w, the two row reductions, dh, dweight); autograd always passes dresidual_out
    mamba_inner_fwd      conv 2·B·D·L·W + x_proj 2·B·L·D·(R+2N) + dt_proj 2·B·L·R·D
                         + scan(D, z) + out_proj 2·B·L·D·M·[out_proj]
    mamba_inner_bwd      conv_bwd(silu) 6·B·D·L·W + 2 × each GEMM + scan_bwd
                         + recompute (conv 2·B·D·L·W + dt_proj 2·B·L·R·D) when checkpoint_lvl=1
    mamba_mixer_fwd      in_proj 2·B·L·M·2D + per branch (conv + x_proj + dt_proj + scan(D)) + out_proj 2·B·L·D·M
    mamba_mixer_bwd      [L > chunk_size: in_proj recompute 2·B·L·M·2D] + in_proj grads 2 × 2·B·L·M·2D + out_proj grads
                         2 × 2·B·L·D·M + per branch (conv recompute + dt_proj recompute + [scan fwd recompute]
                         + scan_bwd + conv_bwd(silu) + 2 × (x_proj + dt_proj)) + [for two branches one more
                         forward branch pass (conv + dt_proj + scan fwd: its outputs meet the reverse's)];
                         [...] only when chunked (L > chunk_size; one chunk saves instead, mamba_mixer/whole.py)
    local_attention_fwd  torch's sdpa_flop_count over the query blocks and their whole key spans (masked keys
                         included, as the kernel runs them): 4·n_blocks·B·H·block·span·d
    local_attention_bwd  torch's sdpa_backward_flop_count of the same blocks (2.5 × fwd)
    activation_linear_fwd  the GEMM 2·rows·hidden·out (activation and bias add not counted)
    activation_linear_bwd  2 × fwd (dweight and d act(h); the activation's recompute not counted)
    CPU SDPA fwd         torch's sdpa_flop_count: 4·B·H·Lq·Lk·d (QKᵀ and PV GEMMs, d = head dim)
    CPU SDPA bwd         torch's sdpa_backward_flop_count: 10·B·H·Lq·Lk·d (= 2.5 × fwd, scores recomputed)

SDPA with is_causal=True is counted as the full Lq×Lk square, like torch's own CUDA flash /
efficient / cuDNN formulas (so counts compare across backends); a causal kernel does about half.
mamba_inner is counted as one op: FlopCounterMode runs an op's implementation with the mode off
and a jit trace records it as one node, so its inner conv / GEMM / scan ops are not counted twice.
fvcore's matmul handle ignores the batch dimensions of a 2-D @ 3-D matmul (a weight applied to
batched activations); `fvcore_handles()` replaces it with a broadcast-aware "aten::matmul" handle.

Usage::

    from smdim_kernels.flops import count_flops
    report = count_flops(model, x, backward=True)         # torch's FlopCounterMode, fwd + bwd
    report = count_flops(model, x, backend="fvcore")      # needs `pip install fvcore`

Importing this module registers the torch formulas (`register_flop_formulas()`, idempotent).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
import torch.utils.flop_counter as _fc

# The op schemas must exist before torch.ops.smdim.<op> can be looked up.
from .ops.add_norm import interface as _add_norm_interface  # noqa: F401
from .ops.causal_conv1d import interface as _conv_interface  # noqa: F401
from .ops.mamba_inner import interface as _mamba_inner_interface  # noqa: F401
from .ops.mamba_mixer import interface as _mamba_mixer_interface
from .ops.selective_scan import interface as _scan_interface  # noqa: F401

__all__ = [
    "FlopReport",
    "TORCH_CONVENTION",
    "FVCORE_CONVENTION",
    "activation_linear_flops",
    "add_norm_bwd_flops",
    "add_norm_flops",
    "causal_conv1d_bwd_flops",
    "causal_conv1d_flops",
    "count_flops",
    "fvcore_handles",
    "local_attention_bwd_flops",
    "local_attention_flops",
    "mamba_inner_bwd_flops",
    "mamba_inner_flops",
    "mamba_mixer_bwd_flops",
    "mamba_mixer_flops",
    "register_flop_formulas",
    "sdpa_bwd_flops",
    "sdpa_flops",
    "selective_scan_bwd_flops",
    "selective_scan_flops",
]

TORCH_CONVENTION = "2 FLOPs per multiply-add (torch.utils.flop_counter)"
FVCORE_CONVENTION = "1 per multiply-add (fvcore)"

# ---------------------------------------------------------------------------------------------
# The formulas, in torch's convention (2 FLOPs per multiply-add), on plain integers
# ---------------------------------------------------------------------------------------------


def selective_scan_flops(batch: int, dim: int, length: int, dstate: int, with_D: bool = True,
                         with_z: bool = False) -> int:
    """9·B·L·D·N + B·D·L·[D] + B·D·L·[z] (mamba_ssm's flops_selective_scan_ref)."""
    bdl = batch * dim * length
    return 9 * bdl * dstate + bdl * int(bool(with_D)) + bdl * int(bool(with_z))


def selective_scan_bwd_flops(batch: int, dim: int, length: int, dstate: int, with_D: bool = True,
                             with_z: bool = False) -> int:
    """3 × forward: the forward re-run from the checkpoints (1×) plus the adjoint scan (2×)."""
    return 3 * selective_scan_flops(batch, dim, length, dstate, with_D, with_z)


def causal_conv1d_flops(batch: int, dim: int, length: int, width: int) -> int:
    """2·B·D·L·W: one multiply-add per tap (bias and SiLU not counted)."""
    return 2 * batch * dim * length * width


def causal_conv1d_bwd_flops(batch: int, dim: int, length: int, width: int, silu: bool = True) -> int:
    """4·B·D·L·W (dx and dweight, each a conv) + 2·B·D·L·W if SiLU (pre-activation recomputed)."""
    return (2 + int(bool(silu))) * causal_conv1d_flops(batch, dim, length, width)


def add_norm_flops(numel: int, rms: bool = False, residual: bool = True, bias: bool = True) -> int:
    """n·([residual] + (3 if RMSNorm else 5) + 1 + [bias])."""
    per_element = int(bool(residual)) + (3 if rms else 5) + 1 + int(bool(bias))
    return numel * per_element


def add_norm_bwd_flops(numel: int, rms: bool = False, bias: bool = True, dresidual_out: bool = False) -> int:
    """n·((9 if RMSNorm else 12) + [bias] + [dresidual_out])."""
    return numel * ((9 if rms else 12) + int(bool(bias)) + int(bool(dresidual_out)))


def _mamba_inner_parts(batch, length, d_inner, dstate, dt_rank, d_conv, d_model, x_proj_rows=None):
    bl = batch * length
    return {
        "conv": causal_conv1d_flops(batch, d_inner, length, d_conv),
        "x_proj": 2 * bl * d_inner * (dt_rank + 2 * dstate if x_proj_rows is None else x_proj_rows),
        "dt_proj": 2 * bl * dt_rank * d_inner,
        "out_proj": 0 if d_model is None else 2 * bl * d_inner * d_model,
    }


def mamba_inner_flops(batch: int, length: int, d_inner: int, dstate: int, dt_rank: int, d_conv: int,
                      d_model: Optional[int] = None, with_D: bool = True, x_proj_rows: Optional[int] = None) -> int:
    """conv + x_proj + dt_proj + scan (with z, [D]) + out_proj (if d_model is given); x_proj_rows
    defaults to dt_rank + 2N (fewer when B or C is passed in)."""
    parts = _mamba_inner_parts(batch, length, d_inner, dstate, dt_rank, d_conv, d_model, x_proj_rows)
    return sum(parts.values()) + selective_scan_flops(batch, d_inner, length, dstate, with_D, True)


def mamba_inner_bwd_flops(batch: int, length: int, d_inner: int, dstate: int, dt_rank: int, d_conv: int,
                          d_model: Optional[int] = None, with_D: bool = True, recompute: bool = True,
                          x_proj_rows: Optional[int] = None) -> int:
    """conv_bwd (SiLU) + 2 × each GEMM + scan_bwd + [recompute]·(conv + dt_proj)."""
    parts = _mamba_inner_parts(batch, length, d_inner, dstate, dt_rank, d_conv, d_model, x_proj_rows)
    flops = causal_conv1d_bwd_flops(batch, d_inner, length, d_conv, silu=True)
    flops += 2 * (parts["x_proj"] + parts["dt_proj"] + parts["out_proj"])
    flops += selective_scan_bwd_flops(batch, d_inner, length, dstate, with_D, True)
    if recompute:
        flops += parts["conv"] + parts["dt_proj"]
    return flops


def _mamba_mixer_branch_parts(batch, length, d_inner, dstate, dt_rank, d_conv, with_D):
    parts = _mamba_inner_parts(batch, length, d_inner, dstate, dt_rank, d_conv, None)
    parts["scan"] = selective_scan_flops(batch, d_inner, length, dstate, with_D, False)
    return parts


def mamba_mixer_flops(batch: int, length: int, d_model: int, d_inner: int, dstate: int, dt_rank: int, d_conv: int,
                      n_branches: int = 1, with_D: bool = True) -> int:
    """in_proj + n_branches × (conv + x_proj + dt_proj + scan) + out_proj (the gate is shared)."""
    branch = _mamba_mixer_branch_parts(batch, length, d_inner, dstate, dt_rank, d_conv, with_D)
    projections = 2 * batch * length * d_model * 3 * d_inner  # in_proj (2·d_inner rows) + out_proj
    return projections + n_branches * (branch["conv"] + branch["x_proj"] + branch["dt_proj"] + branch["scan"])


def mamba_mixer_bwd_flops(batch: int, length: int, d_model: int, d_inner: int, dstate: int, dt_rank: int,
                          d_conv: int, n_branches: int = 1, with_D: bool = True, one_chunk: bool = False) -> int:
    """Chunked (L > chunk_size): in_proj recomputed + 2 × in_proj + 2 × out_proj + per branch (conv,
    dt_proj and scan re-run, scan_bwd, conv_bwd, 2 × x_proj, 2 × dt_proj) + one more forward-branch
    re-run with two branches. one_chunk (the whole sequence at once, mamba_mixer/whole.py): nothing
    of in_proj or the scan forward re-runs, only each branch's conv and dt_proj. The gate is not
    counted in either (elementwise), as in the forward."""
    branch = _mamba_mixer_branch_parts(batch, length, d_inner, dstate, dt_rank, d_conv, with_D)
    in_proj = 2 * batch * length * d_model * 2 * d_inner
    out_proj = 2 * batch * length * d_inner * d_model
    rerun = branch["conv"] + branch["dt_proj"] + (0 if one_chunk else branch["scan"])
    per_branch = (rerun + selective_scan_bwd_flops(batch, d_inner, length, dstate, with_D, False)
                  + causal_conv1d_bwd_flops(batch, d_inner, length, d_conv, silu=True)
                  + 2 * (branch["x_proj"] + branch["dt_proj"]))
    if one_chunk:
        return 2 * in_proj + 2 * out_proj + n_branches * per_branch
    return 3 * in_proj + 2 * out_proj + n_branches * per_branch + (rerun if n_branches == 2 else 0)


def _sdpa_4d(shape):
    """(..., L, E) -> (batch, heads, L, E); a non-4-D shape has its leading dims as batch, 1 head."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        return shape
    return (math.prod(shape[:-2]), 1) + shape[-2:]


def sdpa_flops(query_shape, key_shape, value_shape) -> int:
    """torch's sdpa_flop_count: 2·B·H·Lq·Lk·(d_qk + d_v) (full square, causal or not)."""
    return _fc.sdpa_flop_count(_sdpa_4d(query_shape), _sdpa_4d(key_shape), _sdpa_4d(value_shape))


def sdpa_bwd_flops(grad_out_shape, query_shape, key_shape, value_shape) -> int:
    """torch's sdpa_backward_flop_count: scores recomputed + 4 gradient GEMMs (2.5 × forward)."""
    return _fc.sdpa_backward_flop_count(_sdpa_4d(grad_out_shape), _sdpa_4d(query_shape), _sdpa_4d(key_shape),
                                        _sdpa_4d(value_shape))


def _local_attention_blocks(batch_heads, head_dim, length, window, causal, block):
    """The shapes the grouped local attention's SDPA calls take, all groups together: q
    (n_blocks, batch*heads, block, head_dim), k = v (n_blocks, batch*heads, span, head_dim)."""
    from .ops.local_attention.layout import LocalLayout

    layout = LocalLayout(length, window, causal, block)
    return ((layout.n_blocks, batch_heads, block, head_dim), (layout.n_blocks, batch_heads, layout.span, head_dim))


def local_attention_flops(batch_heads: int, head_dim: int, length: int, window: int, causal: bool, block: int) -> int:
    """torch's SDPA count of every query block against its whole key span."""
    q, kv = _local_attention_blocks(batch_heads, head_dim, length, window, causal, block)
    return _fc.sdpa_flop_count(q, kv, kv)


def local_attention_bwd_flops(batch_heads: int, head_dim: int, length: int, window: int, causal: bool,
                              block: int) -> int:
    """torch's SDPA backward count of the same blocks (scores recomputed + 4 gradient GEMMs)."""
    q, kv = _local_attention_blocks(batch_heads, head_dim, length, window, causal, block)
    return _fc.sdpa_backward_flop_count(q, q, kv, kv)


def activation_linear_flops(rows: int, hidden: int, out: int) -> int:
    return 2 * rows * hidden * out


# ---------------------------------------------------------------------------------------------
# Adapters from op arguments (shapes for tensors, None for absent tensors, plain values otherwise)
# ---------------------------------------------------------------------------------------------

def _present(shape) -> bool:
    return shape is not None


def _scan_fwd(u, delta, A, B, C, D=None, z=None, *args, **kwargs):
    batch, dim, length = u
    return selective_scan_flops(batch, dim, length, A[1], _present(D), _present(z))


def _scan_bwd(dout, dlast_state, u, delta, A, B, C, D=None, z=None, *args, **kwargs):
    batch, dim, length = u
    return selective_scan_bwd_flops(batch, dim, length, A[1], _present(D), _present(z))


def _conv_fwd(x, weight, bias=None, silu=False, *args, **kwargs):
    batch, dim, length = x
    return causal_conv1d_flops(batch, dim, length, weight[-1])


def _conv_bwd(dout, x, weight, bias=None, silu=False, *args, **kwargs):
    batch, dim, length = x
    return causal_conv1d_bwd_flops(batch, dim, length, weight[-1], bool(silu))


def _add_norm_fwd(x, residual, weight, bias=None, eps=None, rms=False, *args, **kwargs):
    return add_norm_flops(math.prod(x), bool(rms), _present(residual), _present(bias))


def _add_norm_bwd(dout, dresidual_out, residual_out, weight, bias=None, mean=None, rstd=None, rms=False,
                  *args, **kwargs):
    return add_norm_bwd_flops(math.prod(residual_out), bool(rms), _present(bias), _present(dresidual_out))


def _mamba_inner_dims(xz, conv1d_weight, delta_proj_weight, out_proj_weight, A):
    batch, two_d, length = xz
    return dict(batch=batch, length=length, d_inner=two_d // 2, dstate=A[1], dt_rank=delta_proj_weight[1],
                d_conv=conv1d_weight[-1], d_model=None if out_proj_weight is None else out_proj_weight[0])


def _mamba_inner_fwd(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                     out_proj_bias, A, D=None, *args, **kwargs):
    dims = _mamba_inner_dims(xz, conv1d_weight, delta_proj_weight, out_proj_weight, A)
    return mamba_inner_flops(**dims, with_D=_present(D), x_proj_rows=x_proj_weight[0])


def _mamba_inner_bwd(dout, xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                     out_proj_bias, A, D, delta_bias, B_proj_bias, C_proj_bias, B, C, delta_softplus, x_dbl, y,
                     checkpoints, conv_out, delta, *args, **kwargs):
    dims = _mamba_inner_dims(xz, conv1d_weight, delta_proj_weight, out_proj_weight, A)
    # checkpoint_lvl=1 saves (0,) placeholders for conv_out and delta: the backward recomputes them.
    recompute = conv_out is None or len(conv_out) == 1
    return mamba_inner_bwd_flops(**dims, with_D=_present(D), recompute=recompute, x_proj_rows=x_proj_weight[0])


def _mamba_mixer_dims(hidden_states, in_proj_weight, conv1d_weight, dt_proj_weight, A, A_b):
    batch, length, d_model = hidden_states
    return dict(batch=batch, length=length, d_model=d_model, d_inner=in_proj_weight[0] // 2, dstate=A[1],
                dt_rank=dt_proj_weight[1], d_conv=conv1d_weight[-1], n_branches=1 + _present(A_b))


def _mamba_mixer_fwd(hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
                     dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b=None,
                     conv1d_bias_b=None, x_proj_weight_b=None, dt_proj_weight_b=None, dt_proj_bias_b=None, A_b=None,
                     *args, **kwargs):
    dims = _mamba_mixer_dims(hidden_states, in_proj_weight, conv1d_weight, dt_proj_weight, A, A_b)
    return mamba_mixer_flops(**dims, with_D=_present(D))


def _mamba_mixer_bwd(dout, hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
                     dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b=None,
                     conv1d_bias_b=None, x_proj_weight_b=None, dt_proj_weight_b=None, dt_proj_bias_b=None, A_b=None,
                     D_b=None, delta_softplus=True, chunk_size=None, *args, **kwargs):
    dims = _mamba_mixer_dims(hidden_states, in_proj_weight, conv1d_weight, dt_proj_weight, A, A_b)
    one_chunk = _mamba_mixer_interface.fits_one_chunk(dims["length"], chunk_size)
    return mamba_mixer_bwd_flops(**dims, with_D=_present(D), one_chunk=one_chunk)


def _local_attention_fwd(buf, length, window, causal, block, *args, **kwargs):
    # buf: (time, 3, batch * heads, head_dim), the q/k/v rows the op attends over
    return local_attention_flops(buf[2], buf[3], length, window, bool(causal), block)


def _local_attention_bwd(dout, buf, out, lse, length, window, causal, block, *args, **kwargs):
    return local_attention_bwd_flops(buf[2], buf[3], length, window, bool(causal), block)


def _activation_linear_fwd(h, weight, *args, **kwargs):
    return activation_linear_flops(math.prod(h[:-1]), weight[1], weight[0])


def _activation_linear_bwd(dout, h, weight, *args, **kwargs):
    return 2 * activation_linear_flops(math.prod(h[:-1]), weight[1], weight[0])


def _sdpa_cpu_fwd(query, key, value, *args, **kwargs):
    return sdpa_flops(query, key, value)


def _sdpa_cpu_bwd(grad_out, query, key, value, *args, **kwargs):
    return sdpa_bwd_flops(grad_out, query, key, value)


def _smdim(name):
    return getattr(torch.ops.smdim, name)


# (op name as a jit graph shows it, OpOverloadPacket getter, adapter)
_CUSTOM_OPS = (
    ("smdim::selective_scan_fwd", lambda: _smdim("selective_scan_fwd"), _scan_fwd),
    ("smdim::selective_scan_bwd", lambda: _smdim("selective_scan_bwd"), _scan_bwd),
    ("smdim::causal_conv1d_fwd", lambda: _smdim("causal_conv1d_fwd"), _conv_fwd),
    ("smdim::causal_conv1d_bwd", lambda: _smdim("causal_conv1d_bwd"), _conv_bwd),
    ("smdim::add_norm_fwd", lambda: _smdim("add_norm_fwd"), _add_norm_fwd),
    ("smdim::add_norm_bwd", lambda: _smdim("add_norm_bwd"), _add_norm_bwd),
    ("smdim::mamba_inner_fwd", lambda: _smdim("mamba_inner_fwd"), _mamba_inner_fwd),
    ("smdim::mamba_inner_bwd", lambda: _smdim("mamba_inner_bwd"), _mamba_inner_bwd),
    ("smdim::mamba_mixer_fwd", lambda: _smdim("mamba_mixer_fwd"), _mamba_mixer_fwd),
    ("smdim::mamba_mixer_bwd", lambda: _smdim("mamba_mixer_bwd"), _mamba_mixer_bwd),
    ("smdim::local_attention_fwd", lambda: _smdim("local_attention_fwd"), _local_attention_fwd),
    ("smdim::local_attention_bwd", lambda: _smdim("local_attention_bwd"), _local_attention_bwd),
    ("smdim::activation_linear_fwd", lambda: _smdim("activation_linear_fwd"), _activation_linear_fwd),
    ("smdim::activation_linear_bwd", lambda: _smdim("activation_linear_bwd"), _activation_linear_bwd),
)
_SDPA_CPU_OPS = (
    ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_fwd),
    ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_bwd),
)

# ---------------------------------------------------------------------------------------------
# torch.utils.flop_counter
# ---------------------------------------------------------------------------------------------


def _torch_formula(adapter):
    # register_flop_formula's shape wrapper hands tensors as torch.Size, None stays None.
    def formula(*args, out_shape=None, **kwargs):
        return int(adapter(*args, **kwargs))

    formula.__name__ = formula.__qualname__ = f"smdim_{adapter.__name__.lstrip('_')}_flop"
    formula.__doc__ = adapter.__doc__
    return formula


_registered = False


def register_flop_formulas() -> None:
    """Register the torch formulas of every smdim op and of CPU SDPA; idempotent.

    An op that already has a formula (registered earlier, or by a newer torch for CPU SDPA) is left
    alone. FlopCounterMode copies the registry when constructed: create it after this has run (it
    runs when `smdim_kernels.flops` is imported).
    """
    global _registered
    if _registered:
        return
    targets = [(get(), _torch_formula(adapter)) for _, get, adapter in _CUSTOM_OPS]
    for name, adapter in _SDPA_CPU_OPS:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            targets.append((packet, _torch_formula(adapter)))
    for packet, formula in targets:
        if packet not in _fc.flop_registry:
            _fc.register_flop_formula(packet)(formula)
    _registered = True


# ---------------------------------------------------------------------------------------------
# fvcore
# ---------------------------------------------------------------------------------------------

_FVCORE_MISSING = ("smdim_kernels.flops: the fvcore backend needs fvcore, which is not installed; "
                   "install it with `pip install fvcore` (or use backend='torch', which needs nothing more)")


def _import_fvcore():
    try:
        with warnings.catch_warnings():  # fvcore's import scripts a few losses: torch.jit.script is deprecated
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
            from fvcore.nn import FlopCountAnalysis
            from fvcore.nn.jit_handles import get_shape
    except ImportError as exc:
        raise ImportError(_FVCORE_MISSING) from exc
    return FlopCountAnalysis, get_shape


def _half(flops):
    """torch convention -> fvcore's (MACs): exactly half; an odd count gives x.5."""
    flops = int(flops)
    return flops // 2 if flops % 2 == 0 else flops / 2


def _jit_args(inputs, get_shape):
    """jit Values -> shapes for tensors, None for absent optionals, constants' values otherwise."""
    args = []
    for value in inputs:
        shape = get_shape(value)
        if shape is not None:
            args.append(tuple(shape))
            continue
        arg = None
        if value.type().kind() not in ("NoneType", "TensorType", "OptionalType"):
            try:
                arg = value.toIValue()
            except Exception:  # a non-constant scalar: the formulas do not need it
                arg = None
        args.append(arg)
    return args


def _fvcore_handle(adapter, get_shape):
    def handle(inputs, outputs):
        return _half(adapter(*_jit_args(inputs, get_shape)))

    handle.__name__ = handle.__qualname__ = f"smdim_{adapter.__name__.lstrip('_')}_fvcore"
    return handle


def _fvcore_sdpa(inputs, get_shape):
    # aten::scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, ...)
    q, k, v = (get_shape(x) for x in inputs[:3])
    return _half(sdpa_flops(q, k, v))


def _fvcore_matmul(inputs, get_shape):
    """Broadcast-aware matmul MACs (fvcore's own handle drops the batch of a 2-D @ 3-D matmul)."""
    a, b = (list(get_shape(x)) for x in inputs[:2])
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    if a[-1] != b[-2]:
        raise ValueError(f"aten::matmul: inner dimensions differ: {a} @ {b}")
    batch = math.prod(torch.broadcast_shapes(torch.Size(a[:-2]), torch.Size(b[:-2])))
    return batch * a[-2] * a[-1] * b[-1]


def fvcore_handles() -> Dict[str, Callable]:
    """fvcore handles (`handle(inputs, outputs)`), by op name as a jit trace shows it.

    Covers every smdim op ("smdim::selective_scan_fwd", ... as torch.library ops appear in a
    torch.jit.trace graph), "aten::scaled_dot_product_attention" and the CPU flash kernel
    (unsupported by fvcore) and a broadcast-aware "aten::matmul". Each returns MACs (fvcore's
    convention) = half the torch count.
    Use: `FlopCountAnalysis(model, inputs).set_op_handle(**fvcore_handles())`.
    Raises ImportError (how to install) without fvcore.
    """
    _, get_shape = _import_fvcore()
    handles = {name: _fvcore_handle(adapter, get_shape) for name, _, adapter in _CUSTOM_OPS}
    handles["aten::scaled_dot_product_attention"] = lambda inputs, outputs: _fvcore_sdpa(inputs, get_shape)
    # The local attention path calls the CPU flash kernel directly (same leading q, k, v arguments).
    handles["aten::_scaled_dot_product_flash_attention_for_cpu"] = handles["aten::scaled_dot_product_attention"]
    handles["aten::matmul"] = lambda inputs, outputs: _fvcore_matmul(inputs, get_shape)
    return handles


# ---------------------------------------------------------------------------------------------
# One call for a module
# ---------------------------------------------------------------------------------------------

@dataclass
class FlopReport:
    """What `count_flops` found.

    total: all FLOPs, in `convention` (an int; fvcore may give an x.5 when a scan count is odd).
    by_module: module path -> FLOPs, "" = the whole call ("0", "0.x_proj", ... below it); only
        modules that ran ops with a formula (torch) or every traced module (fvcore).
    by_operator: op -> FLOPs, named as the tool names it: torch "aten::mm", "smdim::selective_scan_fwd";
        fvcore drops the namespace: "bmm", "selective_scan_fwd".
    unsupported: fvcore only: op name -> how often it ran without a handle (counted as 0).
    """
    total: Union[int, float]
    by_module: Dict[str, Union[int, float]]
    convention: str
    backend: str
    by_operator: Dict[str, Union[int, float]] = field(default_factory=dict)
    unsupported: Dict[str, int] = field(default_factory=dict)


def _as_number(x):
    return int(x) if float(x).is_integer() else float(x)


def _op_name(packet) -> str:
    name = getattr(packet, "_qualified_op_name", None)
    return name if name is not None else str(packet)


def _count_torch(module, inputs, backward, grad):
    counter = _fc.FlopCounterMode(display=False)
    with counter:
        out = module(*inputs)
        if backward:
            outs = [t for t in torch.utils._pytree.tree_leaves(out)
                    if isinstance(t, torch.Tensor) and t.requires_grad]
            if not outs:
                raise ValueError("count_flops(backward=True): no output of the module requires grad "
                                 "(give it parameters or inputs with requires_grad=True)")
            if grad is None:
                sum(t.sum() for t in outs).backward()
            else:
                torch.autograd.backward(outs, grad)
    counts = counter.get_flop_counts()
    root = type(module).__name__ if isinstance(module, torch.nn.Module) else None
    by_module = {"": counter.get_total_flops()}
    for name, ops in counts.items():
        if name == "Global" or name == root:
            continue
        if root is not None and name.startswith(root + "."):
            name = name[len(root) + 1:]
        by_module[name] = sum(ops.values())
    by_operator = {_op_name(packet): n for packet, n in counts.get("Global", {}).items()}
    return FlopReport(total=counter.get_total_flops(), by_module=by_module, convention=TORCH_CONVENTION,
                      backend="torch", by_operator=by_operator)


def _count_fvcore(module, inputs):
    FlopCountAnalysis, _ = _import_fvcore()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"count_flops(backend='fvcore') traces an nn.Module; got {type(module).__name__}")
    analysis = FlopCountAnalysis(module, tuple(inputs)).set_op_handle(**fvcore_handles())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return FlopReport(total=_as_number(analysis.total()),
                      by_module={k: _as_number(v) for k, v in analysis.by_module().items()},
                      convention=FVCORE_CONVENTION, backend="fvcore",
                      by_operator={k: _as_number(v) for k, v in analysis.by_operator().items()},
                      unsupported=dict(analysis.unsupported_ops()))


def count_flops(module: Callable, *inputs: Any, backend: str = "torch", backward: bool = False,
                grad: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None) -> FlopReport:
    """Count the FLOPs of `module(*inputs)` (and of its backward) with torch or fvcore.

    backend="torch": `torch.utils.flop_counter.FlopCounterMode`, 2 FLOPs per multiply-add; with
        backward=True it also runs the backward inside the counter: `.sum().backward()` of the
        outputs that require grad, or `torch.autograd.backward(outputs, grad)` with `grad` given
        (gradients accumulate into the parameters' .grad as usual).
    backend="fvcore": `fvcore.nn.FlopCountAnalysis` with `fvcore_handles()`, 1 per multiply-add
        (MACs), forward only; unsupported-op warnings are silenced, the ops are in
        `report.unsupported`. Needs `pip install fvcore`.
    """
    register_flop_formulas()
    if backend == "torch":
        return _count_torch(module, inputs, backward, grad)
    if backend == "fvcore":
        if backward or grad is not None:
            raise ValueError("count_flops(backend='fvcore') counts the forward only (fvcore traces it with "
                             "torch.jit); use backend='torch' for backward=True")
        return _count_fvcore(module, inputs)
    raise ValueError(f"backend must be 'torch' or 'fvcore'; got {backend!r}")


register_flop_formulas()
