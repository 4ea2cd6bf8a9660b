"""The selective-scan section of the benchmark report: ours against the naive reference, mamba.py's
pscan and the arithmetic bound per (pass, L), and the issue's targets (speed-ups, distance from the
bound, peak memory against pscan's and its growth in L)."""
from __future__ import annotations

from typing import List, Optional, Sequence

from .passes import FORWARD, FORWARD_BACKWARD, PASSES
from .report_kit import (Row, Section, TargetCheck, collect_rows, first_suite_info, format_number, format_ratio,
                         loglog_slope, machine_line, metric_table, not_measured, plot_rows, rows_by_key,
                         target_check, targets_summary)
from .scan_cases import BOUND, NAIVE, OURS, PSCAN, SCAN_IMPLEMENTATIONS, SCAN_SUITE
from .settings import LENGTHS_ENV, NAIVE_FWD_MAX_ENV, NAIVE_FWDBWD_MAX_ENV, PSCAN_MAX_ENV

SPEEDUP_TARGET = 30.0  # ours at least this many times faster than a peer
BOUND_TARGET = 2.0  # ours' forward at most this many times the arithmetic bound
MEMORY_TARGET = 8.0  # ours' forward+backward peak at most 1/this of pscan's
TARGET_LENGTHS = (2048, 8192)
MEMORY_TARGET_LENGTH = 8192
LINEAR_SLOPE_MAX = 1.1  # log-log slope of ours' memory vs L: 1 is linear
PEERS = (NAIVE, PSCAN)
IMPL_LABELS = {OURS: "ours", NAIVE: "naive reference", PSCAN: "mamba.py pscan", BOUND: "arithmetic bound"}
RATIO_COLUMNS = {"ms": [(f"{peer}/ours", peer, OURS) for peer in PEERS] + [("ours/bound", OURS, BOUND)],
                 "mib": [("pscan/ours MiB", PSCAN, OURS)]}
PLOT_TITLE = "selective scan"


def shape_line(data: dict) -> str:
    extra = first_suite_info(data, SCAN_SUITE)
    return (f"batch {extra.get('batch', '?')}, dim {extra.get('dim', '?')}, N {extra.get('dstate', '?')}, "
            f"{extra.get('dtype', '?')}, delta_softplus with delta_bias and D")


def scan_table(rows: Sequence[Row]) -> str:
    """ms per implementation, speed-ups x/ours, ours/bound, MiB per implementation, pscan/ours MiB."""
    return metric_table(rows, SCAN_IMPLEMENTATIONS, RATIO_COLUMNS, metrics=("ms", "mib"))


def memory_slope(rows: Sequence[Row], pass_name: str, impl: str = OURS) -> Optional[float]:
    return loglog_slope((row.length, row.mib[impl]) for row in rows
                        if row.pass_name == pass_name and impl in row.mib)


def plan_variable(impl: str, pass_name: str) -> str:
    """The environment variable that puts (impl, pass) at more lengths in the benchmark plan."""
    if impl == NAIVE:
        return NAIVE_FWD_MAX_ENV if pass_name == FORWARD else NAIVE_FWDBWD_MAX_ENV
    return PSCAN_MAX_ENV if impl == PSCAN else LENGTHS_ENV


def speedup_checks(rows: Sequence[Row]) -> List[TargetCheck]:
    """Forward ≥ 30× faster than both peers, forward+backward ≥ 30× faster than pscan, at 2048 and 8192."""
    by_key = rows_by_key(rows)
    checks = []
    for pass_name, peers in ((FORWARD, PEERS), (FORWARD_BACKWARD, (PSCAN,))):
        for length in TARGET_LENGTHS:
            row = by_key.get((pass_name, length), Row(pass_name, length, SCAN_SUITE))
            for peer in peers:
                checks.append(target_check(f"{pass_name} ≥ {SPEEDUP_TARGET:g}× faster than {peer} at L={length}",
                                           row.ratio("ms", peer, OURS), lambda x: x >= SPEEDUP_TARGET, format_ratio,
                                           not_measured(row, "ms", (OURS, peer), plan_variable)))
    return checks


def bound_checks(rows: Sequence[Row]) -> List[TargetCheck]:
    """Forward within 2× of the arithmetic bound, at every L measured."""
    return [target_check(f"fwd within {BOUND_TARGET:g}× of the arithmetic bound at L={row.length}",
                         row.ratio("ms", OURS, BOUND), lambda x: x <= BOUND_TARGET,
                         lambda x: f"ours/bound {format_ratio(x)}",
                         not_measured(row, "ms", (OURS, BOUND), plan_variable))
            for row in rows if row.pass_name == FORWARD]


def memory_checks(rows: Sequence[Row]) -> List[TargetCheck]:
    """Forward+backward peak ≤ 1/8 of pscan's at 8192; ours' memory at most linear in L."""
    row = rows_by_key(rows).get((FORWARD_BACKWARD, MEMORY_TARGET_LENGTH),
                                Row(FORWARD_BACKWARD, MEMORY_TARGET_LENGTH, SCAN_SUITE))
    checks = [target_check(
        f"fwd+bwd peak memory ≤ 1/{MEMORY_TARGET:g} of pscan's at L={MEMORY_TARGET_LENGTH}",
        row.ratio("mib", PSCAN, OURS), lambda x: x >= MEMORY_TARGET,
        lambda x: (f"ours {format_number(row.mib[OURS])} MiB, pscan {format_number(row.mib[PSCAN])} MiB "
                   f"(pscan/ours {format_ratio(x)})"),
        not_measured(row, "mib", (OURS, PSCAN), plan_variable))]
    for pass_name in PASSES:
        checks.append(target_check(
            f"ours' {pass_name} memory grows at most linearly in L", memory_slope(rows, pass_name),
            lambda x: x <= LINEAR_SLOPE_MAX,
            lambda x: f"fitted slope of log(MiB) vs log(L) = {x:.2f} (1 = linear; pass ≤ {LINEAR_SLOPE_MAX:g})",
            "fewer than two lengths with memory measured"))
    return checks


def scan_checks(rows: Sequence[Row]) -> List[TargetCheck]:
    """The issue's targets, each PASS, FAIL or N/A (a needed case was not measured)."""
    return speedup_checks(rows) + bound_checks(rows) + memory_checks(rows)


def render_scan_section(data: dict, rows: Sequence[Row], checks: Sequence[TargetCheck]) -> str:
    return "\n".join([
        "# Selective scan benchmark",
        "",
        f"Machine: {machine_line(data)}",
        "",
        f"Problem: {shape_line(data)}. Times: median ms per call. Memory: peak RSS growth (MiB) of one "
        "run in a fresh process, inputs excluded, activations and outputs included. "
        "x/ours = speedup of ours over x; ours/bound = ours' distance from the arithmetic bound.",
        "",
        scan_table(rows),
        "",
        "## Targets",
        "",
        *(check.line() for check in checks),
        "",
        targets_summary(checks),
        "",
    ])


def scan_section(data: dict) -> Optional[Section]:
    """The section of the selective-scan suite, or None where the JSON has none of its benchmarks."""
    rows = collect_rows(data.get("benchmarks", []), SCAN_SUITE)
    if not rows:
        return None
    checks = scan_checks(rows)
    title = f"{PLOT_TITLE} — {machine_line(data)}"
    return Section(SCAN_SUITE, rows, checks, render_scan_section(data, rows, checks),
                   plot=lambda path: plot_rows(rows, title, path, SCAN_IMPLEMENTATIONS, IMPL_LABELS))
