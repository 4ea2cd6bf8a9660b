"""Selective-scan benchmarks: ours vs the naive reference vs mamba.py's pscan vs the arithmetic bound.

    pytest benchmarks/ --benchmark-only [--quick] --benchmark-json=bench.json
    python -m benchmarks.report bench.json --out bench_out

Cases (scan_cases.py): forward and forward+backward at L in {512, ..., 8192}, batch 1, dim 1536,
N 16, fp32, delta_softplus with delta_bias and D, torch pinned to $SMDIM_BENCH_THREADS threads
(default: the core count). Each (pass, L) is one pytest-benchmark group holding ours, the naive
reference, mamba.py's pscan and (forward) the arithmetic bound. The naive reference is slow, so
by default it runs forward at every L and forward+backward at L=512 only; settings.py lists the
environment variables that widen or narrow the plan, and quick mode (SMDIM_BENCH_QUICK=1 or
--quick: L=512, few rounds, no naive forward+backward) for CI.

Each case:
  1. the correctness guard (scan_guard.py) checks ours against mamba.py at this (pass, L), once;
  2. its peak memory is measured in a fresh subprocess as peak RSS growth over the inputs
     (memory.py explains how), which also times one cold run to pick the number of rounds;
  3. it is timed with benchmark.pedantic: one round, no warm-up, for cases slower than 1 s;
     otherwise a warm-up round and enough rounds for ~3 s (0.5 s in quick mode), 3 to 50.
extra_info holds suite, impl, pass, L, peak_mib, threads, isa, the shape and the guard's verdict,
for the report.
"""
from __future__ import annotations

import pytest

from smdim_kernels import backends

from .machine import kernel_isa
from .memory import measure_peak_memory
from .passes import FORWARD_BACKWARD
from .scan_cases import (BATCH, BOUND, DIM, DSTATE, DTYPE, OURS, PSCAN, SCAN_SUITE, make_scan_problem,
                         make_scan_runner)
from .scan_peers import MAMBAPY_MISSING


def _skip_if_unavailable(impl: str) -> None:
    if impl == PSCAN:
        pytest.importorskip("mambapy", reason=MAMBAPY_MISSING)
    if impl in (OURS, BOUND) and not backends.native_available():
        pytest.skip(f"the C++ kernels are not built ({backends.native_unavailable_reason()}); "
                    f"benchmarking the reference fallback as 'ours' would mislead. {backends.REBUILD_HINT}")


def test_selective_scan(benchmark, scan_case, bench_settings, scan_guard):
    """Guard, measure peak memory, then time one (implementation, pass, L)."""
    case = scan_case
    _skip_if_unavailable(case.impl)
    guard_summary = scan_guard.verify(case.pass_name, case.length)

    benchmark.group = case.group
    benchmark.extra_info.update({
        "suite": SCAN_SUITE, "impl": case.impl, "pass": case.pass_name, "L": case.length,
        "batch": BATCH, "dim": DIM, "dstate": DSTATE, "dtype": str(DTYPE).replace("torch.", ""),
        "threads": bench_settings.threads, "isa": kernel_isa(), "guard": guard_summary,
    })
    rounds, warmup_rounds = 1, 0
    if not benchmark.disabled:
        memory = measure_peak_memory(case.impl, case.pass_name, case.length, bench_settings.threads)
        benchmark.extra_info.update(peak_mib=round(memory.peak_mib, 2),
                                    memory_baseline_mib=round(memory.baseline_mib, 1),
                                    memory_method=memory.method)
        rounds, warmup_rounds = bench_settings.rounds_for(memory.seconds)

    runner = make_scan_runner(case.impl, case.pass_name,
                              make_scan_problem(case.length, requires_grad=case.pass_name == FORWARD_BACKWARD))
    benchmark.pedantic(runner, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
