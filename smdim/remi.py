"""Reading a REMI token stream (the project tokenizer: one stream, no Program tokens) into its bars
and notes, each note with the indices of its tokens — so callers can clamp chosen notes when
infilling (locked notes, other tracks) and know where every bar starts.

Timing follows miditok's REMI decoding at the tokenizer's `time_division` ticks per quarter: a Bar
starts where the previous bar ends (its time signature's length; 4/4 before any TimeSig), Position_k
is k / positions_per_beat beats after the bar start and a Duration token counts beats, a beat being
the time signature's denominator note. A note is a Pitch followed by its Velocity and Duration
tokens (special tokens skipped, incomplete notes dropped, as `tokenizer.decode` does), so the notes
read here are exactly the notes `decode` returns (tests/model/test_remi.py checks this).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .tokenizer import (
    _id_to_token,
    duration_tokens,
    kept_token_indices,
    pitch_tokens,
    position_tokens,
    positions_per_beat,
    special_ids,
    time_signature_tokens,
    velocity_tokens,
)


@dataclass(frozen=True)
class TokenNote:
    """One note of a token stream: indices into the ids, timing in ticks (tokenizer time division)."""
    pitch_index: int          # index of its Pitch token (Velocity and Duration follow it)
    token_indices: Tuple[int, ...]  # Pitch, Velocity, Duration token indices
    position_index: int       # index of the Position token it starts at, -1 if none since the bar line
    bar: int                  # 0-based bar number (-1 before the first Bar token)
    time: int
    duration: int
    pitch: int
    velocity: int


@dataclass(frozen=True)
class TokenBar:
    index: int                # index of its Bar token
    time: int                 # start in ticks
    length: int               # ticks
    time_signature: Tuple[int, int]


@dataclass(frozen=True)
class Reading:
    ticks_per_quarter: int
    bars: List[TokenBar]
    notes: List[TokenNote]


def _tables(tok):
    cache = getattr(tok, "_smdim_remi_tables", None)
    if cache is None:
        if tok.config.use_programs:
            raise ValueError("smdim.remi reads one-stream REMI without Program tokens; this tokenizer uses programs")
        names = _id_to_token(tok)
        kind = [n.split("_")[0] for n in names]
        for sid in special_ids(tok):
            kind[sid] = "special"
        cache = (kind, pitch_tokens(tok), velocity_tokens(tok), duration_tokens(tok), position_tokens(tok),
                 time_signature_tokens(tok))
        tok._smdim_remi_tables = cache
    return cache


def _ticks_per_beat(tpq: int, denominator: int) -> float:
    return tpq * 4 / denominator


def read(tok, ids: Sequence[int]) -> Reading:
    """Bars and notes of a token stream (ids: ints, any special tokens allowed)."""
    kind, pitch_of, velocity_of, duration_of, position_of, ts_of = _tables(tok)
    tpq = int(tok.time_division)
    ppb = positions_per_beat(tok)
    ids = [int(i) for i in ids]
    stream = [(i, ids[i]) for i in kept_token_indices(tok, ids)]
    bars: List[TokenBar] = []
    notes: List[TokenNote] = []
    ts = _initial_time_signature(stream, kind, ts_of)
    bar_start, bar_ticks, started = 0, _bar_ticks(tpq, ts), False   # started: a bar (maybe implicit) is open
    now, position_index = 0, -1
    j = 0
    while j < len(stream):
        index, t = stream[j]
        typ = kind[t]
        if typ == "Bar":
            if started:
                bar_start += bar_ticks
            started, bar_ticks = True, _bar_ticks(tpq, ts)
            bars.append(TokenBar(index, bar_start, bar_ticks, ts))
            now, position_index = bar_start, -1
        elif typ == "TimeSig":
            ts = ts_of[t]
            bar_ticks = _bar_ticks(tpq, ts)
            if bars and bars[-1].time == bar_start:  # the time signature of the bar it follows
                bars[-1] = TokenBar(bars[-1].index, bar_start, bar_ticks, ts)
        elif typ == "Position":
            started = True  # notes before the first Bar token sit in an implicit bar 0, as miditok reads them
            now = bar_start + round(position_of[t] * _ticks_per_beat(tpq, ts[1]) / ppb)
            position_index = index
        elif typ == "Pitch":
            group = stream[j:j + 3]
            notes.append(TokenNote(index, tuple(g[0] for g in group), position_index, len(bars) - 1,
                                   now, round(duration_of[group[2][1]] * _ticks_per_beat(tpq, ts[1])),
                                   pitch_of[t], velocity_of[group[1][1]]))
            j += 3
            continue
        j += 1
    return Reading(tpq, bars, notes)


def _initial_time_signature(stream, kind, ts_of):
    """miditok's rule: the first TimeSig before any note token, else 4/4 (also for an implicit bar 0)."""
    for _, t in stream:
        if kind[t] == "TimeSig":
            return ts_of[t]
        if kind[t] in ("Pitch", "Velocity", "Duration"):
            break
    return (4, 4)


def _bar_ticks(tpq: int, ts: Tuple[int, int]) -> int:
    return round(ts[0] * _ticks_per_beat(tpq, ts[1]))


def bar_position_limits(tok, ids: Sequence[int]) -> np.ndarray:
    """(L,) int64: for every index of ids, the number of Position values that fall inside its bar
    (numerator x positions_per_beat of the bar's time signature, as known from the TimeSig tokens
    up to that index; 4/4 before any)."""
    kind, _, _, _, _, ts_of = _tables(tok)
    ppb = positions_per_beat(tok)
    out = np.empty(len(ids), dtype=np.int64)
    numerator = 4
    for i, t in enumerate(int(x) for x in ids):
        if 0 <= t < len(kind) and kind[t] == "TimeSig":
            numerator = ts_of[t][0]
        out[i] = numerator * ppb
    return out
