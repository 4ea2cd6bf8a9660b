"""Which implementation runs each op, in one place.

* The C++ CPU kernels (`smdim_kernels._C`): loaded once, guarded. The library works without
  them (slowly, on the PyTorch reference) but never silently: a missing, broken or stale build
  is reported once with the reason and the rebuild command. `SMDIM_DISABLE_NATIVE=1` skips
  loading on purpose (to compare against the reference path).
* Triton on CUDA, imported lazily; without triton, CUDA runs the reference (warned once).
* The reference for every other device (warned once per op and device).
* `backend_info()`: what each op runs on each device type, truthfully per op.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from typing import Callable, Dict, Optional

import torch

REBUILD_HINT = (
    "Rebuild it from the source tree with `pip install -e .` (needs a C++17 compiler; "
    "unset SMDIM_SKIP_NATIVE if you set it)."
)

# Ops with their own kernels, and what their C++ CPU kernel is (the scan and the conv pick an ISA at run time).
KERNEL_OPS = {"selective_scan": "ISA-dispatched SIMD", "causal_conv1d": "ISA-dispatched SIMD, SiLU fused",
              "add_norm": "compiler-vectorised"}
COMPOSITE_OPS = ("mamba_inner", "mamba_mixer")  # causal_conv1d + selective_scan + GEMMs
# Ops whose maths runs on PyTorch's own kernels on every device (no kernel of ours, no fallback).
TORCH_KERNEL_OPS = {
    "local_attention": {"cpu": "PyTorch's CPU flash-attention kernels, forward and backward, per query-block group",
                        "cuda": "PyTorch SDPA forward; backward recomputes each group's scores",
                        "other": "PyTorch SDPA forward; backward recomputes each group's scores"},
    "activation_linear": {device: "PyTorch activation + GEMM (backward recomputes the activation)"
                          for device in ("cpu", "cuda", "other")},
}


class NativeExtensionWarning(RuntimeWarning):
    """The C++ kernels are unavailable; CPU ops run on the slow PyTorch reference."""


# --- the C++ kernels -------------------------------------------------------------------------

_loaded = False
_error: Optional[str] = None


def _check_constants() -> Optional[str]:
    """None if the build's scan constants are this package's, else why not."""
    from .ops.selective_scan.constants import CHECKPOINT_CHUNK, MAX_DSTATE

    if not hasattr(torch.ops.smdim_native, "scan_constants"):
        return "a stale build (it predates smdim_native.scan_constants)"
    built = tuple(torch.ops.smdim_native.scan_constants())
    expected = (CHECKPOINT_CHUNK, MAX_DSTATE)
    if built != expected:
        return (f"built with (checkpoint chunk, max N) = {built}, but this package expects {expected} "
                "(ops/selective_scan/constants.py)")
    return None


def load() -> bool:
    """Import the compiled library once (after the op schemas exist); warn once if unavailable."""
    global _loaded, _error
    if _loaded or _error is not None:
        return _loaded
    if os.environ.get("SMDIM_DISABLE_NATIVE", "0") not in ("", "0"):
        _error = "disabled by SMDIM_DISABLE_NATIVE"
    else:
        try:
            from . import _C  # noqa: F401  (registers the CPU kernels with the dispatcher)

            _error = _check_constants()
            _loaded = _error is None
            if not _loaded:
                _references_on_cpu()
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


def _references_on_cpu() -> None:
    """A build that loaded but is refused has already registered its CPU kernels with the
    dispatcher: put the references in their place, so what the warning says is what runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes that a kernel is overridden: that is the point here
        for op, references in _references.items():
            for direction, reference in zip(("fwd", "bwd"), references):
                torch.library.impl(f"smdim::{op}_{direction}", "CPU")(reference)


def native_available() -> bool:
    return _loaded


def native_unavailable_reason() -> Optional[str]:
    return _error


def cpu_isa() -> Optional[str]:
    """Instruction set the CPU kernels of selective_scan and causal_conv1d dispatch to ("avx512", "avx2",
    "generic"), or None."""
    return torch.ops.smdim_native.cpu_isa() if _loaded else None


# --- reference and Triton implementations ----------------------------------------------------

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


def _cuda_impl(op: str, package: str, direction: str, reference: Callable) -> Callable:
    def cuda(*args):
        kernels = triton_kernels(package, op)
        return reference(*args) if kernels is None else getattr(kernels, f"{op}_{direction}_triton")(*args)
    cuda.__name__ = f"{op}_{direction}_cuda"
    return cuda


_references: Dict[str, tuple] = {}  # op -> (fwd, bwd) references of the ops with C++ kernels


def register_implementations(op: str, package: str, fwd_reference: Callable, bwd_reference: Callable) -> None:
    """smdim::<op>_fwd / _bwd: the reference on every device without a kernel, Triton's
    <op>_fwd_triton / <op>_bwd_triton (in `package`.triton) on CUDA. The C++ library registers
    the CPU kernels itself (csrc/); references call warn_reference where they run."""
    _references[op] = (fwd_reference, bwd_reference)
    for direction, reference in (("fwd", fwd_reference), ("bwd", bwd_reference)):
        torch.library.impl(f"smdim::{op}_{direction}", "CompositeExplicitAutograd")(reference)
        torch.library.impl(f"smdim::{op}_{direction}", "CUDA")(_cuda_impl(op, package, direction, reference))


# --- what runs where -------------------------------------------------------------------------

def _triton_status() -> str:
    if importlib.util.find_spec("triton") is None:
        return "PyTorch reference (triton is not installed: pip install -e '.[triton]')"
    if not torch.cuda.is_available():
        return "Triton (no CUDA device visible in this process)"
    return "Triton"


def _cpu_status(op: str) -> str:
    if not _loaded:
        return f"PyTorch reference (C++ extension unavailable: {_error})"
    isa = f"{cpu_isa()}, " if KERNEL_OPS[op].startswith("ISA-dispatched") else ""
    return f"C++ ({KERNEL_OPS[op]}, {isa}{torch.get_num_threads()} threads)"


def backend_info() -> Dict[str, Dict[str, str]]:
    """{op: {device_type: implementation}} for the ops of this library."""
    cuda = _triton_status()
    info = {op: {"cpu": _cpu_status(op), "cuda": cuda, "other": "PyTorch reference"} for op in KERNEL_OPS}
    for op in COMPOSITE_OPS:  # no kernels of their own: they compose the ops above with GEMMs
        info[op] = {device: "composite: causal_conv1d + selective_scan + GEMMs (see rows above)"
                    for device in ("cpu", "cuda", "other")}
    info.update({op: dict(by_device) for op, by_device in TORCH_KERNEL_OPS.items()})
    return info


def format_backend_info() -> str:
    """backend_info() as a markdown table."""
    rows = ["| op | cpu | cuda | other devices |", "| --- | --- | --- | --- |"]
    for op, by_device in backend_info().items():
        rows.append(f"| {op} | {by_device['cpu']} | {by_device['cuda']} | {by_device['other']} |")
    return "\n".join(rows)
