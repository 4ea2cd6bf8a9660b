from .interface import add_norm_fn
from .reference import add_norm_ref

__all__ = ["add_norm_fn", "add_norm_ref"]
