"""Peak memory of one benchmark case, measured as peak RSS growth in a fresh subprocess.

Why RSS: it counts everything the case touches (tensors, autograd's saved activations and
intermediates, gradients, and buffers the C++ kernels allocate outside torch's allocator),
which allocator-level accounting (the torch profiler) would miss. Why a subprocess: the peak
of a process is a high-water mark, so each case gets a fresh interpreter of its own.

In the subprocess (`python -m benchmarks.memory --impl ours --pass fwd --length 512`):
  1. pin the threads, import everything, and run the case once at a tiny L (pays one-time
     costs: thread pools, lazy initialisation; not counted);
  2. allocate the case's inputs (and, for mamba.py, transpose them to its layout) — not counted;
  3. baseline = current RSS; reset the peak (Linux: `echo 5 > /proc/self/clear_refs` resets VmHWM);
  4. run the case once (forward, or forward and backward) keeping its outputs;
  5. peak memory = VmHWM - baseline: everything the case allocated at its worst moment.
glibc's mmap threshold is pinned at 128 KiB (MALLOC_MMAP_THRESHOLD_), so freed buffers go
back to the OS at once and the warm-up's freed memory is not recycled under the baseline.
Where VmHWM cannot be reset (not Linux) the fallback is ru_maxrss - baseline, an upper bound
(it may include a higher peak from before the baseline); the method is reported either way.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .cases import FORWARD_BACKWARD, IMPLEMENTATIONS, PASSES

MIB = 1024 * 1024
WARMUP_LENGTH = 16
MMAP_THRESHOLD_BYTES = 128 * 1024
RESULT_PREFIX = "SMDIM_MEMORY_RESULT "
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MemoryMeasurement:
    peak_mib: float  # peak RSS growth while the case ran
    baseline_mib: float  # RSS after importing and allocating the inputs
    seconds: float  # wall time of that one (cold) run
    method: str  # how the peak was read


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1))


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return _status_kib("VmHWM") <= _status_kib("VmRSS") + 4
    except OSError:
        return False


def _max_rss_bytes() -> int:
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss if sys.platform == "darwin" else max_rss * 1024  # bytes on macOS, KiB elsewhere


def _current_rss_bytes() -> int:
    try:
        return _status_kib("VmRSS") * 1024
    except OSError:
        return _max_rss_bytes()


def measure_here(impl: str, pass_name: str, length: int, threads: int) -> MemoryMeasurement:
    """Run the case once in this process and measure its peak RSS growth (see module docstring)."""
    import torch

    import smdim_kernels  # noqa: F401  (loads the C++ kernels before the baseline)

    from .cases import make_problem, make_runner

    torch.set_num_threads(threads)
    requires_grad = pass_name == FORWARD_BACKWARD
    make_runner(impl, pass_name, make_problem(WARMUP_LENGTH, requires_grad=requires_grad))()
    runner = make_runner(impl, pass_name, make_problem(length, requires_grad=requires_grad))
    gc.collect()
    baseline = _current_rss_bytes()
    if _reset_peak_rss():
        method = "VmHWM - baseline RSS (fresh process, peak reset after inputs)"
        read_peak = lambda: _status_kib("VmHWM") * 1024  # noqa: E731
    else:
        method = "ru_maxrss - baseline RSS (upper bound: peak not resettable)"
        read_peak = _max_rss_bytes
    start = time.perf_counter()
    result = runner()
    seconds = time.perf_counter() - start
    peak = read_peak()
    del result
    return MemoryMeasurement((peak - baseline) / MIB, baseline / MIB, seconds, method)


def measure_peak_memory(impl: str, pass_name: str, length: int, threads: int,
                        timeout_s: float = 1800.0) -> MemoryMeasurement:
    """Measure one case in a fresh subprocess (this module's command line)."""
    command = [sys.executable, "-m", "benchmarks.memory", "--impl", impl, "--pass", pass_name,
               "--length", str(length), "--threads", str(threads)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD_BYTES), OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout_s)
    results = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"memory measurement of {impl} {pass_name} L={length} failed "
                           f"(exit {proc.returncode}): {' '.join(command)}\n{proc.stderr[-4000:]}")
    return MemoryMeasurement(**json.loads(results[-1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Peak RSS growth of one selective-scan benchmark case "
                                                 "(meant to run in a fresh process).")
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, required=True)
    parser.add_argument("--pass", dest="pass_name", choices=PASSES, required=True)
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    measurement = measure_here(args.impl, args.pass_name, args.length, args.threads)
    print(RESULT_PREFIX + json.dumps(asdict(measurement)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
