from .interface import DEFAULT_CHUNK_SIZE, mamba_mixer_fn
from .reference import mamba_mixer_ref

__all__ = ["DEFAULT_CHUNK_SIZE", "mamba_mixer_fn", "mamba_mixer_ref"]
