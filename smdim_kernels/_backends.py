"""Which implementation each op runs on each device type, and why."""
from __future__ import annotations

import importlib.util
from typing import Dict

import torch

from . import _native

OPS = ("selective_scan", "causal_conv1d", "add_norm")


def _triton_status() -> str:
    if importlib.util.find_spec("triton") is None:
        return "PyTorch reference (triton is not installed: pip install -e '.[triton]')"
    if not torch.cuda.is_available():
        return "Triton (no CUDA device visible in this process)"
    return "Triton"


def backend_info() -> Dict[str, Dict[str, str]]:
    """{op: {device_type: implementation}} for the ops of this library."""
    if _native.available():
        cpu = f"C++ ({_native.cpu_isa()}, {torch.get_num_threads()} threads)"
    else:
        cpu = f"PyTorch reference (C++ extension unavailable: {_native.unavailable_reason()})"
    cuda = _triton_status()
    info = {op: {"cpu": cpu, "cuda": cuda, "other": "PyTorch reference"} for op in OPS}
    # mamba_inner and mamba_mixer have no kernels of their own: they compose the ops above with GEMMs.
    for op in ("mamba_inner", "mamba_mixer"):
        info[op] = {device: "composite: causal_conv1d + selective_scan + GEMMs (see rows above)"
                    for device in ("cpu", "cuda", "other")}
    return info


def format_backend_info() -> str:
    """backend_info() as a markdown table."""
    rows = ["| op | cpu | cuda | other devices |", "| --- | --- | --- | --- |"]
    for op, by_device in backend_info().items():
        rows.append(f"| {op} | {by_device['cpu']} | {by_device['cuda']} | {by_device['other']} |")
    return "\n".join(rows)
