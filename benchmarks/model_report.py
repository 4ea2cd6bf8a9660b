"""The model suite's section of the benchmark report (models.py's suite; report.py assembles it).

Per preset (tiny, base): one table of latency, peak memory and GFLOP per (pass, L) for SMDIM and the
baseline with their ratios SMDIM/baseline (< 1: SMDIM is cheaper); the denoiser calls of the full
samples; the growth of time, memory and FLOPs from L = 2048 to 8192 (fitted log-log slope: 1 is
linear, 2 quadratic); the issue's targets at L = 8192 (PASS / FAIL / N/A); and one PNG with a row of
log-log panels (time, memory, GFLOP vs L) per preset, with ∝L and ∝L² guides.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .models import (BASELINE_IMPL, MODEL_CONFIGS, MODEL_IMPLEMENTATIONS, MODEL_PASSES, MODEL_SUITE, SAMPLE,
                     SAMPLE_STEPS, SMDIM_IMPL, TRAIN)
from .passes import FORWARD
from .report_kit import (METRIC_NAMES, METRIC_UNITS, RELATIONS, Row, Section, TargetCheck, collect_rows,
                         format_millions, impl_infos, loglog_slope, machine_line, metric_table, not_measured,
                         plot_panels, ratio_detail, rows_by_key, target_check, targets_summary)
from .settings import LENGTHS_ENV, MODEL_CONFIGS_ENV, SAMPLE_MAX_ENV

TARGET_LENGTH = 8192
# (pass, metric, target, relation): SMDIM / baseline at TARGET_LENGTH (issue 5; the paper: ~30 % fewer
# GFLOPs, ~40 % less memory than transformer-based diffusion)
MODEL_TARGETS = ((FORWARD, "gflop", 0.7, "≤"), (FORWARD, "mib", 0.6, "≤"), (TRAIN, "mib", 0.6, "≤"),
                 (FORWARD, "ms", 1.0, "<"))
GROWTH_LENGTHS = (2048, 8192)  # slopes fitted over the lengths measured in this range
LABELS = {SMDIM_IMPL: "SMDIM", BASELINE_IMPL: "transformer baseline"}
PLOT_TITLE = "SMDIM vs transformer-diffusion baseline"
PASS_TEXT = {
    FORWARD: "one denoiser forward (eval, no_grad: the cost of one sampling step)",
    TRAIN: "one training step (MDLM loss forward + backward, gradient clipping, AdamW step)",
    SAMPLE: "a full unconditional sample with K = {steps} steps{order} (`smdim generate`'s default when measured)",
}


def sample_settings(data: dict) -> Tuple[int, Optional[str]]:
    """(K, order) the JSON's samples ran with (recorded per case; SAMPLE_STEPS for JSON without it)."""
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if info.get("suite") == MODEL_SUITE and info.get("pass") == SAMPLE and "steps" in info:
            return int(info["steps"]), info.get("order")
    return SAMPLE_STEPS, None


def pass_texts(data: dict) -> Dict[str, str]:
    steps, order = sample_settings(data)
    return {name: text.format(steps=steps, order=f" in {order} order" if order else "")
            for name, text in PASS_TEXT.items()}


def model_rows(benchmarks: Sequence[dict], config: str) -> List[Row]:
    """Rows of one preset, by pass (fwd, train, sample), then L; row.config is set."""
    entries = [b for b in benchmarks if b.get("extra_info", {}).get("suite") == MODEL_SUITE
               and b["extra_info"].get("config") == config]
    rows = collect_rows(entries, MODEL_SUITE, MODEL_PASSES)
    for row in rows:
        row.config = config
    return rows


def rows_by_config(data: dict) -> Dict[str, List[Row]]:
    """{preset: rows} for every preset with benchmarks in `data`, in MODEL_CONFIGS order."""
    benchmarks = data.get("benchmarks", [])
    found = {b.get("extra_info", {}).get("config") for b in benchmarks
             if b.get("extra_info", {}).get("suite") == MODEL_SUITE}
    configs = [c for c in MODEL_CONFIGS if c in found] + sorted(c for c in found - set(MODEL_CONFIGS) if c)
    return {config: model_rows(benchmarks, config) for config in configs}


RATIO = f"{SMDIM_IMPL}/{BASELINE_IMPL}"
RATIO_COLUMNS = {metric: [(f"{RATIO} {unit}", SMDIM_IMPL, BASELINE_IMPL)] for metric, unit in METRIC_UNITS.items()}


def model_table(rows: Sequence[Row]) -> str:
    """One row per (pass, L): ms, MiB and GFLOP of both models, each with the ratio SMDIM/baseline."""
    return metric_table(rows, MODEL_IMPLEMENTATIONS, RATIO_COLUMNS)


# --- growth and targets ------------------------------------------------------------------------------


def growth_slope(rows: Sequence[Row], pass_name: str, metric: str, impl: str,
                 lengths: Tuple[int, int] = GROWTH_LENGTHS) -> Optional[float]:
    """Fitted log-log slope of `metric` vs L over the lengths measured in [lengths[0], lengths[1]]."""
    low, high = lengths
    return loglog_slope((row.length, getattr(row, metric)[impl]) for row in rows
                        if row.pass_name == pass_name and low <= row.length <= high and impl in getattr(row, metric))


def growth_lines(config: str, rows: Sequence[Row]) -> List[str]:
    """'- base fwd: time smdim 1.01, baseline 1.19; peak memory ...; FLOPs ...' per pass measured."""
    low, high = GROWTH_LENGTHS
    if len({row.length for row in rows if low <= row.length <= high}) < 2:
        return [f"- {config}: not measured (needs two lengths in [{low}, {high}])"]
    lines = []
    for pass_name in MODEL_PASSES:
        if not any(row.pass_name == pass_name for row in rows):
            continue
        parts = []
        for metric in ("ms", "mib", "gflop"):
            slopes = {impl: growth_slope(rows, pass_name, metric, impl) for impl in MODEL_IMPLEMENTATIONS}
            parts.append(f"{METRIC_NAMES[metric]} " + ", ".join(
                f"{impl} {'—' if slope is None else f'{slope:.2f}'}" for impl, slope in slopes.items()))
        lines.append(f"- {config} {pass_name}: " + "; ".join(parts))
    return lines


def _not_measured(config: str, rows: Sequence[Row], row: Row, metric: str) -> str:
    if not rows:
        return f"{config} not run (plan: {MODEL_CONFIGS_ENV})"
    detail = not_measured(row, metric, MODEL_IMPLEMENTATIONS)
    if row.pass_name == SAMPLE and not row.ms:
        detail = detail.replace(f"plan: {LENGTHS_ENV}", f"plan: {LENGTHS_ENV}, {SAMPLE_MAX_ENV}")
    return detail


def model_checks(rows_of: Dict[str, List[Row]], configs: Sequence[str] = MODEL_CONFIGS) -> List[TargetCheck]:
    """SMDIM/baseline at L=8192, per preset: fwd FLOPs ≤ 0.7, fwd and train peak memory ≤ 0.6, fwd latency < 1."""
    checks = []
    for config in configs:
        rows = rows_of.get(config, [])
        by_key = rows_by_key(rows)
        for pass_name, metric, target, relation in MODEL_TARGETS:
            row = by_key.get((pass_name, TARGET_LENGTH), Row(pass_name, TARGET_LENGTH, MODEL_SUITE, config=config))
            description = (f"{config} {pass_name} SMDIM/baseline {METRIC_NAMES[metric]} {relation} {target:g} "
                           f"at L={TARGET_LENGTH}")
            checks.append(target_check(
                description,
                row.ratio(metric, SMDIM_IMPL, BASELINE_IMPL), lambda x, t=target, r=relation: RELATIONS[r](x, t),
                lambda x, r=row, m=metric: ratio_detail(r, m, SMDIM_IMPL, BASELINE_IMPL, x),
                _not_measured(config, rows, row, metric)))
    return checks


# --- text ----------------------------------------------------------------------------------------------


def config_line(data: dict, config: str) -> str:
    """'tiny: SMDIM 4 MFA blocks ... 1.20 M parameters; baseline 5 transformer blocks ... (−6.5 %)'."""
    infos = impl_infos(data, MODEL_SUITE, config)
    ours, theirs = infos.get(SMDIM_IMPL, {}), infos.get(BASELINE_IMPL, {})
    window = ours.get("attn_window")
    compression = ours.get("compression", 4)
    attention = ("full attention" if window is None
                 else f"local attention, ±{window} compressed steps = ±{window * compression} tokens")
    text = (f"**{config}**: d_model {ours.get('d_model', theirs.get('d_model', '?'))}, "
            f"d_embed {ours.get('d_embed', '?')}, {ours.get('num_heads', '?')} heads, compression {compression}; "
            f"SMDIM {ours.get('n_layers', '?')} MFA blocks ({attention}), {format_millions(ours.get('parameters'))} "
            f"parameters; baseline {theirs.get('n_layers', '?')} transformer blocks (full attention, "
            f"FFN 4×d_model), {format_millions(theirs.get('parameters'))} parameters")
    if ours.get("parameters") and theirs.get("parameters"):
        text += f" ({(theirs['parameters'] - ours['parameters']) / ours['parameters']:+.1%} vs SMDIM)"
    return text


def calls_line(data: dict, config: str) -> Optional[str]:
    """The denoiser calls of the full samples, or None where no sample ran."""
    calls = sorted({(b["extra_info"]["L"], b["extra_info"]["impl"], b["extra_info"]["denoiser_calls"])
                    for b in data.get("benchmarks", []) if b.get("extra_info", {}).get("suite") == MODEL_SUITE
                    and b["extra_info"].get("config") == config and b["extra_info"].get("denoiser_calls") is not None})
    if not calls:
        return None
    steps, _ = sample_settings(data)
    if all(n == steps for _, _, n in calls):
        return f"Every {config} sample made {steps} denoiser calls (one per step: every step revealed tokens)."
    return f"Denoiser calls per {config} sample (K = {steps}): " + ", ".join(
        f"{impl} L={length} {n}" for length, impl, n in calls) + "."


def _device_text(data: dict) -> Tuple[str, str]:
    """(device description, memory text) from the suite's extra_info."""
    info = next((b["extra_info"] for b in data.get("benchmarks", [])
                 if b.get("extra_info", {}).get("suite") == MODEL_SUITE), {})
    device = info.get("device", "cpu")
    if device == "cuda":
        return (f"cuda ({info.get('device_name', 'GPU')})",
                "Memory: torch.cuda.max_memory_allocated growth (MiB) over one run, in the benchmark process "
                "(tensors only); parameters, input tokens and AdamW's state exist before and are excluded; "
                "activations, logits, gradients and the sampler's buffers are included. Times: CUDA events.")
    return ("cpu",
            "Memory: peak RSS growth (MiB) of one run in a fresh process (benchmarks/memory.py): parameters, "
            "input tokens and (train) AdamW's state exist before the baseline and are excluded (a warm-up step "
            "creates the optimizer state); activations, logits, gradients and the sampler's buffers are included.")


def render_model_report(data: dict, rows_of: Dict[str, List[Row]], checks: Sequence[TargetCheck]) -> str:
    device, memory_text = _device_text(data)
    any_info = next((b["extra_info"] for b in data.get("benchmarks", [])
                     if b.get("extra_info", {}).get("suite") == MODEL_SUITE), {})
    first_regular = any_info.get("first_regular_id", "?")
    lines = [
        "# Model benchmark: SMDIM vs transformer-diffusion baseline", "",
        f"Machine: {machine_line(data)}; device {device}", "",
        f"Problem: batch {any_info.get('batch', '?')}, {any_info.get('dtype', '?')}, L random token ids in "
        f"[{first_regular}, {any_info.get('vocab_size', '?')}) (the default REMI vocabulary without its special "
        f"tokens; PAD {any_info.get('pad_id', '?')}, MASK {any_info.get('mask_id', '?')}). Both models share the "
        "skeleton (embedding → Conv1d stride 4 → blocks on L/4 steps → ConvTranspose1d → tied head); the "
        "baseline gets the depth that matches SMDIM's parameter count (within 10 %, checked before timing). "
        "Passes: " + "; ".join(f"{name} = {text}" for name, text in pass_texts(data).items()) + ".", "",
        *(f"- {config_line(data, config)}" for config in rows_of), "",
        "Times: median ms per call (a sample: its one run). " + memory_text + " GFLOP: 10⁹ FLOPs per call counted "
        "by torch.utils.flop_counter (smdim_kernels.flops.count_flops; 2 per multiply-add; GEMMs, convolutions, "
        "attention and smdim's fused ops; elementwise work counts 0); train = loss forward + backward; sample = "
        f"its denoiser calls × one forward. {RATIO} < 1: SMDIM is cheaper.",
    ]
    for config, rows in rows_of.items():
        lines += ["", f"## {config}", "", model_table(rows)]
        calls = calls_line(data, config)
        if calls:
            lines += ["", calls]
    growth = [line for config, rows in rows_of.items() for line in growth_lines(config, rows)]
    if growth:
        lines += ["", f"Growth from L={GROWTH_LENGTHS[0]} to {GROWTH_LENGTHS[1]} (fitted log-log slope over the "
                  "lengths measured there; 1 = linear, 2 = quadratic; — = fewer than two lengths):", "", *growth]
    lines += ["", "## Targets", "", *(check.line() for check in checks), "", targets_summary(checks), ""]
    return "\n".join(lines)


def model_section(data: dict) -> Optional[Section]:
    """The model suite's section (rows of every preset), or None where the JSON has none of its benchmarks."""
    rows_of = rows_by_config(data)
    rows = [row for config_rows in rows_of.values() for row in config_rows]
    if not rows:
        return None
    checks = model_checks(rows_of)
    title = f"{PLOT_TITLE} — {machine_line(data)}"
    return Section(MODEL_SUITE, rows, checks, render_model_report(data, rows_of, checks),
                   plot=lambda path: plot_models(rows, title, path))


# --- plot ----------------------------------------------------------------------------------------------


def _slope_guides(ax, lengths: Sequence[int]) -> None:
    """Grey ∝L and ∝L² lines from half the lowest curve's first point: growth reads off the slopes."""
    starts = [line.get_ydata()[0] for line in ax.lines if len(line.get_xdata()) and line.get_xdata()[0] == lengths[0]]
    if len(lengths) < 2 or not starts:
        return
    x0, y0 = lengths[0], min(starts) / 2  # below the curves, not on them
    xs = [lengths[0], lengths[-1]]
    for power, style in ((1, (0, (4, 3))), (2, (0, (1, 2)))):
        ax.plot(xs, [y0 * (x / x0) ** power for x in xs], color="0.6", linewidth=1, linestyle=style,
                label="∝ L" if power == 1 else "∝ L²")
    ax.legend(fontsize=7)


def plot_models(rows: Sequence[Row], title: str, path: Path) -> None:
    """One row of panels (time, peak memory, GFLOP vs L, log-log) per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(row.config for row in rows))
    metrics = ("ms", "mib", "gflop")
    fig, axes = plt.subplots(len(configs), len(metrics), figsize=(6.5 * len(metrics), 5 * len(configs)),
                             squeeze=False)
    for ax_row, config in zip(axes, configs):
        config_rows = [row for row in rows if row.config == config]
        plot_panels(ax_row, config_rows, MODEL_IMPLEMENTATIONS, LABELS, metrics, passes=MODEL_PASSES,
                    title_prefix=f"{config}: ")
        lengths = sorted({row.length for row in config_rows})
        for ax in ax_row:
            _slope_guides(ax, lengths)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
