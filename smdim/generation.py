"""Tokenizer-aware generation: constraints from the REMI vocabulary, bar-range infilling,
MIDI prefixes for continuation, and writing pieces (.mid + piano-roll PNG)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from .pianoroll import save_pianoroll
from .sampling import Constraints
from .remi import bar_position_limits
from .tokenizer import bar_id, decode, encode, pitch_tokens, position_tokens, token_ids_by_type


STRUCTURE_TYPES = ("Bar", "TimeSig")  # the bar grid: kept when infilling, never sampled into a region


def structure_ids(tok) -> List[int]:
    """Token ids of the bar grid (STRUCTURE_TYPES)."""
    by_type = token_ids_by_type(tok)
    return [i for kind in STRUCTURE_TYPES for i in by_type.get(kind, [])]


def make_constraints(tok, pitch_range: Optional[Sequence[int]] = None, max_chord: Optional[int] = None,
                     keep_structure: bool = False):
    """Constraints for REMI tokens: Pitch tokens carry pitches; Bar and Position tokens start a new
    onset group (so max_chord bounds the notes starting together). keep_structure bans Bar and
    TimeSig tokens (for infilling: a sampled bar line or time signature would move every later
    note). None if nothing is constrained."""
    if pitch_range is None and max_chord is None and not keep_structure:
        return None
    vocab = len(tok.vocab)
    pitch_of_token = torch.full((vocab,), -1, dtype=torch.long)
    for token_id, pitch in pitch_tokens(tok).items():
        pitch_of_token[token_id] = pitch
    is_boundary = torch.zeros(vocab, dtype=torch.bool)
    by_type = token_ids_by_type(tok)
    for kind in ("Bar", "Position"):
        is_boundary[by_type.get(kind, [])] = True
    banned = None
    if keep_structure:
        banned = torch.zeros(vocab, dtype=torch.bool)
        banned[structure_ids(tok)] = True
    return Constraints(pitch_of_token, is_boundary, pitch_range=tuple(pitch_range) if pitch_range else None,
                       max_chord=max_chord, banned=banned)


def infill_constraints(tok, tokens: torch.Tensor, region: torch.Tensor,
                       pitch_range: Optional[Sequence[int]] = None, max_chord: Optional[int] = None):
    """Constraints for infilling `region` (bool (L,)) of `tokens` (L,) so that every token outside it
    decodes where it was: no Bar or TimeSig is sampled (the bar grid stays), no Position past the
    end of its bar (it would land in the next bar), and no Position in front of a kept note whose
    own Position comes earlier (the note would move to the new one) — kept notes inside the region
    (locked notes, other tracks) therefore stay put too. Plus pitch_range / max_chord as in
    make_constraints. banned_at is (L, vocab): slice it with .window() for windowed infilling."""
    if tokens.dim() != 1 or region.shape != tokens.shape:
        raise ValueError(f"tokens and region must be 1-D of one length; got {tuple(tokens.shape)} and "
                         f"{tuple(region.shape)}")
    constraints = make_constraints(tok, pitch_range, max_chord, keep_structure=True)
    ids = tokens.tolist()
    length, vocab = len(ids), len(tok.vocab)
    position_value = torch.full((vocab,), -1, dtype=torch.long)
    for token_id, value in position_tokens(tok).items():
        position_value[token_id] = value
    is_position = position_value >= 0
    limits = torch.from_numpy(bar_position_limits(tok, ids))                      # (L,)
    banned_at = is_position & (position_value[None, :] >= limits[:, None])        # (L, vocab)
    # next token outside the region, to the right of every position
    known = ~region.cpu().bool()
    index = torch.where(known, torch.arange(length), torch.full((length,), length))
    next_known = torch.flip(torch.cummin(torch.flip(index, [0]), 0).values, [0])
    next_known = torch.cat([next_known[1:], torch.tensor([length])])
    is_note_token = torch.zeros(vocab + 1, dtype=torch.bool)
    by_type = token_ids_by_type(tok)
    for kind in ("Pitch", "Velocity", "Duration"):
        is_note_token[by_type.get(kind, [])] = True
    padded = torch.cat([tokens.cpu().long(), torch.tensor([vocab])])             # index L -> "none"
    before_kept_note = is_note_token[padded[next_known]]                          # (L,)
    banned_at |= before_kept_note[:, None] & is_position[None, :]
    return replace(constraints, banned_at=banned_at)


def bar_region(tok, tokens: torch.Tensor, first_bar: int, last_bar: int) -> torch.Tensor:
    """Bool mask (same shape as tokens (L,)) of the tokens inside bars [first_bar, last_bar]
    (0-based, inclusive); the Bar and TimeSig tokens stay clamped so the bar structure is kept
    (sample with infill_constraints so none is added and no note leaves its bar)."""
    if first_bar < 0 or last_bar < first_bar:
        raise ValueError(f"bars must satisfy 0 <= first <= last; got {first_bar}..{last_bar}")
    structure = torch.isin(tokens, torch.tensor(structure_ids(tok), dtype=tokens.dtype, device=tokens.device))
    is_bar = tokens == bar_id(tok)
    bar_index = torch.cumsum(is_bar.long(), dim=-1) - 1          # bar number of every token
    n_bars = int(is_bar.sum())
    if first_bar >= n_bars:
        raise ValueError(f"the piece has {n_bars} bars (0..{n_bars - 1}); cannot infill bar {first_bar}")
    return (bar_index >= first_bar) & (bar_index <= last_bar) & ~structure


def bar_beats(tok, tokens: Sequence[int], first_bar: int, last_bar: int) -> Tuple[float, float]:
    """(start, end) in beats of bars [first_bar, last_bar] after decoding, for highlighting."""
    ids = list(tokens)
    bar = bar_id(tok)
    positions = [i for i, t in enumerate(ids) if t == bar]
    head = decode(tok, ids[:positions[first_bar]] + [bar]) if first_bar < len(positions) else None
    start = _end_beats(head) if head is not None else 0.0
    stop_index = positions[last_bar + 1] if last_bar + 1 < len(positions) else len(ids)
    stop = _end_beats(decode(tok, ids[:stop_index] + [bar]))
    return start, max(stop, start)


def _end_beats(score) -> float:
    return score.end() / score.ticks_per_quarter if score.note_num() else 0.0


def prefix_tokens(tok, score, n_bars: int) -> List[int]:
    """Token ids of the first `n_bars` (>= 1) bars of a score (for continuation)."""
    if n_bars < 1:
        raise ValueError(f"n_bars must be >= 1 (a continuation needs a prefix); got {n_bars}")
    ids = encode(tok, score)
    if not ids:
        raise ValueError("the MIDI file has no notes in the tokenizer's pitch range")
    bar = bar_id(tok)
    starts = [i for i, t in enumerate(ids) if t == bar]
    if n_bars < len(starts):
        ids = ids[:starts[n_bars]]
    return ids


def write_piece(tok, ids, out_dir, name, *, title=None, highlight=None, wav=False):
    """Decode ids to `<name>.mid` and `<name>.png` (and `<name>.wav` with wav=True, see
    smdim.audio) in out_dir; returns (midi_path, png_path, score)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    score = decode(tok, [int(i) for i in ids])
    midi_path = out_dir / f"{name}.mid"
    score.dump_midi(str(midi_path))
    png_path = save_pianoroll(score, out_dir / f"{name}.png", title=title or name, highlight=highlight)
    if wav:
        from .audio import render_wav

        render_wav(score, out_dir / f"{name}.wav")
    return midi_path, png_path, score
