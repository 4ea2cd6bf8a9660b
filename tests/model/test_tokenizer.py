"""smdim.tokenizer: REMI config, special ids, (de)serialisation, tolerant decoding, token tables."""
import json
import random
import socket

import numpy as np
import pytest
import torch
from symusic import Note, Score, TimeSignature, Track

from smdim import tokenizer as T
from smdim.metrics import invalid_token_rate


@pytest.fixture(scope="module")
def tok():
    return T.make_tokenizer()


def make_score(notes, tpq=480, ts=(4, 4), program=0, is_drum=False, extra_tracks=()):
    """notes: (onset_quarters, duration_quarters, pitch, velocity)."""
    s = Score(tpq)
    s.time_signatures.append(TimeSignature(0, *ts))
    for track_notes, prog, drum in [(notes, program, is_drum), *extra_tracks]:
        t = Track(program=prog, is_drum=drum, name="t")
        for on, dur, pitch, vel in track_notes:
            t.notes.append(Note(int(round(on * tpq)), int(round(dur * tpq)), pitch, vel))
        s.tracks.append(t)
    return s


def notes_in_quarters(score):
    out = []
    for track in score.tracks:
        for n in track.notes:
            out.append((n.time / score.ticks_per_quarter, n.duration / score.ticks_per_quarter, n.pitch, n.velocity))
    return sorted(out)


MELODY = [  # onsets on a 32nd grid, durations from a 32nd to a whole note, a chord, dynamics
    (0.0, 1.0, 60, 100), (1.0, 0.5, 62, 80), (1.5, 0.5, 64, 80), (2.0, 0.25, 65, 60),
    (2.25, 0.125, 67, 60), (2.375, 0.125, 69, 60), (2.5, 1.5, 71, 90), (4.0, 2.0, 72, 110),
    (4.0, 2.0, 76, 110), (4.0, 2.0, 79, 110), (6.0, 0.75, 48, 70), (6.75, 0.25, 50, 70),
    (7.0, 4.0, 21, 40), (11.0, 1.0, 108, 127),
]


def test_special_ids_and_vocab(tok):
    assert T.pad_id(tok) == 0
    assert tok.vocab["MASK_None"] == T.mask_id(tok)
    ids = {T.pad_id(tok), T.bos_id(tok), T.eos_id(tok), T.mask_id(tok)}
    assert len(ids) == 4 and set(T.special_ids(tok)) == ids
    assert T.vocab_size(tok) == len(tok.vocab) == max(tok.vocab.values()) + 1
    assert T.vocab_size(tok) < 400
    assert tok.vocab["Bar_None"] == T.bar_id(tok)


def test_round_trip_keeps_notes(tok):
    score = make_score(MELODY)
    ids = T.encode(tok, score)
    assert ids and all(isinstance(i, int) for i in ids)
    back = T.decode(tok, ids)
    got, want = notes_in_quarters(back), notes_in_quarters(score)
    assert len(got) == len(want)
    for (on_g, dur_g, p_g, v_g), (on_w, dur_w, p_w, v_w) in zip(got, want):
        assert p_g == p_w
        assert on_g == pytest.approx(on_w, abs=1e-9)  # every onset is on the 1/8-beat grid
        tol = 1 / 8 if dur_w < 4 else 1 / 4  # quantisation of the duration grid
        assert abs(dur_g - dur_w) <= tol + 1e-9
        assert abs(v_g - v_w) <= 8  # 16 velocity bins
    assert back.time_signatures[0].numerator == 4 and back.time_signatures[0].denominator == 4


@pytest.mark.parametrize("ts", [(3, 4), (6, 8), (5, 8), (2, 2)])
def test_round_trip_time_signatures(tok, ts):
    beat = 4 / ts[1]  # quarters per beat
    bar = ts[0] * beat
    notes = [(i * beat, beat, 60 + i % 12, 80) for i in range(int(3 * ts[0]))]
    score = make_score(notes, ts=ts)
    ids = T.encode(tok, score)
    back = T.decode(tok, ids)
    assert (back.time_signatures[0].numerator, back.time_signatures[0].denominator) == ts
    assert [n[:3] for n in notes_in_quarters(back)] == [n[:3] for n in notes_in_quarters(score)]
    assert sum(1 for i in ids if i == T.bar_id(tok)) == 3  # bars follow the metre
    assert bar > 0


def test_tracks_merged_drums_dropped(tok):
    melody = [(i, 1, 72 + i % 5, 90) for i in range(8)]
    bass = [(2 * i, 2, 40 + i % 3, 70) for i in range(4)]
    drums = [(i, 0.5, 36, 100) for i in range(8)]
    score = make_score(melody, extra_tracks=[(bass, 33, False), (drums, 0, True)])
    back = T.decode(tok, T.encode(tok, score))
    assert len(back.tracks) == 1
    got = {(n[0], n[2]) for n in notes_in_quarters(back)}
    assert got == {(float(on), p) for on, _, p, _ in melody + bass}


def test_encode_bos_eos_and_empty(tok):
    ids = T.encode(tok, make_score(MELODY), bos_eos=True)
    assert ids[0] == T.bos_id(tok) and ids[-1] == T.eos_id(tok)
    assert T.encode(tok, make_score([])) == []
    assert T.encode(tok, make_score([(0, 1, 10, 80)])) == []  # pitch outside 21..108


def test_dict_round_trip_offline(tok, monkeypatch):
    d = T.tokenizer_to_dict(tok)
    text = json.dumps(d)  # JSON-serialisable as is
    loaded = json.loads(text)

    def no_network(*args, **kwargs):
        raise AssertionError("tokenizer_from_dict must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tok2 = T.tokenizer_from_dict(loaded)
    assert dict(tok2.vocab) == dict(tok.vocab)
    score = make_score(MELODY)
    assert T.encode(tok2, score) == T.encode(tok, score)
    # also survives torch's safe checkpoint loader
    import io

    buf = io.BytesIO()
    torch.save({"tokenizer": d}, buf)
    buf.seek(0)
    assert T.tokenizer_from_dict(torch.load(buf, weights_only=True)["tokenizer"]).vocab == tok.vocab


def test_dict_rejects_mismatched_vocab(tok):
    d = T.tokenizer_to_dict(tok)
    d["vocab"]["Pitch_60"], d["vocab"]["Pitch_61"] = d["vocab"]["Pitch_61"], d["vocab"]["Pitch_60"]
    with pytest.raises(ValueError, match="vocabulary"):
        T.tokenizer_from_dict(d)
    with pytest.raises(ValueError):
        T.tokenizer_from_dict({"nope": 1})


def test_make_tokenizer_params():
    small = T.make_tokenizer({"num_velocities": 8, "pitch_range": (48, 84)})
    assert len(T.velocity_tokens(small)) == 8
    assert sorted(T.pitch_tokens(small).values()) == list(range(48, 85))
    assert T.pad_id(small) == 0
    with pytest.raises(ValueError, match="PAD"):
        T.make_tokenizer({"special_tokens": ["BOS", "PAD", "MASK"]})
    with pytest.raises(ValueError, match="MASK"):
        T.make_tokenizer({"special_tokens": ["PAD", "BOS", "EOS"]})
    # a round trip of a non-default config through the dict
    assert T.tokenizer_from_dict(T.tokenizer_to_dict(small)).vocab == small.vocab


def test_decode_tolerates_garbage(tok):
    rng = random.Random(0)
    v = T.vocab_size(tok)
    for n in (0, 1, 5, 50, 400):
        ids = [rng.randint(-3, v + 10) for _ in range(n)]
        score = T.decode(tok, ids)
        assert isinstance(score, Score)
    assert T.decode(tok, []).note_num() == 0
    assert T.decode(tok, [T.mask_id(tok)] * 10).note_num() == 0
    # specials interleaved in a real sequence are skipped: same notes as the clean sequence
    ids = T.encode(tok, make_score(MELODY))
    noisy = [T.bos_id(tok)]
    for i in ids:
        noisy.append(i)
        if rng.random() < 0.2:
            noisy.append(rng.choice([T.pad_id(tok), T.mask_id(tok)]))
    noisy += [T.eos_id(tok)] + [T.pad_id(tok)] * 7
    assert notes_in_quarters(T.decode(tok, noisy)) == notes_in_quarters(T.decode(tok, ids))
    # tensors and numpy arrays are accepted; incomplete notes are dropped, not fatal
    assert T.decode(tok, torch.tensor(ids)).note_num() == len(MELODY)
    assert T.decode(tok, np.array(ids[:-1])).note_num() == len(MELODY) - 1


def test_token_tables(tok):
    by_type = T.token_ids_by_type(tok)
    all_ids = sorted(i for ids in by_type.values() for i in ids)
    assert all_ids == list(range(T.vocab_size(tok)))  # a partition of the vocabulary
    for name in ("PAD", "BOS", "EOS", "MASK", "Bar", "TimeSig", "Position", "Pitch", "Velocity", "Duration"):
        assert by_type[name], name
    pitches = T.pitch_tokens(tok)
    assert sorted(pitches) == by_type["Pitch"]
    assert sorted(pitches.values()) == list(range(21, 109))
    assert all(tok[i] == f"Pitch_{p}" for i, p in pitches.items())
    durs = T.duration_tokens(tok)
    assert sorted(durs) == by_type["Duration"] and min(durs.values()) == 1 / 8 and max(durs.values()) == 12
    pos = T.position_tokens(tok)
    assert sorted(pos.values()) == list(range(len(pos))) and T.positions_per_beat(tok) == 8
    assert (6, 8) in T.time_signature_tokens(tok).values()
    assert set(T.velocity_tokens(tok)) == set(by_type["Velocity"])


def test_transpose_ids(tok):
    ids = T.encode(tok, make_score([(0, 1, 60, 80), (1, 1, 64, 80)]))
    up = T.transpose_ids(tok, ids, 3)
    pt = T.pitch_tokens(tok)
    assert [pt[i] for i in up if i in pt] == [63, 67]
    assert [i for i in up if i not in pt] == [i for i in ids if i not in pt]
    with pytest.raises(ValueError):
        T.transpose_ids(tok, ids, 60)


def test_programs_variant_keeps_instruments():
    tok = T.make_tokenizer({"use_programs": True})
    melody = [(i, 1, 60 + i, 80) for i in range(8)]
    bass = [(i, 1, 40 + i, 80) for i in range(8)]
    score = make_score(melody, extra_tracks=[(bass, 33, False)])
    ids = T.encode(tok, score)
    assert invalid_token_rate(tok, ids) == 0.0
    back = T.decode(tok, ids)
    assert sorted(t.program for t in back.tracks) == [0, 33]
    assert T.tokenizer_from_dict(T.tokenizer_to_dict(tok)).vocab == tok.vocab
