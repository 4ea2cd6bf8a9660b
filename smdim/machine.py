"""The machine a number was measured on: CPU model, threads, torch version."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    import torch

    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
