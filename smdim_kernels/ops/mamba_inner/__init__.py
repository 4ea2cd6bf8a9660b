from .interface import mamba_inner_fn
from .reference import mamba_inner_ref

__all__ = ["mamba_inner_fn", "mamba_inner_ref"]
