"""Argument checks shared by every op and module: errors name the argument and what was expected."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import torch

# The floating dtypes every op takes (fp16/bf16 accumulate in fp32; fp64 for gradcheck).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")


def check_float(name: str, t: torch.Tensor, allowed: Iterable[torch.dtype]) -> None:
    allowed = tuple(allowed)
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must have a floating dtype ({names}); got {t.dtype}")


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int], text: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must be {text} = {tuple(expected)}; got shape {tuple(t.shape)}")


def check_same_device(tensors: Dict[str, Optional[torch.Tensor]]) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all tensors must be on one device; got {listing}")
