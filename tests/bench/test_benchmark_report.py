"""The benchmark report (benchmarks/report.py with its sections scan_report.py and layer_report.py,
and report_kit.py) on tiny synthetic pytest-benchmark JSON; the plan, guards and cases of the scan
and layer suites at tiny lengths."""
import json

import pytest

from benchmarks import layer_report, report, report_kit, scan_report


def _entry(impl, pass_name, length, median_ms, peak_mib):
    return {
        "group": f"selective_scan {pass_name} L={length}",
        "name": f"test_selective_scan[{pass_name}-L{length}-{impl}]",
        "stats": {"median": median_ms / 1e3, "min": median_ms / 1e3},
        "extra_info": {"suite": "selective_scan", "impl": impl, "pass": pass_name, "L": length,
                       "peak_mib": peak_mib, "threads": 2, "isa": "avx2", "batch": 1, "dim": 1536,
                       "dstate": 16, "dtype": "float32"},
    }


SYNTHETIC = {
    "machine_info": {"smdim_bench": {"cpu": "Test CPU 9000", "threads": 2, "torch": "2.x", "isa": "avx2"}},
    "benchmarks": [
        # fwd: 50x / 100x faster than the peers, 1.5x the bound at 2048; 2.5x the bound at 8192 (FAIL)
        _entry("ours", "fwd", 2048, 2.0, 10.0),
        _entry("naive", "fwd", 2048, 100.0, 200.0),
        _entry("pscan", "fwd", 2048, 200.0, 1000.0),
        _entry("bound", "fwd", 2048, 4.0 / 3.0, 0.0),
        _entry("ours", "fwd", 8192, 8.0, 40.0),
        _entry("pscan", "fwd", 8192, 800.0, 4000.0),
        _entry("bound", "fwd", 8192, 3.2, 0.0),
        # fwd+bwd: 40x faster than pscan, memory 1/10 of pscan's at 8192, linear growth (slope 1)
        _entry("ours", "fwd+bwd", 2048, 10.0, 25.0),
        _entry("pscan", "fwd+bwd", 2048, 400.0, 2000.0),
        _entry("ours", "fwd+bwd", 8192, 40.0, 100.0),
        _entry("pscan", "fwd+bwd", 8192, 1600.0, 1000.0),
        {"group": None, "name": "test_unrelated", "stats": {"median": 1.0}, "extra_info": {}},
    ],
}


@pytest.fixture
def bench_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(SYNTHETIC))
    return path


def _scan_rows(benchmarks=SYNTHETIC["benchmarks"]):
    return report_kit.collect_rows(benchmarks, "selective_scan")


def test_rows_and_ratios():
    rows = _scan_rows()
    assert [(row.pass_name, row.length) for row in rows] == [
        ("fwd", 2048), ("fwd", 8192), ("fwd+bwd", 2048), ("fwd+bwd", 8192)]
    fwd_2048 = rows[0]
    assert fwd_2048.ms["ours"] == pytest.approx(2.0)
    assert fwd_2048.ratio("ms", "naive", "ours") == pytest.approx(50.0)
    assert fwd_2048.ratio("ms", "pscan", "ours") == pytest.approx(100.0)
    assert fwd_2048.ratio("ms", "ours", "bound") == pytest.approx(1.5)
    assert rows[1].ratio("ms", "naive", "ours") is None  # naive not run at 8192
    assert rows[3].ratio("mib", "pscan", "ours") == pytest.approx(10.0)
    assert scan_report.memory_slope(rows, "fwd+bwd") == pytest.approx(1.0)
    assert scan_report.memory_slope(rows, "fwd") == pytest.approx(1.0)


def test_table_cells():
    table = scan_report.scan_table(_scan_rows())
    lines = table.splitlines()
    assert lines[0].startswith("| pass | L | ours ms | naive ms | pscan ms | bound ms |")
    assert lines[2] == "| fwd | 2048 | 2 | 100 | 200 | 1.33 | 50× | 100× | 1.5× | 10 | 200 | 1000 | 0 | 100× |"
    assert lines[5] == "| fwd+bwd | 8192 | 40 | — | 1600 | — | — | 40× | — | 100 | — | 1000 | — | 10× |"


def test_targets():
    checks = {check.description: check for check in scan_report.scan_checks(_scan_rows())}
    assert checks["fwd ≥ 30× faster than naive at L=2048"].status == "PASS"
    assert checks["fwd ≥ 30× faster than naive at L=8192"].status == "N/A"
    assert checks["fwd ≥ 30× faster than pscan at L=8192"].status == "PASS"
    assert checks["fwd+bwd ≥ 30× faster than pscan at L=8192"].status == "PASS"
    assert checks["fwd within 2× of the arithmetic bound at L=2048"].status == "PASS"
    assert checks["fwd within 2× of the arithmetic bound at L=8192"].status == "FAIL"
    assert checks["fwd+bwd peak memory ≤ 1/8 of pscan's at L=8192"].status == "PASS"
    assert "slope of log(MiB) vs log(L) = 1.00" in checks["ours' fwd+bwd memory grows at most linearly in L"].detail
    naive = checks["fwd ≥ 30× faster than naive at L=8192"].detail
    assert naive == "naive not measured at fwd L=8192 (plan: SMDIM_BENCH_LENGTHS, SMDIM_BENCH_NAIVE_FWD_MAX_L)"


def test_main_writes_markdown_and_png(bench_json, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert report.main([str(bench_json), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    markdown = (out / "selective_scan.md").read_text()
    assert printed.strip() == markdown.strip()
    assert "Machine: Test CPU 9000, 2 threads, torch 2.x, ISA avx2" in markdown
    assert "- [FAIL] fwd within 2× of the arithmetic bound at L=8192: ours/bound 2.5×" in markdown
    assert (out / "selective_scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.main([str(bench_json), "--out", str(out), "--check"]) == 1  # a target fails


def test_machine_line_falls_back_to_pytest_benchmark_info():
    data = {"machine_info": {"cpu": {"brand_raw": "Fallback CPU"}}, "benchmarks": SYNTHETIC["benchmarks"]}
    assert report_kit.machine_line(data) == "Fallback CPU, 2 threads, torch ?, ISA avx2"


def test_slope_needs_two_lengths():
    assert report_kit.loglog_slope([(512, 3.0)]) is None
    assert report_kit.loglog_slope([(512, 3.0), (1024, 12.0)]) == pytest.approx(2.0)


# --- the layer suites (mamba_layer, mfa_block) ----------------------------------------------------

MFA_PARAMETERS = {"mfa": 8_731_392, "mfa_full": 8_731_392, "transformer": 7_087_872,
                  "transformer_matched": 8_760_128}


def _layer_entry(suite, impl, pass_name, length, median_ms, peak_mib, gflop, **extra):
    info = {"suite": suite, "impl": impl, "pass": pass_name, "L": length, "peak_mib": peak_mib, "gflop": gflop,
            "threads": 2, "isa": "avx2", "batch": 1, "d_model": 768, "dtype": "float32"}
    if suite == "mamba_layer":
        info.update(d_state=16, d_conv=4, expand=2, d_inner=1536, dt_rank=48)
    else:
        info.update(num_heads=12, transformer_ffn=3072, transformer_matched_ffn=4160, parameters=MFA_PARAMETERS[impl])
        if impl.startswith("mfa"):
            info["attn_window"] = 128 if impl == "mfa" else None
    info.update(extra)
    return {"group": f"{suite} {pass_name} L={length}",
            "name": f"test_x[{pass_name.replace('+', '')}-L{length}-{impl}]",
            "stats": {"median": median_ms / 1e3, "min": median_ms / 1e3}, "extra_info": info}


def _mamba(impl, pass_name, length, ms, mib, gflop, **extra):
    return _layer_entry("mamba_layer", impl, pass_name, length, ms, mib, gflop, **extra)


def _mfa(impl, pass_name, length, ms, mib, gflop):
    return _layer_entry("mfa_block", impl, pass_name, length, ms, mib, gflop)


LAYERS = {
    "machine_info": {"smdim_bench": {"cpu": "Test CPU 9000", "threads": 2, "torch": "2.x", "isa": "avx2"}},
    "benchmarks": [
        # fwd L=512: ours 1.5x the floor (FAIL); L=2048: 1.2x (PASS), 10x faster than MambaMixer (PASS)
        _mamba("ours", "fwd", 512, 30.0, 18.0, 3.9),
        _mamba("floor", "fwd", 512, 20.0, 15.0, 3.8),
        _mamba("ours", "fwd", 2048, 120.0, 70.0, 15.6),
        _mamba("floor", "fwd", 2048, 100.0, 60.0, 15.5),
        _mamba("hf", "fwd", 2048, 1200.0, 800.0, 15.4),
        _mamba("pscan", "fwd", 2048, 600.0, 1100.0, 15.4),
        # fwd+bwd L=2048: MambaMixer's single-shot run (time_s wins over the subprocess' stats: 50x, FAIL),
        # FLOPs not counted there; the floor has no FLOP count (smdim_kernels.flops missing)
        _mamba("ours", "fwd+bwd", 2048, 400.0, 200.0, 48.0),
        _mamba("floor", "fwd+bwd", 2048, 300.0, 190.0, None, flops_note="n/a: smdim_kernels.flops is not available"),
        _mamba("hf", "fwd+bwd", 2048, 25000.0, 3000.0, None, time_s=20.0, flops_note="n/a: not counted"),
        # MFA: at 4096 every target and aim is met; at 8192 fwd latency 1.1 (FAIL), fwd+bwd memory 0.7 (aim not met);
        # the parameter-matched transformer at fwd 4096 only
        _mfa("mfa", "fwd", 4096, 50.0, 50.0, 60.0),
        _mfa("mfa_full", "fwd", 4096, 150.0, 120.0, 130.0),
        _mfa("transformer", "fwd", 4096, 100.0, 100.0, 100.0),
        _mfa("transformer_matched", "fwd", 4096, 125.0, 110.0, 120.0),
        _mfa("mfa", "fwd", 8192, 110.0, 50.0, 60.0),
        _mfa("mfa_full", "fwd", 8192, 300.0, 120.0, 130.0),
        _mfa("transformer", "fwd", 8192, 100.0, 100.0, 100.0),
        _mfa("mfa", "fwd+bwd", 4096, 50.0, 50.0, 60.0),
        _mfa("transformer", "fwd+bwd", 4096, 100.0, 100.0, 100.0),
        _mfa("mfa", "fwd+bwd", 8192, 50.0, 70.0, 60.0),
        _mfa("transformer", "fwd+bwd", 8192, 100.0, 100.0, 100.0),
    ],
}


def test_layer_rows_use_single_shot_time_and_flops():
    rows = report_kit.collect_rows(LAYERS["benchmarks"], "mamba_layer")
    assert [(row.pass_name, row.length) for row in rows] == [("fwd", 512), ("fwd", 2048), ("fwd+bwd", 2048)]
    fwd_2048, fwdbwd_2048 = rows[1], rows[2]
    assert fwd_2048.ratio("ms", "ours", "floor") == pytest.approx(1.2)
    assert fwd_2048.ratio("ms", "hf", "ours") == pytest.approx(10.0)
    assert fwd_2048.gflop["ours"] == pytest.approx(15.6)
    assert fwdbwd_2048.ms["hf"] == pytest.approx(20000.0)  # extra_info time_s, not the stats' median
    assert "hf" not in fwdbwd_2048.gflop and "hf" in fwdbwd_2048.flops_na
    assert scan_report.scan_section(LAYERS) is None  # the selective-scan section sees none of them
    mfa_rows = report_kit.collect_rows(LAYERS["benchmarks"], "mfa_block")
    assert mfa_rows[0].ratio("gflop", "mfa", "transformer") == pytest.approx(0.6)
    assert mfa_rows[0].suite == "mfa_block"


def test_layer_tables():
    mamba = layer_report.mamba_layer_table(report_kit.collect_rows(LAYERS["benchmarks"], "mamba_layer")).splitlines()
    assert mamba[0] == ("| pass | L | ours ms | floor ms | hf ms | pscan ms | ours/floor | hf/ours | pscan/ours "
                        "| ours MiB | floor MiB | hf MiB | pscan MiB | hf/ours MiB | pscan/ours MiB "
                        "| ours GFLOP | floor GFLOP | hf GFLOP | pscan GFLOP |")
    assert mamba[3] == ("| fwd | 2048 | 120 | 100 | 1200 | 600 | 1.2× | 10× | 5× | 70 | 60 | 800 | 1100 | 11.4× "
                        "| 15.7× | 15.6 | 15.5 | 15.4 | 15.4 |")
    # n/a: ran without a FLOP count; —: did not run
    assert mamba[4] == ("| fwd+bwd | 2048 | 400 | 300 | 20000 | — | 1.33× | 50× | — | 200 | 190 | 3000 | — | 15× "
                        "| — | 48 | n/a | n/a | — |")
    mfa = layer_report.mfa_block_table(report_kit.collect_rows(LAYERS["benchmarks"], "mfa_block")).splitlines()
    assert mfa[0] == ("| pass | L | mfa ms | mfa_full ms | transformer ms | transformer_matched ms | mfa/transformer "
                      "| mfa_full/transformer | mfa/transformer_matched | mfa MiB | mfa_full MiB | transformer MiB "
                      "| transformer_matched MiB | mfa/transformer MiB | mfa_full/transformer MiB "
                      "| mfa/transformer_matched MiB | mfa GFLOP | mfa_full GFLOP | transformer GFLOP "
                      "| transformer_matched GFLOP | mfa/transformer GFLOP | mfa_full/transformer GFLOP "
                      "| mfa/transformer_matched GFLOP |")
    assert mfa[2] == ("| fwd | 4096 | 50 | 150 | 100 | 125 | 0.5× | 1.5× | 0.4× | 50 | 120 | 100 | 110 | 0.5× | 1.2× "
                      "| 0.455× | 60 | 130 | 100 | 120 | 0.6× | 1.3× | 0.5× |")
    assert mfa[3].startswith("| fwd | 8192 | 110 | 300 | 100 | — | 1.1× | 3× | — |")  # no matched case at 8192


def test_mamba_layer_targets():
    checks = {c.description: c
              for c in layer_report.mamba_layer_checks(report_kit.collect_rows(LAYERS["benchmarks"], "mamba_layer"))}
    assert checks["fwd ≤ 1.3× the projections + scan floor at L=512"].status == "FAIL"
    assert checks["fwd ≤ 1.3× the projections + scan floor at L=2048"].status == "PASS"
    assert "ours/floor 1.2×" in checks["fwd ≤ 1.3× the projections + scan floor at L=2048"].detail
    assert checks["fwd ≥ 5× faster than transformers' MambaMixer at L=2048"].status == "PASS"
    fwdbwd = checks["fwd+bwd ≥ 100× faster than transformers' MambaMixer at L=2048"]
    assert fwdbwd.status == "FAIL" and "hf/ours 50×" in fwdbwd.detail
    assert len(checks) == 4  # one floor check per forward L, two MambaMixer checks


def test_mamba_layer_targets_not_measured_name_the_plan_variable():
    rows = report_kit.collect_rows([e for e in LAYERS["benchmarks"] if e["extra_info"]["impl"] != "hf"], "mamba_layer")
    checks = {c.description: c for c in layer_report.mamba_layer_checks(rows)}
    fwd = checks["fwd ≥ 5× faster than transformers' MambaMixer at L=2048"]
    assert fwd.status == "N/A" and "SMDIM_BENCH_HF_FWD_LENGTHS" in fwd.detail
    fwdbwd = checks["fwd+bwd ≥ 100× faster than transformers' MambaMixer at L=2048"]
    assert fwdbwd.status == "N/A" and "SMDIM_BENCH_HF_FWDBWD_LENGTHS" in fwdbwd.detail


def test_mfa_block_targets_and_information():
    rows = report_kit.collect_rows(LAYERS["benchmarks"], "mfa_block")
    checks = {c.description: c for c in layer_report.mfa_block_checks(rows)}
    assert len(checks) == 12  # 2 passes x 2 lengths x (latency, memory, FLOPs)
    for metric in ("latency < 1", "peak memory < 1", "FLOPs < 1"):
        assert checks[f"fwd MFA/transformer {metric} at L=4096"].status == "PASS"
        assert checks[f"fwd+bwd MFA/transformer {metric} at L=4096"].status == "PASS"
    assert checks["fwd MFA/transformer latency < 1 at L=8192"].status == "FAIL"
    assert "mfa/transformer 1.10" in checks["fwd MFA/transformer latency < 1 at L=8192"].detail
    assert checks["fwd+bwd MFA/transformer peak memory < 1 at L=8192"].status == "PASS"
    assert checks["fwd+bwd MFA/transformer FLOPs < 1 at L=8192"].status == "PASS"
    aims = layer_report.mfa_aim_information(rows)
    assert ("- fwd+bwd L=8192: mfa/transformer peak memory 0.70 (aim ≤ 0.6: not met), FLOPs 0.60 (aim ≤ 0.7: met)"
            in aims)
    info = layer_report.mfa_full_information(rows)
    assert "- fwd L=4096: mfa_full/transformer latency 1.50, peak memory 1.20, FLOPs 1.30" in info
    assert "- fwd+bwd L=4096: mfa_full/transformer latency —, peak memory —, FLOPs —" in info
    matched = layer_report.mfa_matched_information(rows)
    assert matched[0] == "- fwd L=4096: mfa/transformer_matched latency 0.40, peak memory 0.45, FLOPs 0.50"
    assert "- fwd L=8192: mfa/transformer_matched latency —, peak memory —, FLOPs —" in matched
    assert len(matched) == 4  # both passes at 4096 and 8192


def test_mfa_flops_not_counted_is_not_a_pass():
    entries = [_mfa("mfa", "fwd", 4096, 50.0, 50.0, None), _mfa("transformer", "fwd", 4096, 100.0, 100.0, 100.0)]
    entries[0]["extra_info"]["flops_note"] = "n/a: smdim_kernels.flops is not available (x)"
    checks = {c.description: c for c in layer_report.mfa_block_checks(report_kit.collect_rows(entries, "mfa_block"))}
    flops = checks["fwd MFA/transformer FLOPs < 1 at L=4096"]
    assert flops.status == "N/A" and "FLOPs not counted" in flops.detail and "not available" in flops.detail
    assert "nothing measured at fwd+bwd L=8192" in checks["fwd+bwd MFA/transformer latency < 1 at L=8192"].detail


def test_main_writes_every_section(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    data = {"machine_info": SYNTHETIC["machine_info"], "benchmarks": SYNTHETIC["benchmarks"] + LAYERS["benchmarks"]}
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert report.main([str(bench_json), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (out / "benchmarks.md").read_text().strip()
    sections = [(out / f"{name}.md").read_text() for name in ("selective_scan", "mamba_layer", "mfa_block")]
    assert sections[0].startswith("# Selective scan benchmark")
    assert sections[1].startswith("# Mamba layer benchmark")
    assert sections[2].startswith("# MFA block vs transformer block benchmark")
    assert all(section.strip() in printed for section in sections)
    assert printed.index("# Selective scan") < printed.index("# Mamba layer") < printed.index("# MFA block")
    assert "Timed once (one cold run in the process that measured its memory): hf fwd+bwd L=2048." in sections[1]
    assert "MFA attention window 128 each side" in sections[2]
    assert ("transformer FFN 3072, transformer_matched FFN 4160; parameters: mfa 8.73 M, mfa_full 8.73 M, "
            "transformer 7.09 M (-18.8% vs mfa), transformer_matched 8.76 M (+0.3% vs mfa).") in sections[2]
    assert ("MFA / parameter-matched transformer block (information, not a target):\n\n"
            "- fwd L=4096: mfa/transformer_matched latency 0.40, peak memory 0.45, FLOPs 0.50") in sections[2]
    assert "Full-attention MFA / transformer block (information, not a target" in sections[2]
    assert "as aims (information, not targets)" in sections[2]
    assert "**All targets**:" in printed
    for name in ("selective_scan", "mamba_layer", "mfa_block"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.main([str(bench_json), "--out", str(out), "--check"]) == 1


def test_main_with_layer_suites_only(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    passing = {"machine_info": LAYERS["machine_info"],
               "benchmarks": [e for e in LAYERS["benchmarks"]
                              if e["extra_info"]["suite"] == "mfa_block" and e["extra_info"]["L"] == 4096]}
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps(passing))
    out = tmp_path / "out"
    assert report.main([str(bench_json), "--out", str(out), "--check"]) == 0  # N/A is not a failure
    assert not (out / "selective_scan.md").exists() and (out / "mfa_block.png").exists()
    assert "**All targets**" not in capsys.readouterr().out  # one section: no grand total


def test_main_without_benchmarks_fails(tmp_path):
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps({"benchmarks": [SYNTHETIC["benchmarks"][-1]]}))
    assert report.main([str(bench_json), "--out", str(tmp_path / "out")]) == 2


# --- the plan of the scan and layer suites --------------------------------------------------------

PLAN_VARIABLES = ("SMDIM_BENCH_QUICK", "SMDIM_BENCH_LENGTHS", "SMDIM_BENCH_NAIVE_FWD_MAX_L",
                  "SMDIM_BENCH_NAIVE_FWDBWD_MAX_L", "SMDIM_BENCH_PSCAN_MAX_L", "SMDIM_BENCH_HF_FWD_LENGTHS",
                  "SMDIM_BENCH_HF_FWDBWD_LENGTHS", "SMDIM_BENCH_LAYER_PSCAN_MAX_L", "SMDIM_BENCH_FULL_ATTN_MAX_L")


@pytest.fixture
def plan_env(monkeypatch):
    for name in PLAN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _ids(settings, suite):
    return [case.id for case in settings.layer_cases(suite)]


def test_quick_scan_plan_leaves_out_the_naive_backward(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_QUICK", "1")
    cases = BenchSettings.from_env().scan_cases()
    assert [case.id for case in cases] == ["fwd-L512-ours", "fwd-L512-naive", "fwd-L512-pscan", "fwd-L512-bound",
                                           "fwdbwd-L512-ours", "fwdbwd-L512-pscan"]
    assert cases[-1].group == "selective_scan fwd+bwd L=512"
    plan_env.setenv("SMDIM_BENCH_PSCAN_MAX_L", "256")
    assert [case.impl for case in BenchSettings.from_env().scan_cases()] == ["ours", "naive", "bound", "ours"]


def test_full_plan_runs_mamba_mixer_once_per_pass_at_2048(plan_env):
    from benchmarks.settings import BenchSettings

    settings = BenchSettings.from_env()
    ids = _ids(settings, "mamba_layer")
    assert [i for i in ids if i.endswith("-hf")] == ["fwd-L2048-hf", "fwdbwd-L2048-hf"]
    assert len(ids) == 2 * 5 * 3 + 2  # ours, floor, pscan at every L and pass, MambaMixer twice
    single = [case for case in settings.layer_cases("mamba_layer") if case.single_shot]
    assert [case.id for case in single] == ["fwdbwd-L2048-hf"]
    assert len(_ids(settings, "mfa_block")) == 2 * 5 * 4  # mfa, mfa_full, both transformer blocks


def test_quick_plan_skips_the_slow_peer(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_QUICK", "1")
    ids = _ids(BenchSettings.from_env(), "mamba_layer")
    assert ids == ["fwd-L512-ours", "fwd-L512-floor", "fwd-L512-hf", "fwd-L512-pscan",
                   "fwdbwd-L512-ours", "fwdbwd-L512-floor", "fwdbwd-L512-pscan"]
    assert _ids(BenchSettings.from_env(), "mfa_block") == [
        "fwd-L512-mfa", "fwd-L512-mfa_full", "fwd-L512-transformer", "fwd-L512-transformer_matched",
        "fwdbwd-L512-mfa", "fwdbwd-L512-mfa_full", "fwdbwd-L512-transformer", "fwdbwd-L512-transformer_matched"]


def test_layer_plan_variables(plan_env):
    from benchmarks.settings import BenchSettings

    plan_env.setenv("SMDIM_BENCH_LENGTHS", "512,2048,8192")
    plan_env.setenv("SMDIM_BENCH_HF_FWDBWD_LENGTHS", "none")
    plan_env.setenv("SMDIM_BENCH_HF_FWD_LENGTHS", "512,4096")  # 4096 is not in the plan's lengths
    plan_env.setenv("SMDIM_BENCH_LAYER_PSCAN_MAX_L", "2048")
    plan_env.setenv("SMDIM_BENCH_FULL_ATTN_MAX_L", "512")
    settings = BenchSettings.from_env()
    mamba = _ids(settings, "mamba_layer")
    assert [i for i in mamba if i.endswith("-hf")] == ["fwd-L512-hf"]
    assert "fwd-L2048-pscan" in mamba and "fwd-L8192-pscan" not in mamba
    mfa = _ids(settings, "mfa_block")
    assert "fwdbwd-L8192-mfa" in mfa and "fwd-L2048-transformer" not in mfa and "fwd-L512-mfa_full" in mfa
    assert "fwd-L512-transformer_matched" in mfa and "fwd-L2048-transformer_matched" not in mfa  # full attention
    plan_env.setenv("SMDIM_BENCH_HF_FWDBWD_LENGTHS", "2048,x")
    with pytest.raises(ValueError, match="SMDIM_BENCH_HF_FWDBWD_LENGTHS"):
        BenchSettings.from_env()


# --- the scan and layer cases themselves, at a tiny L (what the benchmarks run, minus the timing) ---

def test_scan_guard_and_runners_at_a_tiny_length():
    from benchmarks.scan_cases import make_scan_problem, make_scan_runner
    from benchmarks.scan_guard import ScanGuard

    assert "max relative error" in ScanGuard().verify("fwd+bwd", 32)
    with pytest.raises(AssertionError, match="correctness guard failed"):
        ScanGuard(max_relative_error=-1.0).verify("fwd", 32)  # no error is below a negative tolerance
    with pytest.raises(ValueError, match="forward pass only"):
        make_scan_runner("bound", "fwd+bwd", make_scan_problem(32, requires_grad=True))


def test_layer_guard_and_runners_at_a_tiny_length():
    pytest.importorskip("smdim_kernels")
    from benchmarks import layers
    from benchmarks.layer_guard import LayerGuard

    guard = LayerGuard()
    assert "max abs error" in guard.verify("mamba_layer", "fwd", 32)
    assert "max relative error" in guard.verify("mamba_layer", "fwd+bwd", 32)
    if layers.mfa_block_class() is not None:
        summary = guard.verify("mfa_block", "fwd+bwd", 32)
        assert "transformer attention runs" in summary and "transformer_matched attention runs" in summary
        assert "transformer_matched parameters within 1% of mfa's" in summary
    floor = layers.make_layer_runner("floor", "fwd+bwd", 24)
    outputs, grads = floor()
    assert [tuple(out.shape) for out in outputs] == [tuple(shape) for shape in layers.floor_output_shapes(24)]
    assert len(grads) == len(layers.FLOOR_INPUT_NAMES) and layers.all_finite((outputs, grads))
    gflop, note = layers.count_gflop(floor)
    if gflop is not None:  # GEMMs 2*L*(3072*768 + 80*1536 + 1536*48 + 768*1536), fwd + 2 x bwd, + the scan's
        gemms = 2 * 24 * (3072 * 768 + 80 * 1536 + 1536 * 48 + 768 * 1536)
        assert gflop * 1e9 > 3 * gemms
        assert all(leaf.grad is None for leaf in floor.leaves)  # counting left no .grad behind


def _mfa_block_or_skip():
    from benchmarks import layers

    if layers.mfa_block_class() is None:
        pytest.skip(layers.unavailable_reason(layers.MFA))
    return layers


def test_the_matched_transformer_has_the_mfa_blocks_parameter_count():
    layers = _mfa_block_or_skip()
    ffn = layers.matched_transformer_ffn()
    assert ffn % layers.FFN_WIDTH_MULTIPLE == 0 and ffn > layers.TRANSFORMER_FFN
    mfa, matched, same_width = (layers.parameter_count(layers.build_module(impl))
                                for impl in ("mfa", "transformer_matched", "transformer"))
    assert abs(matched - mfa) <= 0.01 * mfa
    assert same_width == layers.parameter_count(layers.transformer_block(layers.TRANSFORMER_FFN, device="meta"))
    for neighbour in (ffn - layers.FFN_WIDTH_MULTIPLE, ffn + layers.FFN_WIDTH_MULTIPLE):  # the nearest multiple
        count = layers.parameter_count(layers.transformer_block(neighbour, device="meta"))
        assert abs(count - mfa) > abs(matched - mfa)
    assert layers.parameter_mismatch("transformer_matched", "mfa") is None
    assert f"{matched:,} parameters" in layers.parameter_mismatch("transformer_matched", "mfa", tolerance=-1.0)


def test_the_matched_transformers_flops_are_counted_like_the_others():
    layers = _mfa_block_or_skip()
    length = 16
    gflop = {impl: layers.count_gflop(layers.make_layer_runner(impl, "fwd", length))[0]
             for impl in ("transformer", "transformer_matched")}
    if gflop["transformer"] is None:
        pytest.skip("smdim_kernels.flops is not available")
    # the two blocks differ only in their FFN's two GEMMs: 2 FLOPs per multiply-add, L x d_model x extra width each
    extra = 2 * 2 * length * layers.D_MODEL * (layers.matched_transformer_ffn() - layers.TRANSFORMER_FFN)
    assert (gflop["transformer_matched"] - gflop["transformer"]) * 1e9 == pytest.approx(extra, rel=1e-6)


def test_flops_fall_back_to_not_available(monkeypatch):
    import sys

    from benchmarks import layers

    monkeypatch.setitem(sys.modules, "smdim_kernels.flops", None)  # importing it now raises ImportError
    gflop, note = layers.count_gflop(layers.make_layer_runner("ours", "fwd", 16))
    assert gflop is None and note.startswith("n/a: smdim_kernels.flops is not available")


def test_layer_memory_subprocess_waits_for_go():
    from benchmarks.memory import start_peak_memory

    pending = start_peak_memory("ours", "fwd+bwd", 64, 1, suite="mamba_layer", timeout_s=300)
    measurement = pending.result()
    assert measurement.peak_mib > 0 and measurement.seconds > 0
    start_peak_memory("ours", "fwd", 64, 1, suite="mamba_layer").cancel()


def _studio_bench(style, task, seconds, training_length=256):
    info = {"suite": "studio", "style": style, "task": task, "steps": 32, "order": "confidence",
            "training_length": training_length, "target_s": 5.0}
    info.update({"bars": "2-17", "piece": "han1.abc#87", "piece_tokens": 1124} if task.startswith("infill")
                else {"tokens": 512})
    return {"extra_info": info, "stats": {"median": seconds}}


def test_studio_section_orders_models_and_checks_the_latency_target(tmp_path, capsys):
    data = {"benchmarks": [_studio_bench("bach", "generate-512", 7.5, 1024), _studio_bench("han", "generate-512", 1.9),
                           _studio_bench("han", "infill-16-bars", 0.8)]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    assert report.main([str(path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "studio.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| han", "| bach"))]
    assert [r.split(" | ")[1] for r in rows] == ["infill-16-bars", "generate-512", "generate-512"]
    assert "bars 2-17 of held-out piece han1.abc#87 (1124 tokens)" in rows[0] and rows[2].endswith("| 7.50 |")
    assert "- [PASS] han infill-16-bars within 5 s: 0.80 s" in text
    assert "- [FAIL] bach generate-512 within 5 s: 7.50 s" in text
    assert not (tmp_path / "out" / "studio.png").exists()
    assert report.main([str(path), "--out", str(tmp_path / "out"), "--check"]) == 1


def _hf_bench(pass_name, length, impl, seconds, layers=24):
    info = {"suite": "transformers", "pass_name": pass_name, "L": length, "impl": impl, "layers": layers,
            "check": "outputs agree"}
    return {"extra_info": info, "stats": {"median": seconds}}


def test_transformers_section_checks_the_speedups_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    data = {"benchmarks": [_hf_bench("forward", 2048, "transformers", 10.0), _hf_bench("forward", 2048,
                                                                                       "transformers+smdim", 2.0),
                           _hf_bench("forward+backward", 2048, "transformers", 100.0, layers=1),
                           _hf_bench("forward+backward", 2048, "transformers+smdim", 2.0, layers=1)]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    assert report.main([str(path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "transformers.md").read_text()
    assert "| forward | 2048 | 24 | 10 s | 2 s | 5× | outputs agree |" in text
    assert "- [PASS] forward at L=2048 at least 4x the unpatched path: 5×" in text
    assert "- [FAIL] forward+backward at L=2048 at least 100x the unpatched path: 50×" in text
    assert (tmp_path / "out" / "transformers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.main([str(path), "--out", str(tmp_path / "out"), "--check"]) == 1
