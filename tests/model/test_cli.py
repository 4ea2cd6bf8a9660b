"""The `smdim` command line end to end on tiny settings: train, generate, infill, continue,
evaluate, demo, --help everywhere, and one-line errors for user mistakes."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from symusic import Score

from smdim.cli import build_parser, main

COMMANDS = ("corpora", "train", "generate", "infill", "continue", "evaluate", "study", "demo")


def test_console_script_and_help():
    proc = subprocess.run([sys.executable, "-m", "smdim.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout and "demo" in proc.stdout
    if shutil.which("smdim"):
        assert subprocess.run(["smdim", "--help"], capture_output=True).returncode == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: smdim " + command in capsys.readouterr().out


def _midi_files(folder):
    return sorted(Path(folder).glob("*.mid"))


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_generate_writes_playable_midi_and_piano_rolls(checkpoint, tmp_path, order):
    out = tmp_path / "gen"
    assert main(["--threads", "1", "generate", "--checkpoint", str(checkpoint), "--n", "2", "--steps", "4",
                 "--out", str(out), "--pitch-range", "60", "72", "--max-chord", "2", "--order", order]) == 0
    files = _midi_files(out)
    assert len(files) == 2 and all((f.with_suffix(".png")).is_file() for f in files)
    for f in files:
        score = Score(str(f))  # readable by symusic
        for track in score.tracks:
            assert all(60 <= note.pitch <= 72 for note in track.notes)


def test_generate_longer_than_training_length(checkpoint, tmp_path):
    assert main(["--threads", "1", "generate", "--checkpoint", str(checkpoint), "--n", "1", "--length", "150",
                 "--steps", "2", "--out", str(tmp_path)]) == 0
    assert len(_midi_files(tmp_path)) == 1


def test_generate_without_a_checkpoint_plays_the_bundled_model_with_sound(tmp_path, capsys):
    """The issue's fresh-install check: `smdim generate --n 2 --wav`, no checkpoint, offline."""
    import wave

    import numpy as np

    from smdim import audio

    pytest.importorskip("tinysoundfont", reason="the audio step of the README's set-up is not installed")
    assert main(["--threads", "1", "generate", "--n", "2", "--wav", "--out", str(tmp_path / "gen")]) == 0
    assert "the bundled han model" in capsys.readouterr().err
    files = _midi_files(tmp_path / "gen")
    assert len(files) == 2
    for f in files:
        score = Score(str(f))
        assert score.note_num() > 0
        seconds = Score(str(f), ttype="second").end()              # the MIDI's length in seconds
        with wave.open(str(f.with_suffix(".wav"))) as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
            length = w.getnframes() / w.getframerate()
        assert abs(length - (seconds + audio.RELEASE_S)) < 0.1, (length, seconds)
        assert np.abs(samples).max() > 1000                          # audible, not silence


@pytest.mark.parametrize("argv, message", [
    (["--style", "jazz"], "--style: no bundled model plays 'jazz'; bundled styles: han"),
    (["--style", "han", "--checkpoint", "x.pt"], "--style picks a bundled model; a --checkpoint plays the style"),
    (["--no-ema"], "--no-ema: a bundled model holds only its EMA weights"),
])
def test_bundled_model_errors_are_one_line(argv, message, tmp_path, capsys):
    assert main(["generate", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_models_lists_the_bundled_models_with_their_evaluation(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "| han | han | 256 |" in out and "real vs real" in out and "scripts/bundle_models.py" in out


@pytest.fixture
def song(tmp_path):
    """A 6-bar melody written with symusic."""
    from symusic import Note, Track

    score = Score(480)
    track = Track()
    for i in range(24):
        track.notes.append(Note(i * 480, 400, 60 + (i % 8), 80))
    score.tracks.append(track)
    path = tmp_path / "song.mid"
    score.dump_midi(str(path))
    return path


def test_infill_and_continue(checkpoint, song, tmp_path):
    assert main(["--threads", "1", "infill", "--checkpoint", str(checkpoint), "--midi", str(song), "--bars", "1", "2",
                 "--steps", "3", "--out", str(tmp_path / "infill")]) == 0
    assert {f.name for f in _midi_files(tmp_path / "infill")} == {"original.mid", "infill_0.mid"}
    assert main(["--threads", "1", "continue", "--checkpoint", str(checkpoint), "--midi", str(song),
                 "--prefix-bars", "2", "--length", "120", "--steps", "3", "--out", str(tmp_path / "cont")]) == 0
    assert len(_midi_files(tmp_path / "cont")) == 1


def _table(text):
    """{row: [cells]} of the markdown table in `text`."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[2:]}, [c.strip() for c in rows[0]]


def test_evaluate_without_a_checkpoint_reproduces_the_bundled_record(cache_dir, tmp_path, capsys):
    """The bundled han model scored on its recorded test split: the NLL (independent of --n and --steps)
    is the float16 NLL its record states."""
    from smdim.bundled import find_bundled

    assert main(["--threads", "1", "evaluate", "--n", "4", "--steps", "2", "--bootstrap", "10",
                 "--cache-dir", cache_dir, "--out", str(tmp_path)]) == 0
    table, header = _table(capsys.readouterr().out)
    assert header == ["metric", "model", "real vs real"]
    recorded = find_bundled("han").record["float16_check"]["nll_float16"]
    assert table["NLL test (bits/token, MDLM bound)"][0].startswith(f"{recorded:.3f} ± ")


def test_evaluate_with_the_model_as_its_own_baseline_gives_identical_columns(checkpoint, cache_dir, tmp_path, capsys):
    assert main(["--threads", "1", "evaluate", "--checkpoint", str(checkpoint), "--baseline", str(checkpoint),
                 "--n", "4", "--steps", "2", "--bootstrap", "10", "--cache-dir", cache_dir,
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    table, header = _table(text)
    assert header == ["metric", "model", "baseline", "real vs real", "model − baseline"]
    for row in ("NLL test (bits/token, MDLM bound)", "framewise pitch consistency (published)",
                "framewise duration variance (pooled)", "attribute OA, mean (KDE overlap)",
                "copy rate (16-gram, transposition-invariant)", "invalid tokens", "pieces"):
        assert row in table, row
    for row, cells in table.items():
        assert cells[0] == cells[1], row           # same weights, same seed: the same numbers
        if cells[3] not in ("", "—"):
            assert cells[3] in ("0.000 ± 0.000", "0.000"), (row, cells[3])  # the paired difference is exactly 0
    assert table["NLL test (bits/token, MDLM bound)"][0] != "—"
    assert "framewise (published):" in text and "paired bootstrap" in text and "not comparable with autoregressive" \
        in text
    assert "| metric | model | baseline |" in (tmp_path / "evaluation.md").read_text()


def test_resume_from_the_command_line(checkpoint, tmp_path, cache_dir):
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run)
    assert main(["--threads", "1", "train", "--data", "han", "--out", str(run), "--steps", "5", "--batch-size", "2",
                 "--seq-len", "64", "--eval-every", "3", "--resume", "--cache-dir", cache_dir]) == 0
    from smdim.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoint.pt")["step"] == 5


@pytest.mark.parametrize("argv,message", [
    (["generate", "--checkpoint", "/nonexistent/ck.pt"], "checkpoint not found"),
    (["train", "--data", "/nonexistent/folder"], "--data: /nonexistent/folder does not exist"),
    (["train", "--data", "han", "--preset", "huge"], "preset must be one of"),
])
def test_user_errors_are_one_line_without_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_bad_midi_is_a_user_error(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.mid"
    bad.write_text("not midi")
    assert main(["infill", "--checkpoint", str(checkpoint), "--midi", str(bad), "--bars", "0", "0"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_demo_end_to_end(tmp_path, cache_dir, capsys):
    out = tmp_path / "demo"
    assert main(["--threads", "1", "demo", "--out", str(out), "--time-budget", "4", "--n", "4",
                 "--cache-dir", cache_dir]) == 0
    # the two models took turns (8 each of 0.25 s, fewer when a step overran a turn), SMDIM first
    turns = [line.split()[2] for line in capsys.readouterr().out.splitlines() if line.startswith("[demo] training ")
             and " to " in line]
    assert turns[:2] == ["SMDIM-tiny", "transformer-tiny"] and min(map(turns.count, set(turns))) >= 2
    report = (out / "report.md").read_text()
    assert "alternating turns of 0.25 s" in report
    assert "SMDIM-tiny" in report and "transformer-tiny" in report and "real vs real" in report
    assert (out / "training_curves.png").is_file()
    assert len(_midi_files(out / "generated")) == 4 and len(list((out / "generated").glob("*.png"))) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["infill_kept_clamped_tokens"] is True
    for f in _midi_files(out / "generated") + _midi_files(out / "infilled"):
        Score(str(f))
    assert "framewise pitch consistency (published)" in report and "model − baseline" not in report
    assert "SMDIM-tiny − transformer-tiny" in report and "paired bootstrap" in report
    # Run again into the same folder: refused unless --overwrite.
    assert main(["demo", "--out", str(out), "--cache-dir", cache_dir]) == 2


@pytest.mark.parametrize("argv,message", [
    (["generate", "--checkpoint", "ck.pt", "--n", "0"], "argument --n: expected an integer >= 1; got '0'"),
    (["generate", "--checkpoint", "ck.pt", "--length", "-3"], "argument --length: expected an integer >= 1; got '-3'"),
    (["infill", "--checkpoint", "ck.pt", "--midi", "a.mid", "--bars", "0", "1", "--steps", "0"],
     "argument --steps: expected an integer >= 1; got '0'"),
    (["continue", "--checkpoint", "ck.pt", "--midi", "a.mid", "--prefix-bars", "0"],
     "argument --prefix-bars: expected an integer >= 1; got '0'"),
    (["continue", "--checkpoint", "ck.pt", "--midi", "a.mid", "--length", "x"],
     "argument --length: expected an integer >= 1; got 'x'"),
    (["evaluate", "--checkpoint", "ck.pt", "--n", "0"], "argument --n: expected an integer >= 1; got '0'"),
    (["train", "--steps", "0"], "argument --steps: expected an integer >= 1; got '0'"),
    (["demo", "--n", "-1"], "argument --n: expected an integer >= 1; got '-1'"),
    (["generate", "--checkpoint", "ck.pt", "--temperature", "-0.5"],
     "argument --temperature: expected a number >= 0; got '-0.5'"),
    (["generate", "--checkpoint", "ck.pt", "--device", "tpu"], "argument --device: expected cpu, cuda or cuda:N"),
])
def test_bad_numbers_and_devices_are_rejected_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "generate", "infill", "continue", "evaluate", "demo"])
def test_every_model_command_takes_a_device(command):
    required = {"generate": ["--checkpoint", "c"], "infill": ["--checkpoint", "c", "--midi", "m", "--bars", "0", "0"],
                "continue": ["--checkpoint", "c", "--midi", "m"], "evaluate": ["--checkpoint", "c"]}
    args = build_parser().parse_args([command, *required.get(command, []), "--device", "cpu"])
    assert args.device == "cpu"
    assert build_parser().parse_args([command, *required.get(command, [])]).device is None  # cuda if available


def test_device_option_loads_the_model_there(checkpoint, monkeypatch, tmp_path):
    import torch

    from smdim import commands

    run = commands.load_run(checkpoint, device="cpu")
    assert next(run.model.parameters()).device == torch.device("cpu") and run.seq_len == 64
    devices = []
    original = commands.load_run
    monkeypatch.setattr(commands, "load_run", lambda *a, **k: devices.append(k["device"]) or original(*a, **k))
    assert main(["--threads", "1", "generate", "--checkpoint", str(checkpoint), "--n", "1", "--steps", "1",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert devices == ["cpu"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_device_without_cuda_is_a_user_error(checkpoint, capsys):
    assert main(["generate", "--checkpoint", str(checkpoint), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available here" in err and err.count("\n") == 1


def test_os_errors_are_one_line_without_traceback(checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["generate", "--checkpoint", str(checkpoint), "--n", "1", "--steps", "1",
                 "--out", str(blocker / "sub")]) == 2  # mkdir under a file: NotADirectoryError
    err = capsys.readouterr().err
    assert f"error: Not a directory: {blocker / 'sub'}" in err and "Traceback" not in err and err.count("\n") == 1


def test_os_error_traceback_with_smdim_debug(checkpoint, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SMDIM_DEBUG", "1")
    with pytest.raises(NotADirectoryError):
        main(["generate", "--checkpoint", str(checkpoint), "--n", "1", "--steps", "1", "--out", str(blocker / "x")])


def test_checkpoint_without_seq_len_is_reported(checkpoint, tmp_path, capsys):
    from smdim.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    state["data"] = dict(state["data"], seq_len=None)
    save_checkpoint(tmp_path / "old.pt", state)
    assert main(["generate", "--checkpoint", str(tmp_path / "old.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no 'seq_len' field" in err and err.count("\n") == 1


def test_attention_window_applies_to_the_transformer_baseline(checkpoint):
    from smdim.pipeline import load_run, model_config

    tok = load_run(checkpoint).tokenizer
    assert model_config(tok, "tiny", "transformer", attn_window=8).attn_window == 8
    assert model_config(tok, "tiny", "transformer", attn_window=0).attn_window is None
    assert model_config(tok, "tiny", "transformer").attn_window is None
    assert model_config(tok, "tiny", "smdim", attn_window=8).attn_window == 8


def test_gradient_checkpointing_and_compile_flags_and_train_exit_path(checkpoint, tmp_path, cache_dir, monkeypatch):
    import smdim.train
    from smdim.checkpoint import load_checkpoint

    finished = []
    monkeypatch.setattr(smdim.train, "exit_distributed", finished.append)
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run)
    assert main(["--threads", "1", "train", "--data", "han", "--out", str(run), "--steps", "4", "--batch-size", "2",
                 "--seq-len", "64", "--eval-every", "3", "--resume", "--gradient-checkpointing", "--compile",
                 "--cache-dir", cache_dir, "--device", "cpu"]) == 0
    train_config = load_checkpoint(run / "checkpoint.pt")["train_config"]
    assert train_config["gradient_checkpointing"] is True and train_config["compile"] is True
    assert finished == [0]  # a torchrun worker would exit there


def _studio_info(cache_dir, *argv):
    """Start `smdim serve ARGV --port 0` (token cache: `cache_dir`), check the URL line, return its
    (/api/info, /api/corpus) answers."""
    import json
    import os
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "smdim.cli", "--threads", "1", "serve", *argv, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SMDIM_CACHE=cache_dir))
    try:
        line = proc.stdout.readline()
        assert line.startswith("smdim studio: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2]
        with urllib.request.urlopen(url + "api/info", timeout=30) as res:
            info = json.load(res)
        deadline = time.monotonic() + 300
        while True:                                   # held-out pieces are prepared in the background
            with urllib.request.urlopen(url + "api/corpus", timeout=120) as res:
                corpus = json.load(res)
            if not corpus.get("preparing") or time.monotonic() > deadline:
                return info, corpus
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_prints_its_url_and_answers(checkpoint, cache_dir):
    import socket

    info, corpus = _studio_info(cache_dir, "--checkpoint", str(checkpoint))
    assert info["styles"] == [{"name": "han", "training_length": 64}]
    assert len(corpus["pieces"]) > 0                           # held-out Han songs to start from
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        proc = subprocess.run([sys.executable, "-m", "smdim.cli", "serve", "--checkpoint", str(checkpoint), "--port",
                               str(busy.getsockname()[1])], capture_output=True, text=True, timeout=120)
    finally:
        busy.close()
    assert proc.returncode == 2 and "--port: cannot listen on 127.0.0.1" in proc.stderr


def test_serve_without_checkpoint_offers_every_bundled_model(cache_dir):
    from smdim.bundled import bundled_models

    info, corpus = _studio_info(cache_dir)
    assert [s["name"] for s in info["styles"]] == [m.styles[0] for m in bundled_models()]
    assert info["default_style"] == "han" and len(corpus["pieces"]) > 0
