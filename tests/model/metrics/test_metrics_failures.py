"""smdim.metrics.failures: pitch outliers, polyphony and dense chords on hand-made scores."""
import pytest

from metrics_helpers import Q, make_score, melody
from smdim import metrics as M


def test_pitch_outlier_rate():
    a = make_score(melody([20, 60, 64, 110, 21, 108]))
    b = make_score(melody([60, 62]))
    r = M.pitch_outlier_rate([a, b], 21, 108)  # bounds are inclusive
    assert r["note_rate"] == pytest.approx(2 / 8) and r["piece_rate"] == 0.5 and r["n_outliers"] == 2
    assert r["n_notes"] == 8
    assert M.pitch_outlier_rate([b], 0, 127)["piece_rate"] == 0.0
    with pytest.raises(ValueError, match="scores is empty"):
        M.pitch_outlier_rate([], 0, 127)
    with pytest.raises(ValueError, match="low must be <= high"):
        M.pitch_outlier_rate([b], 70, 60)


def test_polyphony_and_dense_chords():
    # t=0: a 4-note chord lasting 2 quarters; t=Q: 2 notes (1 quarter); t=2Q: one note.
    notes = [(0, 2 * Q, p, 80) for p in (60, 64, 67, 72)] + [(Q, Q, 50, 80), (Q, Q, 55, 80), (2 * Q, Q, 62, 80)]
    s = make_score(notes)
    assert M.max_polyphony(s) == 6 and M.max_polyphony(s, mode="onset") == 4
    on = M.dense_chord_rate([s], 3)  # onsets with more than 3 notes starting: t=0 only
    assert on["onset_rate"] == pytest.approx(1 / 3) and on["piece_rate"] == 1.0 and on["max"] == 4
    snd = M.dense_chord_rate([s], 3, mode="sounding")  # sounding: 4, 6, 1
    assert snd["onset_rate"] == pytest.approx(2 / 3) and snd["max"] == 6
    calm = make_score(melody([60, 62, 64]))
    both = M.dense_chord_rate([s, calm], 3)
    assert both["onset_rate"] == pytest.approx(1 / 6) and both["piece_rate"] == 0.5
    with pytest.raises(ValueError, match="mode"):
        M.dense_chord_rate([s], 3, mode="bogus")
    with pytest.raises(ValueError, match="max_simultaneous"):
        M.dense_chord_rate([s], 0)
