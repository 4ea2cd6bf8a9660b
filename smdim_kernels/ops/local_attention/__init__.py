from .interface import local_attention
from .layout import local_block_size
from .reference import local_attention_ref

__all__ = ["local_attention", "local_attention_ref", "local_block_size"]
