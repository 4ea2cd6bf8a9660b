"""Hand-made scores and the Han folk-song corpus for the smdim.metrics tests."""
import math
import os
import re

import numpy as np
import pytest

symusic = pytest.importorskip("symusic")

TPQ = 480
Q = TPQ  # one quarter note in ticks
S16 = TPQ // 4  # one 16th note in ticks
BAR = 4 * Q  # one 4/4 bar


def make_score(notes, *, tpq=TPQ, ts=None, drum=(), program=0):
    """notes: iterable of (time, duration, pitch, velocity) in ticks; ts: [(time, num, den), ...]."""
    s = symusic.Score(tpq)
    t = symusic.Track(program=program)
    for time_, dur, pitch, vel in notes:
        t.notes.append(symusic.Note(int(time_), int(dur), int(pitch), int(vel)))
    s.tracks.append(t)
    if drum:
        d = symusic.Track(program=0, is_drum=True)
        for time_, dur, pitch, vel in drum:
            d.notes.append(symusic.Note(int(time_), int(dur), int(pitch), int(vel)))
        s.tracks.append(d)
    for time_, num, den in ts or ():
        s.time_signatures.append(symusic.TimeSignature(int(time_), int(num), int(den)))
    return s


def melody(pitches, dur=Q, vel=80, start=0):
    """One note after the other, each `dur` ticks long."""
    return [(start + i * dur, dur, p, vel) for i, p in enumerate(pitches)]


def random_piece(rng, bars=16, center=64, spread=5, vel=(60, 100)):
    """A random 4/4 melody of eighth and quarter notes, occasionally with a second voice."""
    notes, t = [], 0
    while t < bars * 4 * Q:
        d = int(rng.choice([Q // 2, Q, Q, 2 * Q]))
        p = int(np.clip(rng.normal(center, spread), 0, 127))
        v = int(rng.integers(*vel))
        notes.append((t, d, p, v))
        if rng.random() < 0.15:
            notes.append((t, d, max(0, p - 4), v))
        t += d
    return make_score(notes)


def random_set(seed, n, **kw):
    rng = np.random.default_rng(seed)
    return [random_piece(rng, **kw) for _ in range(n)]


def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def load_han_scores():
    """The Essen Han folk songs shipped with music21, as symusic Scores (tunes symusic cannot parse skipped)."""
    music21 = pytest.importorskip("music21")
    folder = os.path.join(os.path.dirname(music21.__file__), "corpus", "essenFolksong")
    files = [os.path.join(folder, f) for f in ("han1.abc", "han2.abc")]
    if not all(os.path.exists(f) for f in files):
        pytest.skip("music21's Essen Han corpus is not installed")
    scores = []
    for f in files:
        with open(f, encoding="latin-1") as fh:
            text = fh.read()
        for tune in re.split(r"(?m)^(?=X:)", text):
            if not tune.startswith("X:"):
                continue
            try:
                s = symusic.Score.from_abc(tune)
            except Exception:
                continue
            if s.note_num():
                scores.append(s)
    return scores
