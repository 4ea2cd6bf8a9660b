"""smdim.metrics.notes: Piece extraction, the 16th grid, bar indices, input conversion."""
import pytest

from metrics_helpers import Q, make_score, melody, symusic
from smdim import metrics as M
from smdim.metrics.notes import to_piece


def test_piece_extraction_skips_drums_and_uses_time_signatures():
    s = make_score(melody([60, 62]), drum=[(0, Q, 36, 100)] * 3)
    p = M.Piece.from_score(s)
    assert len(p) == 2 and list(p.pitch) == [60, 62]
    assert list(p.ts_num) == [4] and list(p.ts_den) == [4]  # default 4/4
    # 3/4: a bar is 3 quarters; 16th grid rounds a one-tick offset away.
    s34 = make_score([(1, Q - 1, 60, 80), (3 * Q + 1, Q, 62, 80), (6 * Q, Q, 64, 80)], ts=[(0, 3, 4)])
    p34 = M.Piece.from_score(s34)
    assert list(p34.bars) == [0, 1, 2] and list(p34.onset16) == [0, 12, 24] and list(p34.duration16) == [4, 4, 4]
    # 4/4 for two bars, then 3/8 (6 sixteenths a bar).
    ch = make_score([(0, Q, 60, 80), (8 * Q, Q, 60, 80), (8 * Q + 3 * Q, Q, 60, 80), (8 * Q + 3 * Q // 2, 1, 60, 80)],
                    ts=[(0, 4, 4), (8 * Q, 3, 8)])
    assert sorted(M.Piece.from_score(ch).bars.tolist()) == [0, 2, 3, 4]
    # Quarter-time scores are converted to ticks.
    assert len(M.Piece.from_score(s.to("quarter"))) == 2


def test_bar_of_step_and_grid():
    p = M.Piece.from_score(make_score([(0, 10, 60, 80), (Q, 3 * Q, 62, 80)], ts=[(0, 3, 4)]))
    on, end = p.grid()
    assert on.tolist() == [0, 4] and end.tolist() == [1, 16]  # a 10-tick note still lasts one 16th
    # 3/4 = 12 sixteenths a bar: steps 0, 11 in bar 0; 12 in bar 1; 24 in bar 2.
    assert p.bar_of_step([0, 11, 12, 23, 24]).tolist() == [0, 0, 1, 1, 2]
    assert p.n_bars == 1 and repr(p) == "Piece(notes=2, tpq=480, bars=1)"
    empty = M.Piece.from_score(symusic.Score(480))
    assert len(empty) == 0 and empty.n_bars == 0


def test_prepare_and_errors(tmp_path):
    s = make_score(melody([60, 62, 64, 65] * 8))
    path = tmp_path / "x.mid"
    s.dump_midi(str(path))
    pieces = M.prepare([s, path, M.Piece.from_score(s)])
    assert [len(p) for p in pieces] == [32, 32, 32]
    assert M.prepare(s)[0].pitch.tolist() == pieces[0].pitch.tolist()  # one score becomes a list of one
    assert to_piece(pieces[2], "x") is pieces[2]  # Pieces pass unchanged (their cache is kept)
    assert M.pitch_outlier_rate([path], 61, 127)["n_outliers"] == 8
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi")
    with pytest.raises(ValueError, match="cannot read"):
        M.prepare([bad], "scores_gen")
    with pytest.raises(ValueError, match="scores_gen is empty"):
        M.prepare([], "scores_gen")
    with pytest.raises(TypeError, match=r"scores_ref\[0\]"):
        M.prepare([1], "scores_ref")
    with pytest.raises(ValueError, match="same length"):
        M.Piece([0, 1], [1], [60], [80])
