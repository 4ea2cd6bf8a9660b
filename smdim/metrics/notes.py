"""The notes of one piece (`Piece`) and the input conversion shared by every note metric.

Inputs: `symusic.Score` objects (any time unit; converted to ticks), MIDI file paths, or `Piece` objects.
A Piece holds (n,) int64 arrays ``onset``, ``duration`` (ticks), ``pitch``, ``velocity`` of every non-drum
note, sorted by onset then pitch, and caches derived values (16th-note grid, bar indices, per-protocol frame
statistics, attribute values), so metrics evaluated many times (bootstrap) extract the notes once.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

#: Grid of the quantisation: 4 steps per quarter note (16th notes).
STEPS_PER_QUARTER = 4

ScoreLike = Any  # symusic.Score (any time unit), a path to a MIDI file, or a Piece


class Piece:
    """The notes of one score (all non-drum tracks), sorted by onset then pitch, with its time signatures.

    Attributes (numpy arrays, one entry per note): ``onset``, ``duration`` (ticks, int64), ``pitch``,
    ``velocity`` (int64); ``tpq`` (ticks per quarter); ``ts_time``/``ts_num``/``ts_den`` (time signatures,
    at least one: 4/4 at tick 0 when the score has none). Derived quantities (16th-note grid, bar indices,
    per-window statistics, attribute values) are computed once and cached on the object.
    """

    __slots__ = ("onset", "duration", "pitch", "velocity", "tpq", "ts_time", "ts_num", "ts_den", "_cache")

    def __init__(self, onset, duration, pitch, velocity, tpq: int = 480, time_signatures=()):
        onset = np.asarray(onset, dtype=np.int64).reshape(-1)
        duration = np.asarray(duration, dtype=np.int64).reshape(-1)
        pitch = np.asarray(pitch, dtype=np.int64).reshape(-1)
        velocity = np.asarray(velocity, dtype=np.int64).reshape(-1)
        if not (onset.shape == duration.shape == pitch.shape == velocity.shape):
            raise ValueError("Piece: onset, duration, pitch and velocity must have the same length")
        if int(tpq) <= 0:
            raise ValueError(f"Piece: tpq must be positive; got {tpq}")
        order = np.lexsort((pitch, onset))
        self.onset, self.duration = onset[order], np.maximum(duration[order], 0)
        self.pitch, self.velocity = pitch[order], velocity[order]
        self.tpq = int(tpq)
        ts = sorted((int(t), int(n), int(d)) for t, n, d in time_signatures if int(n) > 0 and int(d) > 0)
        dedup = {}
        for t, n, d in ts:  # the last signature written at a tick wins
            dedup[t] = (n, d)
        if not dedup:
            dedup = {0: (4, 4)}
        times = sorted(dedup)
        self.ts_time = np.array(times, dtype=np.float64)
        self.ts_time[0] = 0.0  # the first signature also governs anything before it
        self.ts_num = np.array([dedup[t][0] for t in times], dtype=np.float64)
        self.ts_den = np.array([dedup[t][1] for t in times], dtype=np.float64)
        self._cache = {}

    @classmethod
    def from_score(cls, score) -> "Piece":
        """Extract the notes of every non-drum track of a `symusic.Score` (converted to ticks if needed)."""
        import symusic

        if not isinstance(score, symusic.core.ScoreTick):
            score = score.to("tick")
        cols = {"time": [], "duration": [], "pitch": [], "velocity": []}
        for track in score.tracks:
            if track.is_drum or len(track.notes) == 0:
                continue
            arr = track.notes.numpy()
            for k in cols:
                cols[k].append(np.asarray(arr[k], dtype=np.int64))
        cat = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in cols.items()}
        ts = [(t.time, t.numerator, t.denominator) for t in score.time_signatures]
        return cls(cat["time"], cat["duration"], cat["pitch"], cat["velocity"], score.ticks_per_quarter, ts)

    def __len__(self) -> int:
        return int(self.onset.shape[0])

    def __repr__(self) -> str:
        return f"Piece(notes={len(self)}, tpq={self.tpq}, bars={self.n_bars})"

    # 16th-note grid ---------------------------------------------------------------------------------------
    def grid(self):
        """(onset16, end16): onsets and ends rounded to the 16th-note grid, every note at least one 16th."""
        if "grid" not in self._cache:
            step = self.tpq / STEPS_PER_QUARTER
            on = np.floor(self.onset / step + 0.5).astype(np.int64)
            end = np.floor((self.onset + self.duration) / step + 0.5).astype(np.int64)
            end = np.maximum(end, on + 1)
            self._cache["grid"] = (on, end)
        return self._cache["grid"]

    @property
    def onset16(self) -> np.ndarray:
        """Onsets on the 16th-note grid (rounded)."""
        return self.grid()[0]

    @property
    def duration16(self) -> np.ndarray:
        """Durations in 16th notes: rounded end − rounded onset, at least 1."""
        on, end = self.grid()
        return end - on

    def bar_of_step(self, steps) -> np.ndarray:
        """Bar index of positions on the 16th-note grid (time-signature aware; a change mid-bar starts a
        new bar)."""
        t = np.asarray(steps, dtype=np.float64) * (self.tpq / STEPS_PER_QUARTER)  # in ticks
        bar_len = self.tpq * 4.0 * self.ts_num / self.ts_den
        spans = np.diff(self.ts_time) / bar_len[:-1]
        offsets = np.concatenate([[0.0], np.cumsum(np.ceil(spans - 1e-9))])
        seg = np.clip(np.searchsorted(self.ts_time, t, side="right") - 1, 0, None)
        idx = offsets[seg] + np.floor((t - self.ts_time[seg]) / bar_len[seg] + 1e-9)
        return np.maximum(idx, 0).astype(np.int64)

    @property
    def bars(self) -> np.ndarray:
        """Index of the bar each note starts in (`bar_of_step` of the quantised onset)."""
        if "bars" not in self._cache:
            self._cache["bars"] = self.bar_of_step(self.onset16)
        return self._cache["bars"]

    @property
    def n_bars(self) -> int:
        """Number of bars up to the one holding the last onset (0 for an empty piece)."""
        return int(self.bars.max()) + 1 if len(self) else 0


def is_score(x) -> bool:
    """True for a symusic Score of any time unit."""
    try:
        import symusic.core as core
    except ImportError:  # pragma: no cover - symusic is a dependency of smdim
        return False
    return isinstance(x, (core.ScoreTick, core.ScoreQuarter, core.ScoreSecond))


def to_piece(x, name: str) -> Piece:
    """One score / MIDI path / Piece as a `Piece`; errors name ``name``."""
    if isinstance(x, Piece):
        return x
    if is_score(x):
        return Piece.from_score(x)
    if isinstance(x, (str, os.PathLike)):
        import symusic

        try:
            return Piece.from_score(symusic.Score(os.fspath(x)))
        except Exception as exc:
            raise ValueError(f"{name}: cannot read {os.fspath(x)!r} as MIDI ({exc})") from exc
    raise TypeError(f"{name}: expected symusic.Score objects, MIDI paths or metrics.Piece; got {type(x).__name__}")


def prepare(scores, name: str = "scores") -> list:
    """Turn one score / path / Piece, or an iterable of them, into a list of `Piece` (extracted once).

    Raises ValueError naming ``name`` when the input is empty.
    """
    if scores is None:
        raise ValueError(f"{name} is None: expected a list of symusic.Score objects")
    if isinstance(scores, Piece) or is_score(scores) or isinstance(scores, (str, os.PathLike)):
        scores = [scores]
    try:
        items = list(scores)
    except TypeError:
        raise TypeError(f"{name}: expected a list of symusic.Score objects; got {type(scores).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty: expected at least one symusic.Score")
    return [to_piece(x, f"{name}[{i}]") for i, x in enumerate(items)]


def require_notes(pieces, name: str) -> None:
    """ValueError naming ``name`` when no piece of the list holds a note."""
    if sum(len(p) for p in pieces) == 0:
        raise ValueError(f"{name} holds no notes (all {len(pieces)} pieces are empty or drum-only)")
