"""Runs you can trust: checkpoints that cannot run code, runs that are never overwritten, data
records with the split by piece name, evaluation that scores only recorded test pieces (also after
the data folder changed), cross-corpus labelling, and one-line messages."""
import argparse
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from symusic import Note, Score, TimeSignature, Track

from smdim.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from smdim.cli import main
from smdim.data import DataRecord
from smdim.pipeline import UserError, corpus_of_record, load_run


def write_piece(path, index):
    """A short 4/4 piece whose rhythm and contour depend on `index` (no two are transpositions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(program=0, name="piano")
    per_bar = 1 + index % 4
    step = 1920 // per_bar
    for bar in range(3 + index // 4 % 4):
        for k in range(per_bar):
            track.notes.append(Note(bar * 1920 + k * step, step, 55 + (bar * (index + 1) + 3 * k) % 20, 80))
    score.tracks.append(track)
    score.dump_midi(str(path))
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("token_cache"))


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("midi")
    for i in range(60):
        write_piece(root / f"piece_{i:02d}.mid", i)
    return root


def _train(data, out, cache_dir, *extra):
    return main(["--threads", "1", "train", "--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--seq-len", "32", "--eval-every", "2", "--cache-dir", cache_dir, *extra])


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, midi_folder, cache_dir):
    out = tmp_path_factory.mktemp("folder_run")
    assert _train(midi_folder, out, cache_dir) == 0
    return out / "checkpoint.pt"


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
class RunsAShellCommand:
    """What a crafted checkpoint holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_is_refused_without_running_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    torch.save({"format_version": 2, "model_config": RunsAShellCommand(marker)}, crafted)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(crafted)
    assert main(["generate", "--checkpoint", str(crafted), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not marker.exists()


def test_a_plain_pickle_with_a_foreign_class_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    with open(path, "wb") as f:
        pickle.dump({"format_version": 2, "x": argparse.Namespace(a=1)}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)


def test_a_training_checkpoint_loads_with_weights_only(folder_run):
    state = torch.load(folder_run, weights_only=True)
    assert state["format_version"] == 2 and state["step"] == 2


def test_config_that_does_not_fit_the_weights_is_one_line(folder_run, tmp_path, capsys):
    state = load_checkpoint(folder_run)
    state["model_config"] = dict(state["model_config"], d_model=state["model_config"]["d_model"] * 2)
    save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(CheckpointError, match="the weights do not fit its model config .*size mismatch"):
        load_model(tmp_path / "bad.pt")
    assert main(["generate", "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and err.count("\n") == 1


def _as_format_1(state):
    """A checkpoint as smdim wrote it before data records: seq_len in the tokenizer dict, no record."""
    old = {k: v for k, v in state.items() if k not in ("data", "settings")}
    old["tokenizer"] = dict(state["tokenizer"], seq_len=state["data"]["seq_len"])
    old["format_version"] = 1
    return old


def test_format_1_checkpoints_still_generate_and_evaluate_says_what_to_do(folder_run, tmp_path, capsys):
    old = tmp_path / "old.pt"
    torch.save(_as_format_1(load_checkpoint(folder_run)), old)
    run = load_run(old)
    assert run.seq_len == 32 and run.record is None and run.format_version == 1
    assert main(["--threads", "1", "generate", "--checkpoint", str(old), "--n", "1", "--steps", "1",
                 "--out", str(tmp_path / "gen")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(old), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "records no data split" in err and "--cross-corpus" in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------------
# run folders
# --------------------------------------------------------------------------------------------
def test_a_new_run_never_overwrites_an_existing_one(folder_run, midi_folder, cache_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(folder_run.parent, run)
    before = (run / "checkpoint.pt").read_bytes()
    assert _train(midi_folder, run, cache_dir) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and err.count("\n") == 1
    assert (run / "checkpoint.pt").read_bytes() == before
    assert _train(midi_folder, run, cache_dir, "--overwrite", "--seed", "1") == 0
    assert load_checkpoint(run / "checkpoint.pt")["train_config"]["seed"] == 1


def test_resume_keeps_the_recorded_settings_and_refuses_changed_ones(folder_run, cache_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(folder_run.parent, run)
    assert main(["--threads", "1", "train", "--out", str(run), "--resume", "--seq-len", "64"]) == 2
    assert "--seq-len differ from the recorded run" in capsys.readouterr().err
    other = tmp_path / "other"
    for i in range(3):
        write_piece(other / f"o_{i}.mid", 300 + i)
    assert main(["--threads", "1", "train", "--out", str(run), "--resume", "--data", str(other),
                 "--cache-dir", cache_dir]) == 2
    assert "is not the corpus this run was trained on" in capsys.readouterr().err
    # No --data, no --seq-len: the recorded source, split and length are used.
    assert main(["--threads", "1", "train", "--out", str(run), "--resume", "--steps", "3",
                 "--cache-dir", cache_dir]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 3 and state["data"] == load_checkpoint(folder_run)["data"]


# --------------------------------------------------------------------------------------------
# data records and evaluation
# --------------------------------------------------------------------------------------------
def test_the_checkpoint_records_the_data(folder_run, midi_folder):
    record = DataRecord.from_dict(load_checkpoint(folder_run)["data"])
    assert record.source == str(Path(midi_folder).resolve()) and record.layout == "midi" and record.seq_len == 32
    names = [n for s in ("train", "valid", "test") for n in record.split_names(s)]
    assert sorted(names) == sorted(f"piece_{i:02d}.mid" for i in range(60)) and len(set(names)) == 60
    assert len(record.split_names("test")) >= 2 and len(record.fingerprint) == 64
    assert set(record.pieces) == set(names)


@pytest.fixture
def own_run(midi_folder, tmp_path, cache_dir):
    """(data folder, checkpoint) of a run on a private copy of the MIDI folder (free to change)."""
    folder = tmp_path / "midi"
    shutil.copytree(midi_folder, folder)
    assert _train(folder, tmp_path / "run", cache_dir) == 0
    return folder, tmp_path / "run" / "checkpoint.pt"


def _change(folder, record, drop_test=1, add=5):
    """Add `add` new pieces (sorting first) and remove `drop_test` recorded test pieces."""
    for name in record.split_names("test")[:drop_test]:
        (folder / name).unlink()
    for i in range(add):
        write_piece(folder / f"000_new_{i}.mid", 100 + i)


def test_changing_the_folder_never_moves_a_training_piece_into_the_test_set(own_run, tmp_path, cache_dir):
    folder, checkpoint = own_run
    run = load_run(checkpoint)
    record = run.record
    _change(folder, record)
    notes = []
    corpus, changes = corpus_of_record(record, run.tokenizer, cache_dir=cache_dir, log=notes.append)
    scored = {corpus.names[i] for i in corpus.splits["test"]}
    trained = {corpus.names[i] for i in corpus.splits["train"]}
    assert scored == set(record.split_names("test")[1:])
    assert trained == set(record.split_names("train")) and not scored & trained
    assert sorted(changes.added) == [f"000_new_{i}.mid" for i in range(5)]
    assert changes.missing["test"] == record.split_names("test")[:1]
    assert len(notes) == 1 and "5 piece(s) added" in notes[0] and "1 recorded test piece(s) missing" in notes[0]
    # A piece whose content changed under its recorded name is left out of its split.
    victim = record.split_names("train")[0]
    write_piece(folder / victim, 999)
    corpus, changes = corpus_of_record(record, run.tokenizer, cache_dir=cache_dir, log=notes.append)
    assert changes.changed["train"] == [victim] and victim not in {corpus.names[i] for i in corpus.splits["train"]}
    # The same pieces under another path are another source: refused without --cross-corpus.
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    with pytest.raises(UserError, match="--cross-corpus"):
        corpus_of_record(record, run.tokenizer, data=moved, cache_dir=cache_dir, log=notes.append)


def test_evaluate_scores_the_recorded_test_pieces_of_a_changed_folder(own_run, tmp_path, cache_dir, capsys):
    folder, checkpoint = own_run
    record = load_run(checkpoint).record
    _change(folder, record)
    capsys.readouterr()
    assert main(["--threads", "1", "evaluate", "--checkpoint", str(checkpoint), "--n", "2", "--steps", "1",
                 "--bootstrap", "5", "--cache-dir", cache_dir, "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    n_left = len(record.split_names("test")) - 1
    assert f"the recorded test split of {record.source} ({n_left} pieces held out from training)" in out
    assert "1 recorded test piece(s) missing" in out and "5 piece(s) added" in out
    # Too few recorded test pieces left: refused.
    for name in record.split_names("test")[1:]:
        (folder / name).unlink()
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--cache-dir", cache_dir,
                 "--out", str(tmp_path / "eval2")]) == 2
    assert "too few to evaluate" in capsys.readouterr().err


def test_another_corpus_needs_the_flag_and_is_labelled(folder_run, tmp_path, cache_dir, capsys):
    other = tmp_path / "other"
    for i in range(40):
        write_piece(other / f"o_{i:02d}.mid", 200 + i)
    assert main(["evaluate", "--checkpoint", str(folder_run), "--data", str(other), "--cache-dir", cache_dir,
                 "--out", str(tmp_path)]) == 2
    assert "pass --cross-corpus" in capsys.readouterr().err
    assert main(["--threads", "1", "evaluate", "--checkpoint", str(folder_run), "--data", str(other),
                 "--cross-corpus", "--n", "2", "--steps", "1", "--bootstrap", "5", "--cache-dir", cache_dir,
                 "--out", str(tmp_path / "eval")]) == 0
    assert "CROSS-CORPUS: the test split of" in capsys.readouterr().out


def test_data_skip_warnings_are_one_line_each(midi_folder, cache_dir, tmp_path, capsys):
    folder = tmp_path / "midi"
    shutil.copytree(midi_folder, folder)
    (folder / "broken.mid").write_bytes(b"not a midi file")
    assert _train(folder, tmp_path / "run", cache_dir) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("smdim: warning: skipped 1 of 61 files")
    assert "warnings.warn" not in err and "DataSkipWarning" not in err
