from .interface import causal_conv1d_fn
from .reference import causal_conv1d_ref

__all__ = ["causal_conv1d_fn", "causal_conv1d_ref"]
