"""Report of the benchmarks: markdown tables, the issues' targets, log-log plots.

    python -m benchmarks.report BENCH_JSON [--out DIR] [--check]

BENCH_JSON is pytest-benchmark's output (`pytest benchmarks/ --benchmark-only
--benchmark-json=BENCH_JSON`). One section per suite found in it, each built by its own module:
the selective scan (scan_report.py), the Mamba layer and the MFA block vs transformer blocks
(layer_report.py), transformers' Mamba (hf_mamba_report.py), the model suite, SMDIM vs the
transformer-diffusion baseline (model_report.py) and the studio (studio_report.py); report_kit.py
holds what they share. Writes the whole report to stdout and DIR/benchmarks.md, each section to
DIR/<suite>.md, and per suite (but the studio's) time and peak memory (and, for the layers and the
models, GFLOP) vs L (log-log, one line per implementation and pass) to DIR/<suite>.png. Times are
the median round (for a single-shot case, its one run: extra_info time_s); memory is the peak RSS
growth of one run in a fresh process (benchmarks/memory.py). --check exits 1 if a target fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from .hf_mamba import HF_MODEL_SUITE
from .hf_mamba_report import hf_section
from .layer_report import mamba_layer_section, mfa_block_section
from .layers import MAMBA_SUITE, MFA_SUITE
from .model_report import model_section
from .models import MODEL_SUITE
from .report_kit import Section, targets_summary
from .scan_cases import SCAN_SUITE
from .scan_report import scan_section
from .studio import STUDIO_SUITE
from .studio_report import studio_section

REPORT_NAME_ALL = "benchmarks"  # DIR/benchmarks.md: every section
# (suite, its section builder: None where the JSON has none of its benchmarks), in report order
SECTIONS: Tuple[Tuple[str, Callable[[dict], Optional[Section]]], ...] = (
    (SCAN_SUITE, scan_section),
    (MAMBA_SUITE, mamba_layer_section),
    (MFA_SUITE, mfa_block_section),
    (HF_MODEL_SUITE, hf_section),
    (MODEL_SUITE, model_section),
    (STUDIO_SUITE, studio_section),
)


def build_sections(data: dict) -> List[Section]:
    """A section per suite with benchmarks in `data`, in SECTIONS order."""
    return [section for section in (build(data) for _, build in SECTIONS) if section is not None]


def render_all(sections: Sequence[Section]) -> str:
    """The sections one after the other; with several, a closing count over all targets."""
    text = "\n".join(section.markdown for section in sections)
    if len(sections) > 1:
        checks = [check for section in sections for check in section.checks]
        text += f"\n{targets_summary(checks, '**All targets**')}\n"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("bench_json", type=Path, help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default: bench_out)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 if a target fails")
    args = parser.parse_args(argv)

    data = json.loads(args.bench_json.read_text(encoding="utf-8"))
    sections = build_sections(data)
    if not sections:
        print(f"{args.bench_json}: no benchmarks of {', '.join(suite for suite, _ in SECTIONS)} (run pytest "
              f"benchmarks/ --benchmark-only --benchmark-json={args.bench_json})", file=sys.stderr)
        return 2
    report = render_all(sections)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in [(REPORT_NAME_ALL, report)] + [(section.suite, section.markdown) for section in sections]:
        path = args.out / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    try:
        for section in sections:
            if section.plot is not None:
                path = args.out / f"{section.suite}.png"
                section.plot(path)
                written.append(path)
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    failed = any(check.status == "FAIL" for section in sections for check in section.checks)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
