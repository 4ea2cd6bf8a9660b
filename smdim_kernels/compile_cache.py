"""A torch.compile (Inductor) cache directory of its own for each version of these kernels.

Inductor's on-disk caches key a compiled graph by the graph and its inputs, not by what a custom
op's fake kernel says about its outputs. When an op's outputs change shape or layout between two
versions of smdim_kernels (e.g. a saved activation stored channel-major instead of time-major), a
graph compiled with the old version is still found in the cache and fails its size asserts
("expected size 40==16 ..."). `use_versioned_compile_cache()` points Inductor at a directory named
after a fingerprint of the kernels' sources and compiled library, so every version compiles into
its own cache; a TORCHINDUCTOR_CACHE_DIR the user set is left alone.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_ENV = "TORCHINDUCTOR_CACHE_DIR"


def kernels_fingerprint() -> str:
    """16 hex digits over the contents of smdim_kernels' Python sources and compiled library."""
    digest = hashlib.sha256()
    files = sorted(p for p in _PACKAGE.rglob("*") if p.suffix in (".py", ".so", ".pyd") and p.is_file()
                   and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def versioned_compile_cache_dir() -> str:
    """<temp dir>/torchinductor_smdim_<fingerprint>: this version's Inductor cache."""
    return os.path.join(tempfile.gettempdir(), f"torchinductor_smdim_{kernels_fingerprint()}")


def use_versioned_compile_cache() -> str:
    """Set TORCHINDUCTOR_CACHE_DIR to this version's directory unless the user set one; returns the
    directory Inductor will use. Call before the first compilation."""
    if not os.environ.get(_ENV):
        os.environ[_ENV] = versioned_compile_cache_dir()
    return os.environ[_ENV]
