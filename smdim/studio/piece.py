"""A piece in the studio: its token stream plus the track of every note.

The model reads one merged stream (tokenizer.py), so tracks live beside it: `note_tracks[i]` is the
track of the i-th note `remi.read` finds in `ids`. A piece is always canonical (ids ==
encode(decode(ids))), so token order, bars and notes agree with what is drawn, played and
downloaded. Times are ticks at the tokenizer's time division (16 per quarter).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from symusic import Note, Score, Tempo, TimeSignature, Track

from ..remi import Reading, read
from ..tokenizer import decode, encode

MIDI_TPQ = 480            # ticks per quarter of the MIDI files the studio writes


class PieceError(ValueError):
    """A piece cannot be made (not MIDI, no notes, too long): the message is shown to the user."""


@dataclass(frozen=True)
class TrackInfo:
    name: str
    program: int


@dataclass
class StudioPiece:
    ids: List[int]
    tracks: List[TrackInfo]
    note_tracks: List[int]
    name: str
    tempo: float = 120.0
    reading: Reading = field(default=None, repr=False)

    def __post_init__(self):
        if len(self.note_tracks) != len(self.reading.notes):
            raise ValueError("note_tracks must give a track for every note")

    @property
    def notes(self):
        return self.reading.notes

    @property
    def bars(self):
        return self.reading.bars

    def keys(self) -> List[Tuple[int, int, int, int]]:
        """(time, pitch, duration, track) of every note: what 'unchanged' means."""
        return [(n.time, n.pitch, n.duration, t) for n, t in zip(self.notes, self.note_tracks)]

    def to_json(self) -> Dict:
        seconds_per_tick = 60.0 / self.tempo / self.reading.ticks_per_quarter
        end = max([b.time + b.length for b in self.bars] + [n.time + n.duration for n in self.notes] + [0])
        return {
            "name": self.name,
            "ticks_per_quarter": self.reading.ticks_per_quarter,
            "seconds_per_tick": seconds_per_tick,
            "end": end,
            "tokens": len(self.ids),
            "tracks": [{"name": t.name, "program": t.program} for t in self.tracks],
            "bars": [{"time": b.time, "length": b.length, "numerator": b.time_signature[0],
                      "denominator": b.time_signature[1]} for b in self.bars],
            "notes": [{"id": i, "time": n.time, "duration": n.duration, "pitch": n.pitch, "velocity": n.velocity,
                       "track": t} for i, (n, t) in enumerate(zip(self.notes, self.note_tracks))],
        }

    def to_score(self) -> Score:
        """The piece as a multi-track Score at MIDI_TPQ (programs, time signatures, tempo kept)."""
        scale = MIDI_TPQ // self.reading.ticks_per_quarter
        score = Score(MIDI_TPQ)
        score.tempos.append(Tempo(0, self.tempo))
        last = None
        for bar in self.bars:
            if bar.time_signature != last:
                score.time_signatures.append(TimeSignature(bar.time * scale, *bar.time_signature))
                last = bar.time_signature
        if not self.bars:
            score.time_signatures.append(TimeSignature(0, 4, 4))
        tracks = [Track(name=t.name, program=t.program) for t in self.tracks]
        for note, track in zip(self.notes, self.note_tracks):
            tracks[track].notes.append(Note(note.time * scale, max(note.duration * scale, 1), note.pitch,
                                            note.velocity))
        score.tracks.extend(tracks)
        return score

    def midi_bytes(self) -> bytes:
        return self.to_score().dumps_midi()


def canonical_ids(tok, ids: Sequence[int]) -> List[int]:
    """encode(decode(ids)): the stream a file of this piece would give (bars, positions in order)."""
    return encode(tok, decode(tok, [int(i) for i in ids]))


def assign_tracks(known: Sequence[Tuple[int, int, int]], reading: Reading, default: int) -> List[int]:
    """Track of every note of `reading`: a note with the (time, pitch) of a `known` (time, pitch, track)
    takes its track (each known note used once); any other note goes to `default`."""
    pool: Dict[Tuple[int, int], List[int]] = defaultdict(list)
    for time, pitch, track in known:
        pool[(time, pitch)].append(track)
    out = []
    for note in reading.notes:
        tracks = pool.get((note.time, note.pitch))
        out.append(tracks.pop(0) if tracks else default)
    return out


def from_ids(tok, ids: Sequence[int], *, name: str, tracks: Sequence[TrackInfo],
             known: Sequence[Tuple[int, int, int]] = (), default_track: int = 0, tempo: float = 120.0,
             max_tokens: Optional[int] = None) -> StudioPiece:
    """A canonical piece of `ids`; notes matching `known` (time, pitch, track) keep their track."""
    canonical = canonical_ids(tok, ids)
    if not canonical:
        raise PieceError("the result has no notes")
    if max_tokens is not None and len(canonical) > max_tokens:
        raise PieceError(f"the piece is too long: {len(canonical)} tokens, the studio takes at most {max_tokens}")
    reading = read(tok, canonical)
    return StudioPiece(canonical, list(tracks), assign_tracks(known, reading, default_track), name, tempo, reading)


def from_midi(tok, data: bytes, *, name: str, max_tokens: int) -> StudioPiece:
    """A piece from the bytes of a MIDI file (checked by parsing; drum tracks are left out, since the
    model writes no drums)."""
    from symusic import Score as _Score

    if not data.startswith(b"MThd"):
        raise PieceError(f"{name} is not a MIDI file (it does not start with a MIDI header)")
    try:
        score = _Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError with its parser's message
        raise PieceError(f"{name} is not a readable MIDI file ({exc})") from None
    melodic = [t for t in score.tracks if not t.is_drum and t.note_num() > 0]
    if not melodic:
        raise PieceError(f"{name} has no notes (drum tracks are not edited)")
    tempo = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    ids = encode(tok, score)
    if not ids:
        raise PieceError(f"{name} has no notes in the model's pitch range")
    tracks, known = [], []
    for number, track in enumerate(melodic):
        tracks.append(TrackInfo(track.name or f"track {number + 1}", int(track.program)))
        alone = score.copy()
        alone.tracks = [track]
        known.extend((n.time, n.pitch, number) for n in read(tok, encode(tok, alone)).notes)
    return from_ids(tok, ids, name=name, tracks=tracks, known=known, tempo=tempo, max_tokens=max_tokens)


def missing_notes(before: StudioPiece, after: StudioPiece) -> Counter:
    """The notes (time, pitch, duration, track) of `before` missing from `after` (empty = all kept)."""
    return Counter(before.keys()) - Counter(after.keys())
