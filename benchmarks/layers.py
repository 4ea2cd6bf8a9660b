"""The layer-level benchmarks: one Mamba layer, and one MFA block against two transformer blocks.

Problem (both suites): batch 1, d_model 768, fp32, sequence length L, forward (inference: under
torch.no_grad) and forward+backward (torch.autograd.grad of the output with respect to the input
and every parameter, a random output gradient; nothing accumulates in .grad). Modules stay in
training mode (every dropout is 0): for the transformer peer this is what makes
nn.MultiheadAttention call the fused SDPA flash kernel (in eval mode under no_grad it takes
PyTorch's "fast path", `_native_multi_head_attention`, which materialises the L x L scores).

Suite "mamba_layer": a Mamba layer, d_state 16, d_conv 4, expand 2 (d_inner 1536), dt_rank 48.
    ours   smdim_kernels.Mamba(768) (fused path, use_fast_path=True: the whole layer as `mamba_mixer_fn`)
    floor  "projections + scan": the layer's four GEMMs (in_proj, x_proj, dt_proj, out_proj) as
           plain torch.mm on contiguous operands of the right shapes, plus smdim_kernels'
           selective_scan_fn (with z, D and delta_bias) alone; independent inputs, so nothing
           of the layer's glue (conv, splits, layout) is in it. Its parameters are the layer's.
    hf     transformers' MambaMixer (layer 0; MambaConfig(hidden_size=768, state_size=16,
           expand=2, conv_kernel=4, use_conv_bias=True, use_bias=False)) on its default CPU path:
           no mamba_ssm / hub kernels, so the sequential Python loop over time
    pscan  mamba.py's MambaBlock (mambapy 1.2.0, MambaConfig(d_model=768, n_layers=1), pscan=True)
Every implementation carries the same weights: one state_dict (our Mamba's initialisation, seeded),
loaded with strict=True into each (the parameter names are shared), so all compute one function.

Suite "mfa_block": one block, d_model 768, 12 heads.
    mfa          smdim_kernels MFABlock(768, num_heads=12): its defaults (bidirectional Mamba,
                 GELU FFN of width 2*d_model, local-window attention)
    mfa_full     the same with attn_window=None (full attention)
    transformer  nn.TransformerEncoderLayer(768, 12, dim_feedforward=3072, dropout=0.0,
                 activation="gelu", batch_first=True, norm_first=True): a pre-norm transformer
                 block of the same width; its attention runs SDPA's flash kernel (checked by the guard)
    transformer_matched
                 the same block with a wider FFN, matched_transformer_ffn(): the multiple of 64
                 nearest to the width that gives it the MFA block's parameter count (the same-width
                 block has fewer; the report prints every count); the guard checks they agree within 1 %
MFABlock returns (hidden_states, residual); the block's output is their sum (the next block adds
them), so its backward takes the same output gradient on both.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .passes import FORWARD, FORWARD_BACKWARD, PASSES

MAMBA_SUITE = "mamba_layer"
MFA_SUITE = "mfa_block"
LAYER_SUITES = (MAMBA_SUITE, MFA_SUITE)

BATCH, D_MODEL, DTYPE = 1, 768, torch.float32
D_STATE, D_CONV, EXPAND = 16, 4, 2
D_INNER = EXPAND * D_MODEL  # 1536
DT_RANK = math.ceil(D_MODEL / 16)  # 48
NUM_HEADS, TRANSFORMER_FFN = 12, 3072

OURS, FLOOR, HF, PSCAN = "ours", "floor", "hf", "pscan"
MFA, MFA_FULL, TRANSFORMER, TRANSFORMER_MATCHED = "mfa", "mfa_full", "transformer", "transformer_matched"
SUITE_IMPLEMENTATIONS = {
    MAMBA_SUITE: (OURS, FLOOR, HF, PSCAN),
    MFA_SUITE: (MFA, MFA_FULL, TRANSFORMER, TRANSFORMER_MATCHED),
}
LAYER_IMPLEMENTATIONS = tuple(impl for impls in SUITE_IMPLEMENTATIONS.values() for impl in impls)
MFA_IMPLEMENTATIONS = (MFA, MFA_FULL)  # MFABlock: returns (hidden_states, residual)
TRANSFORMER_IMPLEMENTATIONS = (TRANSFORMER, TRANSFORMER_MATCHED)
FULL_ATTENTION_IMPLEMENTATIONS = (MFA_FULL,) + TRANSFORMER_IMPLEMENTATIONS  # O(L^2): their own length limit
FFN_WIDTH_MULTIPLE = 64  # the matched FFN width is a GEMM-friendly size: an odd width would slow the peer
PARAMETER_TOLERANCE = 0.01  # the matched transformer block's parameter count within 1 % of the MFA block's

TRANSFORMERS_MISSING = ("transformers is not installed (pip install 'transformers>=4.57,<5.19', "
                        "or pip install -e '.[bench]')")
MAMBAPY_MISSING = "mambapy is not installed (pip install 'mambapy==1.2.0', or pip install -e '.[bench]')"
FLASH_KERNEL = "aten::_scaled_dot_product_flash_attention_for_cpu"


@dataclass(frozen=True)
class LayerCase:
    """One benchmark of a layer suite: an implementation running one pass at one length."""

    suite: str
    impl: str
    pass_name: str
    length: int

    @property
    def group(self) -> str:
        return f"{self.suite} {self.pass_name} L={self.length}"

    @property
    def id(self) -> str:
        """Test id, usable in `-k` expressions (no '+')."""
        return f"{self.pass_name.replace('+', '')}-L{self.length}-{self.impl}"

    @property
    def single_shot(self) -> bool:
        """Cases that take minutes (MambaMixer's Python loop under autograd): run exactly once, in the
        fresh process that measures their memory, and report that run's time."""
        return self.suite == MAMBA_SUITE and self.impl == HF and self.pass_name == FORWARD_BACKWARD


# --- availability --------------------------------------------------------------------------------


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def mfa_block_class():
    """smdim_kernels' MFABlock, or None where this checkout has none yet."""
    import smdim_kernels

    cls = getattr(smdim_kernels, "MFABlock", None)
    if cls is None:
        try:
            from smdim_kernels.modules.mfa import MFABlock as cls
        except ImportError:
            return None
    return cls


def unavailable_reason(impl: str) -> Optional[str]:
    """Why `impl` cannot run here (a missing package), or None."""
    if impl == HF and not _importable("transformers.models.mamba.modeling_mamba"):
        return TRANSFORMERS_MISSING
    if impl == PSCAN and not _importable("mambapy.mamba"):
        return MAMBAPY_MISSING
    if impl in MFA_IMPLEMENTATIONS + (TRANSFORMER_MATCHED,) and mfa_block_class() is None:
        # the matched transformer takes its size from the MFA block
        return "smdim_kernels has no MFABlock (smdim_kernels/modules/mfa.py) in this checkout"
    return None


# --- the parameter-matched transformer block ------------------------------------------------------


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def transformer_block(ffn: int, device=None) -> nn.TransformerEncoderLayer:
    """The pre-norm GELU transformer block of the MFA suite, FFN hidden size `ffn`."""
    return nn.TransformerEncoderLayer(D_MODEL, NUM_HEADS, dim_feedforward=ffn, dropout=0.0, activation="gelu",
                                      batch_first=True, norm_first=True, device=device)


@functools.lru_cache(maxsize=None)
def matched_transformer_ffn() -> int:
    """The FFN hidden size (a multiple of FFN_WIDTH_MULTIPLE) whose transformer block has the parameter
    count closest to the default MFA block's. The counts are read off modules built on the meta
    device (no memory): the transformer block's count is linear in its FFN width."""
    cls = mfa_block_class()
    if cls is None:
        raise RuntimeError(unavailable_reason(TRANSFORMER_MATCHED))
    target = parameter_count(cls(d_model=D_MODEL, num_heads=NUM_HEADS, device="meta"))
    base = parameter_count(transformer_block(TRANSFORMER_FFN, device="meta"))
    per_hidden_unit = parameter_count(transformer_block(TRANSFORMER_FFN + 1, device="meta")) - base
    exact = TRANSFORMER_FFN + (target - base) / per_hidden_unit
    return FFN_WIDTH_MULTIPLE * max(1, round(exact / FFN_WIDTH_MULTIPLE))


def parameter_mismatch(impl: str, reference: str, tolerance: float = PARAMETER_TOLERANCE) -> Optional[str]:
    """Why `impl`'s parameter count is not within `tolerance` of `reference`'s, or None where it is."""
    count, reference_count = parameter_count(build_module(impl)), parameter_count(build_module(reference))
    difference = (count - reference_count) / reference_count
    if abs(difference) <= tolerance:
        return None
    return (f"{impl} has {count:,} parameters, {difference:+.1%} vs {reference}'s {reference_count:,} "
            f"(tolerance {tolerance:.0%})")


# --- modules (built once per process, seeded) ----------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@functools.lru_cache(maxsize=None)
def mamba_state_dict(seed: int = 0) -> Dict[str, torch.Tensor]:
    """The weights every Mamba-layer implementation loads: our Mamba(768)'s seeded initialisation."""
    import smdim_kernels

    with _seeded(seed):
        layer = smdim_kernels.Mamba(D_MODEL, d_state=D_STATE, d_conv=D_CONV, expand=EXPAND)
    return {name: tensor.detach().clone() for name, tensor in layer.state_dict().items()}


def _loaded(module: nn.Module, state: Dict[str, torch.Tensor]) -> nn.Module:
    module.load_state_dict(state, strict=True)
    return module.to(DTYPE).train()


@functools.lru_cache(maxsize=None)
def build_module(impl: str, seed: int = 0) -> nn.Module:
    """The module of `impl` (not the floor), in training mode, weights shared within its suite."""
    if impl == OURS:
        import smdim_kernels

        return _loaded(smdim_kernels.Mamba(D_MODEL, d_state=D_STATE, d_conv=D_CONV, expand=EXPAND,
                                           use_fast_path=True), mamba_state_dict(seed))
    if impl == HF:
        from transformers import MambaConfig
        from transformers.models.mamba.modeling_mamba import MambaMixer

        config = MambaConfig(hidden_size=D_MODEL, state_size=D_STATE, expand=EXPAND, conv_kernel=D_CONV,
                             use_conv_bias=True, use_bias=False, num_hidden_layers=1)
        return _loaded(MambaMixer(config, layer_idx=0), mamba_state_dict(seed))
    if impl == PSCAN:
        from mambapy.mamba import MambaBlock, MambaConfig

        config = MambaConfig(d_model=D_MODEL, n_layers=1, d_state=D_STATE, expand_factor=EXPAND, d_conv=D_CONV,
                             pscan=True)
        return _loaded(MambaBlock(config), mamba_state_dict(seed))
    if impl in MFA_IMPLEMENTATIONS:
        cls = mfa_block_class()
        if cls is None:
            raise RuntimeError(unavailable_reason(impl))
        kwargs = {} if impl == MFA else {"attn_window": None}
        with _seeded(seed):
            return cls(d_model=D_MODEL, num_heads=NUM_HEADS, **kwargs).to(DTYPE).train()
    if impl in TRANSFORMER_IMPLEMENTATIONS:
        ffn = TRANSFORMER_FFN if impl == TRANSFORMER else matched_transformer_ffn()
        with _seeded(seed):
            return transformer_block(ffn).to(DTYPE).train()
    raise ValueError(f"unknown layer implementation {impl!r}; expected one of {LAYER_IMPLEMENTATIONS}")


def reference_layer(seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Mamba layer in plain PyTorch (in_proj + smdim_kernels.mamba_inner_ref) on the shared weights:
    the guard's last resort when neither transformers nor mambapy is installed."""
    import smdim_kernels

    ours = build_module(OURS, seed)

    def forward(hidden_states):
        xz = ours.in_proj(hidden_states).transpose(1, 2)
        return smdim_kernels.mamba_inner_ref(
            xz, ours.conv1d.weight, ours.conv1d.bias, ours.x_proj.weight, ours.dt_proj.weight,
            ours.out_proj.weight, ours.out_proj.bias, -torch.exp(ours.A_log.float()), None, None, ours.D.float(),
            delta_bias=ours.dt_proj.bias.float(), delta_softplus=True)

    forward.named_parameters = ours.named_parameters  # the guard differentiates the same weights
    return forward


# --- the floor: projections + scan ---------------------------------------------------------------

FLOOR_INPUT_NAMES = ("in_proj.x", "in_proj.weight", "x_proj.x", "x_proj.weight", "dt_proj.x", "dt_proj.weight",
                     "out_proj.x", "out_proj.weight", "u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def floor_forward(x_in, w_in, x_x, w_x, x_dt, w_dt, x_out, w_out, u, delta, A, B, C, D, z, delta_bias):
    """The Mamba layer's GEMMs and scan, each on its own inputs: W (n, k) @ X (k, L) per projection,
    then the selective scan (z gate, D skip, softplus(delta + delta_bias)). Returns the five outputs."""
    from smdim_kernels import selective_scan_fn

    return (torch.mm(w_in, x_in), torch.mm(w_x, x_x), torch.mm(w_dt, x_dt), torch.mm(w_out, x_out),
            selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True))


def _floor_inputs(length: int, gen: torch.Generator, seed: int) -> Tuple[torch.Tensor, ...]:
    state = mamba_state_dict(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=gen, dtype=DTYPE)

    return (
        randn(D_MODEL, length), state["in_proj.weight"].clone(),
        randn(D_INNER, length), state["x_proj.weight"].clone(),
        randn(DT_RANK, length), state["dt_proj.weight"].clone(),
        randn(D_INNER, length), state["out_proj.weight"].clone(),
        randn(BATCH, D_INNER, length), randn(BATCH, D_INNER, length, scale=0.5),
        -torch.exp(state["A_log"].float()), randn(BATCH, D_STATE, length), randn(BATCH, D_STATE, length),
        state["D"].clone(), randn(BATCH, D_INNER, length), state["dt_proj.bias"].clone(),
    )


def floor_output_shapes(length: int) -> Tuple[Tuple[int, ...], ...]:
    """Shapes of floor_forward's outputs: the four projections (n, L), then the scan (batch, d_inner, L)."""
    return ((2 * D_INNER, length), (DT_RANK + 2 * D_STATE, length), (D_INNER, length), (D_MODEL, length),
            (BATCH, D_INNER, length))


# --- runners -------------------------------------------------------------------------------------


def _as_tuple(out) -> Tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@dataclass
class LayerRunner:
    """A no-argument callable running one (implementation, pass, L), with what the FLOP counter needs.

    forward(*inputs) is the module call (or the floor's function). Calling the runner returns the
    outputs (a tuple; forward under no_grad), or for forward+backward (outputs detached, gradients)
    with gradients in the order of `leaf_names`.
    """

    pass_name: str
    forward: Callable[..., Any]
    inputs: Tuple[torch.Tensor, ...]
    leaf_names: Tuple[str, ...] = ()
    leaves: Tuple[torch.Tensor, ...] = ()
    grad_outputs: Tuple[torch.Tensor, ...] = ()

    def __call__(self):
        if self.pass_name == FORWARD:
            with torch.no_grad():
                return _as_tuple(self.forward(*self.inputs))
        outputs = _as_tuple(self.forward(*self.inputs))
        grads = torch.autograd.grad(outputs, self.leaves, self.grad_outputs, allow_unused=True)
        return tuple(out.detach() for out in outputs), grads

    def count_flops(self):
        """smdim_kernels.flops.count_flops of this pass (FlopReport; `.total` in torch's convention)."""
        from smdim_kernels.flops import count_flops

        if self.pass_name == FORWARD:
            with torch.no_grad():
                return count_flops(self.forward, *self.inputs, backend="torch")
        try:
            return count_flops(self.forward, *self.inputs, backend="torch", backward=True, grad=self.grad_outputs)
        finally:  # count_flops' backward accumulates into .grad: drop it
            for leaf in self.leaves:
                leaf.grad = None


def make_input(length: int, requires_grad: bool, seed: int = 0):
    """hidden_states (batch, L, d_model) and, for the backward, an output gradient of that shape."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(BATCH, length, D_MODEL, generator=gen, dtype=DTYPE)
    grad = torch.randn(BATCH, length, D_MODEL, generator=gen, dtype=DTYPE) if requires_grad else None
    return x.requires_grad_(requires_grad), grad


def make_layer_runner(impl: str, pass_name: str, length: int, seed: int = 0,
                      module: Optional[Callable] = None) -> LayerRunner:
    """The runner of `impl` (either suite) for `pass_name` at `length`; inputs are seeded, so every
    implementation of a suite gets the same ones. `module` overrides the built module (guard)."""
    if pass_name not in PASSES:
        raise ValueError(f"unknown pass {pass_name!r}; expected one of {PASSES}")
    backward = pass_name == FORWARD_BACKWARD
    if impl == FLOOR:
        gen = torch.Generator().manual_seed(seed + 2)
        inputs = tuple(t.requires_grad_(backward) for t in _floor_inputs(length, gen, seed))
        if not backward:
            return LayerRunner(pass_name, floor_forward, inputs)
        grads = tuple(torch.randn(*shape, generator=gen, dtype=DTYPE) for shape in floor_output_shapes(length))
        return LayerRunner(pass_name, floor_forward, inputs, FLOOR_INPUT_NAMES, inputs, grads)
    if module is None:
        module = build_module(impl, seed)
    x, grad = make_input(length, backward, seed)
    if not backward:
        return LayerRunner(pass_name, module, (x,))
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    names = ("hidden_states",) + tuple(name for name, _ in named)
    leaves = (x,) + tuple(p for _, p in named)
    n_outputs = 2 if impl in MFA_IMPLEMENTATIONS else 1  # MFABlock: (hidden_states, residual), summed downstream
    return LayerRunner(pass_name, module, (x,), names, leaves, (grad,) * n_outputs)


# --- FLOPs ---------------------------------------------------------------------------------------

FLOP_CONVENTION = ("torch.utils.flop_counter via smdim_kernels.flops.count_flops: 2 FLOPs per multiply-add; "
                   "GEMMs, convolutions, attention and smdim's ops (registered formulas); elementwise ops count 0")


def flops_unavailable_reason() -> Optional[str]:
    """Why FLOPs cannot be counted here (no smdim_kernels.flops), or None."""
    try:
        from smdim_kernels.flops import count_flops  # noqa: F401
    except ImportError as exc:
        return f"smdim_kernels.flops is not available ({exc})"
    return None


def count_gflop(runner: LayerRunner) -> Tuple[Optional[float], str]:
    """(GFLOP of one call, note): None and the reason where FLOPs cannot be counted."""
    reason = flops_unavailable_reason()
    if reason is not None:
        return None, f"n/a: {reason}"
    return runner.count_flops().total / 1e9, FLOP_CONVENTION


# --- checks used by the guard --------------------------------------------------------------------


def ops_run(runner: LayerRunner) -> Sequence[str]:
    """Names of the aten/custom ops one run of `runner` dispatches (torch profiler, CPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner()
    return sorted({event.name for event in prof.events()})


def all_finite(result) -> bool:
    """Whether every tensor in a runner's result (outputs, gradients) is finite."""
    tensors = [t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors)
