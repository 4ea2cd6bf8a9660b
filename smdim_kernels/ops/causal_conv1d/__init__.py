from .interface import causal_conv1d_fn, causal_conv1d_update
from .reference import causal_conv1d_ref

__all__ = ["causal_conv1d_fn", "causal_conv1d_ref", "causal_conv1d_update"]
