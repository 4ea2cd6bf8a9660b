"""How far a result is from its reference: the error measures and tolerance the scan and layer
guards (scan_guard.py, layer_guard.py) share."""
from __future__ import annotations

import math

import torch

# fp32 on these sizes agrees to ~1e-6 relative (measured up to L=8192); 1e-4 leaves room
# for summation-order differences while still catching any real bug.
MAX_RELATIVE_ERROR = 1e-4


def max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|actual - expected| / max|expected| (error relative to the tensor's scale); inf for NaN."""
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    error = float((actual - expected).abs().max() / scale)
    return error if math.isfinite(error) else math.inf  # NaN anywhere fails the check


def max_abs_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|actual - expected|; inf for NaN."""
    error = float((actual - expected).abs().max())
    return error if math.isfinite(error) else math.inf
