"""The model suite's section of the benchmark report (models.py's suite; report.py assembles it).

Per preset of the batch-1 table (tiny, base): one table of latency, peak memory and GFLOP per (pass, L)
for SMDIM and the baseline with their ratios SMDIM/baseline (< 1: SMDIM is cheaper) and the time ratio
of the two models timed side by side (alternating rounds, paired.py) with its interval; the denoiser calls
of the full samples; the growth of time, memory and FLOPs from L = 2048 to 8192 (fitted log-log slope: 1
is linear, 2 quadratic); the issue's targets at L = 8192 (PASS / FAIL / N/A; latency side by side where
measured); and one PNG with a row of
log-log panels (time, memory, GFLOP vs L) per preset, with ∝L and ∝L² guides.

Per preset of the batched table (tiny, small, base; extra_info "batched"): one row per shape B × L with
the training step's and the forward's time and peak memory and the full sample's seconds per generated
piece (its time / B), each for both models with SMDIM/baseline, the FLOP ratio, and the two models timed
side by side (alternating rounds, paired.py) with its interval; the targets on the default shapes
(BATCHED_TARGETS, presets tiny and small; base is reported without a target). Plotted as SMDIM/baseline
time per shape (bars, one panel per preset, with 1.0 and the targets), not against L: its shapes hold
the tokens per batch fixed, so a plot against L would mix L and B.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .models import (BASELINE_IMPL, BATCHED_SAMPLE_MAX_BATCH, BATCHED_SAMPLE_MAX_L, MODEL_CONFIGS,
                     MODEL_IMPLEMENTATIONS, MODEL_PASSES, MODEL_PRESETS, MODEL_SUITE, SAMPLE, SAMPLE_STEPS, SMDIM_IMPL,
                     TRAIN, shape_label)
from .passes import FORWARD
from .report_kit import (METRIC_NAMES, METRIC_UNITS, RELATIONS, Row, Section, TargetCheck, collect_rows,
                         format_millions, format_number, format_ratio, impl_infos, loglog_slope, machine_line,
                         markdown_table, metric_table, not_measured, plot_panels, ratio_detail, rows_by_key,
                         target_check, targets_summary)
from .settings import (BATCHED_CONFIGS_ENV, FULL_MODEL_BATCHES, LENGTHS_ENV, MODEL_BATCHES_ENV, MODEL_CONFIGS_ENV,
                       SAMPLE_MAX_ENV, shape_order)

TARGET_LENGTH = 8192
# (pass, metric, target, relation): SMDIM / baseline at TARGET_LENGTH (issue 5; the paper: ~30 % fewer
# GFLOPs, ~40 % less memory than transformer-based diffusion)
MODEL_TARGETS = ((FORWARD, "gflop", 0.7, "≤"), (FORWARD, "mib", 0.6, "≤"), (TRAIN, "mib", 0.6, "≤"),
                 (FORWARD, "ms", 1.0, "<"))
GROWTH_LENGTHS = (2048, 8192)  # slopes fitted over the lengths measured in this range
# (pass, target, lengths): SMDIM / baseline latency ≤ target on the default batched shapes at these lengths
# (settings.FULL_MODEL_BATCHES: B = 4096 / L), for BATCHED_TARGET_CONFIGS; base is reported without a target
BATCHED_TARGETS = ((TRAIN, 1.15, (256, 512)), (TRAIN, 1.0, (1024, 2048)), (FORWARD, 1.0, (1024, 2048, 4096)))
BATCHED_TARGET_CONFIGS = ("tiny", "small")
BATCHED_TITLE = "Training steps and denoiser forwards on batches (tokens per batch = batch × length)"
PER_PIECE = "s_per_piece"  # the batched table's sample column: seconds per generated piece = time / B
# (pass, metric) column groups of the batched table, each: SMDIM, baseline, SMDIM/baseline; GFLOP only as
# the ratio (the work each model does per call: the time ratio beside it is what that work costs)
PAIRED = "paired"  # the batched table's side-by-side ratio (paired.py), with its interval
BATCHED_COLUMNS = ((TRAIN, "ms"), (TRAIN, PAIRED), (TRAIN, "gflop"), (TRAIN, "mib"), (FORWARD, "ms"),
                   (FORWARD, PAIRED), (FORWARD, "gflop"), (FORWARD, "mib"), (SAMPLE, PER_PIECE))
RATIO_ONLY_METRICS = ("gflop", PAIRED)
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


def in_table(info: dict, batched: bool = False, config: Optional[str] = None) -> bool:
    """Whether a benchmark's extra_info is the model suite's, in the batch-1 or the batched table (JSON
    from before the batched table has no "batched": batch-1), of preset `config` if given."""
    return (info.get("suite") == MODEL_SUITE and bool(info.get("batched")) == batched
            and (config is None or info.get("config") == config))


def table_infos(data: dict, batched: bool = False, config: Optional[str] = None) -> List[dict]:
    """extra_info of the model benchmarks of one table, of one preset with `config`."""
    return [b["extra_info"] for b in data.get("benchmarks", []) if in_table(b.get("extra_info", {}), batched, config)]


def model_rows(benchmarks: Sequence[dict], config: str, batched: bool = False) -> List[Row]:
    """Rows of one preset in one table, by pass (fwd, train, sample), then L (then batch); row.config is set."""
    entries = [b for b in benchmarks if in_table(b.get("extra_info", {}), batched, config)]
    rows = collect_rows(entries, MODEL_SUITE, MODEL_PASSES)
    for row in rows:
        row.config = config
    return rows


def preset_order(configs) -> List[str]:
    """The presets named, smallest first (MODEL_PRESETS order), unknown ones after them by name."""
    known = [c for c in MODEL_PRESETS if c in configs]
    return known + sorted(c for c in set(configs) - set(MODEL_PRESETS) if c)


def rows_by_config(data: dict, batched: bool = False) -> Dict[str, List[Row]]:
    """{preset: rows} of one table for every preset with benchmarks there, in preset_order."""
    configs = preset_order({info.get("config") for info in table_infos(data, batched)})
    return {config: model_rows(data.get("benchmarks", []), config, batched) for config in configs}


RATIO = f"{SMDIM_IMPL}/{BASELINE_IMPL}"
RATIO_COLUMNS = {metric: [(f"{RATIO} {unit}", SMDIM_IMPL, BASELINE_IMPL)] for metric, unit in METRIC_UNITS.items()}


def time_ratio(row: Row) -> Tuple[Optional[float], bool]:
    """(SMDIM/baseline time, whether side by side): the side-by-side ratio where it was measured, else
    the ratio of the two cases' own medians."""
    paired = row.paired_ratio(SMDIM_IMPL, BASELINE_IMPL)
    if paired is not None:
        return paired, True
    return row.ratio("ms", SMDIM_IMPL, BASELINE_IMPL), False


def paired_interval(row: Row) -> Tuple[float, float]:
    """The interval of the side-by-side SMDIM/baseline ratio (row.paired must hold one)."""
    low, high = row.paired["low"], row.paired["high"]
    if row.paired["impl"] != SMDIM_IMPL:  # timed the other way round
        low, high = 1.0 / high, 1.0 / low
    return low, high


def format_paired(row: Row) -> str:
    """'1.21× (1.15–1.30)': the side-by-side ratio and its interval, or —."""
    ratio = row.paired_ratio(SMDIM_IMPL, BASELINE_IMPL)
    if ratio is None:
        return "—"
    return f"{format_ratio(ratio)} ({'–'.join(f'{x:.2f}' for x in paired_interval(row))})"


def time_detail(row: Row, ratio: float, side_by_side: bool) -> str:
    """A latency target's numbers: the side-by-side ratio with its interval and rounds, then the cases' own
    medians; or (none side by side) the medians and their ratio."""
    separate = row.ratio("ms", SMDIM_IMPL, BASELINE_IMPL)
    medians = "the cases' own medians: " + ("—" if separate is None else
                                              ratio_detail(row, "ms", SMDIM_IMPL, BASELINE_IMPL, separate))
    if not side_by_side:
        return medians
    low, high = paired_interval(row)
    return (f"side by side {ratio:.2f} ({row.paired['coverage']:.0%} interval {low:.2f}–{high:.2f}, "
            f"{row.paired['rounds']} alternating rounds); {medians}")


def model_table(rows: Sequence[Row]) -> str:
    """One row per (pass, L): ms, MiB and GFLOP of both models, each with the ratio SMDIM/baseline, and the
    time ratio timed side by side with its interval (— where it was not: the sample, or an old JSON)."""
    return metric_table(rows, MODEL_IMPLEMENTATIONS, RATIO_COLUMNS,
                        extra={"ms": [(f"{RATIO} ms side by side", format_paired)]})


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
    """SMDIM/baseline at L=8192, per preset: fwd FLOPs ≤ 0.7, fwd and train peak memory ≤ 0.6, fwd latency < 1
    (time_ratio: side by side where measured)."""
    checks = []
    for config in configs:
        rows = rows_of.get(config, [])
        by_key = rows_by_key(rows)
        for pass_name, metric, target, relation in MODEL_TARGETS:
            row = by_key.get((pass_name, TARGET_LENGTH), Row(pass_name, TARGET_LENGTH, MODEL_SUITE, config=config))
            description = (f"{config} {pass_name} SMDIM/baseline {METRIC_NAMES[metric]} {relation} {target:g} "
                           f"at L={TARGET_LENGTH}")
            if metric == "ms":  # latency: the side-by-side ratio where measured
                ratio, side_by_side = time_ratio(row)
                detail = functools.partial(time_detail, row, side_by_side=side_by_side)
            else:
                ratio = row.ratio(metric, SMDIM_IMPL, BASELINE_IMPL)
                detail = functools.partial(ratio_detail, row, metric, SMDIM_IMPL, BASELINE_IMPL)
            checks.append(target_check(description, ratio, lambda x, t=target, r=relation: RELATIONS[r](x, t),
                                       detail, _not_measured(config, rows, row, metric)))
    return checks


# --- the batched table -----------------------------------------------------------------------------------


def _batched_value(row: Row, metric: str, impl: str) -> Optional[float]:
    """One cell's number: ms or MiB as measured, or (PER_PIECE) the sample's seconds / B."""
    if metric == PER_PIECE:
        ms = row.ms.get(impl)
        return None if ms is None else ms / 1e3 / row.batch
    return getattr(row, metric).get(impl)


def batched_table(rows: Sequence[Row]) -> str:
    """One line per shape (by L, then B): BATCHED_COLUMNS for both models with SMDIM/baseline (— where the
    case did not run; the sample runs only at the studio's shapes); the side-by-side columns hold the
    ratio timed in alternating rounds with its interval."""
    header = ["batch × L", "tokens"]
    for pass_name, metric in BATCHED_COLUMNS:
        if metric == PAIRED:
            header.append(f"{RATIO} {pass_name} ms side by side")
            continue
        unit = "s/piece" if metric == PER_PIECE else f"{pass_name} {METRIC_UNITS[metric]}"
        if metric not in RATIO_ONLY_METRICS:
            header += [f"{impl} {unit}" for impl in MODEL_IMPLEMENTATIONS]
        header.append(f"{RATIO} {unit}")
    by_shape = {(row.pass_name, row.batch, row.length): row for row in rows}
    body = []
    for batch, length in sorted({(row.batch, row.length) for row in rows}, key=shape_order):
        cells = [f"{batch} × {length}", str(batch * length)]
        for pass_name, metric in BATCHED_COLUMNS:
            row = by_shape.get((pass_name, batch, length), Row(pass_name, length, MODEL_SUITE, batch=batch))
            if metric == PAIRED:
                cells.append(format_paired(row))
                continue
            if metric not in RATIO_ONLY_METRICS:
                cells += [format_number(_batched_value(row, metric, impl)) for impl in MODEL_IMPLEMENTATIONS]
            cells.append(format_ratio(row.ratio("ms" if metric == PER_PIECE else metric, SMDIM_IMPL, BASELINE_IMPL)))
        body.append(cells)
    return markdown_table(header, body)


def _batched_not_measured(config: str, rows: Sequence[Row], row: Row, metric: str) -> str:
    if not rows:
        return f"{config} not measured on batches (plan: {BATCHED_CONFIGS_ENV})"
    return not_measured(row, metric, MODEL_IMPLEMENTATIONS, lambda impl, pass_name: MODEL_BATCHES_ENV,
                        where=f"{row.pass_name} {shape_label(row.length, row.batch, batched=True)}",
                        plan=MODEL_BATCHES_ENV)


def batched_checks(rows_of: Dict[str, List[Row]], configs: Sequence[str] = BATCHED_TARGET_CONFIGS
                   ) -> List[TargetCheck]:
    """SMDIM/baseline latency on the default batched shapes, per preset: train ≤ 1.15 at L = 256, 512 and
    ≤ 1 at 1024, 2048; fwd ≤ 1 at L ≥ 1024. The side-by-side ratio (time_ratio) where measured."""
    batch_at = {length: batch for batch, length in FULL_MODEL_BATCHES}
    checks = []
    for config in configs:
        rows = rows_of.get(config, [])
        by_shape = {(row.pass_name, row.batch, row.length): row for row in rows}
        for pass_name, target, lengths in BATCHED_TARGETS:
            for length in lengths:
                batch = batch_at[length]
                row = by_shape.get((pass_name, batch, length),
                                   Row(pass_name, length, MODEL_SUITE, config=config, batch=batch))
                ratio, side_by_side = time_ratio(row)
                checks.append(target_check(
                    f"{config} {pass_name} SMDIM/baseline latency ≤ {target:g} at {shape_label(length, batch, True)}",
                    ratio, lambda x, t=target: x <= t,
                    lambda x, r=row, paired=side_by_side: time_detail(r, x, paired),
                    _batched_not_measured(config, rows, row, "ms")))
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


def calls_line(data: dict, config: str, batched: bool = False) -> Optional[str]:
    """The denoiser calls of one table's full samples (a batched sample's calls serve its whole batch),
    or None where no sample ran."""
    calls = sorted({(info["L"], info.get("batch", 1), info["impl"], info["denoiser_calls"])
                    for info in table_infos(data, batched, config) if info.get("denoiser_calls") is not None})
    if not calls:
        return None
    steps, _ = sample_settings(data)
    what = f"{config} batched" if batched else config
    if all(n == steps for *_, n in calls):
        return f"Every {what} sample made {steps} denoiser calls (one per step: every step revealed tokens)."
    return f"Denoiser calls per {what} sample (K = {steps}): " + ", ".join(
        f"{impl} {shape_label(length, batch, batched)} {n}"
        for length, batch, impl, n in calls) + "."


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


def _problem_shape(data: dict, batched_of: Dict[str, List[Row]]) -> str:
    """'batch 1' (the per-preset tables), with the batched table's shapes B × L where it ran."""
    per_length = table_infos(data)
    parts = [f"batch {per_length[0].get('batch', '?')}"] if per_length else []
    shapes = sorted({(row.batch, row.length) for rows in batched_of.values() for row in rows}, key=shape_order)
    if shapes:
        parts.append("batches B × L of " + ", ".join(f"{batch} × {length}" for batch, length in shapes))
    return "; ".join(parts)


def _batched_lines(data: dict, batched_of: Dict[str, List[Row]]) -> List[str]:
    """The batched table's part of the report: its title, what it holds, and a table per preset."""
    if not batched_of:
        return []
    lines = ["", f"## {BATCHED_TITLE}", "",
             f"Shapes B × L from {MODEL_BATCHES_ENV}: B sequences of L tokens per call, the passes as above on the "
             f"whole batch. s/piece = seconds per generated piece: the full sample's time (one run, B pieces at "
             f"once) / B; sampled only at B ≤ {BATCHED_SAMPLE_MAX_BATCH} and L ≤ {BATCHED_SAMPLE_MAX_L} (the "
             f"studio's shapes). GFLOP columns: SMDIM/baseline of the FLOPs per call (counted as above), the work "
             "each model does; the time ratio can fall below it only where SMDIM runs its work at a higher rate "
             "than the baseline runs its own (mostly GEMMs). Side by side: as in the batch-1 tables. Targets (below) "
             "on the default shapes for "
             f"{', '.join(BATCHED_TARGET_CONFIGS)}; other presets are reported without one."]
    for config, rows in batched_of.items():
        lines += ["", f"### {config}", "", batched_table(rows)]
        calls = calls_line(data, config, batched=True)
        if calls:
            lines += ["", calls]
    return lines


def render_model_report(data: dict, rows_of: Dict[str, List[Row]], checks: Sequence[TargetCheck],
                        batched_of: Optional[Dict[str, List[Row]]] = None) -> str:
    """The section's markdown: the batch-1 table per preset (rows_of), the batched table per preset
    (batched_of), then every target."""
    batched_of = batched_of or {}
    device, memory_text = _device_text(data)
    any_info = next((b["extra_info"] for b in data.get("benchmarks", [])
                     if b.get("extra_info", {}).get("suite") == MODEL_SUITE), {})
    first_regular = any_info.get("first_regular_id", "?")
    configs = preset_order(set(rows_of) | set(batched_of))
    lines = [
        "# Model benchmark: SMDIM vs transformer-diffusion baseline", "",
        f"Machine: {machine_line(data)}; device {device}", "",
        f"Problem: {_problem_shape(data, batched_of)}, {any_info.get('dtype', '?')}, L random token ids in "
        f"[{first_regular}, {any_info.get('vocab_size', '?')}) (the default REMI vocabulary without its special "
        f"tokens; PAD {any_info.get('pad_id', '?')}, MASK {any_info.get('mask_id', '?')}). Both models share the "
        "skeleton (embedding → Conv1d stride 4 → blocks on L/4 steps → ConvTranspose1d → tied head); the "
        "baseline gets the depth that matches SMDIM's parameter count (within 10 %, checked before timing). "
        "Passes: " + "; ".join(f"{name} = {text}" for name, text in pass_texts(data).items()) + ".", "",
        *(f"- {config_line(data, config)}" for config in configs), "",
        "Times: median ms per call (a sample: its one run). " + memory_text + " GFLOP: 10⁹ FLOPs per call counted "
        "by torch.utils.flop_counter (smdim_kernels.flops.count_flops; 2 per multiply-add; GEMMs, convolutions, "
        "attention and smdim's fused ops; elementwise work counts 0); train = loss forward + backward; sample = "
        f"its denoiser calls × one forward. {RATIO} < 1: SMDIM is cheaper. Side by side: SMDIM's fwd and train "
        "cases time both models again in alternating rounds (the median of the per-round ratios, with the "
        "order-statistics interval of that median; benchmarks/paired.py): the two cases' own medians are minutes "
        "apart, and a shared machine's speed drifts more than the difference between them; the latency targets "
        "use it where measured.",
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
    lines += _batched_lines(data, batched_of)
    lines += ["", "## Targets", "", *(check.line() for check in checks), "", targets_summary(checks), ""]
    return "\n".join(lines)


def model_section(data: dict) -> Optional[Section]:
    """The model suite's section (rows of every preset, batch-1 then batched; the plot: batch-1 rows), or
    None where the JSON has none of its benchmarks."""
    rows_of, batched_of = rows_by_config(data), rows_by_config(data, batched=True)
    per_length = [row for config_rows in rows_of.values() for row in config_rows]
    batched = [row for config_rows in batched_of.values() for row in config_rows]
    if not per_length and not batched:
        return None
    checks = model_checks(rows_of) + batched_checks(batched_of)
    title = f"{PLOT_TITLE} — {machine_line(data)}"
    return Section(MODEL_SUITE, per_length + batched, checks, render_model_report(data, rows_of, checks, batched_of),
                   plot=lambda path: plot_models(per_length, title, path, batched))


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


BATCHED_BARS = ((TRAIN, "training step"), (FORWARD, "forward"), (SAMPLE, "sample, per piece"))


def _plot_batched(ax, rows: Sequence[Row], config: str) -> None:
    """SMDIM/baseline time per batched shape of one preset: bars per pass (the side-by-side ratio with its
    interval where measured, time_ratio; the FLOP ratio as a black tick on the train and fwd bars),
    the 1.0 line, the targets."""
    shapes = sorted({(row.batch, row.length) for row in rows}, key=lambda shape: shape[1])
    width = 0.8 / len(BATCHED_BARS)
    for i, (pass_name, label) in enumerate(BATCHED_BARS):
        of_pass = {(row.batch, row.length): row for row in rows if row.pass_name == pass_name}
        bars = [(j + (i - 1) * width, of_pass[shape]) for j, shape in enumerate(shapes)
                if shape in of_pass and time_ratio(of_pass[shape])[0] is not None]
        if not bars:
            continue
        ys = [time_ratio(row)[0] for _, row in bars]
        errors = [[y - paired_interval(row)[0] if row.paired else 0.0 for y, (_, row) in zip(ys, bars)],
                  [paired_interval(row)[1] - y if row.paired else 0.0 for y, (_, row) in zip(ys, bars)]]
        ax.bar([x for x, _ in bars], ys, width, yerr=errors, capsize=2, label=label)
        work = {(row.batch, row.length): row.ratio("gflop", SMDIM_IMPL, BASELINE_IMPL) for row in rows
                if row.pass_name == pass_name and pass_name != SAMPLE}  # a sample's FLOPs: its forwards'
        ticks = [(j + (i - 1) * width, work[shape]) for j, shape in enumerate(shapes) if work.get(shape) is not None]
        if ticks:  # the FLOP ratio on its bar: the time ratio an equal rate of work would give
            ax.scatter(*zip(*ticks), marker="_", s=160, linewidths=2, color="black", zorder=3,
                       label="FLOPs SMDIM/baseline" if i == 0 else None)
    ax.axhline(1.0, color="0.3", linewidth=1)
    if config in BATCHED_TARGET_CONFIGS:
        for pass_name, target, lengths in BATCHED_TARGETS:
            for j, (_, length) in enumerate(shapes):
                if length in lengths:
                    offset = (-1 if pass_name == TRAIN else 0) * width
                    ax.plot([j + offset - width / 2, j + offset + width / 2], [target, target], color="red",
                            linewidth=2)
    ax.set_xticks(range(len(shapes)), [f"{batch} × {length}" for batch, length in shapes])
    ax.set_xlabel("batch × tokens per sequence")
    ax.set_ylabel("SMDIM / baseline time (< 1: SMDIM faster;\nside by side where timed so, with its interval)")
    ax.set_title(f"{config}: batches (red: targets)")
    ax.legend(fontsize=8)


def plot_models(rows: Sequence[Row], title: str, path: Path, batched: Sequence[Row] = ()) -> None:
    """One row of panels (time, peak memory, GFLOP vs L, log-log) per preset of the batch-1 rows, then
    one row with a panel per preset of the batched rows (SMDIM/baseline time per shape)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(row.config for row in rows))
    batched_configs = list(dict.fromkeys(row.config for row in batched))
    metrics = ("ms", "mib", "gflop")
    n_cols = max(len(metrics) if configs else 0, len(batched_configs))
    n_rows = len(configs) + (1 if batched_configs else 0)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(6.5 * n_cols, 5 * n_rows), squeeze=False)
    for ax_row, config in zip(axes, configs):
        config_rows = [row for row in rows if row.config == config]
        plot_panels(ax_row, config_rows, MODEL_IMPLEMENTATIONS, LABELS, metrics, passes=MODEL_PASSES,
                    title_prefix=f"{config}: ")
        lengths = sorted({row.length for row in config_rows})
        for ax in ax_row:
            _slope_guides(ax, lengths)
        for ax in ax_row[len(metrics):]:
            ax.set_visible(False)
    if batched_configs:
        for ax, config in zip(axes[-1], batched_configs):
            _plot_batched(ax, [row for row in batched if row.config == config], config)
        for ax in axes[-1][len(batched_configs):]:
            ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
