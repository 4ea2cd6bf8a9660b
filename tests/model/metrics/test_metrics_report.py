"""smdim.metrics.report: the markdown table and CI formatting."""
import pytest

from smdim import metrics as M


def test_format_table():
    rows = {
        "mean OA": {"ours": M.CI(0.8123, 0.79, 0.83), "baseline": (0.75, 0.70, 0.80), "real-vs-real": 0.97},
        "pitch | var": {"ours": float("nan"), "baseline": None, "real-vs-real": 3},
    }
    lines = M.format_table(rows).splitlines()
    assert lines[0] == "| metric | ours | baseline | real-vs-real |"
    assert lines[1] == "| --- | --- | --- | --- |"
    assert lines[2] == "| mean OA | 0.812 ± 0.020 | 0.750 ± 0.050 | 0.970 |"
    assert lines[3] == "| pitch \\| var | — | — | 3 |"
    assert "0.812 [0.790, 0.830]" in M.format_table(rows, style="interval")
    assert M.format_table([{"a": 1.0}], digits=1) == "| a |\n| --- |\n| 1.0 |"
    assert M.format_table([{"a": True, "b": "x\ny"}]).splitlines()[2] == "| True | x y |"
    with pytest.raises(ValueError, match="rows is empty"):
        M.format_table([])


def test_ci_format():
    ci = M.CI(0.5, 0.4, 0.7)
    assert ci.half_width == pytest.approx(0.15) and ci.contains(0.4) and not ci.contains(0.71)
    assert str(ci) == "0.500 ± 0.150" and ci.format(1, "interval") == "0.5 [0.4, 0.7]"
    assert M.CI(float("nan"), 0, 1).format() == "—" and M.CI(0.5, float("nan"), 1).format() == "0.500"
    with pytest.raises(ValueError, match="style"):
        ci.format(style="bogus")
