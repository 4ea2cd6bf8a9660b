"""smdim.metrics.tokens: the (transposition-invariant) copy rate and the one invalid-token rule."""
import random

import numpy as np
import pytest

from metrics_helpers import make_score, melody
from smdim import metrics as M

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------------------------------------------------
# Copy rate
# ---------------------------------------------------------------------------------------------------------
def test_copy_rate():
    rng = np.random.default_rng(0)
    train = [rng.integers(2, 300, int(rng.integers(100, 300))) for _ in range(20)]
    assert M.copy_rate([train[3]], train) == 1.0
    assert M.copy_rate(train[3].tolist(), train) == 1.0  # one sequence as a list of ints
    padded = np.concatenate([train[5][:80], np.zeros(40, dtype=np.int64)])  # PAD windows are left out
    assert M.copy_rate([padded], train, ignore_ids=(0,)) == 1.0
    assert M.copy_rate([padded], train, ignore_ids=()) < 0.8  # ... and count as fresh when not ignored
    fresh = [rng.integers(2, 300, 200) for _ in range(5)]
    assert M.copy_rate(fresh, train) < 0.01
    half = [np.concatenate([train[1][:100], fresh[0][:100]])]
    assert 0.3 < M.copy_rate(half, train) < 0.7
    batch = torch.tensor(np.stack([train[0][:64], train[1][:64]]))
    assert M.copy_rate(batch, train, n=8) == 1.0
    with pytest.raises(ValueError, match="gen_token_seqs"):
        M.copy_rate([[1, 2, 3]], train)
    with pytest.raises(ValueError, match="train_token_seqs is empty"):
        M.copy_rate(fresh, [])
    with pytest.raises(ValueError, match="n must be"):
        M.copy_rate(fresh, train, n=0)


# A toy vocabulary: 0 PAD, 1 MASK, 2-9 other tokens, 10-97 Pitch tokens of MIDI 21-108, 98-149 other tokens.
TOY_PITCH = np.full(150, -1, dtype=np.int64)
TOY_PITCH[10:98] = np.arange(21, 109)


def toy_sequences(rng, n, length):
    """Alternating pitch and non-pitch tokens, pitches in ids 30-70 (MIDI 41-81) so a shift stays in range."""
    out = []
    for _ in range(n):
        seq = np.empty(length, dtype=np.int64)
        seq[0::2] = rng.integers(30, 71, (length + 1) // 2)
        seq[1::2] = np.where(rng.random(length // 2) < 0.5, rng.integers(2, 10, length // 2),
                             rng.integers(98, 150, length // 2))
        out.append(seq)
    return out


def transpose_toy(seq, k):
    return np.where(TOY_PITCH[seq] >= 0, seq + k, seq)


def test_transposed_copy_counts_with_the_pitch_table():
    rng = np.random.default_rng(1)
    train = toy_sequences(rng, 10, 200)
    up3 = transpose_toy(train[2], 3)
    down5 = transpose_toy(train[7], -5)
    assert M.copy_rate([up3, down5], train) < 0.01
    assert M.copy_rate([up3, down5], train, pitch_of_token=TOY_PITCH) == 1.0
    assert M.copy_rate([train[4]], train, pitch_of_token=TOY_PITCH) == 1.0  # an exact copy still counts
    fresh = toy_sequences(np.random.default_rng(2), 4, 200)
    assert M.copy_rate(fresh, train, pitch_of_token=TOY_PITCH) < 0.01
    # Two halves transposed differently: only windows whose pitches all lie in one half are copies — the
    # 85 windows inside each half, and the one starting at 99 (id 99 is not a pitch token).
    mixed = np.concatenate([transpose_toy(train[1][:100], 2), transpose_toy(train[1][100:], 4)])
    r = M.copy_rate([mixed], train, pitch_of_token=TOY_PITCH)
    assert r == pytest.approx((2 * 85 + 1) / (200 - 16 + 1))
    # Ignored ids are still excluded (before the relative-pitch rewrite).
    padded = np.concatenate([up3[:90], np.ones(10, np.int64), np.zeros(30, np.int64)])  # ... MASK, then PAD
    assert M.copy_rate([padded], train, ignore_ids=(0, 1), pitch_of_token=TOY_PITCH) == 1.0
    assert M.copy_rate([padded], train, ignore_ids=(0,), pitch_of_token=TOY_PITCH) < 1.0
    # Ids outside the table are plain tokens.
    assert M.copy_rate([np.full(40, 500)], [np.full(40, 500)], pitch_of_token=TOY_PITCH) == 1.0


def test_transposed_copy_with_the_smdim_tokenizer():
    T = pytest.importorskip("smdim.tokenizer")
    tok = T.make_tokenizer()
    table = np.full(T.vocab_size(tok), -1, dtype=np.int64)
    for i, p in T.pitch_tokens(tok).items():
        table[i] = p
    ids = T.encode(tok, make_score(melody([60, 62, 64, 65, 67, 69, 71, 72] * 4, dur=240)))
    up = T.transpose_ids(tok, ids, 2)
    assert M.copy_rate([up], [ids], n=8) < 0.2
    assert M.copy_rate([up], [ids], n=8, pitch_of_token=table) == 1.0


# ---------------------------------------------------------------------------------------------------------
# Invalid-token rate: PAD/BOS/EOS ignored, MASK and out-of-vocabulary ids errors, the rest by miditok
# ---------------------------------------------------------------------------------------------------------
MELODY = [(0, 480, 60, 80), (480, 240, 62, 90), (720, 240, 64, 90), (960, 960, 65, 70), (960, 960, 69, 70),
          (1920, 480, 67, 80), (2400, 120, 71, 100), (2520, 360, 72, 100), (2880, 960, 60, 60)]


@pytest.fixture(scope="module")
def smdim_tok():
    T = pytest.importorskip("smdim.tokenizer")
    return T, T.make_tokenizer()


def test_invalid_token_rate_rule(smdim_tok):
    T, tok = smdim_tok
    ids = T.encode(tok, make_score(MELODY))
    n = len(ids)
    assert n > 20 and M.invalid_token_rate(tok, ids) == 0.0
    assert M.invalid_token_rate(tok, ids + [T.pad_id(tok)] * 50) == 0.0  # padding is ignored
    assert M.invalid_token_rate(tok, [T.bos_id(tok)] + ids + [T.eos_id(tok)]) == 0.0
    masked = list(ids)
    masked[5] = T.mask_id(tok)
    assert M.invalid_token_rate(tok, masked) == pytest.approx(1 / n)  # one MASK, one error
    assert M.invalid_token_rate(tok, ids + [10_000, -1]) == pytest.approx(2 / (n + 2))  # out of vocabulary
    assert M.invalid_token_rate(tok, [T.mask_id(tok)] * 4) == 1.0
    shuffled = list(ids)
    random.Random(1).shuffle(shuffled)
    assert M.invalid_token_rate(tok, shuffled) > 0.2
    # Nothing but ignored ids: 0.0, for one sequence and for a batch.
    assert M.invalid_token_rate(tok, []) == 0.0
    assert M.invalid_token_rate(tok, [T.pad_id(tok)] * 5) == 0.0
    assert M.invalid_token_rate(tok, [[T.pad_id(tok)], []]) == 0.0


def test_invalid_token_rate_batches(smdim_tok):
    T, tok = smdim_tok
    ids = T.encode(tok, make_score(MELODY))
    masked = list(ids)
    masked[3] = T.mask_id(tok)
    want = (0.0 + 1 / len(ids)) / 2
    assert M.invalid_token_rate(tok, [ids, masked]) == pytest.approx(want)
    assert M.invalid_token_rate(tok, [ids, masked, [T.pad_id(tok)] * 3]) == pytest.approx(want)  # empty: left out
    assert M.invalid_token_rate(tok, torch.tensor([ids, masked])) == pytest.approx(want)  # 2-D tensor
    assert M.invalid_token_rate(tok, np.array(masked)) == pytest.approx(1 / len(ids))  # 1-D array: one sequence
    assert M.invalid_token_rate(tok, torch.tensor(masked)) == pytest.approx(1 / len(ids))
    with pytest.raises(ValueError, match="token_seqs is empty"):
        M.invalid_token_rate(tok, np.zeros((0, 8), dtype=np.int64))


def test_invalid_token_rate_with_a_plain_miditok_tokenizer():
    miditok = pytest.importorskip("miditok")
    tok = miditok.REMI(miditok.TokenizerConfig(use_programs=True, one_token_stream_for_programs=True))
    seq = tok.encode(make_score(melody([60, 62, 64, 65] * 4)))
    ids = (seq[0] if isinstance(seq, list) else seq).ids
    assert M.invalid_token_rate(tok, [ids, ids + [tok.pad_token_id] * 8]) == 0.0
    noise = np.random.default_rng(0).integers(len(tok.special_tokens), len(tok), 300)
    assert M.invalid_token_rate(tok, [noise]) > 0.3
