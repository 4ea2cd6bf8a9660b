"""Token-level metrics: memorisation (`copy_rate`) and grammar validity (`invalid_token_rate`).

Sequences: lists of ints, 1-D arrays or tensors, miditok TokSequences, or a batch of them (a list of such
sequences, a 2-D array/tensor with one row per sequence).
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

def _as_ids(s) -> np.ndarray:
    if hasattr(s, "ids"):  # miditok TokSequence
        s = s.ids
    if hasattr(s, "detach"):  # torch tensor
        s = s.detach().cpu().numpy()
    return np.asarray(s, dtype=np.int64)


def _rows(seqs, name):
    """The sequences of ``seqs`` as 1-D int64 arrays (one sequence → a list of one)."""
    if seqs is None:
        raise ValueError(f"{name} is None: expected token sequences")
    if hasattr(seqs, "ids") or hasattr(seqs, "detach") or isinstance(seqs, np.ndarray):
        arr = _as_ids(seqs)
        if arr.ndim == 1:
            return [arr]
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected a 1-D or 2-D array of token ids; got shape {arr.shape}")
        return list(arr)
    items = list(seqs)
    if all(isinstance(x, (int, np.integer)) for x in items):  # one sequence (possibly empty)
        return [np.asarray(items, dtype=np.int64)]
    return [_as_ids(x).reshape(-1) for x in items]


def _mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (xor-shift-multiply) applied elementwise to uint64."""
    x = x.copy()
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


def _ngram_hashes(seq: np.ndarray, n: int, ignore: np.ndarray, pitch_of_token: Optional[np.ndarray]) -> np.ndarray:
    """64-bit hashes of the length-n windows of seq that contain no ignored id.

    With ``pitch_of_token`` each window is first made transposition invariant: a Pitch token becomes
    2·(its pitch − the window's first pitch) + 1, any other id becomes 2·id (odd/even keep them apart).
    """
    if seq.size < n:
        return np.zeros(0, dtype=np.uint64)
    win = np.lib.stride_tricks.sliding_window_view(seq, n)
    if ignore.size:
        win = win[~np.isin(win, ignore).any(axis=1)]
    if pitch_of_token is not None and win.size:
        inside = (win >= 0) & (win < pitch_of_token.size)
        pitch = np.where(inside, pitch_of_token[np.clip(win, 0, pitch_of_token.size - 1)], -1)
        is_pitch = pitch >= 0
        first = pitch[np.arange(win.shape[0]), is_pitch.argmax(axis=1)]
        win = np.where(is_pitch, 2 * (pitch - first[:, None]) + 1, 2 * win)
    h = np.zeros(win.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = _mix64(h * np.uint64(0x9E3779B97F4A7C15) + _mix64(win[:, i].astype(np.uint64) + np.uint64(i + 1)))
    return h


def copy_rate(gen_token_seqs, train_token_seqs, n: int = 16, *, ignore_ids: Iterable[int] = (0,),
              pitch_of_token=None) -> float:
    """Fraction of the generated n-gram token windows that occur anywhere in the training sequences.

    Windows containing an id of ``ignore_ids`` (pass PAD and MASK; default: PAD = 0) are left out on both
    sides. ``pitch_of_token`` ((vocab,) ints: the MIDI pitch of each Pitch token id, −1 for other ids; see
    ``smdim.data.pitch_table``) makes the rate transposition invariant: every window is compared with its Pitch
    tokens replaced by their pitch relative to the window's first pitch, so a transposed copy counts as a
    copy. Training windows are stored as 64-bit hashes (collision probability ≈ windows_gen ·
    windows_train / 2^64).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    ignore = np.asarray(sorted(set(int(i) for i in ignore_ids)), dtype=np.int64)
    table = None
    if pitch_of_token is not None:
        table = _as_ids(pitch_of_token).reshape(-1)
    gen = _rows(gen_token_seqs, "gen_token_seqs")
    train = _rows(train_token_seqs, "train_token_seqs")
    for name, rows in (("gen_token_seqs", gen), ("train_token_seqs", train)):
        if not any(r.size for r in rows):
            raise ValueError(f"{name} is empty: expected at least one non-empty token sequence")
    train_h = np.unique(np.concatenate([_ngram_hashes(s, n, ignore, table) for s in train]))
    if train_h.size == 0:
        raise ValueError(f"train_token_seqs holds no {n}-token window free of ignored ids {ignore.tolist()}")
    gh = np.concatenate([_ngram_hashes(s, n, ignore, table) for s in gen])
    if gh.size == 0:
        raise ValueError(f"gen_token_seqs holds no {n}-token window free of ignored ids {ignore.tolist()}")
    idx = np.clip(np.searchsorted(train_h, gh), 0, train_h.size - 1)
    return float(np.mean(train_h[idx] == gh))


def _sequence_errors(tokenizer, ids: np.ndarray, skip: np.ndarray, mask: Optional[int], encoded: bool):
    """(errors, scored tokens) of one sequence under the rule of `invalid_token_rate`."""
    from miditok import TokSequence

    oob = (ids < 0) | (ids >= len(tokenizer))
    kept = ids[~oob & ~np.isin(ids, skip)]
    total = int(kept.size + oob.sum())
    errors = int(oob.sum()) + (int(np.count_nonzero(kept == mask)) if mask is not None else 0)
    if kept.size:  # MASK stays in place: miditok's type graph lets it sit anywhere, so it is counted once
        ratio = float(tokenizer.tokens_errors(TokSequence(ids=kept.tolist(), are_ids_encoded=encoded)))
        errors += int(round(ratio * kept.size))
    return min(errors, total), total


def invalid_token_rate(tokenizer, token_seqs) -> float:
    """Fraction of tokens that break the tokenizer's grammar — the one invalid-token rule of smdim.

    Per sequence: PAD, BOS and EOS ids are ignored; every MASK id and every id outside the vocabulary is
    an error; the remaining tokens are scored by miditok's ``tokenizer.tokens_errors`` (wrong type
    succession, a Position not after the previous one, a duplicated note); rate = errors / non-ignored ids.
    One sequence (list of ints, 1-D array/tensor, TokSequence) → its rate, 0.0 when it holds nothing but
    ignored ids. A batch (list of sequences, 2-D array/tensor) → the mean rate over the sequences that hold
    tokens, 0.0 when none does (nothing was generated, so nothing is invalid: count empty samples
    separately); ValueError for a batch of zero sequences.
    """
    rows = _rows(token_seqs, "token_seqs")
    if not rows:
        raise ValueError("token_seqs is empty: expected at least one token sequence")
    vocab = tokenizer.vocab
    skip = np.asarray([int(vocab[t]) for t in ("PAD_None", "BOS_None", "EOS_None") if t in vocab], dtype=np.int64)
    mask = int(vocab["MASK_None"]) if "MASK_None" in vocab else None
    encoded = bool(getattr(tokenizer, "is_trained", False))
    rates = []
    for ids in rows:
        errors, total = _sequence_errors(tokenizer, ids, skip, mask, encoded)
        if total:
            rates.append(errors / total)
    return float(np.mean(rates)) if rates else 0.0
