"""The machine a benchmark runs on: CPU model, pinned thread count, torch version, kernel ISA."""
from __future__ import annotations

import os
import platform
from typing import Dict

THREADS_ENV = "SMDIM_BENCH_THREADS"


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def bench_threads() -> int:
    """Threads to pin torch to: $SMDIM_BENCH_THREADS, else the core count."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return available_cores()
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer; got {value!r}") from None
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer; got {value!r}")
    return threads


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def kernel_isa() -> str:
    """Instruction set our C++ kernels dispatch to, or why there is none."""
    from smdim_kernels import backends

    isa = backends.cpu_isa()
    return isa if isa is not None else f"none ({backends.native_unavailable_reason()})"


def describe_machine(threads: int) -> Dict[str, object]:
    """What the report's header line needs; stored in the benchmark JSON's machine_info."""
    import torch

    return {"cpu": cpu_model(), "threads": threads, "torch": torch.__version__, "isa": kernel_isa()}


def format_machine(info: Dict[str, object]) -> str:
    """One line naming the machine, e.g. 'AMD EPYC, 2 threads, torch 2.13.0, ISA avx512'."""
    return (f"{info.get('cpu', 'unknown CPU')}, {info.get('threads', '?')} threads, "
            f"torch {info.get('torch', '?')}, ISA {info.get('isa', '?')}")
