"""Drop-in nn.Modules built on the fused ops (the maths stays in `smdim_kernels.ops`)."""
from .attention import SelfAttention
from .feedforward import FeedForward
from .mamba import InferenceParams, Mamba
from .mfa import MFABlock, MFAStack, residual_stack
from .norm import LayerNorm, RMSNorm

__all__ = ["FeedForward", "InferenceParams", "LayerNorm", "MFABlock", "MFAStack", "Mamba", "RMSNorm",
           "SelfAttention", "residual_stack"]
