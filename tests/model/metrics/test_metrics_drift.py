"""The drift metric: quarters by bars, each scored against the same quarter of the reference."""
import pytest

from smdim.metrics import ATTRIBUTES, Piece, drift_oa, part_values

TPQ = 480
BAR = 4 * TPQ  # 4/4


def _piece(pitches_per_bar, bar_len=BAR):
    """One quarter note per beat; bar b plays pitches_per_bar[b] four times."""
    onset, pitch = [], []
    for b, p in enumerate(pitches_per_bar):
        for beat in range(4):
            onset.append(b * bar_len + beat * TPQ)
            pitch.append(p)
    n = len(onset)
    return Piece(onset, [TPQ] * n, pitch, [64] * n, TPQ)


def test_parts_follow_the_bars_by_hand():
    # 8 bars, 4 parts: bars 0-1, 2-3, 4-5, 6-7
    parts = part_values(_piece([60, 61, 62, 63, 64, 65, 66, 67]), 4)
    assert [sorted(set(p["pitch"].tolist())) for p in parts] == [[60, 61], [62, 63], [64, 65], [66, 67]]
    assert [p["notes_per_bar"].tolist() for p in parts] == [[4, 4]] * 4
    # 8 notes per part; durations 4 sixteenths; polyphony 1 at each onset
    assert all(len(p["duration"]) == 8 and set(p["duration"].tolist()) == {4} for p in parts)
    assert all(p["polyphony"].tolist() == [1] * 8 for p in parts)
    # 31 gaps between 32 onsets: the first part has 7 (its first onset has no predecessor), the others 8
    assert [len(p["ioi"]) for p in parts] == [7, 8, 8, 8]


def test_uneven_bar_counts_split_by_floor():
    # 6 bars, 4 parts: bar b -> b * 4 // 6 = 0, 0, 1, 2, 2, 3
    parts = part_values(_piece([60, 61, 62, 63, 64, 65]), 4)
    assert [sorted(set(p["pitch"].tolist())) for p in parts] == [[60, 61], [62], [63, 64], [65]]


def test_identical_sets_score_one_in_every_quarter():
    ref = [_piece([60 + i, 62, 64, 65, 67, 65, 64, 62]) for i in range(5)]
    out = drift_oa(ref, ref)
    assert [out[f"q{q}"] for q in range(1, 5)] == pytest.approx([1.0] * 4)


def test_a_drifting_last_quarter_scores_low_only_there():
    ref = [_piece([60, 62, 64, 65, 67, 65, 64, 62]) for _ in range(3)]
    # the same pieces, but the last two bars two octaves up: only q4's pitch values move
    gen = [_piece([60, 62, 64, 65, 67, 65, 88, 86]) for _ in range(3)]
    out = drift_oa(gen, ref)
    assert [out[f"q{q}"] for q in (1, 2, 3)] == pytest.approx([1.0] * 3)
    # q4: pitch KDEs 24 semitones apart (bandwidth floor 0.5) do not overlap; the other 5 attributes match
    assert out["q4_pitch"] == pytest.approx(0.0, abs=1e-9)
    assert out["q4"] == pytest.approx(5 / len(ATTRIBUTES))


def test_empty_generated_pieces_count_against():
    ref = [_piece([60, 62, 64, 65]) for _ in range(2)]
    empty = Piece([], [], [], [], TPQ)
    out = drift_oa([ref[0], empty], ref)
    assert out["q1"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="parts"):
        part_values(ref[0], 0)


def test_whole_reference_scores_every_quarter_against_the_whole_pieces():
    # reference: 4-bar pieces all on pitch 60 (short: nothing to cut into quarters the same way)
    ref = [_piece([60, 60, 60, 60]) for _ in range(3)]
    # generated: 8 bars on 60, except the last two bars two octaves up: q4 drifts from the reference as a whole
    gen = [_piece([60, 60, 60, 60, 60, 60, 84, 84]) for _ in range(3)]
    out = drift_oa(gen, ref, reference="whole")
    assert [out[f"q{q}_pitch"] for q in (1, 2, 3)] == pytest.approx([1.0] * 3)
    assert out["q4_pitch"] == pytest.approx(0.0, abs=1e-9)
    # by parts the same case compares quarter with quarter of the short pieces (bar-wise, also on 60)
    assert drift_oa(gen, ref)["q4_pitch"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="reference must be 'parts' or 'whole'"):
        drift_oa(gen, ref, reference="halves")
