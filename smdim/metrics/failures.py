"""Failure modes of constrained sampling, on decoded notes: pitches outside a range, too many notes at once.

Counts use exact ticks with all non-drum tracks merged; "onset" counts the notes starting at one tick,
"sounding" the notes with onset ≤ t < onset + duration (zero-length notes last one tick).
"""
from __future__ import annotations

import numpy as np

from .notes import Piece, ScoreLike, prepare, require_notes, to_piece


def pitch_outlier_rate(scores, low: int, high: int) -> dict:
    """Notes outside the inclusive pitch range [low, high].

    Returns {"note_rate": outlier notes / all notes, "piece_rate": pieces with any outlier / pieces,
    "n_notes": all notes, "n_outliers": outlier notes}. Empty pieces count as pieces without outliers.
    """
    if not int(low) <= int(high):
        raise ValueError(f"low must be <= high; got low={low}, high={high}")
    pieces = prepare(scores, "scores")
    require_notes(pieces, "scores")
    bad = [int(np.count_nonzero((p.pitch < low) | (p.pitch > high))) for p in pieces]
    n_notes = sum(len(p) for p in pieces)
    return {
        "note_rate": sum(bad) / n_notes,
        "piece_rate": sum(1 for b in bad if b) / len(pieces),
        "n_notes": n_notes,
        "n_outliers": sum(bad),
    }


def _onset_counts(p: Piece, mode: str) -> np.ndarray:
    """Per distinct onset tick: notes starting there ("onset") or sounding there ("sounding")."""
    if len(p) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, starting = np.unique(p.onset, return_counts=True)
    if mode == "onset":
        return starting
    ends = np.sort(p.onset + np.maximum(p.duration, 1))
    return np.searchsorted(p.onset, uniq, side="right") - np.searchsorted(ends, uniq, side="right")


def _check_mode(mode):
    if mode not in ("onset", "sounding"):
        raise ValueError(f"mode must be 'onset' or 'sounding'; got {mode!r}")


def max_polyphony(score: ScoreLike, mode: str = "sounding") -> int:
    """Largest number of notes sounding at once ("sounding") or starting at the same tick ("onset") in one
    piece; 0 if empty."""
    _check_mode(mode)
    c = _onset_counts(to_piece(score, "score"), mode)
    return int(c.max()) if c.size else 0


def dense_chord_rate(scores, max_simultaneous: int, mode: str = "onset") -> dict:
    """How often more than ``max_simultaneous`` notes start together (mode "onset", the limit the sampler's
    ``Constraints.max_chord`` enforces) or sound together (mode "sounding").

    Returns {"onset_rate": distinct onsets over the limit / distinct onsets (pooled over the set),
    "piece_rate": pieces with any onset over the limit / pieces, "max": the largest count seen}.
    """
    _check_mode(mode)
    if int(max_simultaneous) < 1:
        raise ValueError(f"max_simultaneous must be >= 1; got {max_simultaneous}")
    pieces = prepare(scores, "scores")
    require_notes(pieces, "scores")
    counts = [_onset_counts(p, mode) for p in pieces]
    over = [int(np.count_nonzero(c > max_simultaneous)) for c in counts]
    n_onsets = sum(c.size for c in counts)
    return {
        "onset_rate": sum(over) / n_onsets,
        "piece_rate": sum(1 for o in over if o) / len(pieces),
        "max": max(int(c.max()) for c in counts if c.size),
    }
