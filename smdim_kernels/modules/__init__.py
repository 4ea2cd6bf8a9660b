"""Drop-in nn.Modules built on the fused ops (the maths stays in `smdim_kernels.ops`)."""
from .mamba import InferenceParams, Mamba

__all__ = ["InferenceParams", "Mamba"]
