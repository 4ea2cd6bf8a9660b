"""Layer-level benchmarks: a Mamba layer (ours vs projections+scan floor, transformers' MambaMixer,
mamba.py), and an MFA block (default local attention, full attention) vs a transformer block of the
same width and one with the MFA block's parameter count.

    pytest benchmarks/ --benchmark-only [--quick] --benchmark-json=bench.json
    python -m benchmarks.report bench.json --out bench_out

Cases (layers.py has the problem and every implementation): forward and forward+backward at L in
{512, ..., 8192}, batch 1, d_model 768, fp32, torch pinned to $SMDIM_BENCH_THREADS threads. Each
(suite, pass, L) is one pytest-benchmark group. MambaMixer runs at L=2048 only (its forward+backward
takes about 8 minutes: exactly once, see settings.py); quick mode runs L=512 without it.

Each case:
  1. the correctness guard (layer_guard.LayerGuard) checks the group once;
  2. its FLOPs are counted (smdim_kernels.flops.count_flops, torch's FlopCounterMode: 2 per
     multiply-add; "n/a" where that module is missing);
  3. its peak memory is measured in a fresh subprocess (memory.py), which also times one cold run
     to pick the number of rounds; the subprocess starts before 1 and imports and prepares while
     1 and 2 run, then measures alone;
  4. it is timed like the selective-scan cases (one round for cases over 1 s, else ~3 s of rounds),
     and the last round's outputs and gradients must be finite.
The single-shot case (MambaMixer forward+backward) skips 4: its one run in step 3's subprocess is
timed there (extra_info time_s, which the report uses; pytest-benchmark's own figure for it also
counts that process's start-up, a few seconds).
"""
from __future__ import annotations

import pytest

from smdim_kernels import backends

from .layers import (BATCH, D_CONV, D_INNER, D_MODEL, D_STATE, DT_RANK, DTYPE, EXPAND, FLOOR, MAMBA_SUITE,
                     MFA_IMPLEMENTATIONS, NUM_HEADS, OURS, TRANSFORMER_FFN, TRANSFORMER_MATCHED, LayerCase, all_finite,
                     build_module, count_gflop, make_layer_runner, matched_transformer_ffn, parameter_count,
                     unavailable_reason)
from .machine import kernel_isa
from .memory import measure_peak_memory, start_peak_memory

SINGLE_SHOT_TIMING = ("one cold run, timed inside the fresh process that measured its memory "
                      "(pytest-benchmark's figure adds that process's start-up)")


def _skip_if_unavailable(impl: str) -> None:
    reason = unavailable_reason(impl)
    if reason is not None:
        pytest.skip(reason)
    if impl in (OURS, FLOOR) + MFA_IMPLEMENTATIONS and not backends.native_available():
        pytest.skip(f"the C++ kernels are not built ({backends.native_unavailable_reason()}); "
                    f"benchmarking the reference fallback as 'ours' would mislead. {backends.REBUILD_HINT}")


def _shape_info(case: LayerCase) -> dict:
    info = {"batch": BATCH, "d_model": D_MODEL, "dtype": str(DTYPE).replace("torch.", "")}
    if case.suite == MAMBA_SUITE:
        info.update(d_state=D_STATE, d_conv=D_CONV, expand=EXPAND, d_inner=D_INNER, dt_rank=DT_RANK)
    else:
        module = build_module(case.impl)
        info.update(num_heads=NUM_HEADS, transformer_ffn=TRANSFORMER_FFN, parameters=parameter_count(module))
        if unavailable_reason(TRANSFORMER_MATCHED) is None:
            info["transformer_matched_ffn"] = matched_transformer_ffn()
        if case.impl in MFA_IMPLEMENTATIONS:
            info["attn_window"] = getattr(getattr(module, "attn", None), "window", "?")
    return info


def run_layer_case(benchmark, case: LayerCase, settings, guard) -> None:
    """Guard, count FLOPs, measure peak memory, then time one (suite, implementation, pass, L)."""
    _skip_if_unavailable(case.impl)
    pending = None
    if not benchmark.disabled and not case.single_shot:
        pending = start_peak_memory(case.impl, case.pass_name, case.length, settings.threads, suite=case.suite)
    try:
        guard_summary = guard.verify(case.suite, case.pass_name, case.length)
        benchmark.group = case.group
        info = benchmark.extra_info
        info.update({"suite": case.suite, "impl": case.impl, "pass": case.pass_name, "L": case.length,
                     **_shape_info(case), "threads": settings.threads, "isa": kernel_isa(), "guard": guard_summary})
        runner = make_layer_runner(case.impl, case.pass_name, case.length)
        if not case.single_shot:
            gflop, note = count_gflop(runner)
            info.update(gflop=None if gflop is None else round(gflop, 4), flops_note=note)
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise

    if case.single_shot:
        info.update(gflop=None, flops_note="n/a: not counted (one run takes minutes)")
        memory = benchmark.pedantic(measure_peak_memory, args=(case.impl, case.pass_name, case.length,
                                                               settings.threads), kwargs={"suite": case.suite},
                                    rounds=1, warmup_rounds=0, iterations=1)
        info.update(peak_mib=round(memory.peak_mib, 2), memory_baseline_mib=round(memory.baseline_mib, 1),
                    memory_method=memory.method, time_s=memory.seconds, timing=SINGLE_SHOT_TIMING)
        return

    rounds, warmup_rounds = 1, 0
    if pending is not None:
        memory = pending.result()
        info.update(peak_mib=round(memory.peak_mib, 2), memory_baseline_mib=round(memory.baseline_mib, 1),
                    memory_method=memory.method)
        rounds, warmup_rounds = settings.rounds_for(memory.seconds)
    result = benchmark.pedantic(runner, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    assert all_finite(result), f"{case.impl} {case.pass_name} L={case.length}: non-finite outputs or gradients"


def test_mamba_layer(benchmark, mamba_case, bench_settings, layer_guard):
    """One Mamba-layer case: ours, the projections+scan floor, MambaMixer or mamba.py."""
    run_layer_case(benchmark, mamba_case, bench_settings, layer_guard)


def test_mfa_block(benchmark, mfa_case, bench_settings, layer_guard):
    """One block case: MFA (local attention), MFA (full attention), the same-width or the parameter-matched
    transformer block."""
    run_layer_case(benchmark, mfa_case, bench_settings, layer_guard)
