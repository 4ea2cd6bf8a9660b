"""Token corpora and training windows.

    corpus = load_corpus()                      # the embedded Han folk songs (music21), cached
    corpus = load_corpus("~/data/maestro-v3.0.0")   # MAESTRO / POP909 / any MIDI folder, auto-detected
    train = TokenDataset(corpus, 512, split="train", transpose=5)
    valid = TokenDataset(corpus, 512, split="valid", train=False)

`load_corpus` lists the pieces of a source (`smdim.corpora`), tokenizes them (`smdim.tokenizer`),
skips broken, empty and non-MIDI files with one summary warning, splits by piece and caches the
token ids on disk (`$SMDIM_CACHE`, default ``~/.cache/smdim``), keyed by the tokenizer and the
source files' paths, sizes and modification times.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from smdim import corpora, music21_corpora
from smdim.corpora import SourceItem
from smdim.files import atomic_write
from smdim.tokenizer import (
    Transposer,
    bar_id,
    encode,
    make_tokenizer,
    pad_id,
    pitch_table,
    tokenizer_from_dict,
    tokenizer_to_dict,
)

__all__ = [
    "CACHE_FORMAT",
    "DataSkipWarning",
    "Corpus",
    "DataRecord",
    "SplitChanges",
    "content_key",
    "corpus_fingerprint",
    "default_cache_dir",
    "load_corpus",
    "cached_summary",
    "make_splits",
    "piece_hash",
    "TokenDataset",
]

#: bump when the way pieces become tokens changes (invalidates every cache file)
CACHE_FORMAT = 2
SPLITS = ("train", "valid", "test")
#: the `Corpus.source` of the embedded Han folk songs
HAN_SOURCE = "music21:essenFolksong/han1+han2"
_PROGRESS_MIN_ITEMS = 16
_EXAMPLES_PER_REASON = 5


class DataSkipWarning(UserWarning):
    """Some source files were skipped (broken, empty, not MIDI, missing)."""


def default_cache_dir() -> Path:
    """``$SMDIM_CACHE`` if set, else ``~/.cache/smdim``."""
    env = os.environ.get("SMDIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "smdim"


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """Tokenized pieces of one source.

    pieces: token ids per piece; names: where each came from; splits: {"train", "valid", "test"}
    -> piece indices (disjoint, by piece); skipped: reason -> number of files (or tunes) left out,
    with up to five names per reason in `skipped_files`.
    """

    pieces: List[List[int]]
    names: List[str]
    splits: Dict[str, List[int]]
    skipped: Dict[str, int]
    tokenizer: Any = field(repr=False)
    layout: str = ""
    source: str = ""
    skipped_files: Dict[str, List[str]] = field(default_factory=dict, repr=False)
    cache_path: Optional[Path] = None
    from_cache: bool = False
    load_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.pieces)

    split_seed: int = 0
    split_fractions: Tuple[float, ...] = (0.9, 0.05, 0.05)

    def piece_hashes(self) -> Dict[str, str]:
        """name -> content hash of every piece."""
        return {name: piece_hash(ids) for name, ids in zip(self.names, self.pieces)}

    def record(self, seq_len: Optional[int] = None) -> DataRecord:
        """The data record of a run trained on this corpus at `seq_len` tokens."""
        hashes = self.piece_hashes()
        return DataRecord(source=self.source, layout=self.layout, split_seed=self.split_seed,
                          split_fractions=tuple(self.split_fractions), pieces=hashes,
                          splits={s: [self.names[i] for i in idx] for s, idx in self.splits.items()},
                          fingerprint=corpus_fingerprint(hashes), seq_len=seq_len)

    def with_record(self, record: DataRecord) -> Tuple["Corpus", SplitChanges]:
        """This corpus with the splits of `record` (by piece name) and what changed since: pieces
        not in the record are in no split; recorded pieces that are missing or whose content
        changed are left out of their split (a changed piece could now hold anything)."""
        index = {name: i for i, name in enumerate(self.names)}
        hashes = self.piece_hashes()
        recorded = set(record.pieces)
        changes = SplitChanges(added=[n for n in self.names if n not in recorded])
        splits: Dict[str, List[int]] = {}
        for split in SPLITS:
            names = record.split_names(split)
            changes.missing[split] = [n for n in names if n not in index]
            changes.changed[split] = [n for n in names if n in index and hashes[n] != record.pieces.get(n)]
            splits[split] = sorted(index[n] for n in names if n in index and hashes[n] == record.pieces.get(n))
        corpus = replace(self, splits=splits, split_seed=record.split_seed,
                         split_fractions=tuple(record.split_fractions))
        return corpus, changes

    def split(self, name: str) -> List[List[int]]:
        """The pieces of one split ("train", "valid" or "test")."""
        if name not in self.splits:
            raise KeyError(f"unknown split {name!r}; expected one of {tuple(self.splits)}")
        return [self.pieces[i] for i in self.splits[name]]

    def stats(self) -> Dict[str, Any]:
        lengths = np.array([len(p) for p in self.pieces], dtype=np.int64)
        return {
            "pieces": len(self.pieces),
            "tokens": int(lengths.sum()) if len(lengths) else 0,
            "median_tokens": float(np.median(lengths)) if len(lengths) else 0.0,
            "max_tokens": int(lengths.max()) if len(lengths) else 0,
            "splits": {k: len(v) for k, v in self.splits.items()},
            "skipped": dict(self.skipped),
            "layout": self.layout,
            "from_cache": self.from_cache,
            "load_seconds": round(self.load_seconds, 3),
        }


def content_key(ids: Sequence[int], pitch_of_token: Optional[np.ndarray] = None) -> bytes:
    """A piece's identity up to transposition: its token ids with every Pitch token replaced by
    its pitch relative to the piece's lowest pitch (`pitch_of_token`: (vocab,) MIDI pitch of each
    Pitch id, -1 elsewhere; None = exact ids). Equal keys = exact or transposed duplicates."""
    arr = np.asarray(ids, dtype=np.int64)
    if pitch_of_token is not None and arr.size:
        pitch = pitch_of_token[arr]
        is_pitch = pitch >= 0
        if is_pitch.any():
            arr = np.where(is_pitch, -1 - (pitch - pitch[is_pitch].min()), arr)
    return arr.astype(np.int32).tobytes()


def piece_hash(ids: Sequence[int]) -> str:
    """A short content hash of one piece's token ids (for data records)."""
    return hashlib.sha1(np.asarray(ids, dtype=np.int32).tobytes()).hexdigest()[:16]


def _unit_hash(seed: int, key: bytes) -> float:
    """A number in [0, 1) that depends only on (seed, key)."""
    digest = hashlib.sha256(str(int(seed)).encode() + b"/" + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def make_splits(keys: Union[int, Sequence[bytes]], fractions: Sequence[float] = (0.9, 0.05, 0.05),
                seed: int = 0) -> Dict[str, List[int]]:
    """Split pieces into train/valid/test by `fractions` (normalised), by content.

    keys: one key per piece (`content_key`), or an int n for n distinct pieces. Pieces with equal
    keys (duplicates, also transposed ones) form one group and always share a split. Each group
    draws u in [0, 1) from a hash of (seed, key); the groups, ordered by u, fill train, then
    valid, then test by piece count, so the sizes follow the fractions. Adding or removing a piece
    moves at most the one group at each split boundary (no reshuffle). With >= 3 groups every split
    with a positive fraction gets at least one group."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {fractions}")
    if isinstance(keys, int):
        keys = [str(i).encode() for i in range(keys)]
    n = len(keys)
    total = float(sum(fractions))
    bounds = np.cumsum([f / total for f in fractions]) * n
    groups: Dict[bytes, List[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    order = sorted(groups, key=lambda k: (_unit_hash(seed, k), k))
    which, seen = {}, 0
    for key in order:  # a group goes where the middle of its piece range falls
        middle = seen + len(groups[key]) / 2.0
        which[key] = int(min(np.searchsorted(bounds, middle, side="right"), 2))
        seen += len(groups[key])
    if len(groups) >= 3:
        for s in range(3):
            if fractions[s] <= 0 or s in which.values():
                continue
            sizes = np.bincount(list(which.values()), minlength=3)
            # the group next to this split's place in the order, from a split that keeps one
            donors = [i for i, k in enumerate(order) if sizes[which[k]] > 1]
            target = 0 if s == 0 else (len(order) - 1 if s == 2 else len(order) // 2)
            which[order[min(donors, key=lambda i: abs(i - target))]] = s
    out: Dict[str, List[int]] = {name: [] for name in SPLITS}
    for key, members in groups.items():
        out[SPLITS[which[key]]].extend(members)
    return {name: sorted(v) for name, v in out.items()}


def _splits_with_metadata(labels: Sequence[Optional[str]], keys, fractions, seed) -> Dict[str, List[int]]:
    """Metadata split where a piece has one; the unlabelled pieces are split by content."""
    out: Dict[str, List[int]] = {s: [] for s in SPLITS}
    unlabelled = []
    for i, lab in enumerate(labels):
        (out[lab] if lab in out else unlabelled).append(i)
    if unlabelled:
        extra = make_splits([keys[i] for i in unlabelled], fractions, seed)
        for s in SPLITS:
            out[s].extend(unlabelled[j] for j in extra[s])
    return {s: sorted(v) for s, v in out.items()}


# --------------------------------------------------------------------------------------------
# the data record of a run
# --------------------------------------------------------------------------------------------
@dataclass
class DataRecord:
    """What a run was trained on, stored in its checkpoint: the source and layout, the split seed
    and fractions, each piece's content hash by name, the piece names of each split, a fingerprint
    of the whole corpus (names + hashes) and the training length in tokens."""

    source: str
    layout: str
    split_seed: int
    split_fractions: Tuple[float, float, float]
    pieces: Dict[str, str]
    splits: Dict[str, List[str]]
    fingerprint: str
    seq_len: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["split_fractions"] = list(self.split_fractions)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DataRecord":
        missing = [k for k in ("source", "layout", "pieces", "splits", "fingerprint") if k not in d]
        if missing:
            raise ValueError(f"data record lacks {', '.join(missing)}")
        return cls(source=str(d["source"]), layout=str(d["layout"]), split_seed=int(d.get("split_seed", 0)),
                   split_fractions=tuple(d.get("split_fractions", (0.9, 0.05, 0.05))),
                   pieces=dict(d["pieces"]), splits={s: list(d["splits"].get(s, [])) for s in SPLITS},
                   fingerprint=str(d["fingerprint"]), seq_len=d.get("seq_len"))

    def split_names(self, name: str) -> List[str]:
        return list(self.splits.get(name, []))


def corpus_fingerprint(pieces: Dict[str, str]) -> str:
    """sha256 over the sorted (name, content hash) pairs of a corpus."""
    blob = json.dumps(sorted(pieces.items()), separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class SplitChanges:
    """How a corpus differs from a data record: pieces added since, recorded pieces now missing,
    and recorded pieces whose content changed (by split for the last two)."""

    added: List[str] = field(default_factory=list)
    missing: Dict[str, List[str]] = field(default_factory=dict)
    changed: Dict[str, List[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or any(self.missing.values()) or any(self.changed.values()))

    def describe(self, max_names: int = 3) -> str:
        """One line: what changed (counts, a few names)."""
        def names(items):
            shown = ", ".join(items[:max_names])
            return shown + (f", ... ({len(items)} in all)" if len(items) > max_names else "")

        parts = []
        if self.added:
            parts.append(f"{len(self.added)} piece(s) added since training (not used: {names(self.added)})")
        for label, table in (("missing", self.missing), ("changed", self.changed)):
            for split, items in table.items():
                if items:
                    parts.append(f"{len(items)} recorded {split} piece(s) {label} ({names(items)})")
        return "; ".join(parts) if parts else "no change"


# --------------------------------------------------------------------------------------------
# tokenizing items
# --------------------------------------------------------------------------------------------
def _tokenize_item(tok, item: SourceItem, parsed=None, convert_cache=None
                   ) -> Tuple[Optional[List[int]], Optional[str], str]:
    """(ids, None, "") or (None, reason, detail). `parsed`: the item's Score (or parse error)
    when it was parsed already; convert_cache: where converted score files are kept."""
    if isinstance(parsed, Exception):
        return None, "unreadable", f"{type(parsed).__name__}: {parsed}"
    try:
        score = parsed if parsed is not None else corpora.load_score(item, convert_cache)
    except Exception as exc:  # unreadable / not MIDI / truncated
        return None, "unreadable", f"{type(exc).__name__}: {exc}"
    try:
        if score.note_num() == 0:
            return None, "empty", "no notes"
        ids = encode(tok, score)
    except Exception as exc:  # a tokenizer failure must not stop the corpus
        return None, "error", f"{type(exc).__name__}: {exc}"
    if not ids:
        return None, "empty", "no notes in the tokenizer's pitch range"
    return ids, None, ""


_WORKER_TOKENIZER = None


_WORKER_CONVERT_CACHE = None


def _worker_init(tok_dict: Dict[str, Any], convert_cache) -> None:
    global _WORKER_TOKENIZER, _WORKER_CONVERT_CACHE
    torch.set_num_threads(1)
    _WORKER_TOKENIZER = tokenizer_from_dict(tok_dict)
    _WORKER_CONVERT_CACHE = convert_cache


def _worker_tokenize(item: SourceItem):
    return _tokenize_item(_WORKER_TOKENIZER, item, convert_cache=_WORKER_CONVERT_CACHE)


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="piece", leave=False, dynamic_ncols=True)


def _tokenize_items(tok, items: List[SourceItem], num_workers: Optional[int], show: bool, desc: str,
                    convert_cache=None):
    """num_workers: processes for MIDI and score files (None: one per core when there are score
    files to convert, else none)."""
    abc = [i for i, it in enumerate(items) if it.abc_text is not None]
    if abc:  # ABC tunes: parsed in one batch, tokenized here
        parsed = dict(zip(abc, corpora.parse_abc_tunes([items[i].abc_text for i in abc])))
        return [_tokenize_item(tok, it, parsed.get(i), convert_cache)
                for i, it in _progress(enumerate(items), len(items), desc, show)]
    if num_workers is None:
        num_workers = (os.cpu_count() or 1) if any(it.is_score_file for it in items) else 0
    if num_workers and num_workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(max_workers=num_workers, initializer=_worker_init,
                                 initargs=(tokenizer_to_dict(tok), convert_cache)) as ex:
            chunk = (1 if any(it.is_score_file for it in items)
                     else max(1, min(32, len(items) // (num_workers * 8) or 1)))
            return list(_progress(ex.map(_worker_tokenize, items, chunksize=chunk), len(items), desc, show))
    return [_tokenize_item(tok, it, convert_cache=convert_cache) for it in _progress(items, len(items), desc, show)]


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------
def _cache_key(tok, layout: str, items: List[SourceItem], missing: List[str]) -> str:
    files = []
    for path in sorted({it.path for it in items}):
        try:
            st = os.stat(path)
            files.append([path, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([path, -1, -1])
    tok_d = tokenizer_to_dict(tok)
    material = {
        "cache_format": CACHE_FORMAT,
        "tokenizer": {k: tok_d[k] for k in ("config", "vocab", "miditok_version", "symusic_version")},
        "layout": layout,
        "items": [[it.name, it.path, it.split] for it in items],
        "files": files,
        "missing": sorted(missing),
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _write_cache(path: Path, key: str, pieces, names, labels, skipped, skipped_files) -> None:
    """Atomic write (`smdim.files.atomic_write`)."""
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter((t for p in pieces for t in p), dtype=np.int32, count=int(offsets[-1]))
    meta = json.dumps({"key": key, "cache_format": CACHE_FORMAT, "names": names, "labels": labels,
                       "skipped": skipped, "skipped_files": skipped_files}).encode()
    atomic_write(path, lambda fh: np.savez(fh, tokens=tokens, offsets=offsets,
                                           meta=np.frombuffer(meta, dtype=np.uint8)))


def _read_cache(path: Path, key: str):
    """(pieces, names, labels, skipped, skipped_files); raises on any inconsistency."""
    with np.load(path, allow_pickle=False) as z:
        tokens = z["tokens"]
        offsets = z["offsets"]
        meta = json.loads(bytes(z["meta"]).decode())
    if meta.get("key") != key or meta.get("cache_format") != CACHE_FORMAT:
        raise ValueError("cache key mismatch")
    names, labels = meta["names"], meta["labels"]
    n = len(names)
    if (len(offsets) != n + 1 or len(labels) != n or offsets[0] != 0 or offsets[-1] != len(tokens)
            or np.any(np.diff(offsets) <= 0)):
        raise ValueError("inconsistent cache arrays")
    flat = tokens.tolist()
    bounds = offsets.tolist()
    pieces = [flat[bounds[i]:bounds[i + 1]] for i in range(n)]
    return pieces, names, labels, meta["skipped"], meta.get("skipped_files", {})


# --------------------------------------------------------------------------------------------
# load_corpus
# --------------------------------------------------------------------------------------------
def _cache_file(tok, layout, items, missing, cache_dir) -> Tuple[str, Path]:
    key = _cache_key(tok, layout, items, missing)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return key, root / f"{layout}-{key[:24]}.npz"


def cached_summary(source: Union[str, Path, None], *, layout: str = "auto", tokenizer=None,
                   cache_dir: Union[str, Path, None] = None) -> Dict[str, Any]:
    """What is known of a source without tokenizing it: ``items`` (files or tunes), ``cached``
    (its tokens are in the cache for this tokenizer) and, when cached, ``pieces``, token-length
    ``median`` / ``p90`` / ``max`` and ``skipped`` (reason -> count)."""
    tok = tokenizer if tokenizer is not None else make_tokenizer()
    layout, items, missing = corpora.list_items(source, layout)
    key, path = _cache_file(tok, layout, items, missing, cache_dir)
    out: Dict[str, Any] = {"layout": layout, "source": source_string(layout, source), "items": len(items),
                           "cached": False, "cache_path": path}
    if path.exists():
        try:
            pieces, _, _, skipped, _ = _read_cache(path, key)
        except Exception:
            return out
        lengths = np.array([len(p) for p in pieces] or [0])
        out.update(cached=True, pieces=len(pieces), median=float(np.median(lengths)),
                   p90=float(np.percentile(lengths, 90)), max=int(lengths.max()), skipped=dict(skipped))
    return out


def load_corpus(
    source: Union[str, Path, None] = None,
    *,
    layout: str = "auto",
    tokenizer=None,
    cache_dir: Union[str, Path, None] = None,
    use_cache: bool = True,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.9, 0.05, 0.05),
    num_workers: Optional[int] = None,
    progress: Optional[bool] = None,
) -> Corpus:
    """Tokenized pieces of `source`.

    source: None or "han" for the embedded Han folk songs; a named music21 corpus ("bach",
    "palestrina", ...: `smdim.music21_corpora.NAMED_CORPORA`); a .mid/.midi/.abc/score file; a
    folder of MIDI (recursive), ABC or score files; a MAESTRO v3 folder (its metadata split is
    used) or a POP909 folder. layout: "auto" or one of ``smdim.corpora.LAYOUTS``. tokenizer: default
    ``make_tokenizer()``. Splits are by piece and seeded by `seed` (`split_fractions` =
    train/valid/test) except where MAESTRO metadata gives them. Token ids are cached in
    `cache_dir` (default `default_cache_dir()`); a corrupt cache file is rebuilt with a warning.
    num_workers > 1 tokenizes MIDI and score files in that many processes (None: one per core
    for score files, which music21 converts slowly; each converted file is kept in
    ``cache_dir/converted``, so an interrupted conversion continues). progress: a tqdm bar (default: when more
    than a few files). Unreadable, empty or missing files are skipped with one DataSkipWarning.
    """
    t0 = time.perf_counter()
    tok = tokenizer if tokenizer is not None else make_tokenizer()
    layout, items, missing = corpora.list_items(source, layout)
    source_str = source_string(layout, source)
    cache_path: Optional[Path] = None
    loaded = None
    key = None
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if use_cache:
        key, cache_path = _cache_file(tok, layout, items, missing, cache_root)
        if cache_path.exists():
            try:
                loaded = _read_cache(cache_path, key)
            except Exception as exc:
                warnings.warn(f"smdim: token cache {cache_path} is unreadable ({type(exc).__name__}: {exc}); "
                              "rebuilding it", stacklevel=2)
                loaded = None
    from_cache = loaded is not None
    if loaded is None:
        show = (len(items) > _PROGRESS_MIN_ITEMS) if progress is None else bool(progress)
        results = _tokenize_items(tok, items, num_workers, show, f"tokenizing {source_str}",
                                  convert_cache=cache_root / "converted" if use_cache else None)
        pieces, names, labels = [], [], []
        skipped: Dict[str, int] = {}
        skipped_files: Dict[str, List[str]] = {}
        if missing:
            skipped["missing"] = len(missing)
            skipped_files["missing"] = list(missing[:_EXAMPLES_PER_REASON])
        for item, (ids, reason, detail) in zip(items, results):
            if ids is None:
                skipped[reason] = skipped.get(reason, 0) + 1
                ex = skipped_files.setdefault(reason, [])
                if len(ex) < _EXAMPLES_PER_REASON:
                    ex.append(f"{item.name} ({detail})" if detail else item.name)
                continue
            pieces.append(ids)
            names.append(item.name)
            labels.append(item.split)
        if use_cache and cache_path is not None:
            try:
                _write_cache(cache_path, key, pieces, names, labels, skipped, skipped_files)
            except OSError as exc:
                warnings.warn(f"smdim: could not write the token cache {cache_path}: {exc}", stacklevel=2)
                cache_path = None
    else:
        pieces, names, labels, skipped, skipped_files = loaded

    if skipped:
        n_skipped = sum(skipped.values())
        total = n_skipped + len(pieces)
        what = "tunes" if layout in ("han", "abc") else "files"
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
        examples = "; ".join(e for v in skipped_files.values() for e in v[:2])
        warnings.warn(f"smdim: skipped {n_skipped} of {total} {what} in {source_str} ({reasons})"
                      + (f"; e.g. {examples}" if examples else ""), DataSkipWarning, stacklevel=2)
    if not pieces:
        warnings.warn(f"smdim: no usable pieces in {source_str}", DataSkipWarning, stacklevel=2)

    names = _unique_names(names)
    table = pitch_table(tok)
    keys = [content_key(p, table) for p in pieces]
    if any(lab is not None for lab in labels):
        splits = _splits_with_metadata(labels, keys, split_fractions, seed)
    else:
        splits = make_splits(keys, split_fractions, seed)
    return Corpus(pieces=pieces, names=names, splits=splits, skipped=dict(skipped), tokenizer=tok,
                  layout=layout, source=source_str, skipped_files=dict(skipped_files),
                  cache_path=cache_path, from_cache=from_cache, load_seconds=time.perf_counter() - t0,
                  split_seed=seed, split_fractions=tuple(split_fractions))


def source_string(layout: str, source) -> str:
    """The `Corpus.source` of a source: HAN_SOURCE, "music21:<name>" or the resolved path."""
    if layout == "han":
        return HAN_SOURCE
    if layout == "music21":
        return music21_corpora.named_corpus(music21_corpora.source_name(source)).source
    return str(Path(source).expanduser().resolve())


def _unique_names(names: List[str]) -> List[str]:
    """Names with repeats numbered ("a", "a (2)", ...): records address pieces by name."""
    seen: Dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


# --------------------------------------------------------------------------------------------
# TokenDataset
# --------------------------------------------------------------------------------------------
class TokenDataset(Dataset):
    """Fixed-length windows of token pieces.

    Items are ``dict(tokens=LongTensor(seq_len), pad_mask=BoolTensor(seq_len), piece=int,
    start=int, transpose=int)``; ``pad_mask`` is True at real tokens and False at the PAD
    padding that the loss ignores (the convention of ``smdim.diffusion.diffusion_loss``).

    train=True: each piece gives ``ceil(len / seq_len)`` items per epoch (at least one), each a
    random crop of seq_len tokens that starts at a Bar token when the piece has one early
    enough; shorter pieces come whole and padded. With ``transpose=t`` every Pitch token of a crop
    moves by the same k, drawn uniformly from the shifts in [-t, t] that keep all its pitches in
    the tokenizer's range. Randomness: ``seed=None`` draws from torch's global RNG (seeded per
    DataLoader worker by torch); an int seed makes item i of epoch e depend only on
    (seed, e, i) -- call ``set_epoch(e)`` every epoch, e.g. for exact resume.

    train=False: deterministic non-overlapping windows that cover every token once; with
    ``bar_aligned`` each window ends before the last Bar token that fits, so windows start at
    bars; the rest is padding.
    """

    def __init__(
        self,
        pieces: Union[Corpus, Sequence[Sequence[int]]],
        seq_len: int,
        *,
        split: Optional[str] = None,
        tokenizer=None,
        train: bool = True,
        transpose: int = 0,
        seed: Optional[int] = None,
        bar_aligned: bool = True,
    ) -> None:
        if seq_len < 1:
            raise ValueError("seq_len must be >= 1")
        if transpose < 0:
            raise ValueError("transpose must be >= 0 (the range is [-transpose, transpose])")
        if isinstance(pieces, Corpus):
            tokenizer = tokenizer if tokenizer is not None else pieces.tokenizer
            pieces = pieces.split(split) if split is not None else pieces.pieces
        elif split is not None:
            raise ValueError("split= needs a Corpus")
        if tokenizer is None:
            raise ValueError("pass a tokenizer (or a Corpus) so PAD, Bar and Pitch ids are known")
        self.seq_len = int(seq_len)
        self.train = bool(train)
        self.transpose = int(transpose)
        self.seed = seed
        self.epoch = 0
        self.bar_aligned = bool(bar_aligned)
        self.pad_id = pad_id(tokenizer)
        self.bar_id = bar_id(tokenizer)
        self._transposer = Transposer(tokenizer)
        self.pieces = [torch.as_tensor(np.asarray(p, dtype=np.int64)) for p in pieces]
        self._bars = [torch.nonzero(p == self.bar_id).flatten() for p in self.pieces]
        nonempty = [i for i, p in enumerate(self.pieces) if len(p) > 0]
        if self.train:
            counts = [max(1, math.ceil(len(self.pieces[i]) / self.seq_len)) for i in nonempty]
            self._items: List[Tuple[int, int, int]] = [
                (i, -1, -1) for i, c in zip(nonempty, counts) for _ in range(c)]
        else:
            self._items = [w for i in nonempty for w in self._eval_windows(i)]

    # windows ----------------------------------------------------------------------------------
    def _eval_windows(self, i: int) -> List[Tuple[int, int, int]]:
        n = len(self.pieces[i])
        bars = self._bars[i].tolist() if self.bar_aligned else []
        out, start = [], 0
        while start < n:
            end = min(start + self.seq_len, n)
            if end < n and bars:
                # the next window starts at the last Bar inside (start, end]
                j = bisect.bisect_right(bars, end) - 1
                if j >= 0 and bars[j] > start:
                    end = bars[j]
            out.append((i, start, end))
            start = end
        return out

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of epoch `epoch` (used when `seed` is an int)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            entropy = int(torch.randint(0, 2**62, (1,)).item())
            return np.random.default_rng(entropy)
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFFFFFF, self.epoch, index])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if index < 0:
            index += len(self)
        piece_idx, start, end = self._items[index]
        piece = self.pieces[piece_idx]
        n = len(piece)
        k = 0
        if self.train:
            rng = self._rng(index)
            if n <= self.seq_len:
                start, end = 0, n
            else:
                last = n - self.seq_len
                bars = self._bars[piece_idx]
                cands = bars[bars <= last] if self.bar_aligned else bars[:0]
                if len(cands):
                    start = int(cands[int(rng.integers(len(cands)))])
                else:
                    start = int(rng.integers(last + 1))
                end = start + self.seq_len
            window = piece[start:end]
            if self.transpose > 0:
                window, k = self._transpose(window, rng)
        else:
            window = piece[start:end]
        length = len(window)
        tokens = torch.full((self.seq_len,), self.pad_id, dtype=torch.long)
        tokens[:length] = window
        pad_mask = torch.zeros(self.seq_len, dtype=torch.bool)
        pad_mask[:length] = True  # True = real token
        return {"tokens": tokens, "pad_mask": pad_mask, "piece": piece_idx, "start": start, "transpose": k}

    def _transpose(self, window: torch.Tensor, rng: np.random.Generator) -> Tuple[torch.Tensor, int]:
        """The window moved by k semitones, k uniform over the shifts in [-transpose, transpose] that
        keep every pitch in the tokenizer's range."""
        ids = window.numpy()
        low, high = self._transposer.shifts(ids)
        k = int(rng.integers(max(-self.transpose, low), min(self.transpose, high) + 1))
        if k == 0:
            return window, 0
        return torch.from_numpy(self._transposer(ids, k)), k


class StyleBatches(Dataset):
    """Whole batches drawn from several TokenDatasets, one style per batch, each at its own length
    and batch size (for training one style-conditioned model on corpora of different lengths).

    sources: [(dataset, batch_size)], style i = sources[i]. Item j is a batch: ``dict(tokens=(b, L),
    pad_mask=(b, L), style=(b,))`` of source s(j); an epoch holds ceil(len(dataset) / b) batches of
    every source, so styles come in proportion to their data. train=True: a batch's rows are items
    drawn uniformly (with replacement) by torch's global RNG (the trainer's, restored on resume);
    train=False: consecutive items, every item once.
    """

    def __init__(self, sources: Sequence[Tuple[TokenDataset, int]], train: bool = True) -> None:
        if not sources:
            raise ValueError("StyleBatches needs at least one (dataset, batch_size) source")
        self.sources = [(dataset, int(b)) for dataset, b in sources]
        self.train = bool(train)
        self._index: List[Tuple[int, int]] = []
        for style, (dataset, b) in enumerate(self.sources):
            if b < 1:
                raise ValueError(f"batch size of style {style} must be >= 1; got {b}")
            self._index.extend((style, j) for j in range(math.ceil(len(dataset) / b)))

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        style, j = self._index[index]
        dataset, b = self.sources[style]
        if self.train:
            rows = torch.randint(len(dataset), (b,)).tolist()
        else:
            rows = list(range(j * b, min((j + 1) * b, len(dataset))))
        items = [dataset[i] for i in rows]
        return {"tokens": torch.stack([it["tokens"] for it in items]),
                "pad_mask": torch.stack([it["pad_mask"] for it in items]),
                "style": torch.full((len(items),), style, dtype=torch.long)}
