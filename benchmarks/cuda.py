"""The model suite's CUDA path: which device it runs on, peak memory and CUDA-event timings.

    SMDIM_BENCH_DEVICE=auto|cpu|cuda   device of the model suite (default auto: cuda when
                                       torch.cuda.is_available(), else cpu)

On CPU nothing here touches CUDA (`bench_device` only asks torch.cuda.is_available()). On CUDA:
  memory  torch.cuda.max_memory_allocated() - memory_allocated() before the run, after
          torch.cuda.reset_peak_memory_stats(), in the benchmark process itself (the allocator's
          own counters: tensors only; parameters, inputs and optimizer state exist before);
  time    each call between two CUDA events, synchronised; the report uses the median of the
          timed rounds (extra_info time_s), not pytest-benchmark's host-side figure.
"""
from __future__ import annotations

import gc
import os
import statistics
from typing import Callable, List

import torch

from .memory import MIB, MemoryMeasurement

DEVICE_ENV = "SMDIM_BENCH_DEVICE"
DEVICES = ("cpu", "cuda")
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated - allocated before (peak stats reset; tensors only)"
CUDA_TIMING = "CUDA events around each call, synchronised; median of the timed rounds"


def bench_device() -> str:
    """The model suite's device from $SMDIM_BENCH_DEVICE (auto: cuda if available, else cpu)."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value not in DEVICES:
        raise ValueError(f"{DEVICE_ENV} must be auto, cpu or cuda; got {value!r}")
    if value == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}=cuda but torch.cuda.is_available() is False")
    return value


class CudaEventTimer:
    """Wraps a runner: every call is timed between CUDA events and synchronised before it returns."""

    def __init__(self, runner: Callable[[], object]):
        self.runner = runner
        self.seconds: List[float] = []

    def __call__(self):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = self.runner()
        end.record()
        end.synchronize()
        self.seconds.append(start.elapsed_time(end) / 1e3)
        return result

    def median_s(self, last: int) -> float:
        """Median of the last `last` calls (the timed rounds, after any warm-up rounds)."""
        return statistics.median(self.seconds[-last:])


def measure_cuda(runner, warmup: Callable[[], object]) -> MemoryMeasurement:
    """Run `warmup` once, then `runner` once: its peak allocated CUDA memory and event time.
    `runner.check(result)`, if it has one, validates the result and fills `info`."""
    warmup()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    timer = CudaEventTimer(runner)
    result = timer()
    peak = torch.cuda.max_memory_allocated()
    info = runner.check(result) if hasattr(runner, "check") else None
    return MemoryMeasurement((peak - baseline) / MIB, baseline / MIB, timer.seconds[-1], CUDA_MEMORY_METHOD, info)
