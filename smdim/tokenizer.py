"""REMI tokenization for SMDIM (miditok 3.1 + symusic 0.6).

One token stream per piece: the non-drum tracks of a score are merged into a single piano track
before encoding, so a sequence reads

    Bar TimeSig Position Pitch Velocity Duration [Pitch Velocity Duration ...] Position ... Bar ...

Default configuration (`DEFAULT_TOKENIZER_PARAMS`) and why:

* pitch 21-108 (the 88 piano keys) covers piano corpora and every folk melody;
* 8 positions per beat for notes shorter than 4 beats, 4 per beat up to 12 beats (miditok's
  default grid): on the Han folk corpus this keeps every onset and duration of all 1,222 tunes
  (a 4-per-beat grid merges 41 notes of tunes written in 1/32 units);
* 16 velocity bins: enough for piano dynamics, few classes to learn on small corpora;
* time signatures on (a TimeSig token after every Bar, so any crop that starts at a Bar knows its
  metre), with the metres found in folk and piano music, x/8 included (Han has 3/8, 5/8, 7/8...);
* no tempo tokens (the folk tunes carry none; performance MIDI tempo is not on the beat grid);
* no Program tokens: tracks are merged (drums dropped), which keeps sequences ~20 % shorter than
  Program-prefixed notes; the target corpora are single-instrument (folk melody, solo piano,
  POP909's three piano tracks);
* special tokens PAD (id 0), BOS, EOS, MASK (ids 1, 2, 3): MASK is the absorbing state of the
  diffusion.

The tokenizer is stored in checkpoints as `tokenizer_to_dict(tok)` (plain JSON data, including
the vocabulary) and rebuilt offline with `tokenizer_from_dict`.
"""
from __future__ import annotations

import copy
import json
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import miditok
import symusic
from miditok import REMI, TokenizerConfig, TokSequence
from symusic import Note, Score, Track

__all__ = [
    "DEFAULT_TOKENIZER_PARAMS",
    "make_tokenizer",
    "tokenizer_to_dict",
    "tokenizer_from_dict",
    "pad_id",
    "mask_id",
    "bos_id",
    "eos_id",
    "bar_id",
    "special_ids",
    "vocab_size",
    "merge_tracks",
    "encode",
    "decode",
    "kept_token_indices",
    "token_ids_by_type",
    "pitch_tokens",
    "velocity_tokens",
    "duration_tokens",
    "position_tokens",
    "time_signature_tokens",
    "positions_per_beat",
    "transpose_ids",
    "Transposer",
    "pitch_table",
]

FORMAT_NAME = "smdim.tokenizer"
FORMAT_VERSION = 1

#: TokenizerConfig arguments of the default tokenizer (JSON-style: beat ranges as "a_b" keys).
DEFAULT_TOKENIZER_PARAMS: Dict[str, Any] = {
    "pitch_range": [21, 108],
    "beat_res": {"0_4": 8, "4_12": 4},
    "num_velocities": 16,
    "special_tokens": ["PAD", "BOS", "EOS", "MASK"],
    "use_velocities": True,
    "use_time_signatures": True,
    "time_signature_range": {"8": [3, 4, 5, 6, 7, 9, 12], "4": [1, 2, 3, 4, 5, 6, 7], "2": [2, 3, 4]},
    "use_tempos": False,
    "use_programs": False,
    "use_pitchdrum_tokens": False,
    "use_chords": False,
    "use_rests": False,
    "use_sustain_pedals": False,
    "use_pitch_bends": False,
    "remove_duplicated_notes": True,
}

_SPECIAL_NAMES = ("PAD", "BOS", "EOS", "MASK")
_NOTE_TYPES = ("Pitch", "Velocity", "Duration")


# --------------------------------------------------------------------------------------------
# construction and (de)serialisation
# --------------------------------------------------------------------------------------------
def _range_key(key: Any) -> Tuple[int, int]:
    if isinstance(key, str):
        a, b = key.split("_")
        return int(a), int(b)
    a, b = key
    return int(a), int(b)


def _to_config_kwargs(params: Mapping[str, Any]) -> Dict[str, Any]:
    """JSON-style parameters -> TokenizerConfig keyword arguments (tuples, int keys)."""
    kw = copy.deepcopy(dict(params))
    for key in ("beat_res", "beat_res_rest"):
        if key in kw and kw[key] is not None:
            kw[key] = {_range_key(k): int(v) for k, v in kw[key].items()}
    if "time_signature_range" in kw and kw["time_signature_range"] is not None:
        kw["time_signature_range"] = {
            int(den): (tuple(nums) if isinstance(nums, tuple) else list(nums))
            for den, nums in kw["time_signature_range"].items()
        }
    if "chord_maps" in kw and kw["chord_maps"] is not None:
        kw["chord_maps"] = {name: tuple(v) for name, v in kw["chord_maps"].items()}
    for key in ("pitch_range", "tempo_range", "pitch_bend_range", "drums_pitch_range",
                "chord_unknown"):
        if key in kw and isinstance(kw[key], list):
            kw[key] = tuple(kw[key])
    return kw


def _check_specials(tok: REMI) -> None:
    vocab = tok.vocab
    if vocab.get("PAD_None") != 0:
        raise ValueError("the tokenizer's PAD token must have id 0 (put 'PAD' first in special_tokens)")
    if "MASK_None" not in vocab:
        raise ValueError("the tokenizer needs a MASK special token (add 'MASK' to special_tokens)")
    if tok.is_trained:
        raise ValueError("trained (BPE/Unigram) tokenizers are not supported")
    if tok.config.use_programs and not tok.one_token_stream:
        raise ValueError("use_programs=True needs one_token_stream_for_programs=True (one stream per piece)")


def make_tokenizer(params: Optional[Mapping[str, Any]] = None) -> REMI:
    """A REMI tokenizer: `DEFAULT_TOKENIZER_PARAMS` updated with `params` (TokenizerConfig
    arguments; beat ranges may be "a_b" strings or tuples, time-signature denominators str or
    int). PAD must stay id 0 and MASK must exist."""
    merged = copy.deepcopy(DEFAULT_TOKENIZER_PARAMS)
    if params:
        merged.update(copy.deepcopy(dict(params)))
    tok = REMI(TokenizerConfig(**_to_config_kwargs(merged)))
    _check_specials(tok)
    return tok


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def tokenizer_to_dict(tok: REMI) -> Dict[str, Any]:
    """Plain JSON data describing `tok` (its config and vocabulary), for checkpoints."""
    config = _json_safe(tok.config.to_dict(serialize=True))
    d = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tokenization": type(tok).__name__,
        "config": config,
        "vocab": {str(k): int(v) for k, v in tok.vocab.items()},
        "miditok_version": getattr(miditok, "__version__", None) or _dist_version("miditok"),
        "symusic_version": _dist_version("symusic"),
    }
    return json.loads(json.dumps(d))  # guarantees JSON-serialisable plain types


def _dist_version(name: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover - metadata missing
        return None


def tokenizer_from_dict(d: Mapping[str, Any]) -> REMI:
    """Rebuild the tokenizer saved by `tokenizer_to_dict` (offline). Raises ValueError if the
    rebuilt vocabulary differs from the stored one (e.g. an incompatible miditok version)."""
    if not isinstance(d, Mapping) or "config" not in d:
        raise ValueError("not a tokenizer dict (missing 'config')")
    if d.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise ValueError(f"unknown tokenizer format {d.get('format')!r}")
    name = d.get("tokenization", "REMI")
    if name != "REMI":
        raise ValueError(f"only REMI tokenizers are supported, got {name!r}")
    cfg = _to_config_kwargs(copy.deepcopy(dict(d["config"])))
    additional = cfg.pop("additional_params", {}) or {}
    for key in ("miditok_version", "symusic_version", "hf_tokenizers_version"):
        cfg.pop(key, None)
    cfg.update(additional)
    tok = REMI(TokenizerConfig(**cfg))
    stored = d.get("vocab")
    if stored is not None and {str(k): int(v) for k, v in stored.items()} != dict(tok.vocab):
        raise ValueError(
            "the rebuilt tokenizer's vocabulary differs from the stored one (saved with miditok "
            f"{d.get('miditok_version')}, running {_dist_version('miditok')})"
        )
    _check_specials(tok)
    return tok


# --------------------------------------------------------------------------------------------
# ids and token tables
# --------------------------------------------------------------------------------------------
def pad_id(tok: REMI) -> int:
    return int(tok.vocab["PAD_None"])


def mask_id(tok: REMI) -> int:
    return int(tok.vocab["MASK_None"])


def bos_id(tok: REMI) -> Optional[int]:
    v = tok.vocab.get("BOS_None")
    return None if v is None else int(v)


def eos_id(tok: REMI) -> Optional[int]:
    v = tok.vocab.get("EOS_None")
    return None if v is None else int(v)


def bar_id(tok: REMI) -> int:
    return int(tok.vocab["Bar_None"])


def special_ids(tok: REMI) -> List[int]:
    return sorted(int(i) for i in tok.special_tokens_ids)


def vocab_size(tok: REMI) -> int:
    return int(len(tok.vocab))


def _id_to_token(tok: REMI) -> List[str]:
    cache = getattr(tok, "_smdim_id_to_token", None)
    if cache is None or len(cache) != len(tok.vocab):
        cache = [""] * len(tok.vocab)
        for t, i in tok.vocab.items():
            cache[i] = t
        tok._smdim_id_to_token = cache
    return cache


def token_ids_by_type(tok: REMI) -> Dict[str, List[int]]:
    """Token ids grouped by type: "PAD", "BOS", "EOS", "MASK", "Bar", "TimeSig", "Position",
    "Pitch", "Velocity", "Duration" (and "Program" etc. if the config has them)."""
    out: Dict[str, List[int]] = {}
    for i, t in enumerate(_id_to_token(tok)):
        out.setdefault(t.split("_")[0], []).append(i)
    return out


def _value_table(tok: REMI, type_name: str, parse) -> Dict[int, Any]:
    out = {}
    for i, t in enumerate(_id_to_token(tok)):
        typ, _, val = t.partition("_")
        if typ == type_name:
            out[i] = parse(val)
    return out


def pitch_tokens(tok: REMI) -> Dict[int, int]:
    """Pitch token id -> MIDI pitch."""
    return _value_table(tok, "Pitch", int)


def velocity_tokens(tok: REMI) -> Dict[int, int]:
    """Velocity token id -> MIDI velocity."""
    return _value_table(tok, "Velocity", int)


def _parse_duration(val: str) -> float:
    beats, pos, res = (int(x) for x in val.split("."))
    return beats + pos / res


def duration_tokens(tok: REMI) -> Dict[int, float]:
    """Duration token id -> length in beats (beat = the time signature's denominator note)."""
    return _value_table(tok, "Duration", _parse_duration)


def position_tokens(tok: REMI) -> Dict[int, int]:
    """Position token id -> position in the bar, in units of 1/`positions_per_beat` beat."""
    return _value_table(tok, "Position", int)


def time_signature_tokens(tok: REMI) -> Dict[int, Tuple[int, int]]:
    """TimeSig token id -> (numerator, denominator)."""
    return _value_table(tok, "TimeSig", lambda v: tuple(int(x) for x in v.split("/")))


def positions_per_beat(tok: REMI) -> int:
    return int(tok.config.max_num_pos_per_beat)


# --------------------------------------------------------------------------------------------
# encode / decode
# --------------------------------------------------------------------------------------------
def merge_tracks(score: Score, keep_drums: bool = False) -> Score:
    """A copy of `score` with all (non-drum unless `keep_drums`) notes in one program-0 track;
    time signatures, tempos and key signatures are kept."""
    out = Score(score.ticks_per_quarter)
    out.time_signatures = score.time_signatures.copy()
    out.tempos = score.tempos.copy()
    out.key_signatures = score.key_signatures.copy()
    cols = {k: [] for k in ("time", "duration", "pitch", "velocity")}
    for track in score.tracks:
        if track.is_drum and not keep_drums:
            continue
        if track.note_num() == 0:
            continue
        arr = track.notes.numpy()
        for k in cols:
            cols[k].append(arr[k])
    merged = Track(program=0, is_drum=False, name="merged")
    if cols["time"]:
        arrays = {k: np.concatenate(v) for k, v in cols.items()}
        order = np.lexsort((arrays["pitch"], arrays["time"]))
        merged.notes = Note.from_numpy(**{k: np.ascontiguousarray(v[order]) for k, v in arrays.items()})
    out.tracks.append(merged)
    return out


def encode(tok: REMI, score: Score, *, bos_eos: bool = False, keep_drums: bool = False) -> List[int]:
    """Token ids of one piece: tracks merged into one stream (drums dropped unless
    `keep_drums`; with a use_programs tokenizer the tracks keep their programs). Returns [] for a
    score without notes in the tokenizer's pitch range. `bos_eos` wraps the ids in BOS ... EOS."""
    if tok.config.use_programs:
        src = score.copy()
        if not keep_drums:
            src.tracks = [t for t in src.tracks if not t.is_drum]
    else:
        src = merge_tracks(score, keep_drums=keep_drums)
    if src.note_num() == 0:
        return []
    seq = tok.encode(src)
    if isinstance(seq, list):
        seq = seq[0] if seq else None
    ids = [] if seq is None else [int(i) for i in seq.ids]
    if not any(t.startswith("Pitch_") for t in (_id_to_token(tok)[i] for i in ids)):
        return []
    if bos_eos:
        ids = [bos_id(tok)] + ids + [eos_id(tok)]
    return ids


def _as_int_list(ids: Any) -> List[int]:
    if hasattr(ids, "detach"):  # torch tensor
        ids = ids.detach().cpu().reshape(-1).tolist()
    elif isinstance(ids, np.ndarray):
        ids = ids.reshape(-1).tolist()
    return [int(i) for i in ids]


def kept_token_indices(tok: REMI, ids: Sequence[int]) -> List[int]:
    """Indices of the ids `decode` reads: special/unknown ids removed and notes kept only when
    complete (Pitch Velocity Duration, right after one another once specials are removed)."""
    table = _id_to_token(tok)
    n = len(table)
    specials = set(special_ids(tok))
    kept = [i for i, t in enumerate(ids) if 0 <= t < n and t not in specials]
    expected = ["Pitch"] + (["Velocity"] if tok.config.use_velocities else []) + (
        ["Duration"] if tok.config.using_note_duration_tokens else [])
    note_len = len(expected)
    out: List[int] = []
    j = 0
    while j < len(kept):
        typ = table[ids[kept[j]]].split("_")[0]
        if typ in ("Pitch", "PitchDrum"):
            group = kept[j:j + note_len]
            types = [table[ids[i]].split("_")[0] for i in group]
            types[0] = "Pitch"
            if types == expected:
                out.extend(group)
                j += note_len
                continue
        elif typ not in ("Velocity", "Duration"):  # orphan note attributes are dropped
            out.append(kept[j])
        j += 1
    return out


def _repair(tok: REMI, ids: Sequence[int]) -> List[str]:
    """Tokens (str) that decode reads (see kept_token_indices)."""
    table = _id_to_token(tok)
    return [table[ids[i]] for i in kept_token_indices(tok, ids)]


def decode(tok: REMI, ids: Sequence[int]) -> Score:
    """Score of a token sequence. Tolerant: PAD/BOS/EOS/MASK and out-of-vocabulary ids are
    skipped, incomplete notes dropped; never raises on bad ids (an empty score at worst)."""
    tokens = _repair(tok, _as_int_list(ids))
    score: Optional[Score] = None
    if tokens:
        seq = TokSequence(tokens=tokens)
        try:
            tok.complete_sequence(seq)
            score = tok.decode(seq if tok.one_token_stream else [seq])
        except Exception as exc:  # defensive: malformed sequences must not crash a run
            warnings.warn(f"decode: could not decode the token sequence ({exc!r}); returning an empty score",
                          stacklevel=2)
            score = None
    if score is None:
        score = Score(tok.time_division)
        score.tempos.append(symusic.Tempo(0, 120.0))
        score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    if len(score.tracks) == 0:
        score.tracks.append(Track(program=0, is_drum=False, name="piano"))
    return score


# --------------------------------------------------------------------------------------------
# augmentation helper
# --------------------------------------------------------------------------------------------
def pitch_table(tok: REMI) -> np.ndarray:
    """(vocab,) int64: the MIDI pitch of each Pitch token id, -1 for every other id."""
    table = np.full(len(tok.vocab), -1, dtype=np.int64)
    for token_id, pitch in pitch_tokens(tok).items():
        table[token_id] = pitch
    return table


class Transposer:
    """Moves every Pitch token of a sequence by the same number of semitones: the one
    transposition routine (training augmentation, `transpose_ids`)."""

    def __init__(self, tok: REMI):
        self.pitch_of = pitch_table(tok)
        self.id_of_pitch = np.full(128, -1, dtype=np.int64)
        pitched = np.nonzero(self.pitch_of >= 0)[0]
        self.id_of_pitch[self.pitch_of[pitched]] = pitched
        self.low, self.high = int(self.pitch_of[pitched].min()), int(self.pitch_of[pitched].max())

    def shifts(self, ids: np.ndarray) -> Tuple[int, int]:
        """(lowest, highest) shift in semitones that keeps every pitch of `ids` in the vocabulary
        ((0, 0) for a sequence without pitches)."""
        pitch = self.pitch_of[ids]
        pitch = pitch[pitch >= 0]
        if pitch.size == 0:
            return 0, 0
        return self.low - int(pitch.min()), self.high - int(pitch.max())

    def __call__(self, ids: np.ndarray, semitones: int) -> np.ndarray:
        """`ids` (int array) with every Pitch token moved by `semitones`; ValueError if one would leave
        the vocabulary's range."""
        ids = np.asarray(ids, dtype=np.int64)
        low, high = self.shifts(ids)
        if not low <= semitones <= high:
            raise ValueError(f"transposing by {semitones} semitones takes a pitch outside the tokenizer's range "
                             f"{self.low}-{self.high}")
        pitch = self.pitch_of[ids]
        is_pitch = pitch >= 0
        return np.where(is_pitch, self.id_of_pitch[np.clip(pitch + semitones, 0, 127)], ids)


def transpose_ids(tok: REMI, ids: Sequence[int], semitones: int) -> List[int]:
    """`ids` with every Pitch token moved by `semitones`; raises ValueError if a pitch would
    leave the tokenizer's range."""
    return Transposer(tok)(np.asarray(_as_int_list(ids), dtype=np.int64), semitones).tolist()
