"""The transformers section of the benchmark report: transformers' Mamba model unpatched vs with
smdim enabled (hf_mamba.py), speed-ups per pass and L, decode tokens/s."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from .hf_mamba import CONFIG_130M, DECODE, FWDBWD, FORWARD, HF_MODEL_SUITE, IMPLS, PATCHED, UNPATCHED
from .report_kit import Section, TargetCheck, format_number, format_ratio, machine_line

# Issue 13's targets at L = 2048 against the unpatched CPU path.
TARGETS = {FORWARD: 4.0, FWDBWD: 100.0}
TARGET_LENGTH = 2048
PLOT_TITLE = "transformers' Mamba (130M-like), unpatched vs smdim enabled"


def hf_entries(data: dict) -> Dict[Tuple[str, int], Dict[str, dict]]:
    """{(pass, L): {impl: extra_info + seconds}} of the transformers suite."""
    entries: Dict[Tuple[str, int], Dict[str, dict]] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("suite") == HF_MODEL_SUITE:
            key = (info["pass_name"], int(info["L"]))
            entries.setdefault(key, {})[info["impl"]] = dict(info, seconds=float(bench["stats"]["median"]))
    return entries


def _speedup(cell: Dict[str, dict]) -> Optional[float]:
    if UNPATCHED not in cell or PATCHED not in cell:
        return None
    if "tokens_per_s" in cell[PATCHED]:
        return cell[PATCHED]["tokens_per_s"] / cell[UNPATCHED]["tokens_per_s"]
    return cell[UNPATCHED]["seconds"] / cell[PATCHED]["seconds"]


def hf_section(data: dict) -> Optional[Section]:
    """The transformers suite's section (no rows: its table is its own), or None where the JSON has none."""
    entries = hf_entries(data)
    if not entries:
        return None
    machine = machine_line(data)
    c = CONFIG_130M
    lines = [f"## transformers' Mamba with `smdim_kernels.integrations.transformers.enable()` — {machine}", "",
             f"A 130M-like config (d_model {c['hidden_size']}, N {c['state_size']}, expand {c['expand']}, "
             f"d_conv {c['conv_kernel']}, dt_rank {c['time_step_rank']}, vocabulary {c['vocab_size']:,}), random "
             "weights, batch 1, fp32; unpatched = transformers' own CPU path.", "",
             "| pass | L | layers | unpatched | smdim enabled | speed-up | check |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    checks = []
    order = {FORWARD: 0, FWDBWD: 1, DECODE: 2}
    for (pass_name, length), cell in sorted(entries.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        any_info = next(iter(cell.values()))
        if pass_name == DECODE:
            what, key, unit = f"{any_info['new_tokens']} tokens after {length}", "tokens_per_s", "tokens/s"
        else:
            what, key, unit = str(length), "seconds", "s"
        shown = {impl: f"{format_number(cell[impl][key])} {unit}" if impl in cell else "—" for impl in IMPLS}
        speedup = _speedup(cell)
        lines.append(f"| {pass_name} | {what} | {any_info['layers']} | {shown[UNPATCHED]} | {shown[PATCHED]} | "
                     f"{format_ratio(speedup)} | {any_info.get('check', '')} |")
    for pass_name, target in TARGETS.items():
        cell = entries.get((pass_name, TARGET_LENGTH), {})
        speedup = _speedup(cell)
        description = f"{pass_name} at L={TARGET_LENGTH} at least {target:.0f}x the unpatched path"
        if speedup is None:
            checks.append(TargetCheck("N/A", description, "not measured in this run"))
        else:
            checks.append(TargetCheck("PASS" if speedup >= target else "FAIL", description, format_ratio(speedup)))
    lines += ["", "forward+backward uses one of the 24 layers (the unpatched backward takes minutes per layer); "
              "decode is greedy `generate`: tokens/s of its one-token steps (generate(N) minus generate(1), the "
              "same prefill). Checked once each: forward outputs per L; the training pass's output and every "
              "parameter gradient (train mode, as timed); decode's greedy tokens. Decode is bounded by the "
              "per-token GEMMs and the 50,280-word head, not the scan, so its speed-up is small.", ""]
    lines += [check.line() for check in checks]
    title = f"{PLOT_TITLE} — {machine}"
    return Section(HF_MODEL_SUITE, [], checks, "\n".join(lines) + "\n", plot=lambda path: plot_hf(data, title, path))


def plot_hf(data: dict, title: str, path) -> None:
    """Seconds against L, unpatched vs enabled, one panel per pass (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = hf_entries(data)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, pass_name in zip(axes, (FORWARD, FWDBWD)):
        for impl, style in ((UNPATCHED, "o--"), (PATCHED, "s-")):
            points = sorted((L, cell[impl]["seconds"]) for (p, L), cell in entries.items()
                            if p == pass_name and impl in cell)
            if points:
                layers = entries[(pass_name, points[0][0])][impl]["layers"]
                ax.plot(*zip(*points), style, label=f"{impl} ({layers} layer{'s' if layers > 1 else ''})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens (L)")
        ax.set_ylabel("seconds per call")
        ax.set_title(pass_name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
