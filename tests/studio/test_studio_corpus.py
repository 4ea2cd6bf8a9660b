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


def test_background_thread_prepares_every_style(checkpoint, cache_dir):
    run = load_run(checkpoint)
    held_out = HeldOutPieces({"a": run, "b": run}, cache_dir=cache_dir)
    held_out._thread.join(timeout=120)
    assert held_out("a") == held_out("b") and held_out("a")


def test_a_run_without_a_record_offers_nothing_and_says_why():
    run = tiny_run()
    run.record = None
    held_out = HeldOutPieces({"tiny": run}, start=False)
    held_out.prepare("tiny")
    assert held_out("tiny") == [] and "records no data split" in held_out.note("tiny")
