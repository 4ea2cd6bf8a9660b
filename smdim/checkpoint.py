"""Checkpoints written atomically (temp file + fsync + rename): a crash never leaves a torn file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

FORMAT_VERSION = 1


def save_checkpoint(path, state: Dict[str, Any]) -> Path:
    """torch.save `state` to `path` atomically; the previous file stays intact until the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state, format_version=FORMAT_VERSION), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (missing, corrupt, or from another format)."""


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an smdim checkpoint (format {FORMAT_VERSION})")
    return state


def require_fields(state: Dict[str, Any], path, *fields) -> None:
    """Raise CheckpointError naming the first of `fields` that the checkpoint `state` lacks."""
    for name in fields:
        if state.get(name) is None:
            raise CheckpointError(f"{path} has no '{name}' field; it was not written by smdim train "
                                  f"(or by an older version)")
