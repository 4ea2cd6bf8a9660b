"""Evaluation of trained denoisers against held-out music: NLL, OA metrics with bootstrap
intervals, the real-vs-real ceiling at the same sample count, validity, copying, failure modes."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import metrics
from .data import TokenDataset
from .diffusion import bits_per_token, sequence_nlls
from .sampling import generate
from .tokenizer import decode, mask_id, pad_id, special_ids

OA_KEYS = ("mean_oa", "pitch_consistency", "pitch_variance", "duration_consistency", "duration_variance")


def oa_metrics(scores_gen, scores_ref):
    """Attribute mean OA and framewise OA scores; the framewise scores are NaN when the pieces are
    too short for two neighbouring 4-bar windows (an undertrained model's samples often are)."""
    out = {"mean_oa": metrics.attribute_oa(scores_gen, scores_ref)["mean_oa"]}
    try:
        framewise = metrics.framewise_oa(scores_gen, scores_ref)
    except ValueError:
        framewise = {}
    for key in OA_KEYS[1:]:
        out[key] = framewise.get(key, math.nan)
    return out


def reference_windows(corpus, split, seq_len, n=None, seed=0) -> List[List[int]]:
    """Deterministic windows of `seq_len` tokens of a split (PAD stripped); a seeded subset of n."""
    dataset = TokenDataset(corpus, seq_len, split=split, train=False)
    windows = []
    for i in range(len(dataset)):
        item = dataset[i]
        ids = item["tokens"][item["pad_mask"]].tolist()
        if ids:
            windows.append(ids)
    if n is not None and n < len(windows):
        order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[:n]
        windows = [windows[i] for i in sorted(order.tolist())]
    return windows


@torch.no_grad()
def sample_pieces(model, tok, n, length, *, steps, seed=0, constraints=None, temperature=1.0, batch_size=16,
                  progress=False):
    """n unconditional samples of `length` tokens (lists of ids)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    bar = tqdm(total=n, desc="sampling", disable=not progress, leave=False)
    while len(out) < n:
        count = min(batch_size, n - len(out))
        tokens = generate(model, count, length, steps=steps, mask_id=mask_id(tok), generator=generator,
                          constraints=constraints, temperature=temperature)
        out.extend(tokens.cpu().tolist())
        bar.update(count)
    bar.close()
    return out


def _batches(windows, seq_len, pad, batch_size=16):
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        x = torch.full((len(chunk), seq_len), pad, dtype=torch.long)
        for row, ids in enumerate(chunk):
            x[row, :len(ids)] = torch.tensor(ids[:seq_len], dtype=torch.long)
        yield x, x != pad


def _scores(tok, seqs):
    scores = [decode(tok, ids) for ids in seqs]
    return [s for s in scores if s.note_num() > 0], len(scores) - sum(1 for s in scores if s.note_num() > 0)


def training_pitch_range(corpus, quantiles=(0.001, 0.999)):
    """(low, high): the pitch range of the training split's notes, trimmed at the given quantiles."""
    from .tokenizer import pitch_tokens

    table = pitch_tokens(corpus.tokenizer)
    pitches = sorted(table[t] for ids in corpus.split("train") for t in ids if t in table)
    if not pitches:
        raise ValueError("the training split has no notes")
    low = pitches[int(quantiles[0] * (len(pitches) - 1))]
    high = pitches[int(quantiles[1] * (len(pitches) - 1))]
    return low, high


def evaluate(models: Dict[str, torch.nn.Module], corpus, *, n=64, seq_len=256, steps=64, seed=0, n_boot=200,
             constraints=None, max_chord=4, pitch_range=None, temperature=1.0, progress=False):
    """{row: {column: value}} for `metrics.format_table`: one column per model plus "real vs real"
    (n held-out windows of the valid+train splits scored against the same n test windows)."""
    tok = corpus.tokenizer
    refs = reference_windows(corpus, "test", seq_len, n, seed)
    if len(refs) < 2:
        raise ValueError("the test split is too small to evaluate (fewer than 2 windows)")
    n = min(n, len(refs))
    ref_scores, _ = _scores(tok, refs)
    pitch_range = pitch_range or training_pitch_range(corpus)
    train_pieces = corpus.split("train")
    ignore = special_ids(tok)
    table: Dict[str, Dict[str, object]] = {}
    columns = {}
    for name, model in models.items():
        seqs = sample_pieces(model, tok, n, seq_len, steps=steps, seed=seed, constraints=constraints,
                             temperature=temperature, progress=progress)
        columns[name] = (seqs, True, model)
    other = reference_windows(corpus, "valid", seq_len, None, seed) + reference_windows(corpus, "train", seq_len,
                                                                                          n, seed + 1)
    columns["real vs real"] = (other[:n], False, None)
    for name, (seqs, generated, model) in columns.items():
        scores, empty = _scores(tok, seqs)
        col = {}
        if model is not None:
            per_window = sequence_nlls(model, list(_batches(refs, seq_len, pad_id(tok))), mask_id=mask_id(tok),
                                       seed=seed)
            col["NLL test (bits/token)"] = metrics.bootstrap_ci(bits_per_token, per_window, n_boot=n_boot,
                                                                seed=seed)
        if len(scores) >= 2:
            cis = metrics.bootstrap_ci(oa_metrics, scores, ref_scores, n_boot=n_boot, seed=seed)
            for key in OA_KEYS:
                col[key.replace("_", " ")] = cis[key]
        col["invalid tokens"] = metrics.invalid_token_rate(tok, seqs, ignore_ids=ignore)
        col["copy rate (16-gram)"] = metrics.copy_rate(seqs, train_pieces, n=16, ignore_ids=ignore) if generated \
            else math.nan
        if scores:
            col[f"notes outside pitch {pitch_range[0]}-{pitch_range[1]}"] = \
                metrics.pitch_outlier_rate(scores, *pitch_range)["note_rate"]
            col[f"onsets with > {max_chord} notes"] = metrics.dense_chord_rate(scores, max_chord)["onset_rate"]
        col["empty pieces"] = empty
        col["pieces"] = len(seqs)
        for row, value in col.items():
            table.setdefault(row, {})[name] = value
    return table


def format_evaluation(table, columns: Optional[Sequence[str]] = None) -> str:
    return metrics.format_table(table, columns=columns)
