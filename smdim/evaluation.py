"""Evaluation of trained denoisers against held-out music, with the protocol of every number said.

    result = evaluate({"SMDIM": model, "baseline": baseline}, corpus, n=64, seq_len=256, steps=64)
    print(result.format())

The sets (all cut by one rule):
* reference: n windows of the test split (`reference_windows`: bar-aligned windows of at most
  seq_len tokens; a seeded subset of n);
* generated: sample i of every model is drawn at the token length of reference window i (PAD after
  it, as training pads a piece's end), so both sets have the same lengths and end where a piece ends;
* real vs real: n windows of the train+valid pieces by the same rule and seed, scored like a model.

Rows: the test NLL bound over every test window; framewise OA consistency/variance under the
published protocol (SCHmUBERT's) and ours (pooled); the attribute OA (KDE overlap of pooled
attribute values); invalid-token rate; transposition-invariant copy rate (for real vs real: the test
windows against the training pieces); pitch outliers and dense chords; empty pieces. With two
models, a paired "A − B" column (same references, same masks, same templates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import metrics
from .data import TokenDataset
from .diffusion import bits_per_token, sequence_nlls
from .sampling import sample
from .tokenizer import decode, mask_id, pad_id, pitch_table, special_ids

#: framewise OA rows: (metrics key, row label)
FRAMEWISE_ROWS = tuple(
    (f"{protocol}_{attr}_{kind}", f"framewise {attr} {kind} ({protocol})")
    for protocol in ("published", "pooled") for attr in ("pitch", "duration") for kind in ("consistency", "variance"))
OA_ROWS = (("mean_oa", "attribute OA, mean (KDE overlap)"),) + FRAMEWISE_ROWS
NLL_ROW = "NLL test (bits/token, MDLM bound)"
COPY_ROW = "copy rate (16-gram, transposition-invariant)"


@dataclass
class Evaluation:
    """An evaluation table {row: {column: value}} and the notes saying how each number was made."""

    table: Dict[str, Dict[str, object]]
    notes: List[str] = field(default_factory=list)
    columns: List[str] = field(default_factory=list)

    def format(self) -> str:
        """The markdown table followed by its protocol notes."""
        text = metrics.format_table(self.table, columns=["metric"] + self.columns)
        return text + "\n\n" + "\n".join(f"- {line}" for line in self.notes)


def reference_windows(corpus, splits, seq_len, n=None, seed=0) -> List[List[int]]:
    """Bar-aligned windows of at most `seq_len` tokens of the pieces of `splits` (a split name or
    several), PAD stripped, in corpus order; a subset of n drawn with `seed`."""
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    windows = []
    for split in splits:
        dataset = TokenDataset(corpus, seq_len, split=split, train=False)
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
def sample_like(model, tok, lengths: Sequence[int], seq_len, *, steps, seed=0, constraints=None, temperature=1.0,
                batch_size=None, progress=False, order="random", priority=None, return_calls=False):
    """One sample per entry of `lengths`: sample i fills `lengths[i]` MASKs followed by PAD up to
    seq_len (the way training pads a piece's end); returned without the PAD. batch_size: pieces per
    denoiser call (default: 4096 tokens' worth, at least 1). return_calls: also return the denoiser
    calls per piece (summed over the batches, divided by the pieces' count of batches)."""
    generator = torch.Generator().manual_seed(seed)
    batch_size = batch_size or max(1, 4096 // seq_len)
    out: List[List[int]] = []
    calls = 0
    bar = tqdm(total=len(lengths), desc="sampling", disable=not progress, leave=False)
    for i in range(0, len(lengths), batch_size):
        chunk = lengths[i:i + batch_size]
        x = torch.full((len(chunk), seq_len), pad_id(tok), dtype=torch.long)
        for row, length in enumerate(chunk):
            x[row, :min(length, seq_len)] = mask_id(tok)
        tokens, used = sample(model, x, steps=steps, mask_id=mask_id(tok), generator=generator,
                              constraints=constraints, temperature=temperature, order=order, priority=priority)
        calls += used
        out.extend(row[:min(length, seq_len)] for row, length in zip(tokens.cpu().tolist(), chunk))
        bar.update(len(chunk))
    bar.close()
    if return_calls:
        return out, calls / max(1, math.ceil(len(lengths) / batch_size))
    return out


def sample_pieces(model, tok, n, length, *, steps, seed=0, **kwargs) -> List[List[int]]:
    """n unconditional samples of `length` tokens (lists of ids)."""
    return sample_like(model, tok, [length] * n, length, steps=steps, seed=seed, **kwargs)


def padded_batches(windows, seq_len, pad, batch_size=16):
    """(tokens, pad mask) batches of `windows`, each right-padded to `seq_len`."""
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        x = torch.full((len(chunk), seq_len), pad, dtype=torch.long)
        for row, ids in enumerate(chunk):
            x[row, :len(ids)] = torch.tensor(ids[:seq_len], dtype=torch.long)
        yield x, x != pad


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


def oa_scores(gen, ref, empty_gen_as_zero=True) -> dict:
    """The OA rows of one (generated, reference) pair of sets, as {metrics key: value}."""
    return metrics.compare(gen, ref, protocols=("published", "pooled"), empty_gen_as_zero=empty_gen_as_zero)


def _pieces(tok, seqs):
    return [metrics.Piece.from_score(decode(tok, ids)) for ids in seqs]


def evaluate(models: Dict[str, torch.nn.Module], corpus, *, n=64, seq_len=256, steps=64, seed=0, n_boot=200,
             constraints=None, max_chord=4, pitch_range=None, temperature=1.0, order="random", progress=False,
             test_label: Optional[str] = None) -> Evaluation:
    """Score `models` (name -> denoiser) against the test split of `corpus`; see the module docstring.
    With two or more models the first two also get a paired difference column."""
    tok = corpus.tokenizer
    test_windows = reference_windows(corpus, "test", seq_len)
    refs = reference_windows(corpus, "test", seq_len, n, seed)
    if len(refs) < 2:
        raise ValueError("the test split is too small to evaluate (fewer than 2 windows)")
    n = len(refs)
    ref_pieces = _pieces(tok, refs)
    pitch_range = pitch_range or training_pitch_range(corpus)
    train_pieces = corpus.split("train")
    ignore = special_ids(tok)
    table_of_pitches = pitch_table(tok)
    lengths = [len(ids) for ids in refs]

    sets, nlls = {}, {}
    for name, model in models.items():
        sets[name] = sample_like(model, tok, lengths, seq_len, steps=steps, seed=seed, constraints=constraints,
                                 temperature=temperature, order=order, progress=progress)
        nlls[name] = sequence_nlls(model, list(padded_batches(test_windows, seq_len, pad_id(tok))),
                                   mask_id=mask_id(tok), seed=seed)
    real = reference_windows(corpus, ("train", "valid"), seq_len, n, seed + 1)
    columns = list(models) + ["real vs real"]
    sets["real vs real"] = real
    pieces = {name: _pieces(tok, seqs) for name, seqs in sets.items()}

    table: Dict[str, Dict[str, object]] = {}

    def put(row, column, value):
        table.setdefault(row, {})[column] = value

    for name in columns:
        seqs, generated = sets[name], name in models
        if name in nlls:
            put(NLL_ROW, name, metrics.bootstrap_ci(bits_per_token, nlls[name], n_boot=n_boot, seed=seed))
        cis = metrics.bootstrap_ci(lambda g, r, generated=generated: oa_scores(g, r, generated), pieces[name],
                                   ref_pieces, n_boot=n_boot, seed=seed)
        for key, row in OA_ROWS:
            put(row, name, cis.get(key))
        put("invalid tokens", name, metrics.invalid_token_rate(tok, seqs))
        copy_of = seqs if generated else refs
        put(COPY_ROW, name, metrics.copy_rate(copy_of, train_pieces, n=16, ignore_ids=ignore,
                                              pitch_of_token=table_of_pitches))
        nonempty = [p for p in pieces[name] if len(p)]
        if nonempty:
            put(f"notes outside pitch {pitch_range[0]}-{pitch_range[1]}", name,
                metrics.pitch_outlier_rate(nonempty, *pitch_range)["note_rate"])
            put(f"onsets with > {max_chord} notes", name, metrics.dense_chord_rate(nonempty, max_chord)["onset_rate"])
        put("empty pieces", name, len(seqs) - len(nonempty))
        put("pieces", name, len(seqs))

    if len(models) >= 2:
        a, b = list(models)[:2]
        diff = f"{a} − {b}"
        columns.append(diff)
        put(NLL_ROW, diff, metrics.paired_bootstrap_ci(bits_per_token, nlls[a], nlls[b], n_boot=n_boot, seed=seed))
        cis = metrics.paired_bootstrap_ci(oa_scores, pieces[a], pieces[b], ref_pieces, n_boot=n_boot, seed=seed)
        for key, row in OA_ROWS:
            put(row, diff, cis.get(key))

    notes = [
        f"Test set: {test_label or corpus.source}. Reference: {n} bar-aligned test windows of at most {seq_len} "
        f"tokens (seed {seed}); sample i of each model is generated at the length of reference window i "
        f"({steps} denoising steps, {order} unmasking order); real vs real: {len(real)} windows of train+valid "
        "pieces drawn by the same rule.",
        f"NLL: the MDLM bound in bits/token over all {len(test_windows)} test windows, each window scored given its "
        "length and padding (4 masking times each); a bound, not comparable with autoregressive NLLs.",
        f"framewise (published): {metrics.PROTOCOLS['published']}",
        f"framewise (pooled): {metrics.PROTOCOLS['pooled']}",
        "attribute OA: KDE overlap of the pooled values of pitch, duration, velocity, inter-onset interval, notes "
        "per bar and polyphony, generated vs reference; their mean (not Yang & Lerch's pairwise-distance OA).",
        "Empty generated pieces count against a model: OA 0 in the framewise values, no density in the attribute OA.",
        f"Intervals: ± half the 95 % percentile bootstrap interval over pieces ({n_boot} replicates)"
        + (f"; '{columns[-1]}' is a paired bootstrap (same references, same masks, same sample lengths)."
           if len(models) >= 2 else "."),
        "Copy rate: fraction of 16-token windows found in the training pieces up to transposition; for real vs real "
        "it is the test windows' own rate against the training pieces.",
    ]
    return Evaluation(table=table, notes=notes, columns=columns)


def format_evaluation(result: Evaluation) -> str:
    return result.format()
