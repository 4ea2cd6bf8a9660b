"""Which benchmark cases run and how long each is timed, from the environment (or --quick).

    SMDIM_BENCH_QUICK=1                quick mode (also `pytest benchmarks/ --quick`): L=512 only, few
                                       rounds, no naive forward+backward
    SMDIM_BENCH_THREADS=N              torch threads (default: the core count)
    SMDIM_BENCH_LENGTHS=512,1024       sequence lengths (default 512..8192; quick: 512)
    SMDIM_BENCH_NAIVE_FWD_MAX_L=L      longest L for the naive reference forward (default 8192)
    SMDIM_BENCH_NAIVE_FWDBWD_MAX_L=L   ... its forward+backward (default 512; quick: 0 = never)
    SMDIM_BENCH_PSCAN_MAX_L=L          longest L for mamba.py's pscan, both passes (default 8192)

An explicit variable wins over the quick-mode default.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .cases import BOUND, FORWARD, IMPLEMENTATIONS, NAIVE, PASSES, PSCAN, BenchCase
from .machine import bench_threads

QUICK_ENV = "SMDIM_BENCH_QUICK"
LENGTHS_ENV = "SMDIM_BENCH_LENGTHS"
NAIVE_FWD_MAX_ENV = "SMDIM_BENCH_NAIVE_FWD_MAX_L"
NAIVE_FWDBWD_MAX_ENV = "SMDIM_BENCH_NAIVE_FWDBWD_MAX_L"
PSCAN_MAX_ENV = "SMDIM_BENCH_PSCAN_MAX_L"

FULL_LENGTHS = (512, 1024, 2048, 4096, 8192)
QUICK_LENGTHS = (512,)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer; got {value!r}") from None


def _env_lengths(default: Tuple[int, ...]) -> Tuple[int, ...]:
    value = os.environ.get(LENGTHS_ENV, "").strip()
    if not value:
        return default
    try:
        lengths = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"{LENGTHS_ENV} must be comma-separated integers; got {value!r}") from None
    if not lengths or min(lengths) < 1:
        raise ValueError(f"{LENGTHS_ENV} must name positive lengths; got {value!r}")
    return lengths


@dataclass(frozen=True)
class BenchSettings:
    """The benchmark plan: cases to run, thread count and per-case timing budget."""

    quick: bool
    threads: int
    lengths: Tuple[int, ...]
    naive_forward_max_len: int
    naive_backward_max_len: int
    pscan_max_len: int
    time_budget_s: float  # aim for about this much timed work per case
    min_rounds: int
    max_rounds: int
    slow_case_s: float  # a case at least this slow is timed once, without warm-up

    @classmethod
    def from_env(cls, quick: Optional[bool] = None) -> "BenchSettings":
        quick = bool(quick) or _env_flag(QUICK_ENV)
        return cls(
            quick=quick,
            threads=bench_threads(),
            lengths=_env_lengths(QUICK_LENGTHS if quick else FULL_LENGTHS),
            naive_forward_max_len=_env_int(NAIVE_FWD_MAX_ENV, 8192),
            naive_backward_max_len=_env_int(NAIVE_FWDBWD_MAX_ENV, 0 if quick else 512),
            pscan_max_len=_env_int(PSCAN_MAX_ENV, 8192),
            time_budget_s=0.5 if quick else 3.0,
            min_rounds=3,
            max_rounds=10 if quick else 50,
            slow_case_s=1.0,
        )

    def runs(self, impl: str, pass_name: str, length: int) -> bool:
        """Whether the plan includes this (implementation, pass, L)."""
        if impl == BOUND:
            return pass_name == FORWARD
        if impl == NAIVE:
            limit = self.naive_forward_max_len if pass_name == FORWARD else self.naive_backward_max_len
            return length <= limit
        if impl == PSCAN:
            return length <= self.pscan_max_len
        return True

    def cases(self) -> List[BenchCase]:
        """Every planned case, pass by pass, then by L, then by implementation."""
        return [BenchCase(impl, pass_name, length)
                for pass_name in PASSES for length in self.lengths for impl in IMPLEMENTATIONS
                if self.runs(impl, pass_name, length)]

    def rounds_for(self, seconds_once: float) -> Tuple[int, int]:
        """(rounds, warm-up rounds) for a case that took `seconds_once` once."""
        if seconds_once >= self.slow_case_s:
            return 1, 0
        rounds = int(self.time_budget_s / max(seconds_once, 1e-6))
        return max(self.min_rounds, min(self.max_rounds, rounds)), 1

