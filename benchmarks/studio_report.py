"""The studio section of the benchmark report: seconds per task and bundled model (studio.py)."""
from __future__ import annotations

from typing import List, Optional

from .report_kit import Section, TargetCheck, machine_line
from .studio import STUDIO_SUITE, TASKS


def studio_entries(data: dict) -> List[dict]:
    """(extra_info + seconds) of the studio benchmarks, in model then task order."""
    entries = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("suite") == STUDIO_SUITE:
            entries.append(dict(info, seconds=float(bench["stats"]["median"])))
    return sorted(entries, key=lambda e: (e["training_length"], e["style"], TASKS.index(e["task"])))


def studio_section(data: dict) -> Optional[Section]:
    """The studio suite's section (a table of seconds: no rows, no plot), or None where the JSON has none."""
    entries = studio_entries(data)
    if not entries:
        return None
    lines = [f"## Studio latency: bundled models at the studio's default settings — {machine_line(data)}", "",
             "| model | task | what | steps / order | seconds |", "| --- | --- | --- | --- | --- |"]
    checks: List[TargetCheck] = []
    for e in entries:
        what = (f"bars {e['bars']} of held-out piece {e['piece']} ({e['piece_tokens']} tokens)" if "bars" in e
                else f"{e['tokens']} new tokens")
        what += f"; trained at {e['training_length']} tokens"
        lines.append(f"| {e['style']} | {e['task']} | {what} | {e['steps']} / {e['order']} | {e['seconds']:.2f} |")
        status = "PASS" if e["seconds"] <= e["target_s"] else "FAIL"
        checks.append(TargetCheck(status, f"{e['style']} {e['task']} within {e['target_s']:.0f} s",
                                  f"{e['seconds']:.2f} s"))
    lines += ["", "One timed run per task after a warm-up run, threads pinned; a longer wait shows a progress bar "
              "(the studio's, the command line's tqdm). Infill checks that every note outside the bars is kept.", ""]
    lines += [check.line() for check in checks]
    return Section(STUDIO_SUITE, [], checks, "\n".join(lines) + "\n")
