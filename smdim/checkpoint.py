"""Checkpoints: written atomically (temp file + fsync + rename), read without running code, and
turned back into a model.

A checkpoint is a `torch.save`d dict of tensors and plain values (numbers, strings, lists,
tuples, dicts). It is read with ``torch.load(weights_only=True)``: a file that needs any other
object (a crafted pickle that would run code, or an object of some other program) is refused
with a `CheckpointError` before anything in it is used.

Fields (format 2): model, ema, optimizer, scheduler, step, ranks, history, model_config,
train_config, tokenizer (the tokenizer's dict) and data (the run's data record,
`smdim.data.DataRecord.to_dict()`: source, layout, fingerprint, pieces, splits, training length).
Format 1 (before 2026-12) kept seq_len inside the tokenizer dict and had no data record; it still
loads for generation, and `smdim evaluate` tells what to do with it.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .files import atomic_write

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (missing, corrupt, unsafe, or from another format)."""


def save_checkpoint(path, state: Dict[str, Any]) -> Path:
    """torch.save `state` to `path` atomically; the previous file stays intact until the rename."""
    return atomic_write(path, lambda fh: torch.save(dict(state, format_version=FORMAT_VERSION), fh))


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """The state dict of an smdim checkpoint, read with weights_only=True (no code can run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))  # the class or function it would import
        if found is None:  # not a pickle torch can read at all
            raise CheckpointError(f"cannot read checkpoint {path}: not a torch checkpoint (or a corrupt one)") from None
        raise CheckpointError(f"refused to load {path}: it needs the object {found.group(1)}, and checkpoints may "
                              "hold only tensors and plain values (unpickling other objects can run code)") from None
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format_version") not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is not an smdim checkpoint (formats {', '.join(map(str, READABLE_FORMATS))})")
    return state


def require_fields(state: Dict[str, Any], path, *fields) -> None:
    """Raise CheckpointError naming the first of `fields` that the checkpoint `state` lacks."""
    for name in fields:
        if state.get(name) is None:
            raise CheckpointError(f"{path} has no '{name}' field; it was not written by smdim train "
                                  f"(or by an older version)")


def training_length(state: Dict[str, Any], path) -> int:
    """The training length (tokens) of a checkpoint (format 1 kept it in the tokenizer dict)."""
    seq_len = (state.get("data") or {}).get("seq_len")
    if seq_len is None:
        seq_len = (state.get("tokenizer") or {}).get("seq_len")
    if seq_len is None:
        raise CheckpointError(f"{path} has no 'seq_len' field; it was not written by smdim train")
    return int(seq_len)


def tokenizer_dict(state: Dict[str, Any], path) -> Dict[str, Any]:
    """The tokenizer's dict of a checkpoint, without format 1's seq_len entry."""
    require_fields(state, path, "tokenizer")
    return {k: v for k, v in state["tokenizer"].items() if k != "seq_len"}


def data_record_dict(state: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The run's data record (a dict), or None for a format-1 checkpoint that has none."""
    return state.get("data")


def ema_weights(state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The EMA weights of a checkpoint's state, named as the model's parameters (AveragedModel keeps
    them under "module.")."""
    return {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}


def load_model(path, use_ema=True, map_location="cpu"):
    """(SMDIM model in eval mode, checkpoint state) from a training checkpoint; the EMA weights by
    default. A config that does not fit the weights is a one-line CheckpointError."""
    from .model import SMDIM, SMDIMConfig

    state = load_checkpoint(path, map_location=map_location)
    require_fields(state, path, "model_config", "ema" if use_ema else "model")
    try:
        model = SMDIM(SMDIMConfig.from_dict(state["model_config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model config is not valid ({exc})") from None
    if use_ema:
        weights = ema_weights(state)
    else:
        weights = state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{path}: the weights do not fit its model config ({_first_problem(detail)})") from None
    return model.eval(), state


def _first_problem(message: str) -> str:
    """The first named problem of load_state_dict's long message (missing/unexpected key, size mismatch)."""
    for marker in ("size mismatch for", "Missing key(s)", "Unexpected key(s)"):
        at = message.find(marker)
        if at >= 0:
            return message[at:at + 200].rstrip(" .")
    return message[:200]
