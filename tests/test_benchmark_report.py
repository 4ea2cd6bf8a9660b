"""The selective-scan benchmark report (benchmarks/report.py) on a tiny synthetic pytest-benchmark JSON."""
import json

import pytest

from benchmarks import report


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


def test_rows_and_ratios():
    rows = report.collect_rows(SYNTHETIC["benchmarks"])
    assert [(row.pass_name, row.length) for row in rows] == [
        ("fwd", 2048), ("fwd", 8192), ("fwd+bwd", 2048), ("fwd+bwd", 8192)]
    fwd_2048 = rows[0]
    assert fwd_2048.ms["ours"] == pytest.approx(2.0)
    assert fwd_2048.speedup("naive") == pytest.approx(50.0)
    assert fwd_2048.speedup("pscan") == pytest.approx(100.0)
    assert fwd_2048.bound_ratio() == pytest.approx(1.5)
    assert rows[1].speedup("naive") is None  # naive not run at 8192
    assert rows[3].memory_ratio("pscan") == pytest.approx(10.0)
    assert report.memory_slope(rows, "fwd+bwd") == pytest.approx(1.0)
    assert report.memory_slope(rows, "fwd") == pytest.approx(1.0)


def test_table_cells():
    table = report.markdown_table(report.collect_rows(SYNTHETIC["benchmarks"]))
    lines = table.splitlines()
    assert lines[0].startswith("| pass | L | ours ms | naive ms | pscan ms | bound ms |")
    assert lines[2] == "| fwd | 2048 | 2 | 100 | 200 | 1.33 | 50× | 100× | 1.5× | 10 | 200 | 1000 | 0 | 100× |"
    assert lines[5] == "| fwd+bwd | 8192 | 40 | — | 1600 | — | — | 40× | — | 100 | — | 1000 | — | 10× |"


def test_targets():
    checks = {check.description: check for check in report.check_targets(report.collect_rows(SYNTHETIC["benchmarks"]))}
    assert checks["fwd ≥ 30× faster than naive at L=2048"].status == "PASS"
    assert checks["fwd ≥ 30× faster than naive at L=8192"].status == "N/A"
    assert checks["fwd ≥ 30× faster than pscan at L=8192"].status == "PASS"
    assert checks["fwd+bwd ≥ 30× faster than pscan at L=8192"].status == "PASS"
    assert checks["fwd within 2× of the arithmetic bound at L=2048"].status == "PASS"
    assert checks["fwd within 2× of the arithmetic bound at L=8192"].status == "FAIL"
    assert checks["fwd+bwd peak memory ≤ 1/8 of pscan's at L=8192"].status == "PASS"
    assert "slope of log(MiB) vs log(L) = 1.00" in checks["ours' fwd+bwd memory grows at most linearly in L"].detail


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
    assert report.machine_line(data) == "Fallback CPU, 2 threads, torch ?, ISA avx2"


def test_slope_needs_two_lengths():
    assert report.loglog_slope([(512, 3.0)]) is None
    assert report.loglog_slope([(512, 3.0), (1024, 12.0)]) == pytest.approx(2.0)
