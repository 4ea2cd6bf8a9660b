"""`smdim study`: cells, the steps-matched reading, and resuming an interrupted study (finished stages kept)."""
import json

import pytest

from smdim.checkpoint import load_checkpoint
from smdim.cli import main
from smdim.pipeline import UserError
from smdim.study import FINAL, Study, StudyConfig, parse_cell, steps_matched
from smdim.study_report import _ratio_range, collect, step_time_ratios, turn_rates


def test_cells_parse_and_bad_ones_are_named():
    cell = parse_cell("palestrina@2048:1800")
    assert (cell.corpus, cell.seq_len, cell.budget, cell.name) == ("palestrina", 2048, 1800.0, "palestrina@2048")
    assert parse_cell("bach@1024", 60).budget == 60
    for bad in ("bach", "bach@abc:10", "bach@1023:10", "bach@1024", "bach@1024:-5"):
        with pytest.raises(UserError, match="corpus@length"):
            parse_cell(bad)


def test_steps_matched_reads_both_curves_at_the_common_step():
    training = {"SMDIM": {"steps": 30, "curve": [{"step": 10, "valid_bits": 3.0}, {"step": 30, "valid_bits": 2.0}]},
                "transformer": {"steps": 50, "curve": [{"step": 20, "valid_bits": 4.0},
                                                       {"step": 40, "valid_bits": 3.0}]}}
    out = steps_matched(training)
    assert out == {"steps": 30, "SMDIM": 2.0, "transformer": pytest.approx(3.5)}


def tiny_config():
    return StudyConfig(cells=["han@32:1"], n=4, steps=2, curve_steps=(2,), curve_n=2,
                       drift_min_len=32, drift_n=3, n_boot=5, warmup=2)


def test_an_interrupted_study_resumes_and_keeps_finished_stages(tmp_path, monkeypatch):
    out = tmp_path / "study"
    calls = []

    def interrupted_curve(self, *args):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(Study, "curve_cell", interrupted_curve)
    with pytest.raises(KeyboardInterrupt):
        Study(out, tiny_config(), progress=False).run()
    cell = out / "han@32"
    finals = {kind: (cell / kind / FINAL).stat().st_mtime_ns for kind in ("smdim", "transformer")}
    evaluation = (cell / "evaluation.json").stat().st_mtime_ns
    assert calls and not (cell / "curve.json").exists()
    assert "Pending" not in (out / "study.md").read_text()  # the evaluated cell is in the table
    monkeypatch.undo()

    path = Study(out, tiny_config(), progress=False).run()
    assert {kind: (cell / kind / FINAL).stat().st_mtime_ns for kind in finals} == finals  # not retrained
    assert (cell / "evaluation.json").stat().st_mtime_ns == evaluation                     # not re-evaluated
    curve = json.loads((cell / "curve.json").read_text())
    assert {(p["model"], p["order"]) for p in curve["points"]} == {
        (m, o) for m in ("SMDIM", "transformer") for o in ("random", "confidence", "anchors")}
    drift = json.loads((cell / "drift.json").read_text())
    assert set(drift["lengths"]) == {"32", "64"} and drift["format"] == 2
    for d in drift["lengths"].values():     # drift_n pieces whatever the number of long real windows
        assert d["generated"] == 3
        assert {"SMDIM/random", "transformer/anchors", "SMDIM − transformer/random",
                "SMDIM/confidence − random"} <= set(d["whole"])
    report = path.read_text()
    assert "han@32" in report and "Quality at equal CPU budget" in report and "Drift" in report
    data = json.loads((out / "study.json").read_text())
    assert data["cells"]["han@32"]["training"]["smdim"]["done"]
    from smdim.machine import cpu_name

    assert data["cells"]["han@32"]["training"]["transformer"]["machines"] == [cpu_name()]   # kept in final.pt
    assert f"- han@32: smdim on {cpu_name()}; transformer on {cpu_name()}" in report
    assert all((out / "plots" / p).exists() for p in ("learning_curves.png", "quality_vs_steps.png", "drift.png"))
    assert "held-out test windows of 32 tokens" in report
    # a drift result of an older format is computed again on the next run; the other stages are kept
    (cell / "drift.json").write_text(json.dumps({"lengths": {}}))
    curve_written = (cell / "curve.json").stat().st_mtime_ns
    Study(out, tiny_config(), progress=False).run()
    assert json.loads((cell / "drift.json").read_text())["format"] == 2
    assert (cell / "curve.json").stat().st_mtime_ns == curve_written


class TrainingDone(Exception):
    pass


def test_the_two_models_train_in_alternating_turns(tmp_path, monkeypatch):
    """slice_s: turns in ABBA order, each run paused and resumed at whole turns, both finished at the
    budget; the report says how they shared the machine."""
    ticks = {"s": 0.0}

    def clock(kind):  # each reading 1/8 s later: steps of 0.125 s, turns of 2 steps, budgets of 8
        ticks["s"] += 0.125
        return ticks["s"]

    def stop(self, *args):
        raise TrainingDone

    monkeypatch.setattr("smdim.train.clock_seconds", clock)
    monkeypatch.setattr(Study, "evaluate_cell", stop)
    config = tiny_config()
    config.slice_s = 0.25
    lines = []
    with pytest.raises(TrainingDone):
        Study(tmp_path / "study", config, progress=False, log=lines.append).run()
    turns = [line.split(": training ")[1] for line in lines if line.startswith("[study] han@32: training")]
    order = [t.split(" ")[0] for t in turns]
    assert order == ["SMDIM", "transformer", "transformer", "SMDIM", "SMDIM", "transformer", "transformer", "SMDIM"]
    assert turns[0].startswith("SMDIM to 0.25 of 1 s") and "resuming at step 2" in turns[3]
    assert turns[-1].startswith("SMDIM to 1 s") and "resuming at step 6" in turns[-1]
    for kind in ("smdim", "transformer"):
        final = load_checkpoint(tmp_path / "study" / "han@32" / kind / FINAL)
        assert final["step"] == 8 and final["seconds"] == 1.0
    assert "alternating turns of 0.25 s" in (tmp_path / "study" / "study.md").read_text()
    training = collect(tmp_path / "study", [parse_cell("han@32:1")], 0.25)["han@32"]["training"]
    assert training["smdim"]["turn_rates"] == training["transformer"]["turn_rates"] == [8.0] * 4


def test_turn_rates_and_the_step_time_ratio_per_turn():
    # turns of 2 s: four steps of 0.5 s in turn 0; in turn 1 a step of 1 s, then one of 3 s (begun in turn 1, it
    # counts there) that skips turn 2; two steps of 0.5 s in turn 3
    history = [{"seconds": s} for s in (0.5, 1.0, 1.5, 2.0, 3.0, 6.0, 6.5, 7.0)]
    assert turn_rates(history, 2.0) == [2.0, 0.5, None, 2.0]
    assert turn_rates(history, 0.0) == []
    assert step_time_ratios([2.0, 0.5, None, 2.0], [3.0, 1.0, 4.0]) == [1.5, 2.0]
    training = {"smdim": {"turn_rates": [2.0, 1.0, 2.0]}, "transformer": {"turn_rates": [3.0, 1.2, 2.8]}}
    assert _ratio_range(training) == "1.40 (1.20–1.50, 3 turns)"
    assert _ratio_range({"smdim": {"turn_rates": []}, "transformer": {}}) == "—"


def test_a_study_folder_keeps_its_settings(tmp_path):
    out = tmp_path / "study"
    Study(out, tiny_config(), progress=False).check_folder()
    other = tiny_config()
    other.n = 8
    with pytest.raises(UserError, match="other settings"):
        Study(out, other, progress=False).check_folder()
    longer = tiny_config()
    longer.cells = ["han@32:5"]
    with pytest.raises(UserError, match="budget cannot change"):
        Study(out, longer, progress=False).check_folder()
    # a study stored before turns existed trained one model after the other, and goes on so
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    stored = dict(tiny_config().to_dict(), format=1)
    del stored["slice_s"]
    (legacy / "study_config.json").write_text(json.dumps(stored))
    again = StudyConfig.from_dict(json.loads((legacy / "study_config.json").read_text()))
    assert again.slice_s == 0 and again.curve_steps == (2,)
    Study(legacy, again, progress=False).check_folder()
    with pytest.raises(UserError, match="other settings"):
        Study(legacy, tiny_config(), progress=False).check_folder()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        Study(tmp_path / "busy", tiny_config(), progress=False).check_folder()


def test_study_help_and_bad_cells(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    assert "continues where it stopped" in " ".join(capsys.readouterr().out.split())
    assert main(["study", "--out", str(tmp_path / "s"), "--cells", "bach@100"]) == 2
    assert "corpus@length" in capsys.readouterr().err


def test_study_orders_map_to_sampler_arguments():
    from smdim.study import order_kwargs
    from smdim.tokenizer import bar_id, make_tokenizer

    tok = make_tokenizer()
    assert order_kwargs("random", tok) == {"order": "random"}
    anchors = order_kwargs("anchors", tok)
    assert anchors["order"] == "confidence" and anchors["priority"][bar_id(tok)] > 0
    assert int((anchors["priority"] > 0).sum()) == 1 + len([t for t in tok.vocab if t.startswith("TimeSig_")])
    with pytest.raises(UserError, match="unmasking order"):
        order_kwargs("sideways", tok)
