"""The model-level benchmark suite (benchmarks/models.py, model_guard.py, model_report.py, the "model"
suite of memory.py and settings.py): the report on a synthetic pytest-benchmark JSON (the batch-1 and
the batched table), the plan, and the runners and guard at a tiny length (and a batch of 2)."""
import json
import math

import pytest

from benchmarks import model_report, report
from benchmarks.models import BASELINE_IMPL, SMDIM_IMPL

SIZES = {"tiny": dict(d_model=128, d_embed=96, num_heads=4, compression=4),
         "small": dict(d_model=256, d_embed=128, num_heads=4, compression=4),
         "base": dict(d_model=512, d_embed=256, num_heads=8, compression=4)}
MODELS = {("tiny", SMDIM_IMPL): dict(n_layers=4, attn_window=32, block="mfa", parameters=1_196_000),
          ("tiny", BASELINE_IMPL): dict(n_layers=5, attn_window=None, block="transformer", parameters=1_117_792),
          ("small", SMDIM_IMPL): dict(n_layers=8, attn_window=32, block="mfa", parameters=8_379_264),
          ("small", BASELINE_IMPL): dict(n_layers=10, attn_window=None, block="transformer", parameters=8_197_504),
          ("base", SMDIM_IMPL): dict(n_layers=12, attn_window=64, block="mfa", parameters=48_168_704),
          ("base", BASELINE_IMPL): dict(n_layers=15, attn_window=None, block="transformer", parameters=48_409_856)}


def _entry(config, impl, pass_name, length, ms, mib, gflop, **extra):
    """A batch-1 benchmark as test_models.py writes it before the batched table existed (no "batched")."""
    info = {"suite": "model", "config": config, "impl": impl, "pass": pass_name, "L": length, "peak_mib": mib,
            "gflop": gflop, "threads": 2, "isa": "avx2", "batch": 1, "dtype": "float32", "device": "cpu",
            "pad_id": 0, "mask_id": 3, "first_regular_id": 4, "vocab_size": 286,
            **SIZES[config], **MODELS[(config, impl)]}
    info.update(extra)
    return {"group": f"model {config} {pass_name} L={length}",
            "name": f"test_model[{config}-{pass_name}-L{length}-{impl}]",
            "stats": {"median": ms / 1e3, "min": ms / 1e3}, "extra_info": info}


def _batched(config, impl, pass_name, batch, length, ms, mib, gflop=1.0, **extra):
    """A benchmark of the batched table (B sequences of L tokens)."""
    entry = _entry(config, impl, pass_name, length, ms, mib, gflop, batch=batch, batched=True, **extra)
    entry["group"] = f"model {config} {pass_name} B={batch} L={length}"
    entry["name"] = f"test_model[{config}-{pass_name}-B{batch}xL{length}-{impl}]"
    return entry


def _base_fwd(length):
    """SMDIM: time and memory linear in L; the baseline: time quadratic, memory linear, 3x SMDIM's."""
    scale = length / 8192
    return [_entry("base", SMDIM_IMPL, "fwd", length, 1000 * scale, 100 * scale, 100 * scale),
            _entry("base", BASELINE_IMPL, "fwd", length, 2000 * scale ** 2, 300 * scale, 200 * scale ** 1.5)]


MODEL_JSON = {
    "machine_info": {"smdim_bench": {"cpu": "Test CPU 9000", "threads": 2, "torch": "2.x", "isa": "avx2"}},
    "benchmarks": [
        _entry("tiny", SMDIM_IMPL, "fwd", 512, 20.0, 1.3, 0.21),
        _entry("tiny", BASELINE_IMPL, "fwd", 512, 10.0, 1.2, 0.35),
        *_base_fwd(2048), *_base_fwd(4096), *_base_fwd(8192),
        # train at 8192: memory 0.7 of the baseline's (FAIL: target ≤ 0.6)
        _entry("base", SMDIM_IMPL, "train", 8192, 6000.0, 700.0, 300.0),
        _entry("base", BASELINE_IMPL, "train", 8192, 6500.0, 1000.0, 600.0),
        # sample at 2048 only (SMDIM_BENCH_SAMPLE_MAX_L): timed once (time_s wins over the stats)
        _entry("base", SMDIM_IMPL, "sample", 2048, 99999.0, 130.0, 64 * 25.0, time_s=30.0, denoiser_calls=64,
               steps=64, order="random"),
        _entry("base", BASELINE_IMPL, "sample", 2048, 99999.0, 140.0, 63 * 50.0, time_s=25.0, denoiser_calls=63,
               steps=64, order="random"),
        {"group": None, "name": "test_unrelated", "stats": {"median": 1.0}, "extra_info": {}},
    ],
}


def _rows():
    return model_report.rows_by_config(MODEL_JSON)


def test_rows_per_preset_in_pass_then_length_order():
    rows = _rows()
    assert list(rows) == ["tiny", "base"]
    assert [(row.pass_name, row.length) for row in rows["base"]] == [
        ("fwd", 2048), ("fwd", 4096), ("fwd", 8192), ("train", 8192), ("sample", 2048)]
    assert all(row.config == "base" and row.suite == "model" for row in rows["base"])
    sample = rows["base"][-1]
    assert sample.ms[SMDIM_IMPL] == pytest.approx(30_000.0)  # extra_info time_s, not the stats' median
    assert sample.ratio("ms", SMDIM_IMPL, BASELINE_IMPL) == pytest.approx(1.2)
    assert [section.suite for section in report.build_sections(MODEL_JSON)] == ["model"]  # the others see none


def test_model_table_cells():
    lines = model_report.model_table(_rows()["base"]).splitlines()
    assert lines[0] == ("| pass | L | smdim ms | baseline ms | smdim/baseline ms | smdim/baseline ms side by side "
                        "| smdim MiB | baseline MiB | smdim/baseline MiB | smdim GFLOP | baseline GFLOP "
                        "| smdim/baseline GFLOP |")
    assert lines[4] == "| fwd | 8192 | 1000 | 2000 | 0.5× | — | 100 | 300 | 0.333× | 100 | 200 | 0.5× |"
    assert lines[5] == "| train | 8192 | 6000 | 6500 | 0.923× | — | 700 | 1000 | 0.7× | 300 | 600 | 0.5× |"


def _tiny_at_8192_side_by_side():
    """tiny fwd at 8192: the cases' own medians 1.1 apart (timed minutes apart), side by side 0.9."""
    paired = dict(paired_ratio=0.9, paired_low=0.85, paired_high=0.95, paired_coverage=0.96, paired_rounds=8,
                  paired_ms=90.0, paired_other_ms=100.0, paired_with=BASELINE_IMPL)
    return model_report.rows_by_config({"benchmarks": [
        _entry("tiny", SMDIM_IMPL, "fwd", 8192, 110.0, 20.0, 6.0, **paired),
        _entry("tiny", BASELINE_IMPL, "fwd", 8192, 100.0, 19.0, 15.0)]})


def test_model_table_shows_the_side_by_side_ratio_with_its_interval():
    lines = model_report.model_table(_tiny_at_8192_side_by_side()["tiny"]).splitlines()
    assert lines[2] == "| fwd | 8192 | 110 | 100 | 1.1× | 0.9× (0.85–0.95) | 20 | 19 | 1.05× | 6 | 15 | 0.4× |"


def test_latency_target_at_8192_uses_the_side_by_side_ratio():
    checks = {c.description: c for c in model_report.model_checks(_tiny_at_8192_side_by_side())}
    latency = checks["tiny fwd SMDIM/baseline latency < 1 at L=8192"]
    assert latency.status == "PASS"  # on the two medians (1.1) it would fail
    assert latency.detail == ("side by side 0.90 (96% interval 0.85–0.95, 8 alternating rounds); the cases' own "
                              "medians: smdim 110 ms, baseline 100 ms (smdim/baseline 1.10)")
    flops = checks["tiny fwd SMDIM/baseline FLOPs ≤ 0.7 at L=8192"]
    assert (flops.status, flops.detail) == ("PASS", "smdim 6 GFLOP, baseline 15 GFLOP (smdim/baseline 0.40)")


def test_growth_slopes_show_linear_and_quadratic():
    rows = _rows()["base"]
    assert model_report.growth_slope(rows, "fwd", "ms", SMDIM_IMPL) == pytest.approx(1.0)
    assert model_report.growth_slope(rows, "fwd", "ms", BASELINE_IMPL) == pytest.approx(2.0)
    assert model_report.growth_slope(rows, "fwd", "gflop", BASELINE_IMPL) == pytest.approx(1.5)
    lines = model_report.growth_lines("base", rows)
    assert lines[0] == ("- base fwd: latency smdim 1.00, baseline 2.00; peak memory smdim 1.00, baseline 1.00; "
                        "FLOPs smdim 1.00, baseline 1.50")
    assert lines[1].startswith("- base train: latency smdim —")  # one length only
    assert model_report.growth_lines("tiny", _rows()["tiny"]) == [
        "- tiny: not measured (needs two lengths in [2048, 8192])"]


def test_targets_pass_fail_and_not_measured():
    checks = {c.description: c for c in model_report.model_checks(_rows())}
    assert len(checks) == 8  # 2 presets x (fwd FLOPs, fwd memory, train memory, fwd latency)
    assert checks["base fwd SMDIM/baseline FLOPs ≤ 0.7 at L=8192"].status == "PASS"
    assert checks["base fwd SMDIM/baseline FLOPs ≤ 0.7 at L=8192"].detail == (
        "smdim 100 GFLOP, baseline 200 GFLOP (smdim/baseline 0.50)")
    assert checks["base fwd SMDIM/baseline peak memory ≤ 0.6 at L=8192"].status == "PASS"
    assert checks["base train SMDIM/baseline peak memory ≤ 0.6 at L=8192"].status == "FAIL"
    assert checks["base fwd SMDIM/baseline latency < 1 at L=8192"].status == "PASS"
    tiny = checks["tiny fwd SMDIM/baseline latency < 1 at L=8192"]
    assert tiny.status == "N/A" and "nothing measured at fwd L=8192" in tiny.detail
    only_tiny = {c.description: c for c in model_report.model_checks({"tiny": _rows()["tiny"]})}
    assert "SMDIM_BENCH_MODEL_CONFIGS" in only_tiny["base fwd SMDIM/baseline FLOPs ≤ 0.7 at L=8192"].detail


def test_flops_not_counted_is_not_a_pass():
    entries = [_entry("base", SMDIM_IMPL, "fwd", 8192, 1.0, 1.0, None, flops_note="n/a: smdim_kernels.flops is "
                      "not available (x)"), _entry("base", BASELINE_IMPL, "fwd", 8192, 2.0, 2.0, 200.0)]
    checks = {c.description: c for c in model_report.model_checks(model_report.rows_by_config({"benchmarks": entries}))}
    flops = checks["base fwd SMDIM/baseline FLOPs ≤ 0.7 at L=8192"]
    assert flops.status == "N/A" and "FLOPs not counted" in flops.detail


def test_rendered_section():
    section = model_report.model_section(MODEL_JSON)
    assert section.suite == "model" and len(section.rows) == 6 and len(section.checks) == 8 + 14  # + batched
    markdown = section.markdown
    lines = markdown.splitlines()
    assert lines[0] == "# Model benchmark: SMDIM vs transformer-diffusion baseline"
    assert lines[2] == "Machine: Test CPU 9000, 2 threads, torch 2.x, ISA avx2; device cpu"
    assert "random token ids in [4, 286)" in markdown and "PAD 0, MASK 3" in markdown
    assert ("- **base**: d_model 512, d_embed 256, 8 heads, compression 4; SMDIM 12 MFA blocks (local attention, "
            "±64 compressed steps = ±256 tokens), 48.17 M parameters; baseline 15 transformer blocks (full "
            "attention, FFN 4×d_model), 48.41 M parameters (+0.5% vs SMDIM)") in lines
    assert "Denoiser calls per base sample (K = 64): baseline L=2048 63, smdim L=2048 64." in lines
    assert "peak RSS growth (MiB) of one run in a fresh process" in markdown
    assert markdown.index("## tiny") < markdown.index("## base") < markdown.index("## Targets")
    assert "Targets: 3 pass, 1 fail, 18 not measured." in lines  # no batched case: its 14 targets N/A
    assert "- [N/A] tiny train SMDIM/baseline latency ≤ 1.15 at B=16 L=256: tiny not measured on batches (plan: " \
           "SMDIM_BENCH_BATCHED_CONFIGS)" in lines
    assert model_report.BATCHED_TITLE not in markdown  # no batched table without batched cases


def test_no_model_benchmarks_no_section():
    assert model_report.model_section({"benchmarks": MODEL_JSON["benchmarks"][-1:]}) is None


def test_main_writes_the_model_section_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps(MODEL_JSON))
    out = tmp_path / "out"
    assert report.main([str(bench_json), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (out / "model.md").read_text().strip() == (out / "benchmarks.md").read_text().strip()
    assert (out / "model.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.main([str(bench_json), "--out", str(out), "--check"]) == 1  # base train memory fails


def test_the_model_section_comes_after_the_others():
    block = {"group": "mfa_block fwd L=4096", "name": "test_mfa_block[fwd-L4096-mfa]", "stats": {"median": 0.05},
             "extra_info": {"suite": "mfa_block", "impl": "mfa", "pass": "fwd", "L": 4096, "peak_mib": 50.0,
                            "gflop": 60.0}}
    data = {"machine_info": MODEL_JSON["machine_info"], "benchmarks": MODEL_JSON["benchmarks"] + [block]}
    sections = report.build_sections(data)
    assert [section.suite for section in sections] == ["mfa_block", "model"]
    assert "**All targets**" in report.render_all(sections)


# --- the batched table --------------------------------------------------------------------------------

BATCHED_JSON = {
    "machine_info": MODEL_JSON["machine_info"],
    "benchmarks": [
        # tiny train: 1.1 at 16x256 (PASS, ≤ 1.15), 1.2 at 8x512 in the cases' own medians ..., 0.9 at 4x1024
        # (PASS), no baseline at 2x2048
        _batched("tiny", SMDIM_IMPL, "train", 16, 256, 110.0, 50.0, gflop=1.2),  # 1.2x the baseline's work
        _batched("tiny", BASELINE_IMPL, "train", 16, 256, 100.0, 100.0),
        # ... but 1.1 at 8x512 timed side by side (PASS: the target uses it), interval 1.05-1.18
        _batched("tiny", SMDIM_IMPL, "train", 8, 512, 120.0, 60.0, paired_ratio=1.1, paired_low=1.05,
                 paired_high=1.18, paired_coverage=0.97, paired_rounds=10, paired_ms=110.0, paired_other_ms=100.0,
                 paired_with=BASELINE_IMPL),
        _batched("tiny", BASELINE_IMPL, "train", 8, 512, 100.0, 100.0),
        _batched("tiny", SMDIM_IMPL, "train", 4, 1024, 90.0, 70.0),
        _batched("tiny", BASELINE_IMPL, "train", 4, 1024, 100.0, 100.0),
        _batched("tiny", SMDIM_IMPL, "train", 2, 2048, 95.0, 80.0),
        # tiny fwd: 0.75 at 4x1024 (PASS), 1.25 at 2x2048 (FAIL), nothing at 1x4096
        _batched("tiny", SMDIM_IMPL, "fwd", 16, 256, 10.0, 5.0),
        _batched("tiny", BASELINE_IMPL, "fwd", 16, 256, 8.0, 6.0),
        _batched("tiny", SMDIM_IMPL, "fwd", 4, 1024, 30.0, 5.0),
        _batched("tiny", BASELINE_IMPL, "fwd", 4, 1024, 40.0, 6.0),
        _batched("tiny", SMDIM_IMPL, "fwd", 2, 2048, 50.0, 5.0),
        _batched("tiny", BASELINE_IMPL, "fwd", 2, 2048, 40.0, 6.0),
        # a sample of 8 pieces, timed once (time_s): 4 s and 6 s, so 0.5 and 0.75 s per piece
        _batched("tiny", SMDIM_IMPL, "sample", 8, 512, 99999.0, 9.0, time_s=4.0, denoiser_calls=32, steps=32,
                 order="confidence"),
        _batched("tiny", BASELINE_IMPL, "sample", 8, 512, 99999.0, 9.0, time_s=6.0, denoiser_calls=32, steps=32,
                 order="confidence"),
        # base: no target; its batched 1x4096 is not the batch-1 table's L=4096
        _batched("base", SMDIM_IMPL, "train", 16, 256, 1000.0, 500.0),
        _batched("base", BASELINE_IMPL, "train", 16, 256, 500.0, 400.0),
        _batched("base", SMDIM_IMPL, "fwd", 1, 4096, 200.0, 20.0),
        _batched("base", BASELINE_IMPL, "fwd", 1, 4096, 300.0, 30.0),
        _entry("base", SMDIM_IMPL, "fwd", 4096, 1000.0, 100.0, 50.0, batched=False),
        _entry("base", BASELINE_IMPL, "fwd", 4096, 2000.0, 300.0, 100.0, batched=False),
    ],
}
BATCHED_HEADER = ("| batch × L | tokens | smdim train ms | baseline train ms | smdim/baseline train ms "
                  "| smdim/baseline train ms side by side | smdim/baseline train GFLOP | smdim train MiB "
                  "| baseline train MiB | smdim/baseline train MiB | smdim fwd ms | baseline fwd ms "
                  "| smdim/baseline fwd ms | smdim/baseline fwd ms side by side | smdim/baseline fwd GFLOP "
                  "| smdim fwd MiB | baseline fwd MiB | smdim/baseline fwd MiB | smdim s/piece | baseline s/piece "
                  "| smdim/baseline s/piece |")


def test_batched_rows_apart_from_the_batch_1_table():
    per_length = model_report.rows_by_config(BATCHED_JSON)
    batched = model_report.rows_by_config(BATCHED_JSON, batched=True)
    assert list(per_length) == ["base"] and list(batched) == ["tiny", "base"]
    assert [(row.pass_name, row.length, row.ms) for row in per_length["base"]] == [
        ("fwd", 4096, {SMDIM_IMPL: 1000.0, BASELINE_IMPL: 2000.0})]
    assert [(row.pass_name, row.batch, row.length) for row in batched["base"]] == [("fwd", 1, 4096),
                                                                                  ("train", 16, 256)]
    assert batched["base"][0].ms == {SMDIM_IMPL: 200.0, BASELINE_IMPL: 300.0}


def test_batched_table_cells():
    lines = model_report.batched_table(model_report.rows_by_config(BATCHED_JSON, batched=True)["tiny"]).splitlines()
    assert lines[0] == BATCHED_HEADER
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 16 × 256", "| 8 × 512", "| 4 × 1024", "| 2 × 2048"]
    assert lines[2] == ("| 16 × 256 | 4096 | 110 | 100 | 1.1× | — | 1.2× | 50 | 100 | 0.5× | 10 | 8 | 1.25× | — | 1× "
                        "| 5 | 6 | 0.833× | — | — | — |")
    assert lines[3] == ("| 8 × 512 | 4096 | 120 | 100 | 1.2× | 1.1× (1.05–1.18) | 1× | 60 | 100 | 0.6× | — | — | — "
                        "| — | — | — | — | — | 0.5 | 0.75 | 0.667× |")  # seconds per piece = time_s / 8
    assert lines[5].startswith("| 2 × 2048 | 4096 | 95 | — | — | — | — |")


def test_batched_targets_pass_fail_and_not_measured():
    checks = {c.description: c for c in model_report.batched_checks(
        model_report.rows_by_config(BATCHED_JSON, batched=True))}
    assert len(checks) == 2 * 7  # tiny and small: train at 4 shapes, fwd at 3
    assert not any(name.startswith("base") for name in checks)  # base: reported, no target
    status = {name: check.status for name, check in checks.items() if name.startswith("tiny")}
    assert status == {
        "tiny train SMDIM/baseline latency ≤ 1.15 at B=16 L=256": "PASS",
        "tiny train SMDIM/baseline latency ≤ 1.15 at B=8 L=512": "PASS",  # side by side 1.1
        "tiny train SMDIM/baseline latency ≤ 1 at B=4 L=1024": "PASS",
        "tiny train SMDIM/baseline latency ≤ 1 at B=2 L=2048": "N/A",
        "tiny fwd SMDIM/baseline latency ≤ 1 at B=4 L=1024": "PASS",
        "tiny fwd SMDIM/baseline latency ≤ 1 at B=2 L=2048": "FAIL",
        "tiny fwd SMDIM/baseline latency ≤ 1 at B=1 L=4096": "N/A"}
    assert checks["tiny train SMDIM/baseline latency ≤ 1.15 at B=8 L=512"].detail == (
        "side by side 1.10 (97% interval 1.05–1.18, 10 alternating rounds); the cases' own medians: smdim 120 ms, "
        "baseline 100 ms (smdim/baseline 1.20)")
    assert checks["tiny train SMDIM/baseline latency ≤ 1.15 at B=16 L=256"].detail == (
        "the cases' own medians: smdim 110 ms, baseline 100 ms (smdim/baseline 1.10)")
    assert checks["tiny train SMDIM/baseline latency ≤ 1 at B=2 L=2048"].detail == (
        "baseline not measured at train B=2 L=2048 (plan: SMDIM_BENCH_MODEL_BATCHES)")
    assert checks["tiny fwd SMDIM/baseline latency ≤ 1 at B=1 L=4096"].detail == (
        "nothing measured at fwd B=1 L=4096 (plan: SMDIM_BENCH_MODEL_BATCHES)")
    small = checks["small fwd SMDIM/baseline latency ≤ 1 at B=4 L=1024"]
    assert (small.status, small.detail) == ("N/A", "small not measured on batches (plan: SMDIM_BENCH_BATCHED_CONFIGS)")


def test_rendered_section_with_the_batched_table():
    section = model_report.model_section(BATCHED_JSON)
    assert len(section.rows) == 1 + 10 and len(section.checks) == 8 + 14
    markdown = section.markdown
    lines = markdown.splitlines()
    assert ("Problem: batch 1; batches B × L of 16 × 256, 8 × 512, 4 × 1024, 2 × 2048, 1 × 4096, float32, L random "
            "token ids") in markdown
    title = f"## {model_report.BATCHED_TITLE}"
    assert title == "## Training steps and denoiser forwards on batches (tokens per batch = batch × length)"
    assert (markdown.index("## base") < markdown.index(title) < markdown.index("### tiny") < markdown.index("### base")
            < markdown.index("## Targets"))
    assert "### small" not in markdown and "- **small**" not in markdown  # nothing of small ran
    assert lines[lines.index("### tiny") + 2] == BATCHED_HEADER
    assert "Every tiny batched sample made 32 denoiser calls (one per step: every step revealed tokens)." in lines
    assert "| fwd | 4096 | 1000 | 2000 | 0.5× | — | 100 | 300 | 0.333× | 50 | 100 | 0.5× |" in lines  # the batch-1 row
    assert ("| 1 × 4096 | 4096 | — | — | — | — | — | — | — | — | 200 | 300 | 0.667× | — | 1× | 20 | 30 | 0.667× | — "
            "| — | — |") in lines
    assert "- [FAIL] tiny fwd SMDIM/baseline latency ≤ 1 at B=2 L=2048: the cases' own medians: smdim 50 ms, " \
           "baseline 40 ms (smdim/baseline 1.25)" in lines
    assert "Targets: 4 pass, 1 fail, 17 not measured." in lines


def test_batched_cases_alone_report_with_their_ratio_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    data = {"machine_info": BATCHED_JSON["machine_info"],
            "benchmarks": [b for b in BATCHED_JSON["benchmarks"] if b["extra_info"]["batched"]]}
    section = model_report.model_section(data)
    assert "Problem: batches B × L of 16 × 256" in section.markdown
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert report.main([str(bench_json), "--out", str(out)]) == 0
    assert (out / "model.md").exists() and (out / "model.png").stat().st_size > 0
    assert report.main([str(bench_json), "--out", str(out), "--check"]) == 1  # a batched target fails
    capsys.readouterr()


# --- the plan ---------------------------------------------------------------------------------------

PLAN_VARIABLES = ("SMDIM_BENCH_QUICK", "SMDIM_BENCH_LENGTHS", "SMDIM_BENCH_MODEL_CONFIGS", "SMDIM_BENCH_SAMPLE_MAX_L",
                  "SMDIM_BENCH_DEVICE", "SMDIM_BENCH_MODEL_BATCHES", "SMDIM_BENCH_BATCHED_CONFIGS")


@pytest.fixture
def plan_env(monkeypatch):
    for name in PLAN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_full_plan(plan_env):
    from benchmarks.settings import BenchSettings

    settings = BenchSettings.from_env()
    assert settings.model_batches == ((16, 256), (8, 512), (4, 1024), (2, 2048), (1, 4096))
    assert settings.batched_configs == ("tiny", "small", "base")
    cases = settings.model_cases()
    per_length = [case for case in cases if not case.batched]
    assert cases[:len(per_length)] == per_length  # the batch-1 table first, as before
    assert len(per_length) == 2 * 3 * 5 * 2  # presets x passes x lengths x models
    assert per_length[0].id == "tiny-fwd-L512-smdim" and per_length[-1].id == "base-sample-L8192-baseline"
    assert [case.single_shot for case in per_length].count(True) == 2 * 5 * 2
    assert per_length[0].group == "model tiny fwd L=512" and per_length[0].batch == 1
    batched = cases[len(per_length):]
    assert len(batched) == 3 * (2 * 5 + 3) * 2  # presets x (fwd, train at 5 shapes + sample at 3) x models
    assert batched[0].id == "tiny-fwd-B16xL256-smdim" and batched[-1].id == "base-sample-B2xL2048-baseline"
    assert {(case.batch, case.length) for case in batched if case.single_shot} == {(8, 512), (4, 1024), (2, 2048)}


def test_quick_plan_is_tiny_at_512_and_16x256(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_QUICK", "1")
    assert [case.id for case in BenchSettings.from_env().model_cases()] == [
        f"tiny-{pass_name}-L512-{impl}" for pass_name in ("fwd", "train", "sample") for impl in ("smdim", "baseline")
    ] + [f"tiny-{pass_name}-B16xL256-{impl}" for pass_name in ("fwd", "train") for impl in ("smdim", "baseline")]


def test_batched_plan_variables(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_QUICK", "1")  # explicit variables win over quick mode's defaults
    plan_env.setenv("SMDIM_BENCH_MODEL_BATCHES", " 2X2048 , 8x512,8x512")
    plan_env.setenv("SMDIM_BENCH_BATCHED_CONFIGS", "small,tiny")
    plan_env.setenv("SMDIM_BENCH_SAMPLE_MAX_L", "1024")
    settings = BenchSettings.from_env()
    assert settings.model_batches == ((8, 512), (2, 2048)) and settings.batched_configs == ("tiny", "small")
    batched = [case for case in settings.model_cases() if case.batched]
    assert len(batched) == 2 * (2 * 2 + 1) * 2  # presets x (fwd, train at 2 shapes + sample at 8x512) x models
    assert [case.id for case in batched if case.single_shot] == [
        "tiny-sample-B8xL512-smdim", "tiny-sample-B8xL512-baseline",
        "small-sample-B8xL512-smdim", "small-sample-B8xL512-baseline"]
    for none in ("0", "none", "NONE"):
        plan_env.setenv("SMDIM_BENCH_MODEL_BATCHES", none)
        assert BenchSettings.from_env().model_batches == ()
        assert not any(case.batched for case in BenchSettings.from_env().model_cases())
    for malformed in ("16x", "16*256", "0x256", "16x0", "16x256,x", "sixteen", "16x256x2", "-1x256"):
        plan_env.setenv("SMDIM_BENCH_MODEL_BATCHES", malformed)
        with pytest.raises(ValueError, match=r"SMDIM_BENCH_MODEL_BATCHES must be comma-separated BATCHxLENGTH") as exc:
            BenchSettings.from_env()
        assert "\n" not in str(exc.value) and repr(malformed) in str(exc.value)
    plan_env.setenv("SMDIM_BENCH_MODEL_BATCHES", "16x256")
    plan_env.setenv("SMDIM_BENCH_BATCHED_CONFIGS", "tiny,huge")
    with pytest.raises(ValueError, match="SMDIM_BENCH_BATCHED_CONFIGS must name presets among tiny,small,base"):
        BenchSettings.from_env()


def test_case_ids_unique_and_selectable(plan_env):
    from collections import Counter

    from benchmarks.conftest import _group_order
    from benchmarks.models import ModelCase
    from benchmarks.settings import BenchSettings

    cases = BenchSettings.from_env().model_cases()
    ids = [case.id for case in cases]
    assert len(set(ids)) == len(ids)
    assert set(Counter(case.group for case in cases).values()) == {2}  # each group: both models, nothing else
    # -k matches a case-insensitive substring of the id: B16xL256 picks exactly that shape, xL the batched table
    picked = [i for i in ids if "b16xl256" in i.lower()]
    assert len(picked) == 3 * 2 * 2 and all("-B16xL256-" in i for i in picked)
    assert all(("xl" in case.id.lower()) == case.batched for case in cases)
    assert "tiny-fwd-B1xL4096-smdim" in ids and "tiny-fwd-L4096-smdim" in ids  # batched 1x4096 is its own case
    case = ModelCase("tiny", SMDIM_IMPL, "train", 256, batch=16)
    assert case.batched and (case.id, case.group) == ("tiny-train-B16xL256-smdim", "model tiny train B=16 L=256")
    assert ModelCase("tiny", SMDIM_IMPL, "train", 256, batch=16, batched=True) == case
    assert not ModelCase("tiny", SMDIM_IMPL, "train", 256).batched
    with pytest.raises(ValueError, match="batch must be >= 1"):
        ModelCase("tiny", SMDIM_IMPL, "fwd", 256, batch=0)
    groups = ["model tiny fwd B=1 L=4096", "model tiny fwd B=16 L=256", "model tiny fwd L=4096", "model tiny fwd L=512",
              "model tiny fwd B=2 L=2048"]
    assert sorted(groups, key=_group_order) == ["model tiny fwd L=512", "model tiny fwd L=4096",
                                                "model tiny fwd B=16 L=256", "model tiny fwd B=2 L=2048",
                                                "model tiny fwd B=1 L=4096"]


def test_model_plan_variables(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_LENGTHS", "512,8192")
    plan_env.setenv("SMDIM_BENCH_MODEL_CONFIGS", "base")
    plan_env.setenv("SMDIM_BENCH_SAMPLE_MAX_L", "2048")
    ids = [case.id for case in BenchSettings.from_env().model_cases() if not case.batched]
    assert "base-train-L8192-smdim" in ids and "base-sample-L512-baseline" in ids
    assert "base-sample-L8192-smdim" not in ids and not any(i.startswith("tiny") for i in ids)
    plan_env.setenv("SMDIM_BENCH_MODEL_CONFIGS", "base,small")  # any preset, smallest first
    assert BenchSettings.from_env().model_configs == ("small", "base")
    plan_env.setenv("SMDIM_BENCH_MODEL_CONFIGS", "base,huge")
    with pytest.raises(ValueError, match="SMDIM_BENCH_MODEL_CONFIGS"):
        BenchSettings.from_env()


def test_device_variable(plan_env):
    import torch

    from benchmarks.cuda import bench_device

    assert bench_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    plan_env.setenv("SMDIM_BENCH_DEVICE", "cpu")
    assert bench_device() == "cpu"
    plan_env.setenv("SMDIM_BENCH_DEVICE", "gpu")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        bench_device()
    if not torch.cuda.is_available():
        plan_env.setenv("SMDIM_BENCH_DEVICE", "cuda")
        with pytest.raises(ValueError, match="is_available"):
            bench_device()


def test_cuda_timer_median_skips_warmup_rounds():
    from benchmarks.cuda import CudaEventTimer

    timer = CudaEventTimer(lambda: None)
    timer.seconds = [9.0, 1.0, 3.0, 2.0]  # a warm-up round, then three timed rounds
    assert timer.median_s(3) == 2.0


def test_sample_steps_is_the_cli_default():
    from benchmarks.models import SAMPLE_ORDER, SAMPLE_STEPS
    from smdim.cli import build_parser

    args = build_parser().parse_args(["generate", "--checkpoint", "c.pt"])
    assert (args.steps, args.order) == (SAMPLE_STEPS, SAMPLE_ORDER)


# --- the cases themselves at a tiny length (what the benchmarks run, minus the timing) ---------------


def test_presets_are_parameter_matched():
    from benchmarks import models

    assert models.MODEL_PRESETS == ("tiny", "small", "base")
    for config in models.MODEL_PRESETS:
        assert abs(models.parameter_gap(config)) <= models.PARAMETER_TOLERANCE
        assert "parameters" in models.check_parameter_match(config)


def test_parameter_mismatch_fails_the_guard(monkeypatch):
    from benchmarks import models
    from benchmarks.model_guard import ModelGuard

    monkeypatch.setattr(models, "parameter_count", lambda config, impl: 100 if impl == SMDIM_IMPL else 120)
    with pytest.raises(AssertionError, match=r"\+20\.0%.*not within 10%"):
        models.check_parameter_match("tiny")
    with pytest.raises(AssertionError, match="correctness guard failed"):
        ModelGuard(length=16).verify("tiny", "fwd", 16)


def test_guard_and_runners_at_a_tiny_length():
    from benchmarks import models
    from benchmarks.model_guard import ModelGuard

    guard = ModelGuard(length=64)
    assert "smdim ok" in guard.verify("tiny", "fwd", 8192)
    assert "parameters_changed" in guard.verify("tiny", "train", 64)
    assert "denoiser_calls" in guard.verify("tiny", "sample", 64)
    forward = models.make_model_runner("tiny", SMDIM_IMPL, "fwd", 48)
    logits = forward()
    assert tuple(logits.shape) == (1, 48, models.token_space().vocab_size)
    sample = models.make_model_runner("tiny", SMDIM_IMPL, "sample", 48, steps=4)
    gflop, note = forward.count_gflop()
    if gflop is not None:
        assert sample.count_gflop()[0] == pytest.approx(gflop)  # one denoiser forward
        train = models.make_model_runner("tiny", BASELINE_IMPL, "train", 48)
        assert train.count_gflop()[0] > 2 * gflop  # forward + backward (of the baseline)
        assert all(p.grad is None for p in train.model.parameters())  # counting left no .grad behind
    tokens, calls = sample()
    assert sample.check((tokens, calls)) == {"denoiser_calls": calls}
    with pytest.raises(AssertionError, match="MASK"):
        sample.check((tokens.clone().fill_(models.token_space().mask_id), calls))


def test_runners_at_batch_2():
    import torch

    from benchmarks import models

    vocab = models.token_space().vocab_size
    tokens = models.make_tokens(64, batch=2)
    assert tuple(tokens.shape) == (2, 64) and not torch.equal(tokens[0], tokens[1])
    forward = models.make_model_runner("tiny", SMDIM_IMPL, "fwd", 64, batch=2)
    logits = forward()
    assert tuple(logits.shape) == (2, 64, vocab) and forward.check(logits) == {}
    with pytest.raises(AssertionError, match=r"expected \(2, 64, 286\)"):
        forward.check(logits[:1])  # the runner's own batch, not 1
    train = models.make_model_runner("tiny", BASELINE_IMPL, "train", 64, batch=2)
    loss = train()
    assert loss.dim() == 0 and math.isfinite(float(loss)) and train.check(loss) == {}
    sample = models.make_model_runner("tiny", SMDIM_IMPL, "sample", 64, steps=2, batch=2)
    pieces, calls = sample()
    assert tuple(pieces.shape) == (2, 64) and sample.check((pieces, calls)) == {"denoiser_calls": calls}
    with pytest.raises(AssertionError, match=r"sample of shape \(1, 64\); expected \(2, 64\)"):
        sample.check((pieces[:1], calls))
    assert tuple(models.make_warmup_runner("tiny", SMDIM_IMPL, "train", batch=2).tokens.shape) == (
        2, models.WARMUP_LENGTH)  # warms up at the case's batch
    single, _ = models.make_model_runner("tiny", SMDIM_IMPL, "fwd", 64).count_gflop()
    if single is not None:  # the batched pass: twice one sequence's FLOPs
        assert forward.count_gflop()[0] == pytest.approx(2 * single)
        assert sample.count_gflop()[0] == pytest.approx(2 * single)
        single_step = models.make_model_runner("tiny", BASELINE_IMPL, "train", 64).count_gflop()[0]
        assert train.count_gflop()[0] == pytest.approx(2 * single_step)


def test_memory_command_line_carries_the_batch(monkeypatch, capsys):
    from benchmarks import memory

    command, _ = memory._command("smdim", "train", 256, 2, "model", "tiny", batch=16)
    assert command[-4:] == ["--config", "tiny", "--batch", "16"]
    assert "--batch" not in memory._command("smdim", "train", 256, 2, "model", "tiny")[0]  # batch 1: as before
    assert memory._what("model", "smdim", "train", 256, "tiny", 16) == "model tiny smdim train B=16 L=256"
    seen = []
    monkeypatch.setattr(memory, "measure_here", lambda *args: seen.append(args) or memory.MemoryMeasurement(
        1.0, 2.0, 0.5, "test"))
    case = ["--impl", "smdim", "--pass", "fwd", "--length", "64", "--threads", "1"]
    assert memory.main(["--suite", "model", "--config", "small", "--batch", "3"] + case) == 0
    assert seen[-1][-1] == 3 and seen[-1][-2] == "small"  # (..., config, batch) reach measure_here
    assert memory.RESULT_PREFIX in capsys.readouterr().out
    for wrong in (["--suite", "model", "--config", "tiny", "--batch", "0"], ["--suite", "mamba_layer", "--batch", "2"]):
        with pytest.raises(SystemExit):
            memory.main(wrong + case)
    assert "--batch" in capsys.readouterr().err


def test_memory_runners_take_the_batch(monkeypatch):
    import torch

    from benchmarks import memory
    from benchmarks.models import WARMUP_LENGTH

    assert tuple(memory._runner("model", "smdim", "sample", 64, "tiny", 2).tokens.shape) == (2, 64)
    assert tuple(memory._warmup_runner("model", "smdim", "train", "tiny", 2).tokens.shape) == (2, WARMUP_LENGTH)
    built = []
    monkeypatch.setattr(memory, "_runner", lambda *args: built.append(("case", args)) or (lambda: None))
    monkeypatch.setattr(memory, "_warmup_runner", lambda *args: built.append(("warm-up", args)) or (lambda: None))
    measured = memory.measure_here("smdim", "fwd", 64, torch.get_num_threads(), "model", config="tiny", batch=4)
    assert measured.peak_mib >= 0 and [(what, args[-1]) for what, args in built] == [("warm-up", 4), ("case", 4)]


def test_model_memory_subprocess_measures_a_batch_and_reports_the_sample_calls():
    from benchmarks.memory import start_peak_memory

    pending = start_peak_memory("smdim", "sample", 64, 1, suite="model", config="tiny", timeout_s=300, batch=2)
    assert pending.command[-3:] == ["--batch", "2", "--wait"]
    measurement = pending.result()  # the subprocess checks its sample: (2, 64) tokens, no MASK left
    assert measurement.peak_mib >= 0 and measurement.seconds > 0
    assert 1 <= measurement.info["denoiser_calls"] <= 64 + 16
