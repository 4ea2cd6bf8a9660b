"""Guarded loading of the compiled C++ kernels (`smdim_kernels._C`).

The library must work without them (slowly, on the PyTorch reference), but never silently:
a missing or broken build is reported once, with the reason and the command that rebuilds it.
`SMDIM_DISABLE_NATIVE=1` skips loading on purpose (to compare against the reference path).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch

REBUILD_HINT = (
    "Rebuild it from the source tree with `pip install -e .` (needs a C++17 compiler; "
    "unset SMDIM_SKIP_NATIVE if you set it)."
)


class NativeExtensionWarning(RuntimeWarning):
    """The C++ kernels are unavailable; CPU ops run on the slow PyTorch reference."""


_loaded = False
_error: Optional[str] = None


def load() -> bool:
    """Import the compiled library once; warn (once) if it is unavailable."""
    global _loaded, _error
    if _loaded or _error is not None:
        return _loaded
    if os.environ.get("SMDIM_DISABLE_NATIVE", "0") not in ("", "0"):
        _error = "disabled by SMDIM_DISABLE_NATIVE"
    else:
        try:
            from . import _C  # noqa: F401  (registers the CPU kernels with the dispatcher)

            _loaded = True
        except ImportError as exc:
            _error = f"{type(exc).__name__}: {exc}"
    if not _loaded:
        warnings.warn(
            f"smdim_kernels: the compiled C++ CPU kernels are not available ({_error}). "
            f"CPU ops fall back to the PyTorch reference, which is orders of magnitude slower. "
            f"{REBUILD_HINT}",
            NativeExtensionWarning,
            stacklevel=3,
        )
    return _loaded


def available() -> bool:
    return _loaded


def unavailable_reason() -> Optional[str]:
    return _error


def cpu_isa() -> Optional[str]:
    """Instruction set the CPU kernels dispatch to ("avx512", "avx2", "generic"), or None."""
    return torch.ops.smdim_native.cpu_isa() if _loaded else None
