"""smdim_kernels: fused selective-scan / Mamba kernels for PyTorch.

CPU: C++ kernels (runtime-dispatched AVX-512 / AVX2 / generic SIMD, OpenMP) in `smdim_kernels._C`.
CUDA: Triton kernels. Both behind `torch.library` ops, so autograd, `torch.compile` and
`torch.library.opcheck` work. `backend_info()` says which implementation each op uses.
"""
from . import backends
from .ops.activation_linear import activation_linear, activation_linear_ref
from .ops.add_norm import add_norm_fn, add_norm_ref
from .ops.causal_conv1d import causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update
from .ops.local_attention import local_attention, local_attention_ref
from .ops.mamba_inner import mamba_inner_fn, mamba_inner_ref
from .ops.mamba_mixer import mamba_mixer_fn, mamba_mixer_ref
from .ops.selective_scan import (
    CHECKPOINT_CHUNK,
    MAX_DSTATE,
    selective_scan_fn,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)
from .backends import backend_info, format_backend_info
from .modules import (FeedForward, InferenceParams, LayerNorm, Mamba, MFABlock, MFAStack, RMSNorm,
                      SelfAttention)
from . import flops  # noqa: F401  (the module, importable as smdim_kernels.flops: registers the FLOP formulas)
from .flops import FlopReport, count_flops, fvcore_handles, register_flop_formulas

# After the op schemas above are defined: the C++ library registers CPU implementations of them.
backends.load()

__version__ = "0.1.0"

__all__ = [
    "FlopReport",
    "count_flops",
    "fvcore_handles",
    "register_flop_formulas",
    "FeedForward",
    "InferenceParams",
    "LayerNorm",
    "MFABlock",
    "MFAStack",
    "Mamba",
    "RMSNorm",
    "SelfAttention",
    "CHECKPOINT_CHUNK",
    "MAX_DSTATE",
    "activation_linear",
    "activation_linear_ref",
    "add_norm_fn",
    "add_norm_ref",
    "backend_info",
    "causal_conv1d_fn",
    "causal_conv1d_ref",
    "causal_conv1d_update",
    "format_backend_info",
    "local_attention",
    "local_attention_ref",
    "mamba_inner_fn",
    "mamba_inner_ref",
    "mamba_mixer_fn",
    "mamba_mixer_ref",
    "selective_scan_fn",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
]
