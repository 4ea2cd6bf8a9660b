"""The studio suite (studio.py): seconds a user waits for a 16-bar infill and a 512-token piece
with each bundled model at the studio's default settings, on this machine's pinned threads."""
from __future__ import annotations

from smdim_kernels import backends

import pytest

from .machine import kernel_isa
from .studio import LATENCY_TARGET_S, STUDIO_SUITE, make_task


def test_studio_latency(benchmark, studio_case, bench_settings):
    if not backends.native_available():
        pytest.skip(f"the C++ kernels are not built ({backends.native_unavailable_reason()}): the studio would run "
                    f"smdim_kernels' reference ops. {backends.REBUILD_HINT}")
    task, info, check = make_task(studio_case)
    task()                                                     # warm-up: torch's one-time costs
    benchmark.group = f"{STUDIO_SUITE} {studio_case.style}"
    result = benchmark.pedantic(task, rounds=1, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(suite=STUDIO_SUITE, threads=bench_settings.threads, isa=kernel_isa(),
                                target_s=LATENCY_TARGET_S, **info, **check(result))
