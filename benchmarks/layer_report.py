"""The layer sections of the benchmark report (layers.py's two suites), which share their table
layout, text and plot:

* the Mamba layer: ours against the projections + scan floor, transformers' MambaMixer and mamba.py's
  MambaBlock; targets: the forward within 1.3× of the floor, speed-ups over MambaMixer at L=2048;
* the MFA block against the same-width transformer block (the issue's targets: latency, memory and
  FLOPs below it at L=4096 and 8192; the paper's ratios as aims) and, as information, against the
  parameter-matched transformer block and with full attention.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

from .layers import (FLOOR, FULL_ATTENTION_IMPLEMENTATIONS, HF, MAMBA_SUITE, MFA, MFA_FULL, MFA_SUITE, OURS, PSCAN,
                     SUITE_IMPLEMENTATIONS, TRANSFORMER, TRANSFORMER_IMPLEMENTATIONS, TRANSFORMER_MATCHED)
from .passes import FORWARD, FORWARD_BACKWARD, PASSES
from .report_kit import (METRIC_NAMES, METRIC_UNITS, RELATIONS, Row, Section, TargetCheck, collect_rows,
                         first_suite_info, format_millions, format_number, format_ratio, impl_infos, machine_line,
                         metric_table, not_measured, plot_rows, ratio_detail, rows_by_key, target_check,
                         targets_summary)
from .settings import (FULL_ATTN_MAX_ENV, HF_FWD_LENGTHS_ENV, HF_FWDBWD_LENGTHS_ENV, LAYER_PSCAN_MAX_ENV,
                       LENGTHS_ENV)

LAYER_LABELS = {OURS: "ours (smdim Mamba)", FLOOR: "projections + scan floor", HF: "transformers MambaMixer",
                PSCAN: "mamba.py MambaBlock", MFA: "MFA block (local attention)",
                MFA_FULL: "MFA block (full attention)", TRANSFORMER: "transformer block",
                TRANSFORMER_MATCHED: "parameter-matched transformer block"}
COMMON_LAYER_TEXT = (
    "Forward runs under no_grad; forward+backward takes gradients of the input and every parameter. "
    "Times: median ms per call. Memory: peak RSS growth (MiB) of one run in a fresh process, inputs and "
    "parameters excluded, activations, outputs and gradients included. GFLOP: 10⁹ FLOPs per call counted by "
    "torch.utils.flop_counter (smdim_kernels.flops.count_flops; 2 per multiply-add): GEMMs, convolutions, "
    "attention and smdim's fused ops (registered formulas); elementwise work counts 0 — so peers whose scan "
    "is elementwise PyTorch (hf, pscan) show less than they execute. n/a: ran, FLOPs not counted."
)
LAYER_METRICS = ("ms", "mib", "gflop")


def _ratio_header(numerator: str, denominator: str, metric: str) -> str:
    """'mfa/transformer' for times, 'mfa/transformer MiB' and '... GFLOP' for the other metrics."""
    return f"{numerator}/{denominator}" + ("" if metric == "ms" else f" {METRIC_UNITS[metric]}")


def render_layer_section(data: dict, suite: str, title: str, problem: str, table: str,
                         checks: Sequence[TargetCheck], information: Sequence[Tuple[str, List[str]]] = ()) -> str:
    """Title, machine, problem (with the common text and the single-shot cases), table, targets, then
    each (heading, lines) of information that has lines."""
    single_shot = sorted({f"{b['extra_info']['impl']} {b['extra_info']['pass']} L={b['extra_info']['L']}"
                          for b in data.get("benchmarks", []) if b.get("extra_info", {}).get("suite") == suite
                          and b["extra_info"].get("time_s") is not None})
    problem = f"Problem: {problem} {COMMON_LAYER_TEXT}"
    if single_shot:
        problem += f" Timed once (one cold run in the process that measured its memory): {', '.join(single_shot)}."
    lines = [title, "", f"Machine: {machine_line(data)}", "", problem, "", table, "", "## Targets", "",
             *(check.line() for check in checks)]
    for heading, information_lines in information:
        if information_lines:
            lines += ["", heading, "", *information_lines]
    lines += ["", targets_summary(checks), ""]
    return "\n".join(lines)


def _layer_section(data: dict, suite: str, plot_title: str, rows: List[Row], checks: List[TargetCheck],
                   markdown: str) -> Section:
    title = f"{plot_title} — {machine_line(data)}"
    return Section(suite, rows, checks, markdown,
                   plot=lambda path: plot_rows(rows, title, path, SUITE_IMPLEMENTATIONS[suite], LAYER_LABELS,
                                               LAYER_METRICS))


# --- the Mamba layer -----------------------------------------------------------------------------

FLOOR_TARGET = 1.3  # ours' Mamba forward at most this many times the projections + scan floor, every L
HF_TARGET_LENGTH = 2048
HF_SPEEDUP_TARGETS = {FORWARD: 5.0, FORWARD_BACKWARD: 100.0}  # ours at least this many times faster than MambaMixer
MAMBA_RATIO_COLUMNS = {"ms": [("ours/floor", OURS, FLOOR), ("hf/ours", HF, OURS), ("pscan/ours", PSCAN, OURS)],
                       "mib": [("hf/ours MiB", HF, OURS), ("pscan/ours MiB", PSCAN, OURS)]}
MAMBA_TEXT = (
    "ours = smdim_kernels.Mamba (fused path); floor = the layer's four projections as plain GEMMs + "
    "selective_scan_fn alone (the layer can at best match it); hf = transformers' MambaMixer on its CPU "
    "path (Python loop over time); pscan = mamba.py's MambaBlock. All carry the same weights (the guard "
    "compares their outputs). x/ours = speedup of ours over x; ours/floor = ours' distance from the floor."
)


def mamba_plan_variable(impl: str, pass_name: str) -> str:
    """The environment variable that puts a Mamba-layer case at more lengths in the plan."""
    if impl == HF:
        return HF_FWD_LENGTHS_ENV if pass_name == FORWARD else HF_FWDBWD_LENGTHS_ENV
    return LAYER_PSCAN_MAX_ENV if impl == PSCAN else LENGTHS_ENV


def mamba_layer_table(rows: Sequence[Row]) -> str:
    return metric_table(rows, SUITE_IMPLEMENTATIONS[MAMBA_SUITE], MAMBA_RATIO_COLUMNS, LAYER_METRICS)


def mamba_layer_checks(rows: Sequence[Row]) -> List[TargetCheck]:
    """Forward ≤ 1.3× the floor at every L; ≥ 5× (fwd) / ≥ 100× (fwd+bwd) faster than MambaMixer at 2048."""
    checks = [target_check(f"fwd ≤ {FLOOR_TARGET:g}× the projections + scan floor at L={row.length}",
                           row.ratio("ms", OURS, FLOOR), lambda x: x <= FLOOR_TARGET,
                           lambda x, r=row: (f"ours {format_number(r.ms[OURS])} ms, floor {format_number(r.ms[FLOOR])} "
                                             f"ms (ours/floor {format_ratio(x)})"),
                           not_measured(row, "ms", (OURS, FLOOR), mamba_plan_variable))
              for row in rows if row.pass_name == FORWARD]
    if not checks:
        row = Row(FORWARD, HF_TARGET_LENGTH, MAMBA_SUITE)
        checks.append(target_check(f"fwd ≤ {FLOOR_TARGET:g}× the projections + scan floor", None, bool, str,
                                   not_measured(row, "ms", (OURS, FLOOR), mamba_plan_variable)))
    by_key = rows_by_key(rows)
    for pass_name, target in HF_SPEEDUP_TARGETS.items():
        row = by_key.get((pass_name, HF_TARGET_LENGTH), Row(pass_name, HF_TARGET_LENGTH, MAMBA_SUITE))
        checks.append(target_check(
            f"{pass_name} ≥ {target:g}× faster than transformers' MambaMixer at L={HF_TARGET_LENGTH}",
            row.ratio("ms", HF, OURS), lambda x, t=target: x >= t,
            lambda x, r=row: (f"ours {format_number(r.ms[OURS])} ms, MambaMixer {format_number(r.ms[HF])} ms "
                              f"(hf/ours {format_ratio(x)})"),
            not_measured(row, "ms", (OURS, HF), mamba_plan_variable)))
    return checks


def mamba_shape_line(data: dict) -> str:
    extra = first_suite_info(data, MAMBA_SUITE)
    return (f"batch {extra.get('batch', '?')}, d_model {extra.get('d_model', '?')}, d_state "
            f"{extra.get('d_state', '?')}, d_conv {extra.get('d_conv', '?')}, expand {extra.get('expand', '?')} "
            f"(d_inner {extra.get('d_inner', '?')}), dt_rank {extra.get('dt_rank', '?')}, {extra.get('dtype', '?')}")


def mamba_layer_section(data: dict) -> Optional[Section]:
    """The Mamba-layer section, or None where the JSON has none of its benchmarks."""
    rows = collect_rows(data.get("benchmarks", []), MAMBA_SUITE)
    if not rows:
        return None
    checks = mamba_layer_checks(rows)
    markdown = render_layer_section(data, MAMBA_SUITE, "# Mamba layer benchmark",
                                    f"{mamba_shape_line(data)}. {MAMBA_TEXT}", mamba_layer_table(rows), checks)
    return _layer_section(data, MAMBA_SUITE, "Mamba layer (d_model 768)", rows, checks, markdown)


# --- the MFA block -------------------------------------------------------------------------------

MFA_TARGET_LENGTHS = (4096, 8192)
# MFA(default) / transformer block: lower latency, peak memory and FLOPs (issue 3) - strictly below 1;
# the paper's ratios (~40 % less memory, ~30 % fewer FLOPs) are aims, reported as information.
MFA_TARGET = 1.0
MFA_TARGETS = tuple((metric, MFA_TARGET, "<") for metric in LAYER_METRICS)
MFA_AIMS = (("mib", 0.6), ("gflop", 0.7))
# (numerator, denominator) of the table's ratio columns: the targets' pair first
MFA_RATIOS = ((MFA, TRANSFORMER), (MFA_FULL, TRANSFORMER), (MFA, TRANSFORMER_MATCHED))
MFA_RATIO_COLUMNS = {metric: [(_ratio_header(a, b, metric), a, b) for a, b in MFA_RATIOS] for metric in LAYER_METRICS}
MFA_TEXT = (
    "mfa = smdim_kernels MFABlock with its defaults (bidirectional Mamba, GELU FFN 2×d_model, local-window "
    "attention); mfa_full = the same with full attention; transformer = nn.TransformerEncoderLayer "
    "(pre-norm, GELU FFN 4×d_model, SDPA flash attention), the same width as the MFA block but fewer "
    "parameters; transformer_matched = the same transformer block with its FFN widened (to a multiple of 64) "
    "until its parameter count is the MFA block's (within 1 %, checked by the guard). x/transformer < 1: x is "
    "cheaper. The targets compare mfa with the same-width transformer; the parameter-matched one is information."
)


def mfa_plan_variable(impl: str, pass_name: str) -> str:
    """The environment variable that puts an MFA-suite case at more lengths in the plan."""
    return FULL_ATTN_MAX_ENV if impl in FULL_ATTENTION_IMPLEMENTATIONS else LENGTHS_ENV


def mfa_block_table(rows: Sequence[Row]) -> str:
    return metric_table(rows, SUITE_IMPLEMENTATIONS[MFA_SUITE], MFA_RATIO_COLUMNS, LAYER_METRICS)


def mfa_block_checks(rows: Sequence[Row]) -> List[TargetCheck]:
    """MFA(default)/transformer at 4096 and 8192, both passes: latency, memory and FLOPs each < 1."""
    by_key = rows_by_key(rows)
    checks = []
    for pass_name in PASSES:
        for length in MFA_TARGET_LENGTHS:
            row = by_key.get((pass_name, length), Row(pass_name, length, MFA_SUITE))
            for metric, target, relation in MFA_TARGETS:
                checks.append(target_check(
                    f"{pass_name} MFA/transformer {METRIC_NAMES[metric]} {relation} {target:g} at L={length}",
                    row.ratio(metric, MFA, TRANSFORMER), lambda x, t=target, r=relation: RELATIONS[r](x, t),
                    lambda x, r=row, m=metric: ratio_detail(r, m, MFA, TRANSFORMER, x),
                    not_measured(row, metric, (MFA, TRANSFORMER), mfa_plan_variable)))
    return checks


def _shown(ratio: Optional[float]) -> str:
    return "—" if ratio is None else f"{ratio:.2f}"


def _ratio_lines(rows: Sequence[Row], impl: str, peer: str, metrics: Sequence[str],
                 describe: Callable[[str, Optional[float]], str]) -> List[str]:
    """'- fwd L=4096: impl/peer <describe(metric, ratio)>, ...' per target length measured."""
    by_key = rows_by_key(rows)
    return [f"- {pass_name} L={length}: {impl}/{peer} "
            + ", ".join(describe(metric, by_key[pass_name, length].ratio(metric, impl, peer)) for metric in metrics)
            for pass_name in PASSES for length in MFA_TARGET_LENGTHS if (pass_name, length) in by_key]


def _plain_ratio(metric: str, ratio: Optional[float]) -> str:
    return f"{METRIC_NAMES[metric]} {_shown(ratio)}"


def mfa_aim_information(rows: Sequence[Row]) -> List[str]:
    """The paper's ratios (memory ≤ 0.6, FLOPs ≤ 0.7) at the target lengths: met or not (information)."""
    aims = dict(MFA_AIMS)

    def describe(metric: str, ratio: Optional[float]) -> str:
        verdict = "not measured" if ratio is None else ("met" if ratio <= aims[metric] else "not met")
        return f"{METRIC_NAMES[metric]} {_shown(ratio)} (aim ≤ {aims[metric]:g}: {verdict})"

    return _ratio_lines(rows, MFA, TRANSFORMER, tuple(aims), describe)


def mfa_full_information(rows: Sequence[Row]) -> List[str]:
    """Full-attention MFA / transformer ratios at the target lengths: information, not targets."""
    return _ratio_lines(rows, MFA_FULL, TRANSFORMER, LAYER_METRICS, _plain_ratio)


def mfa_matched_information(rows: Sequence[Row]) -> List[str]:
    """MFA / parameter-matched transformer ratios at the target lengths: information, not targets."""
    return _ratio_lines(rows, MFA, TRANSFORMER_MATCHED, LAYER_METRICS, _plain_ratio)


def parameters_text(data: dict) -> str:
    """'mfa 8.73 M, mfa_full 8.73 M, transformer 7.09 M (-18.8% vs mfa), transformer_matched ...'."""
    infos = impl_infos(data, MFA_SUITE)
    mfa_count = infos.get(MFA, {}).get("parameters")
    parts = []
    for impl in SUITE_IMPLEMENTATIONS[MFA_SUITE]:
        if impl not in infos:
            continue
        count = infos[impl].get("parameters")
        part = f"{impl} {format_millions(count)}"
        if impl in TRANSFORMER_IMPLEMENTATIONS and count and mfa_count:
            part += f" ({(count - mfa_count) / mfa_count:+.1%} vs {MFA})"
        parts.append(part)
    return ", ".join(parts) or "?"


def mfa_shape_line(data: dict) -> str:
    extra = first_suite_info(data, MFA_SUITE)
    window = impl_infos(data, MFA_SUITE).get(MFA, {}).get("attn_window", "?")
    return (f"batch {extra.get('batch', '?')}, d_model {extra.get('d_model', '?')}, "
            f"{extra.get('num_heads', '?')} heads, {extra.get('dtype', '?')}; MFA attention window {window} each "
            f"side (mfa) or full (mfa_full); transformer FFN {extra.get('transformer_ffn', '?')}, "
            f"transformer_matched FFN {extra.get('transformer_matched_ffn', '?')}; parameters: {parameters_text(data)}")


def mfa_block_section(data: dict) -> Optional[Section]:
    """The MFA-block section, or None where the JSON has none of its benchmarks."""
    rows = collect_rows(data.get("benchmarks", []), MFA_SUITE)
    if not rows:
        return None
    checks = mfa_block_checks(rows)
    information = [
        ("The paper's ratios (~40 % less memory, ~30 % fewer FLOPs than transformer diffusion) as aims "
         "(information, not targets):", mfa_aim_information(rows)),
        ("MFA / parameter-matched transformer block (information, not a target):", mfa_matched_information(rows)),
        ("Full-attention MFA / transformer block (information, not a target; expected above 1):",
         mfa_full_information(rows)),
    ]
    markdown = render_layer_section(data, MFA_SUITE, "# MFA block vs transformer block benchmark",
                                    f"{mfa_shape_line(data)}. {MFA_TEXT}", mfa_block_table(rows), checks, information)
    return _layer_section(data, MFA_SUITE, "MFA block vs transformer blocks (d_model 768)", rows, checks, markdown)
