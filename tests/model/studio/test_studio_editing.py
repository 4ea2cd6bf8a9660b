"""smdim.studio: pieces from MIDI keep their tracks; infill / continue / variations redraw only what
was asked (untrained model: it writes anything, so whatever survives is kept by construction)."""
from collections import Counter

import pytest
from symusic import Score

from smdim.studio.editing import Settings, continue_piece, generate_piece, infill_piece
from smdim.studio.piece import PieceError, from_midi, missing_notes

from studio_helpers import tiny_run, two_track_midi


@pytest.fixture(scope="module")
def run():
    return tiny_run()


@pytest.fixture(scope="module")
def piece(run):
    return from_midi(run.tokenizer, two_track_midi(), name="song.mid", max_tokens=4096)


def _in_bars(piece, first, last):
    return Counter(k for k, n in zip(piece.keys(), piece.notes) if first <= n.bar <= last)


def test_midi_round_trip_keeps_tracks_programs_and_times(piece):
    assert [(t.name, t.program) for t in piece.tracks] == [("flute", 73), ("piano", 0)]
    assert Counter(piece.note_tracks) == {0: 4 * 4 + 4 * 3, 1: 3 * (4 * 2 + 4 * 2)}
    assert len(piece.bars) == 8 and piece.tempo == 100.0
    score = Score.from_midi(piece.midi_bytes())
    assert [(t.program, t.note_num()) for t in score.tracks] == [(73, 28), (0, 48)]
    assert [(ts.time, ts.numerator) for ts in score.time_signatures] == [(0, 4), (4 * 1920, 3)]
    assert sorted((n.time, n.pitch) for n in score.tracks[0].notes)[:2] == [(0, 72), (480, 73)]


@pytest.mark.parametrize("data,match", [(b"not a midi file", "not a MIDI file"),
                                        (b"MThd\x00\x00\x00\x06broken", "not a readable MIDI file")])
def test_bad_uploads_are_refused_in_words(run, data, match):
    with pytest.raises(PieceError, match=match):
        from_midi(run.tokenizer, data, name="x.mid", max_tokens=4096)


def test_too_long_is_refused(run):
    with pytest.raises(PieceError, match="too long"):
        from_midi(run.tokenizer, two_track_midi(), name="song.mid", max_tokens=50)


@pytest.mark.parametrize("seed", [0, 1])
def test_infill_one_track_keeps_everything_else(run, piece, seed):
    out, = infill_piece(run, piece, 2, 4, tracks=[1], settings=Settings(steps=4, seed=seed))
    outside = Counter(piece.keys()) - _in_bars(piece, 2, 4)
    flute_inside = Counter(k for k in _in_bars(piece, 2, 4) if k[3] == 0)
    assert not missing_notes_of(outside + flute_inside, out)
    assert all(t in (0, 1) for t in out.note_tracks)
    assert [b.time_signature for b in out.bars] == [b.time_signature for b in piece.bars]


def missing_notes_of(expected: Counter, piece) -> Counter:
    return expected - Counter(piece.keys())


def test_locked_notes_survive_and_variations_differ(run, piece):
    inside = [i for i, n in enumerate(piece.notes) if 1 <= n.bar <= 3]
    locked = inside[::4]
    outs = infill_piece(run, piece, 1, 3, locked=locked, k=3, settings=Settings(steps=4, seed=3))
    assert len(outs) == 3
    keep = Counter(piece.keys()) - _in_bars(piece, 1, 3) + Counter(piece.keys()[i] for i in locked)
    for out in outs:
        assert not missing_notes_of(keep, out)
    assert len({tuple(o.ids) for o in outs}) == 3


def test_infill_rejects_bad_selections(run, piece):
    with pytest.raises(PieceError, match="select bars between 1 and 8"):
        infill_piece(run, piece, 5, 9)
    with pytest.raises(PieceError, match="at least one track"):
        infill_piece(run, piece, 1, 1, tracks=[])
    every = [i for i, n in enumerate(piece.notes) if n.bar == 1]
    with pytest.raises(PieceError, match="nothing to redraw"):
        infill_piece(run, piece, 1, 1, locked=every)


def test_continue_adds_bars_and_keeps_the_piece(run, piece):
    out, = continue_piece(run, piece, 2, track=1, settings=Settings(steps=4))
    assert not missing_notes(piece, out)
    assert len(out.bars) <= len(piece.bars) + 2
    assert out.ids[:len(piece.ids) - 1] == piece.ids[:len(piece.ids) - 1]


def test_generate(run):
    outs = generate_piece(run, 400, k=2, settings=Settings(steps=4))
    assert 1 <= len(outs) <= 2 and all(o.tracks[0].program == 0 and o.notes for o in outs)


@pytest.mark.parametrize("kwargs,match", [({"steps": 0}, "steps"), ({"temperature": -1}, "temperature"),
                                          ({"pitch_low": 60}, "both ends"), ({"max_chord": 0}, "max chord"),
                                          ({"order": "best"}, "order")])
def test_settings_are_checked(kwargs, match):
    with pytest.raises(PieceError, match=match):
        Settings(**kwargs)
