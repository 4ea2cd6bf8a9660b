"""Shared by the ops' interfaces: one-time warnings and the lazy import of Triton kernels."""
from __future__ import annotations

import importlib
import warnings
from typing import Optional

_warned = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def warn_reference(op: str, device_type: str) -> None:
    """Say (once per op and device) that the slow PyTorch reference runs."""
    warn_once(f"{op}:{device_type}", f"smdim_kernels: no fused {op} kernel for device '{device_type}' in this "
                                     f"install; running the slow PyTorch reference (see smdim_kernels.backend_info()).")


def triton_kernels(package: str, op: str) -> Optional[object]:
    """`package`.triton, or None (warning once) when triton cannot be imported."""
    try:
        return importlib.import_module(".triton", package)
    except ImportError as exc:
        warn_once(f"{op}:triton", f"smdim_kernels: triton is unavailable ({exc}); CUDA {op} runs on the slow "
                                  f"PyTorch reference. Install it with: pip install -e '.[triton]'")
        return None
