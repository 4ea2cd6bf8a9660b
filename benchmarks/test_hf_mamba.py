"""The transformers suite (hf_mamba.py): transformers' Mamba model unpatched vs with smdim enabled."""
from __future__ import annotations

import pytest

from smdim_kernels import backends

from .hf_mamba import DECODE, HF_MODEL_SUITE, PATCHED, check, make_task
from .machine import kernel_isa

_checked = set()


def test_hf_mamba(benchmark, hf_case, bench_settings):
    pytest.importorskip("transformers")
    if not backends.native_available():
        pytest.skip(f"the C++ kernels are not built ({backends.native_unavailable_reason()}): enable() would run "
                    f"smdim_kernels' reference ops. {backends.REBUILD_HINT}")
    key = (hf_case.pass_name, hf_case.length)
    note = check(hf_case) if key not in _checked else "checked in this (pass, L)'s other case"
    _checked.add(key)
    task, info = make_task(hf_case)
    benchmark.group = hf_case.group
    # The unpatched path runs seconds to minutes per call: once, cold (torch's one-time costs are
    # noise beside it); smdim's path after a warm-up, a few rounds.
    fast = hf_case.impl == PATCHED
    result = benchmark.pedantic(task, rounds=3 if fast else 1, warmup_rounds=1 if fast else 0, iterations=1)
    benchmark.extra_info.update(suite=HF_MODEL_SUITE, impl=hf_case.impl, pass_name=hf_case.pass_name,
                                L=hf_case.length, layers=hf_case.layers, threads=bench_settings.threads,
                                isa=kernel_isa(), check=note, **info)
    if hf_case.pass_name == DECODE:
        _, decode_s = result
        benchmark.extra_info["tokens_per_s"] = info["decode_steps"] / decode_s
