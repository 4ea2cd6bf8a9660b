"""Report of the selective-scan benchmarks: markdown table, the issue's targets, log-log plot.

    python -m benchmarks.report BENCH_JSON [--out DIR] [--check]

BENCH_JSON is pytest-benchmark's output (`pytest benchmarks/ --benchmark-only
--benchmark-json=BENCH_JSON`). Writes the markdown to stdout and DIR/selective_scan.md, and
time and peak memory vs L (log-log, one line per implementation and pass) to
DIR/selective_scan.png. Times are the median round; memory is the peak RSS growth of one run
in a fresh process (benchmarks/memory.py). --check exits 1 if a target fails.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .cases import BOUND, FORWARD, FORWARD_BACKWARD, IMPLEMENTATIONS, NAIVE, OURS, PASSES, PSCAN, SUITE
from .machine import format_machine
from .settings import LENGTHS_ENV, NAIVE_FWD_MAX_ENV, NAIVE_FWDBWD_MAX_ENV, PSCAN_MAX_ENV

REPORT_NAME = "selective_scan"
SPEEDUP_TARGET = 30.0  # ours at least this many times faster than a peer
BOUND_TARGET = 2.0  # ours' forward at most this many times the arithmetic bound
MEMORY_TARGET = 8.0  # ours' forward+backward peak at most 1/this of pscan's
TARGET_LENGTHS = (2048, 8192)
MEMORY_TARGET_LENGTH = 8192
LINEAR_SLOPE_MAX = 1.1  # log-log slope of ours' memory vs L: 1 is linear
PEERS = (NAIVE, PSCAN)
IMPL_LABELS = {OURS: "ours", NAIVE: "naive reference", PSCAN: "mamba.py pscan", BOUND: "arithmetic bound"}


@dataclass
class Row:
    """One (pass, L): median ms and peak MiB per implementation that ran."""

    pass_name: str
    length: int
    ms: Dict[str, float] = field(default_factory=dict)
    mib: Dict[str, float] = field(default_factory=dict)

    @staticmethod
    def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
        if numerator is None or denominator is None or denominator <= 0:
            return None
        return numerator / denominator

    def speedup(self, peer: str) -> Optional[float]:
        """peer ms / ours ms."""
        return self._ratio(self.ms.get(peer), self.ms.get(OURS))

    def bound_ratio(self) -> Optional[float]:
        """ours ms / arithmetic-bound ms."""
        return self._ratio(self.ms.get(OURS), self.ms.get(BOUND))

    def memory_ratio(self, peer: str) -> Optional[float]:
        """peer MiB / ours MiB."""
        return self._ratio(self.mib.get(peer), self.mib.get(OURS))


@dataclass(frozen=True)
class TargetCheck:
    status: str  # PASS, FAIL or N/A (not measured)
    description: str
    detail: str

    def line(self) -> str:
        return f"- [{self.status}] {self.description}: {self.detail}"


def collect_rows(benchmarks: Iterable[dict]) -> List[Row]:
    """Rows from pytest-benchmark entries of this suite, ordered by pass, then L."""
    rows: Dict[Tuple[str, int], Row] = {}
    for bench in benchmarks:
        info = bench.get("extra_info", {})
        if info.get("suite") != SUITE:
            continue
        key = (info["pass"], int(info["L"]))
        row = rows.setdefault(key, Row(*key))
        row.ms[info["impl"]] = bench["stats"]["median"] * 1e3
        if info.get("peak_mib") is not None:
            row.mib[info["impl"]] = float(info["peak_mib"])
    order = {name: index for index, name in enumerate(PASSES)}
    return sorted(rows.values(), key=lambda row: (order.get(row.pass_name, len(order)), row.length))


def _first_suite_info(data: dict) -> dict:
    """extra_info of this suite's first benchmark (shape, threads, ISA are the same in all)."""
    return next((b["extra_info"] for b in data.get("benchmarks", [])
                 if b.get("extra_info", {}).get("suite") == SUITE), {})


def machine_line(data: dict) -> str:
    """The machine the benchmarks ran on, from the JSON (our conftest's entry, else pytest-benchmark's)."""
    machine_info = data.get("machine_info", {})
    info = dict(machine_info.get("smdim_bench") or {})
    if not info:
        cpu = machine_info.get("cpu")
        info["cpu"] = cpu.get("brand_raw", "unknown CPU") if isinstance(cpu, dict) else "unknown CPU"
        extra = _first_suite_info(data)
        info.update({key: extra[key] for key in ("threads", "isa") if key in extra})
    return format_machine(info)


def shape_line(data: dict) -> str:
    extra = _first_suite_info(data)
    return (f"batch {extra.get('batch', '?')}, dim {extra.get('dim', '?')}, N {extra.get('dstate', '?')}, "
            f"{extra.get('dtype', '?')}, delta_softplus with delta_bias and D")


def format_number(value: Optional[float]) -> str:
    """Three significant digits, or '—' for a case that did not run."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_ratio(value: Optional[float]) -> str:
    return "—" if value is None else f"{format_number(value)}×"


def markdown_table(rows: Sequence[Row]) -> str:
    header = (["pass", "L"] + [f"{impl} ms" for impl in IMPLEMENTATIONS]
              + [f"{peer}/ours" for peer in PEERS] + ["ours/bound"]
              + [f"{impl} MiB" for impl in IMPLEMENTATIONS] + ["pscan/ours MiB"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = ([row.pass_name, str(row.length)] + [format_number(row.ms.get(impl)) for impl in IMPLEMENTATIONS]
                 + [format_ratio(row.speedup(peer)) for peer in PEERS] + [format_ratio(row.bound_ratio())]
                 + [format_number(row.mib.get(impl)) for impl in IMPLEMENTATIONS]
                 + [format_ratio(row.memory_ratio(PSCAN))])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loglog_slope(points: Iterable[Tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of log(y) against log(x) over points with x, y > 0 (None under 2 points)."""
    logs = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len({lx for lx, _ in logs}) < 2:
        return None
    mean_x = sum(lx for lx, _ in logs) / len(logs)
    mean_y = sum(ly for _, ly in logs) / len(logs)
    covariance = sum((lx - mean_x) * (ly - mean_y) for lx, ly in logs)
    variance = sum((lx - mean_x) ** 2 for lx, _ in logs)
    return covariance / variance


def memory_slope(rows: Sequence[Row], pass_name: str, impl: str = OURS) -> Optional[float]:
    return loglog_slope((row.length, row.mib[impl]) for row in rows
                        if row.pass_name == pass_name and impl in row.mib)


def _check(description: str, value: Optional[float], passes: Callable[[float], bool],
           show: Callable[[float], str], missing: str) -> TargetCheck:
    """PASS/FAIL by `passes(value)`, or N/A (with why) when the value was not measured."""
    if value is None:
        return TargetCheck("N/A", description, missing)
    return TargetCheck("PASS" if passes(value) else "FAIL", description, show(value))


def _plan_variable(impl: str, pass_name: str) -> str:
    """The environment variable that puts (impl, pass) at more lengths in the benchmark plan."""
    if impl == NAIVE:
        return NAIVE_FWD_MAX_ENV if pass_name == FORWARD else NAIVE_FWDBWD_MAX_ENV
    return PSCAN_MAX_ENV if impl == PSCAN else LENGTHS_ENV


def _not_measured(row: Row, metric: str, *impls: str) -> str:
    absent = [impl for impl in impls if impl not in getattr(row, metric)]
    if not absent:
        return f"not measured at {row.pass_name} L={row.length}"
    variables = sorted({_plan_variable(impl, row.pass_name) for impl in absent})
    return f"{', '.join(absent)} not measured at {row.pass_name} L={row.length} (plan: {', '.join(variables)})"


def speedup_checks(rows_by_key: Dict[Tuple[str, int], Row]) -> List[TargetCheck]:
    """Forward ≥ 30× faster than both peers, forward+backward ≥ 30× faster than pscan, at 2048 and 8192."""
    checks = []
    for pass_name, peers in ((FORWARD, PEERS), (FORWARD_BACKWARD, (PSCAN,))):
        for length in TARGET_LENGTHS:
            row = rows_by_key.get((pass_name, length), Row(pass_name, length))
            for peer in peers:
                checks.append(_check(f"{pass_name} ≥ {SPEEDUP_TARGET:g}× faster than {peer} at L={length}",
                                     row.speedup(peer), lambda x: x >= SPEEDUP_TARGET, format_ratio,
                                     _not_measured(row, "ms", OURS, peer)))
    return checks


def bound_checks(rows: Sequence[Row]) -> List[TargetCheck]:
    """Forward within 2× of the arithmetic bound, at every L measured."""
    return [_check(f"fwd within {BOUND_TARGET:g}× of the arithmetic bound at L={row.length}", row.bound_ratio(),
                   lambda x: x <= BOUND_TARGET, lambda x: f"ours/bound {format_ratio(x)}",
                   _not_measured(row, "ms", OURS, BOUND))
            for row in rows if row.pass_name == FORWARD]


def memory_checks(rows: Sequence[Row], rows_by_key: Dict[Tuple[str, int], Row]) -> List[TargetCheck]:
    """Forward+backward peak ≤ 1/8 of pscan's at 8192; ours' memory at most linear in L."""
    row = rows_by_key.get((FORWARD_BACKWARD, MEMORY_TARGET_LENGTH), Row(FORWARD_BACKWARD, MEMORY_TARGET_LENGTH))
    checks = [_check(
        f"fwd+bwd peak memory ≤ 1/{MEMORY_TARGET:g} of pscan's at L={MEMORY_TARGET_LENGTH}",
        row.memory_ratio(PSCAN), lambda x: x >= MEMORY_TARGET,
        lambda x: (f"ours {format_number(row.mib[OURS])} MiB, pscan {format_number(row.mib[PSCAN])} MiB "
                   f"(pscan/ours {format_ratio(x)})"),
        "peak memory " + _not_measured(row, "mib", OURS, PSCAN))]
    for pass_name in PASSES:
        checks.append(_check(
            f"ours' {pass_name} memory grows at most linearly in L", memory_slope(rows, pass_name),
            lambda x: x <= LINEAR_SLOPE_MAX,
            lambda x: f"fitted slope of log(MiB) vs log(L) = {x:.2f} (1 = linear; pass ≤ {LINEAR_SLOPE_MAX:g})",
            "fewer than two lengths with memory measured"))
    return checks


def check_targets(rows: Sequence[Row]) -> List[TargetCheck]:
    """The issue's targets, each PASS, FAIL or N/A (a needed case was not measured)."""
    rows_by_key = {(row.pass_name, row.length): row for row in rows}
    return speedup_checks(rows_by_key) + bound_checks(rows) + memory_checks(rows, rows_by_key)


def render_report(data: dict, rows: Sequence[Row], checks: Sequence[TargetCheck]) -> str:
    counts = {status: sum(check.status == status for check in checks) for status in ("PASS", "FAIL", "N/A")}
    return "\n".join([
        "# Selective scan benchmark",
        "",
        f"Machine: {machine_line(data)}",
        "",
        f"Problem: {shape_line(data)}. Times: median ms per call. Memory: peak RSS growth (MiB) of one "
        "run in a fresh process, inputs excluded, activations and outputs included. "
        "x/ours = speedup of ours over x; ours/bound = ours' distance from the arithmetic bound.",
        "",
        markdown_table(rows),
        "",
        "## Targets",
        "",
        *(check.line() for check in checks),
        "",
        f"Targets: {counts['PASS']} pass, {counts['FAIL']} fail, {counts['N/A']} not measured.",
        "",
    ])


def plot(rows: Sequence[Row], title: str, path: Path) -> None:
    """Time and peak memory vs L, log-log, one line per (implementation, pass)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {impl: f"C{index}" for index, impl in enumerate(IMPLEMENTATIONS)}
    styles = {FORWARD: ("-", "o"), FORWARD_BACKWARD: ("--", "s")}
    lengths = sorted({row.length for row in rows})
    for ax, metric in ((ax_time, "ms"), (ax_mem, "mib")):
        for impl in IMPLEMENTATIONS:
            for pass_name in PASSES:
                points = [(row.length, getattr(row, metric)[impl]) for row in rows
                          if row.pass_name == pass_name and getattr(row, metric).get(impl, 0) > 0]
                if points:
                    xs, ys = zip(*points)
                    linestyle, marker = styles[pass_name]
                    ax.plot(xs, ys, linestyle=linestyle, marker=marker, color=colors[impl],
                            label=f"{IMPL_LABELS[impl]} {pass_name}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(length) for length in lengths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("sequence length L")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_time.set_ylabel("time per call (ms, median)")
    ax_time.set_title("time")
    ax_mem.set_ylabel("peak memory (MiB, RSS growth)")
    ax_mem.set_title("peak memory")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("bench_json", type=Path, help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default: bench_out)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 if a target fails")
    args = parser.parse_args(argv)

    data = json.loads(args.bench_json.read_text(encoding="utf-8"))
    rows = collect_rows(data.get("benchmarks", []))
    if not rows:
        print(f"{args.bench_json}: no '{SUITE}' benchmarks (run pytest benchmarks/ --benchmark-only "
              f"--benchmark-json={args.bench_json})", file=sys.stderr)
        return 2
    checks = check_targets(rows)
    report = render_report(data, rows, checks)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    markdown_path = args.out / f"{REPORT_NAME}.md"
    markdown_path.write_text(report, encoding="utf-8")
    written = [markdown_path]
    try:
        plot(rows, f"selective scan — {machine_line(data)}", args.out / f"{REPORT_NAME}.png")
        written.append(args.out / f"{REPORT_NAME}.png")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 1 if args.check and any(check.status == "FAIL" for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
