"""smdim.generation: infilling bars keeps the bar grid, so every note outside the region decodes
exactly as before (an untrained model samples bar lines and time signatures freely, so it is the
hardest case)."""
import pytest
import torch
from symusic import Note, Score, TimeSignature, Track

from smdim.generation import bar_region, infill_constraints
from smdim.model import SMDIM, preset_config
from smdim.sampling import infill
from smdim.remi import read
from smdim.tokenizer import (decode, encode, make_tokenizer, mask_id, pad_id, position_tokens, positions_per_beat,
                             vocab_size)


def _song(tok, bars=8, chord=(0,)):
    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.time_signatures.append(TimeSignature(4 * 1920, 3, 4))   # a change inside the piece
    track = Track()
    t = 0
    for bar in range(bars):
        length = 1920 if bar < 4 else 1440
        for beat in range(0, length, 480):
            for interval in chord:
                track.notes.append(Note(t + beat, 400, 60 + (bar + beat // 480) % 12 + interval, 80))
        t += length
    score.tracks.append(track)
    return torch.tensor(encode(tok, score), dtype=torch.long)


def _notes(score):
    return sorted((n.time, n.pitch, n.duration) for tr in score.tracks for n in tr.notes)


@pytest.mark.parametrize("window", [None, 40])
@pytest.mark.parametrize("bars", [(1, 2), (4, 5), (0, 0), (7, 7)])
def test_infill_keeps_every_note_outside_the_region(bars, window):
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = SMDIM(preset_config("tiny", vocab_size(tok), pad_id(tok), mask_id(tok))).eval()
    tokens = _song(tok)
    region = bar_region(tok, tokens, *bars)
    original = decode(tok, tokens.tolist())
    tpq = original.ticks_per_quarter
    bar_starts = [0] + [sum(1920 if b < 4 else 1440 for b in range(k)) * tpq // 480 for k in range(1, 9)]
    lo, hi = bar_starts[bars[0]], bar_starts[bars[1] + 1]
    outside = [n for n in _notes(original) if not lo <= n[0] < hi]
    assert outside and len(outside) < len(_notes(original))
    constraints = infill_constraints(tok, tokens, region)
    for seed in range(3):
        out = infill(model, tokens[None], region[None], steps=4, mask_id=mask_id(tok), constraints=constraints,
                     generator=torch.Generator().manual_seed(seed), window=window)[0]
        assert torch.equal(out[~region], tokens[~region])
        filled = decode(tok, out.tolist())
        assert [n for n in _notes(filled) if not lo <= n[0] < hi] == outside
        assert [(t.time, t.numerator, t.denominator) for t in filled.time_signatures] == \
            [(t.time, t.numerator, t.denominator) for t in original.time_signatures]


def test_bar_region_keeps_bar_lines_and_time_signatures():
    tok = make_tokenizer()
    tokens = _song(tok)
    region = bar_region(tok, tokens, 0, 7)
    names = [tok[int(i)] for i in tokens[region]]
    assert names and not any(n.startswith(("Bar", "TimeSig")) for n in names)


def test_infill_keeps_locked_notes_inside_the_region():
    """Notes clamped inside an infilled region (locked notes, other tracks) keep onset, pitch and duration:
    no Position may be sampled between a kept note and its own Position token."""
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = SMDIM(preset_config("tiny", vocab_size(tok), pad_id(tok), mask_id(tok))).eval()
    tokens = _song(tok, chord=(0, 4, 7))
    notes = read(tok, tokens.tolist()).notes
    region = bar_region(tok, tokens, 1, 5)
    locked = [n for n in notes if 1 <= n.bar <= 5][2::3]    # the top note of every chord: two free notes before it
    assert len(locked) >= 4
    for note in locked:
        region[list(note.token_indices) + [note.position_index]] = False
    constraints = infill_constraints(tok, tokens, region)
    wanted = sorted((n.time, n.pitch, n.duration) for n in locked)
    for seed in range(4):
        out = infill(model, tokens[None], region[None], steps=3, mask_id=mask_id(tok), constraints=constraints,
                     generator=torch.Generator().manual_seed(seed))[0]
        got = {(n.time, n.pitch, n.duration) for n in read(tok, out.tolist()).notes}
        assert all(w in got for w in wanted), seed


def test_infill_constraints_ban_positions_past_the_bar_end():
    tok = make_tokenizer()
    tokens = _song(tok)
    region = bar_region(tok, tokens, 0, 7)
    banned = infill_constraints(tok, tokens, region).banned_at
    positions = {v: k for k, v in position_tokens(tok).items()}
    ppb = positions_per_beat(tok)
    bars = read(tok, tokens.tolist()).bars
    in_44, in_34 = bars[1].index + 3, bars[5].index + 3          # inside a 4/4 and a 3/4 bar
    assert not banned[in_44, positions[4 * ppb - 1]] and banned[in_44, positions[4 * ppb]]
    assert not banned[in_34, positions[3 * ppb - 1]] and banned[in_34, positions[3 * ppb]]
    with pytest.raises(ValueError, match="1-D"):
        infill_constraints(tok, tokens[None], region[None])
