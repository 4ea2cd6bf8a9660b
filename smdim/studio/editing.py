"""What the studio does to a piece with a model: infill a bar range (only some tracks, locked notes
kept), continue by N bars, draw k variations, generate a new piece. Every result is a new
StudioPiece; notes the user did not ask to change keep onset, pitch, duration and track.

A `Model` is a loaded run (pipeline.load_run): model, tokenizer and training length; pieces longer
than the training length are infilled / continued window by window (sampling.infill, generate_long).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from ..generation import bar_region, infill_constraints, make_constraints
from ..sampling import (DEFAULT_ORDER, DEFAULT_STEPS, ORDERS, check_temperature, continue_sequence, generate_long,
                        infill)
from ..tokenizer import bar_id, mask_id
from .piece import PieceError, StudioPiece, TrackInfo, canonical_ids, from_ids

MAX_VARIATIONS = 8


@dataclass(frozen=True)
class Settings:
    """Sampler settings chosen in the page (defaults: the command line's, sampling.DEFAULT_*)."""
    steps: int = DEFAULT_STEPS
    temperature: float = 1.0
    seed: int = 0
    order: str = DEFAULT_ORDER
    pitch_low: Optional[int] = None
    pitch_high: Optional[int] = None
    max_chord: Optional[int] = None

    def __post_init__(self):
        if not 1 <= self.steps <= 512:
            raise PieceError(f"steps must be between 1 and 512; got {self.steps}")
        try:
            check_temperature(self.temperature)
        except ValueError as exc:
            raise PieceError(str(exc)) from None
        if self.temperature > 5:
            raise PieceError(f"temperature must be at most 5; got {self.temperature}")
        if self.order not in ORDERS:
            raise PieceError(f"order must be one of {', '.join(ORDERS)}; got {self.order!r}")
        if (self.pitch_low is None) != (self.pitch_high is None):
            raise PieceError("give both ends of the pitch range, or neither")
        if self.pitch_low is not None and not 0 <= self.pitch_low <= self.pitch_high <= 127:
            raise PieceError(f"the pitch range must satisfy 0 <= low <= high <= 127; "
                             f"got {self.pitch_low}..{self.pitch_high}")
        if self.max_chord is not None and not 1 <= self.max_chord <= 16:
            raise PieceError(f"max chord must be between 1 and 16; got {self.max_chord}")

    @property
    def pitch_range(self):
        return None if self.pitch_low is None else (self.pitch_low, self.pitch_high)

    def sampler(self, tok, on_step=None, constraints=None):
        return dict(steps=self.steps, mask_id=mask_id(tok), temperature=self.temperature, order=self.order,
                    generator=torch.Generator().manual_seed(self.seed), on_step=on_step,
                    constraints=constraints if constraints is not None
                    else make_constraints(tok, self.pitch_range, self.max_chord))


Progress = Optional[Callable[[int, int], None]]


def _check_k(k):
    if not 1 <= k <= MAX_VARIATIONS:
        raise PieceError(f"variations must be between 1 and {MAX_VARIATIONS}; got {k}")


def _tokens_per_bar(piece: StudioPiece) -> float:
    return len(piece.ids) / max(len(piece.bars), 1)


def infill_piece(run, piece: StudioPiece, first_bar: int, last_bar: int, *, tracks: Optional[Sequence[int]] = None,
                 locked: Sequence[int] = (), k: int = 1, settings: Settings = Settings(),
                 on_step: Progress = None) -> List[StudioPiece]:
    """k candidates for bars [first_bar, last_bar] (0-based, inclusive) of `piece`: the notes of the
    selected `tracks` (all when None) in those bars are redrawn, except the `locked` note ids;
    new notes go to the first selected track. An empty region gets room for the piece's average
    number of tokens per bar."""
    _check_k(k)
    tok = run.tokenizer
    n_bars = len(piece.bars)
    if not 0 <= first_bar <= last_bar < n_bars:
        raise PieceError(f"select bars between 1 and {n_bars} (got {first_bar + 1}..{last_bar + 1})")
    selected = set(range(len(piece.tracks)) if tracks is None else tracks)
    if not selected:
        raise PieceError("select at least one track to infill")
    if not selected <= set(range(len(piece.tracks))):
        raise PieceError(f"unknown track in {sorted(selected)}; the piece has {len(piece.tracks)}")
    locked = set(locked)
    if not locked <= set(range(len(piece.notes))):
        raise PieceError("a locked note is not in the piece")
    chosen = [i for i, (note, track) in enumerate(zip(piece.notes, piece.note_tracks))
              if first_bar <= note.bar <= last_bar and track in selected]
    if chosen and set(chosen) <= locked:
        raise PieceError("nothing to redraw in the selection: every note of the selected tracks in it is locked")
    tokens = torch.tensor(piece.ids, dtype=torch.long)
    region = bar_region(tok, tokens, first_bar, last_bar)
    kept = {i for i, (note, track) in enumerate(zip(piece.notes, piece.note_tracks))
            if first_bar <= note.bar <= last_bar and (track not in selected or i in locked)}
    for i in kept:
        note = piece.notes[i]
        region[list(note.token_indices)] = False
        if note.position_index >= 0:
            region[note.position_index] = False
    tokens, region = _with_room(tok, tokens, region, piece, first_bar, last_bar)
    constraints = infill_constraints(tok, tokens, region, settings.pitch_range, settings.max_chord)
    out = infill(run.model, tokens.repeat(k, 1), region.repeat(k, 1), window=run.seq_len,
                 **settings.sampler(tok, on_step, constraints))
    known = [(n.time, n.pitch, t) for i, (n, t) in enumerate(zip(piece.notes, piece.note_tracks))
             if not first_bar <= n.bar <= last_bar or i in kept]
    target = min(selected)
    return [from_ids(tok, row, name=f"{piece.name} · infill bars {first_bar + 1}-{last_bar + 1}"
                     + (f" ({j + 1}/{k})" if k > 1 else ""), tracks=piece.tracks, known=known,
                     default_track=target, tempo=piece.tempo) for j, row in enumerate(out.cpu().tolist())]


def _with_room(tok, tokens, region, piece, first_bar, last_bar):
    """Insert MASK slots at the end of the region when it holds fewer tokens than the piece's average
    for that many bars (an empty bar would otherwise stay empty)."""
    want = math.ceil(_tokens_per_bar(piece) * (last_bar - first_bar + 1))
    extra = want - int(region.sum())
    if extra <= 0:
        return tokens, region
    bars = piece.bars
    end = bars[last_bar + 1].index if last_bar + 1 < len(bars) else len(piece.ids)
    mask = torch.full((extra,), mask_id(tok), dtype=torch.long)
    tokens = torch.cat([tokens[:end], mask, tokens[end:]])
    region = torch.cat([region[:end], torch.ones(extra, dtype=torch.bool), region[end:]])
    return tokens, region


def continue_piece(run, piece: StudioPiece, n_bars: int, *, k: int = 1, track: int = 0,
                   settings: Settings = Settings(), on_step: Progress = None) -> List[StudioPiece]:
    """k continuations of `piece` by `n_bars` bars (new notes on `track`); the piece itself is kept."""
    _check_k(k)
    if not 1 <= n_bars <= 64:
        raise PieceError(f"continue by 1 to 64 bars; got {n_bars}")
    if not 0 <= track < len(piece.tracks):
        raise PieceError(f"unknown track {track}; the piece has {len(piece.tracks)}")
    tok = run.tokenizer
    prefix = torch.tensor(piece.ids, dtype=torch.long)[None].repeat(k, 1)
    total = len(piece.ids) + math.ceil(_tokens_per_bar(piece) * n_bars * 1.25) + 4
    out = continue_sequence(run.model, prefix, total, window=run.seq_len, bar_id=bar_id(tok),
                            **settings.sampler(tok, on_step))
    stop_at = len(piece.bars) + n_bars          # the Bar token that would start the bar after the new ones
    known = [(n.time, n.pitch, t) for n, t in zip(piece.notes, piece.note_tracks)]
    results = []
    for j, row in enumerate(out.cpu().tolist()):
        row = canonical_ids(tok, row)           # where the notes really fall (a late Position moves a note on)
        bars = [i for i, t in enumerate(row) if t == bar_id(tok)]
        if len(bars) > stop_at:
            row = row[:bars[stop_at]]
        results.append(from_ids(tok, row, name=f"{piece.name} · continued {n_bars} bars"
                                + (f" ({j + 1}/{k})" if k > 1 else ""), tracks=piece.tracks, known=known,
                                default_track=track, tempo=piece.tempo))
    return results


def generate_piece(run, n_tokens: int, *, k: int = 1, settings: Settings = Settings(), on_step: Progress = None,
                   name: str = "generated") -> List[StudioPiece]:
    """Up to k new pieces of about `n_tokens` tokens (one piano track; a draw without notes is left out)."""
    _check_k(k)
    if not 16 <= n_tokens <= 8192:
        raise PieceError(f"generate 16 to 8192 tokens; got {n_tokens}")
    tok = run.tokenizer
    out = generate_long(run.model, k, n_tokens, window=run.seq_len, bar_id=bar_id(tok),
                        **settings.sampler(tok, on_step))
    rows = [row for row in out.cpu().tolist() if canonical_ids(tok, row)]
    if not rows:
        raise PieceError("the model wrote no notes; try another seed or more steps")
    return [from_ids(tok, row, name=f"{name} {j + 1}" if len(rows) > 1 else name, tracks=[TrackInfo("piano", 0)])
            for j, row in enumerate(rows)]
