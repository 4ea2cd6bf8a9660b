"""Model-level benchmarks: the SMDIM denoiser vs its parameter-matched transformer-diffusion baseline.

    pytest benchmarks/ --benchmark-only [--quick] [-k model] --benchmark-json=bench.json
    python -m benchmarks.report bench.json --out bench_out

Cases (models.py has the problem): passes fwd (one denoiser forward), train (one training step) and
sample (a full K-step sample), fp32, torch pinned to $SMDIM_BENCH_THREADS threads, in two tables:
  batch 1  presets tiny and base (quick mode: tiny), L in SMDIM_BENCH_LENGTHS (512 ... 8192; quick: 512);
  batched  presets tiny, small and base (quick: tiny), B x L in SMDIM_BENCH_MODEL_BATCHES (16x256 ... 1x4096,
           4096 tokens each; quick: 16x256), the sample only at B <= 8 and L <= 2048; -k B16xL256 selects
           one shape, -k xL the batched table, -k "model and not xL" the batch-1 table (settings.py has
           the plan variables).
Each (config, pass, L) or (config, pass, B, L) is one pytest-benchmark group holding both models.

Each case, on CPU:
  1. the correctness guard (model_guard.ModelGuard) checks the (config, pass) once, at batch 1;
  2. its FLOPs are counted (smdim_kernels.flops.count_flops, 2 per multiply-add);
  3. its peak memory is measured in a fresh subprocess (memory.py, suite "model"), which also times
     one run to pick the number of rounds; the subprocess starts before 1 and prepares while 1 and
     2 run, then measures alone;
  4. it is timed like the layer cases (one round for cases over 1 s, else ~3 s of rounds), and the
     last round's result is checked (finite logits of the right shape; a finite loss);
  5. fwd and train, SMDIM's case (both tables): timed again side by side with the baseline (paired.py: the
     two alternating round by round, >= 6 rounds), extra_info paired_ratio with its interval; the report's
     side-by-side columns and latency targets use it (the two cases' own medians are minutes apart, and
     this machine's speed drifts more than that between them).
A sample (single shot) is timed over exactly one run of the full K-step sample in this process
(its memory: a MEMORY_SAMPLE_STEPS-step sample in step 3's fresh process, the same peak), checked
(B x L tokens, no MASK left); its GFLOP are its denoiser calls x one forward's. (Not timed inside the
memory process: the allocator settings there, which return freed memory to the OS at once, slow
allocation-heavy code by up to 2-3x.)
On CUDA (cuda.py), 3 runs in process (torch.cuda.max_memory_allocated) and 4 times with CUDA events.
"""
from __future__ import annotations

import functools

import pytest

from smdim_kernels import backends

from .cuda import CUDA_TIMING, CudaEventTimer, measure_cuda
from .machine import kernel_isa
from .memory import MemoryMeasurement, start_peak_memory
from .models import (BASELINE_IMPL, DTYPE, MEMORY_SAMPLE_STEPS, MODEL_SUITE, SAMPLE_ORDER, SAMPLE_STEPS, SMDIM_IMPL,
                     ModelCase, describe_config, make_model_runner, make_warmup_runner, token_space)
from .paired import time_paired

SINGLE_SHOT_TIMING = {
    "cpu": (f"one run of the {SAMPLE_STEPS}-step sample in the benchmark process (after the warm-up runs); memory "
            f"from a {MEMORY_SAMPLE_STEPS}-step sample in a fresh process"),
    "cuda": "one run (after a 2-step warm-up sample), between CUDA events",
}
SAMPLE_FLOPS_NOTE = "sample: denoiser calls x one forward's GFLOP"


def _skip_if_unavailable(device: str) -> None:
    if device == "cpu" and not backends.native_available():
        pytest.skip(f"the C++ kernels are not built ({backends.native_unavailable_reason()}); both models would run "
                    f"smdim_kernels' reference ops, which says nothing about either. {backends.REBUILD_HINT}")


def _case_info(case: ModelCase, settings) -> dict:
    space = token_space()
    info = {"suite": MODEL_SUITE, "config": case.config, "impl": case.impl, "pass": case.pass_name, "L": case.length,
            "batch": case.batch, "batched": case.batched, "dtype": str(DTYPE).replace("torch.", ""),
            "device": settings.model_device, "threads": settings.threads, "isa": kernel_isa(), "pad_id": space.pad_id,
            "mask_id": space.mask_id, "first_regular_id": space.first_regular_id,
            **describe_config(case.config, case.impl)}
    if case.single_shot:
        info["steps"], info["order"] = SAMPLE_STEPS, SAMPLE_ORDER
    if settings.model_device == "cuda":
        import torch

        info["device_name"] = torch.cuda.get_device_name()
    return info


def _memory_info(memory: MemoryMeasurement) -> dict:
    return {"peak_mib": round(memory.peak_mib, 2), "memory_baseline_mib": round(memory.baseline_mib, 1),
            "memory_method": memory.method}


def _warmup(case: ModelCase, device: str):
    """The case's warm-up runner (same model, pass and batch; models.make_warmup_runner)."""
    return make_warmup_runner(case.config, case.impl, case.pass_name, device, batch=case.batch)


def _run_sample_once(benchmark, case: ModelCase, settings, runner, gflop, note, pending) -> None:
    """The single-shot sample: memory from the fresh subprocess (CPU) or in process (CUDA), then one
    timed and checked run of the full sample."""
    if settings.model_device == "cpu":
        memory = pending.result()
        _warmup(case, "cpu")()  # this process's one-time costs
        result = benchmark.pedantic(runner, rounds=1, warmup_rounds=0, iterations=1)
        calls, timing = runner.check(result)["denoiser_calls"], {}
    else:  # one run: its CUDA memory and event time
        warmup = _warmup(case, settings.model_device)
        memory = benchmark.pedantic(functools.partial(measure_cuda, runner, warmup), rounds=1, warmup_rounds=0,
                                    iterations=1)
        calls, timing = memory.info["denoiser_calls"], {"time_s": memory.seconds}
    benchmark.extra_info.update(
        _memory_info(memory), **timing, timing=SINGLE_SHOT_TIMING[settings.model_device],
        denoiser_calls=calls, gflop=None if gflop is None else round(gflop * calls, 4),
        gflop_per_call=None if gflop is None else round(gflop, 4), flops_note=f"{note}; {SAMPLE_FLOPS_NOTE}")


def _side_by_side(case: ModelCase, runner, settings, seconds_once: float) -> dict:
    """SMDIM's case (fwd or train, either table), timed again in alternating rounds with the baseline's runner
    of the same (config, pass, B, L) (paired.py): the ratio the report and the targets use, immune to the
    machine's drift between the two cases' own timings."""
    other = make_model_runner(case.config, BASELINE_IMPL, case.pass_name, case.length, "cpu", batch=case.batch)
    paired = time_paired(runner, other, settings.paired_rounds_for(2 * seconds_once))
    return dict(paired.info(), paired_with=BASELINE_IMPL)


def run_model_case(benchmark, case: ModelCase, settings, guard) -> None:
    """Guard, count FLOPs, measure peak memory, then time one (config, model, pass, batch, L). The guard
    checks the (config, pass) once, at batch 1 and its own length."""
    device = settings.model_device
    _skip_if_unavailable(device)
    pending = None
    if device == "cpu" and not benchmark.disabled:
        pending = start_peak_memory(case.impl, case.pass_name, case.length, settings.threads, suite=MODEL_SUITE,
                                    config=case.config, batch=case.batch)
    try:
        guard_summary = guard.verify(case.config, case.pass_name, case.length)
        benchmark.group = case.group
        benchmark.extra_info.update(_case_info(case, settings), guard=guard_summary)
        runner = make_model_runner(case.config, case.impl, case.pass_name, case.length, device, batch=case.batch)
        gflop, note = runner.count_gflop()
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise

    if case.single_shot:
        _run_sample_once(benchmark, case, settings, runner, gflop, note, pending)
        return
    info = benchmark.extra_info
    info.update(gflop=None if gflop is None else round(gflop, 4), flops_note=note)
    rounds, warmup_rounds = 1, 0
    if device == "cpu":
        if pending is not None:
            memory = pending.result()
            info.update(_memory_info(memory))
            rounds, warmup_rounds = settings.rounds_for(memory.seconds)
        result = benchmark.pedantic(runner, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        if case.impl == SMDIM_IMPL and pending is not None:
            info.update(_side_by_side(case, runner, settings, memory.seconds))
    else:
        memory = measure_cuda(runner, _warmup(case, device))
        info.update(_memory_info(memory))
        rounds, warmup_rounds = settings.rounds_for(memory.seconds)
        timer = CudaEventTimer(runner)
        result = benchmark.pedantic(timer, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        info.update(time_s=timer.median_s(rounds), timing=CUDA_TIMING)
    runner.check(result)


def test_model(benchmark, model_case, bench_settings, model_guard):
    """One model case: SMDIM or the baseline; a denoiser forward, a training step or a full sample."""
    run_model_case(benchmark, model_case, bench_settings, model_guard)
