"""The study's report: OUT/study.md, OUT/study.json and OUT/plots/*.png from the stage files of
every cell (whatever is finished so far; unfinished stages are listed as pending)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from .machine import describe
from .metrics import format_table

NLL_ROW = "NLL test (bits/token, MDLM bound)"
OA_ROW = "attribute OA, mean (KDE overlap)"
FRAMEWISE = [f"framewise {attr} {kind} (published)" for attr in ("pitch", "duration")
             for kind in ("consistency", "variance")]
COPY_ROW = "copy rate (16-gram, transposition-invariant)"


def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _ci(cell) -> Optional[tuple]:
    """(value, low, high) of a stored CI dict, (value, None, None) of a number, None if absent."""
    if cell is None:
        return None
    if isinstance(cell, dict):
        return cell.get("value"), cell.get("low"), cell.get("high")
    return cell, None, None


def _fmt(cell, digits=3) -> str:
    v = _ci(cell)
    if v is None or v[0] is None:
        return "—"
    value, low, high = v
    if low is None or high is None:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return f"{value:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _verdict(diff, lower_is_better: bool) -> str:
    """What a paired SMDIM − transformer interval says."""
    v = _ci(diff)
    if v is None or v[1] is None:
        return "—"
    _, low, high = v
    better = high < 0 if lower_is_better else low > 0
    worse = low > 0 if lower_is_better else high < 0
    return "SMDIM better" if better else ("SMDIM worse" if worse else "no clear difference")


def turn_rates(history, slice_s: float) -> List[Optional[float]]:
    """Steps per second of each turn of a run trained in turns of slice_s seconds, from its per-step
    records (cumulative "seconds" on the run's clock): a step belongs to the turn in which it began;
    None for a turn a long step skipped."""
    if not slice_s:
        return []
    steps: Dict[int, int] = {}
    seconds: Dict[int, float] = {}
    before = 0.0
    for record in history:
        turn = int(before // slice_s)
        steps[turn] = steps.get(turn, 0) + 1
        seconds[turn] = seconds.get(turn, 0.0) + record["seconds"] - before
        before = record["seconds"]
    return [steps[t] / seconds[t] if seconds.get(t, 0.0) > 0 else None for t in range(max(steps, default=-1) + 1)]


def step_time_ratios(smdim_rates, transformer_rates) -> List[float]:
    """SMDIM's step time over the transformer's, turn by turn (turn i of both runs ran back to back,
    so each ratio compares the models on the same state of the machine)."""
    return [t / s for s, t in zip(smdim_rates, transformer_rates) if s and t]


def collect(out: Path, cells, slice_s: float = 0.0) -> Dict[str, dict]:
    """{cell name: {"cell": ..., "training": {...}, "evaluation"/"curve"/"drift": stage data or None}};
    slice_s: the study's turns (each run's steps per second per turn are kept)."""
    from .checkpoint import load_checkpoint

    data = {}
    for cell in cells:
        folder = out / cell.name
        entry = {"corpus": cell.corpus, "seq_len": cell.seq_len, "budget": cell.budget, "training": {}}
        for kind in ("smdim", "transformer"):
            for name in ("final.pt", "checkpoint.pt"):
                path = folder / kind / name
                if path.exists():
                    state = load_checkpoint(path)
                    entry["training"][kind] = {"steps": state["step"], "seconds": state.get("seconds", 0.0),
                                               "done": name == "final.pt", "machines": state.get("machines"),
                                               "turn_rates": turn_rates(state.get("history", []), slice_s)}
                    break
        for stage in ("evaluation", "curve", "drift"):
            entry[stage] = _read(folder / f"{stage}.json")
        data[cell.name] = entry
    return data


def _machine_lines(data) -> List[str]:
    """Where each run trained: step counts at a CPU budget depend on the machine."""
    lines = []
    for name, entry in data.items():
        runs = [f"{kind} on "
                + (', '.join(t['machines']) if t.get('machines')
                   else 'a machine not recorded (trained before runs recorded it)')
                for kind, t in entry["training"].items()]
        if runs:
            lines.append(f"- {name}: " + "; ".join(runs))
    return ((["Trained on (step counts at equal CPU time compare only within a cell):", ""] + lines + [""])
            if lines else [])


def _ratio_range(training) -> str:
    """Median (min–max) of the per-turn step-time ratios; "—" for runs not trained in turns."""
    ratios = sorted(step_time_ratios(*(training.get(kind, {}).get("turn_rates", []) for kind in
                                       ("smdim", "transformer"))))
    if not ratios:
        return "—"
    mid = len(ratios) // 2
    median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return f"{median:.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f}, {len(ratios)} turns)"


def _summary_tables(data) -> List[str]:
    rows_main, rows_fw, rows_rates, pending = {}, {}, {}, []
    for name, entry in data.items():
        ev = entry["evaluation"]
        if ev is None:
            done = {k: f"{v['steps']} steps, {v['seconds']:.0f}/{entry['budget']:.0f} s"
                    for k, v in entry["training"].items()}
            pending.append(f"- {name}: " + (", ".join(f"{k} {v}" for k, v in done.items()) or "not started"))
            continue
        t = ev["table"]
        tr = ev["training"]
        sm = ev.get("steps_matched", {})
        diff = "SMDIM − transformer"
        rows_main[name] = {
            "budget s (each)": f"{entry['budget']:.0f}",
            "steps SMDIM / transformer": f"{tr['SMDIM']['steps']} / {tr['transformer']['steps']}",
            "step time SMDIM / transformer, per turn": _ratio_range(entry["training"]),
            "NLL SMDIM": _fmt(t[NLL_ROW].get("SMDIM")), "NLL transformer": _fmt(t[NLL_ROW].get("transformer")),
            "NLL paired diff": _fmt(t[NLL_ROW].get(diff)), "NLL reading": _verdict(t[NLL_ROW].get(diff), True),
            "valid NLL at equal steps": (f"{sm.get('SMDIM', float('nan')):.3f} / "
                                          f"{sm.get('transformer', float('nan')):.3f}"
                                          f" @ {sm.get('steps')}") if sm.get("SMDIM") is not None else "—",
            "mean OA SMDIM": _fmt(t[OA_ROW].get("SMDIM")), "mean OA transformer": _fmt(t[OA_ROW].get("transformer")),
            "mean OA real": _fmt(t[OA_ROW].get("real vs real")), "OA paired diff": _fmt(t[OA_ROW].get(diff)),
            "OA reading": _verdict(t[OA_ROW].get(diff), False),
        }
        rows_fw[name] = {}
        for label in FRAMEWISE:
            short = label.replace("framewise ", "").replace(" (published)", "")
            for col in ("SMDIM", "transformer", "real vs real"):
                rows_fw[name][f"{short} {col}"] = _fmt(t.get(label, {}).get(col))
        rows_rates[name] = {f"invalid {col}": _fmt(t["invalid tokens"].get(col), 4)
                            for col in ("SMDIM", "transformer")}
        rows_rates[name].update({f"copy {col}": _fmt(t[COPY_ROW].get(col), 3)
                                 for col in ("SMDIM", "transformer", "real vs real")})
    lines = []
    if rows_main:
        lines += ["## Quality at equal CPU budget", "",
                  format_table(rows_main, index="cell"), "",
                  "NLL: the MDLM bound in bits/token over every test window (lower is better); mean OA: attribute OA "
                  "(KDE overlap of pooled attribute values, generated vs the test windows; higher is better); "
                  "'paired diff' is SMDIM − transformer with a paired bootstrap interval (same references, same "
                  "masks); a reading says 'better'/'worse' only when that 95 % interval excludes 0. 'valid NLL at "
                  "equal steps': "
                  "each model's validation NLL (EMA weights, during training) at the step count both reached, "
                  "interpolated between logged points — a steps-matched reading, not the test protocol. 'step time "
                  "per turn': SMDIM's seconds per step over the transformer's in each pair of back-to-back turns "
                  "(median, range): how steady the speed ratio was while the two shared the machine.", "",
                  "## Framewise OA (published protocol: one mean OA per piece, consistency / variance over pieces)", "",
                  format_table(rows_fw, index="cell"), "",
                  "## Invalid-token and copy rates", "", format_table(rows_rates, index="cell", digits=4), "",
                  "copy: fraction of 16-token windows found in the training pieces up to transposition; for real, the "
                  "test windows' own rate against the training pieces.", ""]
    if pending:
        lines += ["## Pending cells", ""] + pending + [""]
    return lines


def _curve_tables(data) -> List[str]:
    lines = []
    for name, entry in data.items():
        curve = entry["curve"]
        if curve is None:
            continue
        rows = {}
        for p in curve["points"]:
            key = f"{p['model']} / {p['order']}"
            rows.setdefault(key, {})[f"{p['steps']} steps"] = (f"{_fmt(p['mean_oa'])} (inv {p['invalid']:.3f}, "
                                                               f"{p['calls_per_piece']:.0f} calls)")
        lines += [f"### {name}: quality vs denoising steps ({curve['pieces']} pieces per point, against "
                  f"{curve['references']} test windows; real vs real {_fmt(curve['real_vs_real'])})", "",
                  format_table(rows, index="model / order"), ""]
    if lines:
        lines = ["## Quality vs sampling steps (mean attribute OA; invalid-token rate; denoiser calls per batch)", "",
                 "'random': ancestral sampling (each masked token revealed with probability (t − s)/t); 'confidence': "
                 "the same number of tokens per step, the most confident draws first (Gumbel noise scaled by t).",
                 ""] + lines
    return lines


def _drift_tables(data) -> List[str]:
    lines = []
    for name, entry in data.items():
        drift = entry["drift"]
        if drift is None:
            continue
        for length, d in drift["lengths"].items():
            if "skipped" in d:
                lines += [f"- {name} at {length} tokens: skipped ({d['skipped']})", ""]
                continue
            window = entry["seq_len"]
            how = "one window" if int(length) <= window else f"sliding windows of {window} (hop {window // 2})"
            generated = d.get("generated", d["references"])
            head = f"### {name}: {generated} pieces per model generated at {length} tokens ({how})"
            if d.get("whole"):
                rows = {key: {f"q{k}": _fmt(q.get(f"q{k}")) for k in range(1, 5)} for key, q in d["whole"].items()}
                lines += [f"{head}; each quarter against all {drift.get('held_out_windows', '?')} held-out test "
                          f"windows of {window} tokens", "", format_table(rows, index="set"), ""]
            if d.get("sets"):
                rows = {"real vs real (two halves of the references)": {f"q{k}": _fmt(d["real_vs_real"].get(f"q{k}"))
                                                                         for k in range(1, 5)}}
                for key, q in d["sets"].items():
                    rows[key] = {f"q{k}": _fmt(q.get(f"q{k}")) for k in range(1, 5)}
                few = (f" — only {d['references']} real windows this long: the intervals of this table cover "
                       "those few pieces only" if d["references"] < generated else "")
                lines += [f"{head}; each quarter against the same quarter of {d['references']} real windows of "
                          f"~{length} tokens ({d['reference_source']}){few}", "", format_table(rows, index="set"), ""]
            elif d.get("whole"):
                lines += [f"(fewer than 2 real windows of ~{length} tokens: no quarter-to-quarter table)", ""]
    if lines:
        lines = ["## Drift: attribute OA of each quarter (by bars) of long generated pieces", "",
                 "Quarters against all held-out windows at the training length (a real ceiling: the real long "
                 "windows' quarters), and against the same quarter of real windows as long as the generated ones. "
                 "Drift shows as a falling OA toward q4."] + [""] + lines
    return lines


def _yerr(vals):
    """Error-bar lengths below/above each (value, low, high); a percentile interval of a capped metric can sit
    below its point estimate, so the lengths are clipped at 0."""
    low = [max(0.0, v[0] - v[1]) if v[1] is not None else 0.0 for v in vals]
    high = [max(0.0, v[2] - v[0]) if v[2] is not None else 0.0 for v in vals]
    return [low, high]


def _plots(data, folder: Path) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    evaluated = {k: v for k, v in data.items() if v["evaluation"] is not None}
    if evaluated:
        fig, axes = plt.subplots(1, len(evaluated), figsize=(4.2 * len(evaluated), 3.4), dpi=100, squeeze=False)
        for ax, (name, entry) in zip(axes[0], evaluated.items()):
            for label, t in entry["evaluation"]["training"].items():
                pts = [(r["seconds"], r["valid_bits"]) for r in t["curve"] if "seconds" in r]
                if pts:
                    ax.plot(*zip(*pts), marker=".", label=label)
            ax.set_title(name)
            ax.set_xlabel("training seconds (cpu clock)")
            ax.set_ylabel("validation NLL (bits/token)")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "learning_curves.png")
        plt.close(fig)
        made.append("learning_curves.png")

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
        names = list(evaluated)
        for col, style in (("SMDIM", "o-"), ("transformer", "s-"), ("real vs real", "k--")):
            for ax, row in zip(axes, (NLL_ROW, OA_ROW)):
                vals = [_ci(evaluated[n]["evaluation"]["table"][row].get(col)) for n in names]
                xs = [i for i, v in enumerate(vals) if v is not None and v[0] is not None]
                if not xs:
                    continue
                ys = [vals[i][0] for i in xs]
                ax.errorbar(xs, ys, yerr=_yerr([vals[i] for i in xs]), fmt=style, capsize=3, label=col)
        for ax, title in zip(axes, ("test NLL (bits/token; lower is better)", "mean attribute OA (higher is better)")):
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=20)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "quality_vs_length.png")
        plt.close(fig)
        made.append("quality_vs_length.png")

    curves = {k: v for k, v in data.items() if v["curve"] is not None}
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), dpi=100, squeeze=False)
        for ax, (name, entry) in zip(axes[0], curves.items()):
            series = {}
            for p in entry["curve"]["points"]:
                series.setdefault(f"{p['model']} / {p['order']}", []).append((p["calls_per_piece"],
                                                                              _ci(p["mean_oa"])[0]))
            for label, pts in series.items():
                ax.plot(*zip(*sorted(pts)), marker="o", label=label)
            ax.axhline(_ci(entry["curve"]["real_vs_real"])[0], color="k", ls="--", label="real vs real")
            ax.set_xscale("log", base=2)
            ax.set_title(name)
            ax.set_xlabel("denoiser calls")
            ax.set_ylabel("mean attribute OA")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "quality_vs_steps.png")
        plt.close(fig)
        made.append("quality_vs_steps.png")

    drifts = [(name, length, d) for name, v in data.items() if v["drift"] is not None
              for length, d in v["drift"]["lengths"].items() if "skipped" not in d]
    if drifts:
        fig, axes = plt.subplots(1, len(drifts), figsize=(4.2 * len(drifts), 3.4), dpi=100, squeeze=False)
        for ax, (name, length, d) in zip(axes[0], drifts):
            if d.get("whole"):        # against all held-out windows (format 2): robust when long pieces are few
                series, against = list(d["whole"].items()), "vs all held-out windows"
            else:
                series, against = [("real vs real", d["real_vs_real"])] + list(d["sets"].items()), "vs same quarter"
            for key, q in [(k, v) for k, v in series if "−" not in k]:
                vals = [_ci(q.get(f"q{k}")) for k in range(1, 5)]
                ax.errorbar(range(1, 5), [v[0] for v in vals], yerr=_yerr(vals), marker="o", capsize=3,
                            ls="--" if key.startswith("real") else "-", label=key)
            ax.set_xticks(range(1, 5))
            ax.set_xlabel("quarter of the piece")
            ax.set_ylabel("mean attribute OA")
            ax.set_title(f"{name}, {length} tokens ({against})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "drift.png")
        plt.close(fig)
        made.append("drift.png")
    return made


def _turns(config) -> str:
    """How the two models of a cell shared the machine."""
    slice_s = getattr(config, "slice_s", 0.0)
    if not slice_s:
        return "one model after the other"
    return (f"the two in alternating turns of {slice_s:g} s (SMDIM, transformer, transformer, SMDIM, ...: a change "
            "in the machine's speed hits both alike)")


def write_study_report(out: Path, config, cells) -> Path:
    """Write OUT/study.md, OUT/study.json and the plots; returns the path of study.md."""
    out = Path(out)
    data = collect(out, cells, getattr(config, "slice_s", 0.0))
    plots = _plots(data, out / "plots")
    cell_args = " ".join(f"{c.name}:{c.budget:g}" for c in cells)
    lines = ["# SMDIM vs the transformer baseline: the quality table, measured here", "",
             f"This report was written on: {describe()}. Model preset: {config.preset} (both models; "
             "parameter-matched). Each model of a cell trains for the cell's budget on the "
             f"{config.clock} clock, {_turns(config)}, then both are evaluated with {config.n} pieces per model, "
             f"{config.steps} denoising steps, {config.n_boot} bootstrap replicates (seed "
             f"{config.seed}).", "",
             f"Command: `smdim study --out {out} --cells {cell_args}` (rerun it to continue an interrupted study).", ""]
    lines += _machine_lines(data)
    lines += _summary_tables(data)
    lines += _curve_tables(data)
    lines += _drift_tables(data)
    lines += ["Each cell's full table, with the protocol of every number, is in OUT/<cell>/evaluation.md.", ""]
    lines += [f"![{p}](plots/{p})" for p in plots]
    path = out / "study.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "study.json").write_text(json.dumps({"config": config.to_dict(), "cells": data}, indent=1))
    return path
