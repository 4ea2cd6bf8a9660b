"""What every section of the benchmark report shares: target checks, the machine line, number
formats. The suite sections (report.py, model_report.py, studio_report.py, hf_mamba_report.py)
import it; it imports none of them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .cases import SUITE
from .machine import format_machine


@dataclass(frozen=True)
class TargetCheck:
    status: str  # PASS, FAIL or N/A (not measured)
    description: str
    detail: str

    def line(self) -> str:
        return f"- [{self.status}] {self.description}: {self.detail}"


def first_suite_info(data: dict, suite: Optional[str] = SUITE) -> dict:
    """extra_info of the suite's first benchmark (shape, threads, ISA are the same in all);
    suite=None: of any suite's."""
    return next((b["extra_info"] for b in data.get("benchmarks", [])
                 if b.get("extra_info", {}).get("suite") is not None
                 and (suite is None or b["extra_info"]["suite"] == suite)), {})


def machine_line(data: dict) -> str:
    """The machine the benchmarks ran on, from the JSON (our conftest's entry, else pytest-benchmark's)."""
    machine_info = data.get("machine_info", {})
    info = dict(machine_info.get("smdim_bench") or {})
    if not info:
        cpu = machine_info.get("cpu")
        info["cpu"] = cpu.get("brand_raw", "unknown CPU") if isinstance(cpu, dict) else "unknown CPU"
        extra = first_suite_info(data) or first_suite_info(data, None)
        info.update({key: extra[key] for key in ("threads", "isa") if key in extra})
    return format_machine(info)


def format_number(value: Optional[float]) -> str:
    """Three significant digits, or '—' for a case that did not run."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_ratio(value: Optional[float]) -> str:
    return "—" if value is None else f"{format_number(value)}×"
