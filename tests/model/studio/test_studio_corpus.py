"""The studio's held-out pieces: from the run's recorded test split, prepared in the background."""
import pytest

from smdim.pipeline import load_run
from smdim.studio.corpus import PIECES_OFFERED, CorpusPreparing, HeldOutPieces

from studio_helpers import tiny_run


def test_pieces_come_from_the_recorded_test_split(checkpoint, cache_dir):
    run = load_run(checkpoint)
    held_out = HeldOutPieces({"han": run}, cache_dir=cache_dir, start=False)
    with pytest.raises(CorpusPreparing, match="preparing the held-out han pieces"):
        held_out("han")
    held_out.prepare("han")
    pieces = held_out("han")
    test_names = run.record.split_names("test")
    assert 0 < len(pieces) <= PIECES_OFFERED
    assert [name for name, _ in pieces] == test_names[:len(pieces)]
    assert held_out.note("han") is None


def test_the_first_style_is_prepared_at_once_the_others_when_asked(checkpoint, cache_dir):
    run = load_run(checkpoint)
    held_out = HeldOutPieces({"a": run, "b": run}, cache_dir=cache_dir)
    held_out.wait("a", timeout=120)
    assert held_out("a")
    assert "b" not in held_out._threads                      # nobody asked for b yet
    with pytest.raises(CorpusPreparing):
        held_out("b")                                         # asking starts it
    held_out.wait("b", timeout=120)
    assert held_out("b") == held_out("a")


def test_a_run_without_a_record_offers_nothing_and_says_why():
    run = tiny_run()
    run.record = None
    held_out = HeldOutPieces({"tiny": run}, start=False)
    held_out.prepare("tiny")
    assert held_out("tiny") == [] and "records no data split" in held_out.note("tiny")
