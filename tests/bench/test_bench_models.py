"""The model-level benchmark suite (benchmarks/models.py, model_guard.py, model_report.py, the "model"
suite of memory.py and settings.py): the report on a synthetic pytest-benchmark JSON, the plan, and
the runners and guard at a tiny length."""
import json

import pytest

from benchmarks import model_report, report
from benchmarks.models import BASELINE_IMPL, SMDIM_IMPL

SIZES = {"tiny": dict(d_model=128, d_embed=96, num_heads=4, compression=4),
         "base": dict(d_model=512, d_embed=256, num_heads=8, compression=4)}
MODELS = {("tiny", SMDIM_IMPL): dict(n_layers=4, attn_window=32, block="mfa", parameters=1_196_000),
          ("tiny", BASELINE_IMPL): dict(n_layers=5, attn_window=None, block="transformer", parameters=1_117_792),
          ("base", SMDIM_IMPL): dict(n_layers=12, attn_window=64, block="mfa", parameters=48_168_704),
          ("base", BASELINE_IMPL): dict(n_layers=15, attn_window=None, block="transformer", parameters=48_409_856)}


def _entry(config, impl, pass_name, length, ms, mib, gflop, **extra):
    info = {"suite": "model", "config": config, "impl": impl, "pass": pass_name, "L": length, "peak_mib": mib,
            "gflop": gflop, "threads": 2, "isa": "avx2", "batch": 1, "dtype": "float32", "device": "cpu",
            "pad_id": 0, "mask_id": 3, "first_regular_id": 4, "vocab_size": 286,
            **SIZES[config], **MODELS[(config, impl)]}
    info.update(extra)
    return {"group": f"model {config} {pass_name} L={length}",
            "name": f"test_model[{config}-{pass_name}-L{length}-{impl}]",
            "stats": {"median": ms / 1e3, "min": ms / 1e3}, "extra_info": info}


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
    assert lines[0] == ("| pass | L | smdim ms | baseline ms | smdim/baseline ms | smdim MiB | baseline MiB "
                        "| smdim/baseline MiB | smdim GFLOP | baseline GFLOP | smdim/baseline GFLOP |")
    assert lines[4] == "| fwd | 8192 | 1000 | 2000 | 0.5× | 100 | 300 | 0.333× | 100 | 200 | 0.5× |"
    assert lines[5] == "| train | 8192 | 6000 | 6500 | 0.923× | 700 | 1000 | 0.7× | 300 | 600 | 0.5× |"


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
    assert section.suite == "model" and len(section.rows) == 6 and len(section.checks) == 8
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
    assert "Targets: 3 pass, 1 fail, 4 not measured." in lines


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


# --- the plan ---------------------------------------------------------------------------------------

PLAN_VARIABLES = ("SMDIM_BENCH_QUICK", "SMDIM_BENCH_LENGTHS", "SMDIM_BENCH_MODEL_CONFIGS", "SMDIM_BENCH_SAMPLE_MAX_L",
                  "SMDIM_BENCH_DEVICE")


@pytest.fixture
def plan_env(monkeypatch):
    for name in PLAN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_full_plan(plan_env):
    from benchmarks.settings import BenchSettings

    cases = BenchSettings.from_env().model_cases()
    assert len(cases) == 2 * 3 * 5 * 2  # presets x passes x lengths x models
    assert cases[0].id == "tiny-fwd-L512-smdim" and cases[-1].id == "base-sample-L8192-baseline"
    assert [case.single_shot for case in cases].count(True) == 2 * 5 * 2
    assert cases[0].group == "model tiny fwd L=512"


def test_quick_plan_is_tiny_at_512(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_QUICK", "1")
    assert [case.id for case in BenchSettings.from_env().model_cases()] == [
        f"tiny-{pass_name}-L512-{impl}" for pass_name in ("fwd", "train", "sample") for impl in ("smdim", "baseline")]


def test_model_plan_variables(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_LENGTHS", "512,8192")
    plan_env.setenv("SMDIM_BENCH_MODEL_CONFIGS", "base")
    plan_env.setenv("SMDIM_BENCH_SAMPLE_MAX_L", "2048")
    ids = [case.id for case in BenchSettings.from_env().model_cases()]
    assert "base-train-L8192-smdim" in ids and "base-sample-L512-baseline" in ids
    assert "base-sample-L8192-smdim" not in ids and not any(i.startswith("tiny") for i in ids)
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

    for config in models.MODEL_CONFIGS:
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


def test_model_memory_subprocess_reports_the_sample_calls():
    from benchmarks.memory import start_peak_memory

    measurement = start_peak_memory("smdim", "sample", 64, 1, suite="model", config="tiny", timeout_s=300).result()
    assert measurement.peak_mib >= 0 and measurement.seconds > 0
    assert 1 <= measurement.info["denoiser_calls"] <= 64 + 16
