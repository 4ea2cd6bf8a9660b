"""What the sections of the benchmark report share: the rows read from pytest-benchmark's JSON,
target checks, number formats, markdown tables and log-log plots.

Each suite's section is a module of its own (scan_report.py, layer_report.py, hf_mamba_report.py,
model_report.py, studio_report.py) that builds a Section from the JSON; report.py assembles them.
This module imports none of them.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .machine import format_machine
from .passes import PASSES
from .settings import LENGTHS_ENV

STATUSES = ("PASS", "FAIL", "N/A")
METRIC_NAMES = {"ms": "latency", "mib": "peak memory", "gflop": "FLOPs"}
METRIC_UNITS = {"ms": "ms", "mib": "MiB", "gflop": "GFLOP"}
RELATIONS = {"<": operator.lt, "≤": operator.le}  # a target's relation, as the report writes it


@dataclass(frozen=True)
class TargetCheck:
    status: str  # PASS, FAIL or N/A (not measured)
    description: str
    detail: str

    def line(self) -> str:
        return f"- [{self.status}] {self.description}: {self.detail}"


def target_check(description: str, value: Optional[float], passes: Callable[[float], bool],
                 show: Callable[[float], str], missing: str) -> TargetCheck:
    """PASS/FAIL by `passes(value)`, or N/A (with why) when the value was not measured."""
    if value is None:
        return TargetCheck("N/A", description, missing)
    return TargetCheck("PASS" if passes(value) else "FAIL", description, show(value))


def count_statuses(checks: Iterable[TargetCheck]) -> Dict[str, int]:
    checks = list(checks)
    return {status: sum(check.status == status for check in checks) for status in STATUSES}


def targets_summary(checks: Iterable[TargetCheck], label: str = "Targets") -> str:
    """'Targets: 3 pass, 1 fail, 4 not measured.'"""
    counts = count_statuses(checks)
    return f"{label}: {counts['PASS']} pass, {counts['FAIL']} fail, {counts['N/A']} not measured."


@dataclass
class Row:
    """One (pass, L, batch) of a suite: per implementation that ran, median ms, peak MiB and GFLOP."""

    pass_name: str
    length: int
    suite: str
    ms: Dict[str, float] = field(default_factory=dict)
    mib: Dict[str, float] = field(default_factory=dict)
    gflop: Dict[str, float] = field(default_factory=dict)  # GFLOP per call (layer and model suites)
    flops_na: Dict[str, str] = field(default_factory=dict)  # impl -> why its GFLOP were not counted
    config: Optional[str] = None  # model suite: the preset ("tiny", "base")
    batch: int = 1  # sequences per call (extra_info "batch"; the model suite's batched table)
    # a side-by-side timing (paired.py) of impl against peer: {"impl", "peer", "ratio", "low", "high",
    # "coverage", "rounds"}; empty where none ran
    paired: Dict[str, object] = field(default_factory=dict)

    def paired_ratio(self, numerator: str, denominator: str) -> Optional[float]:
        """numerator / denominator timed side by side (either way round), or None."""
        if not self.paired:
            return None
        if (self.paired["impl"], self.paired["peer"]) == (numerator, denominator):
            return float(self.paired["ratio"])
        if (self.paired["impl"], self.paired["peer"]) == (denominator, numerator):
            return 1.0 / float(self.paired["ratio"])
        return None

    def ratio(self, metric: str, numerator: str, denominator: str) -> Optional[float]:
        """numerator / denominator of one metric ("ms", "mib" or "gflop"); None if either is missing."""
        values = getattr(self, metric)
        top, bottom = values.get(numerator), values.get(denominator)
        if top is None or bottom is None or bottom <= 0:
            return None
        return top / bottom


def collect_rows(benchmarks: Iterable[dict], suite: str, passes: Sequence[str] = PASSES) -> List[Row]:
    """Rows from pytest-benchmark entries of `suite`, one per (pass, L, batch), ordered by pass (in
    `passes` order), then L, then batch.

    A case's time is its median round, or extra_info["time_s"] where the case was timed once in a
    subprocess (single-shot cases). GFLOP come from extra_info["gflop"]; a case that ran with
    "gflop": None was not counted (flops_na holds why). A case with extra_info "paired_ratio" (timed
    side by side with "paired_with", paired.py) gives its row's `paired`."""
    rows: Dict[Tuple[str, int, int], Row] = {}
    for bench in benchmarks:
        info = bench.get("extra_info", {})
        if info.get("suite") != suite:
            continue
        key = (info["pass"], int(info["L"]), int(info.get("batch", 1)))
        row = rows.setdefault(key, Row(key[0], key[1], suite=suite, batch=key[2]))
        impl = info["impl"]
        seconds = info["time_s"] if info.get("time_s") is not None else bench["stats"]["median"]
        row.ms[impl] = float(seconds) * 1e3
        if info.get("peak_mib") is not None:
            row.mib[impl] = float(info["peak_mib"])
        if info.get("gflop") is not None:
            row.gflop[impl] = float(info["gflop"])
        elif "gflop" in info:
            row.flops_na[impl] = str(info.get("flops_note") or "not counted")
        if info.get("paired_ratio") is not None:
            row.paired = {"impl": impl, "peer": info["paired_with"], "ratio": float(info["paired_ratio"]),
                          "low": float(info["paired_low"]), "high": float(info["paired_high"]),
                          "coverage": float(info["paired_coverage"]), "rounds": int(info["paired_rounds"])}
    order = {name: index for index, name in enumerate(passes)}
    return sorted(rows.values(), key=lambda row: (order.get(row.pass_name, len(order)), row.length, row.batch))


def rows_by_key(rows: Iterable[Row]) -> Dict[Tuple[str, int], Row]:
    return {(row.pass_name, row.length): row for row in rows}


def not_measured(row: Row, metric: str, impls: Sequence[str],
                 plan_variable: Callable[[str, str], str] = lambda impl, pass_name: LENGTHS_ENV,
                 where: Optional[str] = None, plan: str = LENGTHS_ENV) -> str:
    """Why a target on `impls` has no value at this row: nothing ran there, FLOPs not counted, memory
    not measured, or which plan variable (plan_variable(impl, pass), and `plan`, the one that places the
    row: SMDIM_BENCH_LENGTHS by default) would put the absent cases in. `where` names the row (default
    "fwd L=512")."""
    values = getattr(row, metric)
    absent = [impl for impl in impls if impl not in values]
    where = where or f"{row.pass_name} L={row.length}"
    if not row.ms:
        return f"nothing measured at {where} (plan: {plan})"
    if not absent:
        return f"not measured at {where}"
    if metric == "gflop" and all(impl in row.ms for impl in absent):
        return f"{', '.join(absent)} FLOPs not counted at {where}" + "".join(
            f" ({row.flops_na[impl]})" for impl in absent if impl in row.flops_na)[:300]
    if all(impl in row.ms for impl in absent):  # ran, but no memory (e.g. --benchmark-disable)
        return f"{METRIC_NAMES[metric]} of {', '.join(absent)} not measured at {where}"
    variables = sorted({plan_variable(impl, row.pass_name) for impl in absent} | {plan})
    return f"{', '.join(absent)} not measured at {where} (plan: {', '.join(variables)})"


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


# --- the JSON's context ----------------------------------------------------------------------------

def first_suite_info(data: dict, suite: Optional[str]) -> dict:
    """extra_info of the suite's first benchmark (shape, threads, ISA are the same in all);
    suite=None: of any suite's."""
    return next((b["extra_info"] for b in data.get("benchmarks", [])
                 if b.get("extra_info", {}).get("suite") is not None
                 and (suite is None or b["extra_info"]["suite"] == suite)), {})


def impl_infos(data: dict, suite: str, config: Optional[str] = None) -> Dict[str, dict]:
    """{impl: extra_info of its first benchmark} of the suite (of one model preset, with `config`)."""
    infos: Dict[str, dict] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("suite") == suite and (config is None or info.get("config") == config):
            infos.setdefault(info.get("impl"), info)
    return infos


def machine_line(data: dict) -> str:
    """The machine the benchmarks ran on, from the JSON (our conftest's entry, else pytest-benchmark's)."""
    machine_info = data.get("machine_info", {})
    info = dict(machine_info.get("smdim_bench") or {})
    if not info:
        cpu = machine_info.get("cpu")
        info["cpu"] = cpu.get("brand_raw", "unknown CPU") if isinstance(cpu, dict) else "unknown CPU"
        extra = first_suite_info(data, None)
        info.update({key: extra[key] for key in ("threads", "isa") if key in extra})
    return format_machine(info)


# --- formats and tables ----------------------------------------------------------------------------

def format_number(value: Optional[float]) -> str:
    """Three significant digits, or '—' for a case that did not run."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_ratio(value: Optional[float]) -> str:
    return "—" if value is None else f"{format_number(value)}×"


def format_millions(count: Optional[float]) -> str:
    """A parameter count in millions: '8.73 M'."""
    return "?" if count is None else f"{count / 1e6:.2f} M"


def format_gflop(row: Row, impl: str) -> str:
    """GFLOP of one case: a number, 'n/a' (it ran, FLOPs not counted) or '—' (did not run)."""
    if impl in row.gflop:
        return format_number(row.gflop[impl])
    return "n/a" if impl in row.flops_na or impl in row.ms else "—"


def format_value(row: Row, metric: str, impl: str) -> str:
    return format_gflop(row, impl) if metric == "gflop" else format_number(getattr(row, metric).get(impl))


def ratio_detail(row: Row, metric: str, impl: str, peer: str, ratio: float) -> str:
    """'impl 153 GFLOP, peer 322 GFLOP (impl/peer 0.47)'."""
    unit = METRIC_UNITS[metric]
    values = getattr(row, metric)
    return (f"{impl} {format_number(values[impl])} {unit}, {peer} {format_number(values[peer])} {unit} "
            f"({impl}/{peer} {ratio:.2f})")


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


RatioColumn = Tuple[str, str, str]  # (header, numerator implementation, denominator implementation)


ExtraColumn = Tuple[str, Callable[[Row], str]]  # (header, the cell of a row)


def metric_table(rows: Sequence[Row], impls: Sequence[str], ratios: Mapping[str, Sequence[RatioColumn]],
                 metrics: Sequence[str] = ("ms", "mib", "gflop"),
                 extra: Optional[Mapping[str, Sequence[ExtraColumn]]] = None) -> str:
    """One line per (pass, L); per metric, every implementation's value, that metric's ratio columns, then
    its `extra` columns (e.g. a ratio timed side by side)."""
    extra = extra or {}
    header = ["pass", "L"]
    for metric in metrics:
        header += [f"{impl} {METRIC_UNITS[metric]}" for impl in impls] + [name for name, _, _ in ratios.get(metric, ())]
        header += [name for name, _ in extra.get(metric, ())]
    body = []
    for row in rows:
        cells = [row.pass_name, str(row.length)]
        for metric in metrics:
            cells += [format_value(row, metric, impl) for impl in impls]
            cells += [format_ratio(row.ratio(metric, a, b)) for _, a, b in ratios.get(metric, ())]
            cells += [cell(row) for _, cell in extra.get(metric, ())]
        body.append(cells)
    return markdown_table(header, body)


# --- a section, and its plot -----------------------------------------------------------------------

@dataclass
class Section:
    """One suite's part of the report."""

    suite: str
    rows: List[Row]
    checks: List[TargetCheck]
    markdown: str
    plot: Optional[Callable[[Path], None]] = None  # writes the section's PNG there; None: nothing to plot


PLOT_METRICS = {"ms": ("time per call (ms, median)", "time"),
                "mib": ("peak memory (MiB, RSS growth)", "peak memory"),
                "gflop": ("GFLOP per call (FlopCounterMode)", "FLOPs")}
PASS_STYLES = (("-", "o"), ("--", "s"), (":", "^"))  # (line style, marker) of a suite's first, second, third pass


def plot_panels(axes, rows: Sequence[Row], impls: Sequence[str], labels: Mapping[str, str], metrics: Sequence[str],
                passes: Sequence[str] = PASSES, title_prefix: str = "") -> None:
    """Draw one metric per matplotlib axis vs L, log-log, one line per (implementation, pass)."""
    from matplotlib.ticker import NullLocator

    colors = {impl: f"C{index}" for index, impl in enumerate(impls)}
    lengths = sorted({row.length for row in rows})
    for ax, metric in zip(axes, metrics):
        for impl in impls:
            for pass_name, (linestyle, marker) in zip(passes, PASS_STYLES):
                points = [(row.length, getattr(row, metric)[impl]) for row in rows
                          if row.pass_name == pass_name and getattr(row, metric).get(impl, 0) > 0]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, linestyle=linestyle, marker=marker, color=colors[impl],
                            label=f"{labels.get(impl, impl)} {pass_name}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(length) for length in lengths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("sequence length L")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        ylabel, panel_title = PLOT_METRICS[metric]
        ax.set_ylabel(ylabel)
        ax.set_title(title_prefix + panel_title)


def plot_rows(rows: Sequence[Row], title: str, path: Path, impls: Sequence[str], labels: Mapping[str, str],
              metrics: Sequence[str] = ("ms", "mib")) -> None:
    """One panel per metric vs L, log-log, one line per (implementation, pass), saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 5), squeeze=False)
    plot_panels(axes[0], rows, impls, labels, metrics)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
