"""Peak memory of one benchmark case, measured as peak RSS growth in a fresh subprocess.

Why RSS: it counts everything the case touches (tensors, autograd's saved activations and
intermediates, gradients, and buffers the C++ kernels allocate outside torch's allocator),
which allocator-level accounting (the torch profiler) would miss. Why a subprocess: the peak
of a process is a high-water mark, so each case gets a fresh interpreter of its own.

In the subprocess (`python -m benchmarks.memory [--suite selective_scan] --impl ours --pass fwd
--length 512`; the model suite adds `--config tiny|small|base` and, for a batched case, `--batch 16`):
  1. pin the threads, import everything, and run the case once at a tiny L (pays one-time
     costs: thread pools, lazy initialisation; not counted);
  2. allocate the case's inputs (and, for mamba.py, transpose them to its layout) — not counted;
     for the layer suites (benchmarks/layers.py) the module's parameters are inputs too: they
     exist before the baseline, while their gradients (forward+backward) are counted; for the
     model suite (benchmarks/models.py) the parameters, the input tokens and (train) AdamW's state
     (created by the warm-up step) are, while activations, logits, gradients and the sampler's
     buffers are counted;
  3. reset the peak (Linux: `echo 5 > /proc/self/clear_refs` resets VmHWM to the current RSS), baseline = that mark
  4. run the case once (forward, or forward and backward) keeping its outputs;
  5. peak memory = VmHWM - baseline: everything the case allocated at its worst moment.
     A runner with a `check(result)` method (the model suite's) validates the measured run's result
     there and returns facts to report (MemoryMeasurement.info, e.g. the sampler's denoiser calls).
With --wait (start_peak_memory) the subprocess does 1 and 2 while its parent does other work (the
layer benchmarks' guard and FLOP count) and waits for the parent's "go" before 3, so nothing else
runs during 3-5.
glibc's mmap threshold is pinned at 128 KiB (MALLOC_MMAP_THRESHOLD_), so freed buffers go
back to the OS at once and the warm-up's freed memory is not recycled under the baseline.
Where VmHWM cannot be reset (not Linux) the fallback is ru_maxrss - baseline, an upper bound
(it may include a higher peak from before the baseline, even the parent's: Linux keeps ru_maxrss
across fork and exec); the method is reported either way.
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
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from .layers import LAYER_IMPLEMENTATIONS, LAYER_SUITES, MFA_SUITE
from .models import MODEL_IMPLEMENTATIONS, MODEL_PASSES, MODEL_PRESETS, MODEL_SUITE, shape_label
from .passes import FORWARD_BACKWARD, PASSES
from .scan_cases import SCAN_IMPLEMENTATIONS, SCAN_SUITE

MIB = 1024 * 1024
WARMUP_LENGTH = 16
MFA_WARMUP_LENGTH = 320  # longer than 2 x the default attention window: the local-attention path warms up too
MMAP_THRESHOLD_BYTES = 128 * 1024
RESULT_PREFIX = "SMDIM_MEMORY_RESULT "
GO = "go"  # what a --wait subprocess waits for on stdin
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MemoryMeasurement:
    peak_mib: float  # peak RSS growth while the case ran
    baseline_mib: float  # RSS after importing and allocating the inputs
    seconds: float  # wall time of that one (cold) run
    method: str  # how the peak was read
    info: Optional[dict] = None  # what the runner's check(result) reported about the measured run


def _status_kib(*fields: str):
    """The fields (kB) of one read of /proc/self/status: an int for one field, a tuple for several."""
    with open("/proc/self/status", encoding="ascii") as status:
        text = status.read()
    values = []
    for field in fields:
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        if match is None:
            raise OSError(f"no {field} in /proc/self/status")
        values.append(int(match.group(1)))
    return values[0] if len(fields) == 1 else tuple(values)


# After a reset, VmHWM is the RSS of that moment and can read above the RSS a moment later: pages
# freed in between (seen: 8 KiB, in a quarter of the runs of one scan case), and the kernel's
# RSS counters are per-CPU approximations. (Were the reset to do nothing, the mark would keep
# the earlier peak; accepted within this slack, that misreads the peak by at most 1 MiB.)
RESET_SLACK_KIB = 1024
RESET_TRIES = 3


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    for _ in range(RESET_TRIES):
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
                clear_refs.write("5")
            peak_kib, rss_kib = _status_kib("VmHWM", "VmRSS")  # one read: the same moment
        except OSError:
            return False
        if peak_kib <= rss_kib + RESET_SLACK_KIB:
            return True
    return False


def _max_rss_bytes() -> int:
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss if sys.platform == "darwin" else max_rss * 1024  # bytes on macOS, KiB elsewhere


def _current_rss_bytes() -> int:
    try:
        return _status_kib("VmRSS") * 1024
    except OSError:
        return _max_rss_bytes()


def _runner(suite: str, impl: str, pass_name: str, length: int, config: Optional[str] = None, batch: int = 1):
    if suite == MODEL_SUITE:
        from .models import MEMORY_SAMPLE_STEPS, SAMPLE, make_model_runner

        steps = {"steps": MEMORY_SAMPLE_STEPS} if pass_name == SAMPLE else {}
        # the model is built once per process
        return make_model_runner(config, impl, pass_name, length, batch=batch, **steps)
    if suite == SCAN_SUITE:
        from .scan_cases import make_scan_problem, make_scan_runner

        problem = make_scan_problem(length, requires_grad=pass_name == FORWARD_BACKWARD)
        return make_scan_runner(impl, pass_name, problem)
    if suite in LAYER_SUITES:
        from .layers import make_layer_runner

        return make_layer_runner(impl, pass_name, length)  # the module is built once per process
    raise ValueError(f"unknown benchmark suite {suite!r}; expected {SCAN_SUITE}, {MODEL_SUITE} or one of "
                     f"{LAYER_SUITES}")


def _warmup_runner(suite: str, impl: str, pass_name: str, config: Optional[str] = None, batch: int = 1):
    """The case at a short length (same module, same pass, same batch): pays one-time costs before the
    baseline."""
    if suite == MODEL_SUITE:
        from .models import make_warmup_runner

        return make_warmup_runner(config, impl, pass_name, batch=batch)
    return _runner(suite, impl, pass_name, MFA_WARMUP_LENGTH if suite == MFA_SUITE else WARMUP_LENGTH)


def measure_here(impl: str, pass_name: str, length: int, threads: int, suite: str = SCAN_SUITE,
                 ready: Optional[Callable[[], bool]] = None, config: Optional[str] = None, batch: int = 1
                 ) -> Optional[MemoryMeasurement]:
    """Run the case once in this process and measure its peak RSS growth (see module docstring).

    `ready`, if given, is called once everything is prepared (imports, warm-up, inputs), just before
    the baseline; the measurement goes ahead only if it returns True (None otherwise). `config` and
    `batch`: the model suite's preset and sequences per batch."""
    import torch

    import smdim_kernels  # noqa: F401  (loads the C++ kernels before the baseline)

    torch.set_num_threads(threads)
    _warmup_runner(suite, impl, pass_name, config, batch)()
    runner = _runner(suite, impl, pass_name, length, config, batch)
    if ready is not None and not ready():
        return None
    gc.collect()
    if _reset_peak_rss():
        method = "VmHWM - baseline RSS (fresh process, peak reset after inputs)"
        read_peak = lambda: _status_kib("VmHWM") * 1024  # noqa: E731
        # The mark just reset is the RSS at that moment: the baseline from which the peak can only
        # grow (RSS read a moment before may differ by a page or two, giving a negative 'peak').
        baseline = read_peak()
    else:
        method = "ru_maxrss - baseline RSS (upper bound: peak not resettable)"
        read_peak = _max_rss_bytes
        baseline = _current_rss_bytes()
    start = time.perf_counter()
    result = runner()
    seconds = time.perf_counter() - start
    # Linux updates the peak mark lazily (VmHWM reads max(mark, RSS now)): a few pages mapped between the
    # reset and the baseline read and returned during the run read back below that baseline. Growth is
    # never negative; such a run grew by nothing measurable.
    peak = max(read_peak(), baseline)
    info = runner.check(result) if hasattr(runner, "check") else None
    del result
    return MemoryMeasurement((peak - baseline) / MIB, baseline / MIB, seconds, method, info)


def _command(impl: str, pass_name: str, length: int, threads: int, suite: str, config: Optional[str] = None,
             batch: int = 1):
    command = [sys.executable, "-m", "benchmarks.memory", "--suite", suite, "--impl", impl, "--pass", pass_name,
               "--length", str(length), "--threads", str(threads)]
    if config is not None:
        command += ["--config", config]
    if batch != 1:
        command += ["--batch", str(batch)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD_BYTES), OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return command, env


def _parse(command, returncode: int, stdout: str, stderr: str, what: str) -> MemoryMeasurement:
    results = [line[len(RESULT_PREFIX):] for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if returncode != 0 or not results:
        raise RuntimeError(f"memory measurement of {what} failed (exit {returncode}): {' '.join(command)}\n"
                           f"{stderr[-4000:]}")
    return MemoryMeasurement(**json.loads(results[-1]))


def _what(suite: str, impl: str, pass_name: str, length: int, config: Optional[str], batch: int = 1) -> str:
    return f"{suite}{'' if config is None else ' ' + config} {impl} {pass_name} {shape_label(length, batch)}"


def measure_peak_memory(impl: str, pass_name: str, length: int, threads: int,
                        timeout_s: float = 1800.0, suite: str = SCAN_SUITE, config: Optional[str] = None,
                        batch: int = 1) -> MemoryMeasurement:
    """Measure one case in a fresh subprocess (this module's command line)."""
    command, env = _command(impl, pass_name, length, threads, suite, config, batch)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout_s)
    return _parse(command, proc.returncode, proc.stdout, proc.stderr,
                  _what(suite, impl, pass_name, length, config, batch))


class PendingMeasurement:
    """A measurement subprocess that prepares (imports, warm-up, inputs) while the caller does other
    work, and measures only when `result()` says go, so nothing else runs during its measured run."""

    def __init__(self, impl: str, pass_name: str, length: int, threads: int, timeout_s: float, suite: str,
                 config: Optional[str] = None, batch: int = 1):
        self.command, env = _command(impl, pass_name, length, threads, suite, config, batch)
        self.command.append("--wait")
        self.what = _what(suite, impl, pass_name, length, config, batch)
        self.timeout_s = timeout_s
        # Files, not pipes: nothing the child prints while it waits can fill a pipe and block it.
        self._stdout, self._stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=self._stdout, stderr=self._stderr,
                                     text=True, env=env, cwd=REPO_ROOT)

    def result(self) -> MemoryMeasurement:
        """Let the subprocess measure, wait for it and return its measurement."""
        try:
            self.proc.communicate(input=GO + "\n", timeout=self.timeout_s)
        except BaseException:
            self.cancel()
            raise
        return _parse(self.command, self.proc.returncode, self._read(self._stdout), self._read(self._stderr),
                      self.what)

    def cancel(self) -> None:
        """Stop the subprocess without measuring."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._stdout.close()
        self._stderr.close()

    @staticmethod
    def _read(file) -> str:
        file.seek(0)
        text = file.read()
        file.close()
        return text


def start_peak_memory(impl: str, pass_name: str, length: int, threads: int, timeout_s: float = 1800.0,
                      suite: str = SCAN_SUITE, config: Optional[str] = None, batch: int = 1) -> PendingMeasurement:
    """Start measuring one case in a fresh subprocess; `.result()` lets it measure and returns the
    MemoryMeasurement, `.cancel()` stops it. Meanwhile the caller may run anything but timings."""
    return PendingMeasurement(impl, pass_name, length, threads, timeout_s, suite, config, batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Peak RSS growth of one benchmark case "
                                                 "(meant to run in a fresh process).")
    parser.add_argument("--suite", choices=(SCAN_SUITE,) + LAYER_SUITES + (MODEL_SUITE,), default=SCAN_SUITE)
    parser.add_argument("--impl", choices=tuple(dict.fromkeys(SCAN_IMPLEMENTATIONS + LAYER_IMPLEMENTATIONS
                                                              + MODEL_IMPLEMENTATIONS)), required=True)
    parser.add_argument("--pass", dest="pass_name", choices=tuple(dict.fromkeys(PASSES + MODEL_PASSES)), required=True)
    parser.add_argument("--config", choices=MODEL_PRESETS, help=f"the {MODEL_SUITE} suite's preset")
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1,
                        help=f"sequences per batch (the {MODEL_SUITE} suite's batched cases; default 1)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--wait", action="store_true",
                        help=f"prepare, then wait for a line '{GO}' on stdin before measuring (exit 3 without it)")
    args = parser.parse_args(argv)
    if (args.suite == MODEL_SUITE) != (args.config is not None):
        parser.error(f"--config goes with --suite {MODEL_SUITE} (and only with it)")
    if args.batch < 1 or (args.batch != 1 and args.suite != MODEL_SUITE):
        parser.error(f"--batch must be a positive integer, and above 1 only with --suite {MODEL_SUITE}")
    ready = (lambda: sys.stdin.readline().strip() == GO) if args.wait else None
    measurement = measure_here(args.impl, args.pass_name, args.length, args.threads, args.suite, ready, args.config,
                               args.batch)
    if measurement is None:
        return 3
    print(RESULT_PREFIX + json.dumps(asdict(measurement)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
