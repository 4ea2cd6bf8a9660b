"""smdim.remi: the notes read from a token stream (with their token indices) are exactly the notes
tokenizer.decode returns, for encoded pieces in several metres and for arbitrary id sequences."""
import warnings

import numpy as np
import pytest
from symusic import Note, Score, TimeSignature, Track

from smdim.data import load_corpus
from smdim.remi import bar_position_limits, read
from smdim.tokenizer import (bar_id, decode, encode, make_tokenizer, positions_per_beat, token_ids_by_type,
                             vocab_size)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _decoded(tok, ids):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = decode(tok, ids)
    return sorted((n.time, n.pitch, n.duration, n.velocity) for t in score.tracks for n in t.notes)


def _read(tok, ids):
    return sorted((n.time, n.pitch, n.duration, n.velocity) for n in read(tok, ids).notes)


def test_encoded_pieces_in_several_metres(tok):
    score = Score(480)
    for time, num, den in [(0, 3, 8), (720 * 2, 2, 2), (720 * 2 + 1920, 7, 8), (720 * 2 + 1920 + 1680, 4, 4)]:
        score.time_signatures.append(TimeSignature(time, num, den))
    track = Track()
    for k, start in enumerate(range(0, 720 * 2 + 1920 + 1680 + 3840, 120)):
        track.notes.append(Note(start, 120 * (1 + k % 5), 50 + k % 30, 40 + k % 80))
        if k % 4 == 0:
            track.notes.append(Note(start, 360, 80 + k % 10, 90))
    score.tracks.append(track)
    ids = encode(tok, score)
    reading = read(tok, ids)
    assert _read(tok, ids) == _decoded(tok, ids)
    assert [b.time_signature for b in reading.bars[:5]] == [(3, 8), (3, 8), (2, 2), (7, 8), (4, 4)]
    assert [b.time for b in reading.bars[:4]] == [0, 24, 48, 112]          # 16 ticks per quarter
    for note in reading.notes:
        assert tok[ids[note.pitch_index]] == f"Pitch_{note.pitch}"
        assert [tok[ids[i]].split("_")[0] for i in note.token_indices] == ["Pitch", "Velocity", "Duration"]
        assert tok[ids[note.position_index]].startswith("Position_")
        assert reading.bars[note.bar].index < note.position_index


def test_corpus_pieces(tok):
    corpus = load_corpus("han")
    for ids in corpus.pieces[:40]:
        assert _read(tok, ids) == _decoded(tok, ids)


@pytest.mark.parametrize("well_formed", [True, False])
def test_arbitrary_id_sequences(tok, well_formed):
    """Model output can be anything: special ids, orphan attributes, notes before the first bar line,
    and (not well formed) time signatures in the middle of a bar."""
    rng = np.random.default_rng(0)
    time_sigs = sorted(token_ids_by_type(tok)["TimeSig"])
    for _ in range(200):
        ids = rng.integers(0, vocab_size(tok), size=300).tolist()
        if well_formed:
            ids = [i for i in ids if i not in time_sigs]
            ids = sum(([i, int(rng.choice(time_sigs))] if i == bar_id(tok) else [i] for i in ids), [])
        assert _read(tok, ids) == _decoded(tok, ids)


def test_bar_position_limits(tok):
    ppb = positions_per_beat(tok)
    by_name = {tok[i]: i for i in range(vocab_size(tok))}
    ids = [by_name["Bar_None"], by_name["TimeSig_3/8"], by_name["Position_0"], by_name["Bar_None"],
           by_name["TimeSig_4/4"], by_name["Position_3"]]
    assert bar_position_limits(tok, ids).tolist() == [4 * ppb] + [3 * ppb] * 3 + [4 * ppb] * 2
