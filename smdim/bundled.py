"""Models that ship inside the package, so that a fresh install makes music without training.

Each bundled model is two files in ``smdim/bundled_models/``:

* ``<name>.safetensors``: the EMA weights of a run, stored in float16 (safetensors: tensors only,
  nothing in the file can run code); loaded back into float32;
* ``<name>.json``: its record: the styles it plays, model config, tokenizer, data record (source,
  split, training length), how it was trained (command, budget, clock, seed, steps, machines), its
  evaluation summary (protocol, test NLL, mean attribute OA against real-vs-real, invalid tokens)
  and the measured effect of the float16 rounding on the test NLL; plus the weights' sha256.

`export_model` writes them from a training checkpoint (`scripts/bundle_models.py` is the
reproducible recipe); `bundled_models()` lists them; `load_bundled(style)` gives a pipeline.Run
that every command uses like a checkpoint's.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .checkpoint import CheckpointError, data_record_dict, ema_weights, tokenizer_dict, training_length
from .files import atomic_write

BUNDLE_FORMAT = 1
BUNDLE_DIR = "bundled_models"
#: the style used when none is asked for: the shortest (fastest) model
DEFAULT_STYLE = "han"


@dataclass(frozen=True)
class BundledModel:
    """One bundled model: its record (the JSON file) and where its weights are."""

    name: str
    record: Dict[str, Any]
    weights: Path

    @property
    def styles(self) -> List[str]:
        return list(self.record["styles"])

    @property
    def seq_len(self) -> int:
        return int(self.record["data"]["seq_len"])


def bundle_folder() -> Path:
    return Path(str(resources.files("smdim").joinpath(BUNDLE_DIR)))


def bundled_models(folder: Optional[Path] = None) -> List[BundledModel]:
    """The bundled models (sorted by training length, then name); [] when none are installed."""
    folder = bundle_folder() if folder is None else Path(folder)
    found = []
    for record_path in sorted(folder.glob("*.json")):
        record = json.loads(record_path.read_text())
        if record.get("format") != BUNDLE_FORMAT:
            raise CheckpointError(f"{record_path}: bundled-model format {record.get('format')!r}, "
                                  f"this smdim reads {BUNDLE_FORMAT}")
        found.append(BundledModel(record["name"], record, record_path.with_suffix(".safetensors")))
    return sorted(found, key=lambda m: (m.seq_len, m.name))


def find_bundled(style: Optional[str] = None, folder: Optional[Path] = None) -> BundledModel:
    """The bundled model that plays `style` (DEFAULT_STYLE when None); a UserError lists the styles."""
    from .pipeline import UserError

    models = bundled_models(folder)
    if not models:
        raise UserError("no bundled model is installed; give --checkpoint PATH (a run of smdim train)")
    wanted = DEFAULT_STYLE if style is None else style
    for model in models:
        if wanted in model.styles:
            return model
    if style is None:
        return models[0]
    styles = [s for m in models for s in m.styles]
    raise UserError(f"--style: no bundled model plays {style!r}; bundled styles: {', '.join(styles)}")


def load_bundled(style: Optional[str] = None, *, device=None, folder: Optional[Path] = None):
    """A pipeline.Run of the bundled model for `style` (float32 weights, eval mode, on `device`)."""
    from safetensors.torch import load_file

    from .data import DataRecord
    from .model import SMDIM, SMDIMConfig
    from .pipeline import Run, resolve_device
    from .tokenizer import tokenizer_from_dict

    bundled = find_bundled(style, folder)
    record = bundled.record
    digest = _sha256(bundled.weights)
    if digest != record["sha256"]:
        raise CheckpointError(f"{bundled.weights}: its weights do not match their record (sha256 {digest[:12]}..., "
                              f"recorded {record['sha256'][:12]}...); reinstall smdim")
    model = SMDIM(SMDIMConfig.from_dict(record["model_config"]))
    model.load_state_dict({k: v.float() for k, v in load_file(str(bundled.weights)).items()})
    return Run(model=model.eval().to(resolve_device(device)), tokenizer=tokenizer_from_dict(record["tokenizer"]),
               seq_len=bundled.seq_len, record=DataRecord.from_dict(record["data"]), path=bundled.weights,
               format_version=2, style=style or bundled.styles[0])


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_model(state: Dict[str, Any], path, out_dir, *, name: str, styles: List[str], training: Dict[str, Any],
                 evaluation: Dict[str, Any], dtype_check: Dict[str, Any]) -> Path:
    """Write ``out_dir/<name>.safetensors`` (float16 EMA weights) and ``<name>.json`` (the record) for
    the checkpoint `state` read from `path`. Returns the JSON path."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in ema_weights(state).items()}
    target = out_dir / f"{name}.safetensors"
    atomic_write(target, lambda fh: fh.write(save(weights)))
    record = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "styles": list(styles),
        "dtype": "float16",
        "sha256": _sha256(target),
        "parameters": int(sum(v.numel() for v in weights.values())),
        "model_config": state["model_config"],
        "tokenizer": tokenizer_dict(state, path),
        "data": dict(data_record_dict(state), seq_len=training_length(state, path)),
        "training": training,
        "evaluation": evaluation,
        "float16_check": dtype_check,
    }
    record_path = out_dir / f"{name}.json"
    text = json.dumps(record, indent=1, sort_keys=False) + "\n"
    atomic_write(record_path, lambda fh: fh.write(text.encode()))
    return record_path



def update_record(record_path, **fields) -> Path:
    """Add or replace top-level `fields` of a bundled model's JSON record (atomically)."""
    record_path = Path(record_path)
    record = json.loads(record_path.read_text())
    record.update(fields)
    text = json.dumps(record, indent=1) + "\n"
    return atomic_write(record_path, lambda fh: fh.write(text.encode()))


# --------------------------------------------------------------------------------------------
# what the record says about a model's quality
# --------------------------------------------------------------------------------------------
#: evaluation rows kept in a bundled model's record (the study's names -> the record's keys)
SUMMARY_ROWS = {"NLL test (bits/token, MDLM bound)": "nll_bits_per_token",
                "attribute OA, mean (KDE overlap)": "mean_attribute_oa",
                "framewise pitch consistency (published)": "framewise_pitch_consistency",
                "invalid tokens": "invalid_tokens"}


def evaluation_summary(evaluation: Dict[str, Any], column: str, source: str) -> Dict[str, Any]:
    """The rows of SUMMARY_ROWS of an evaluation table (smdim study's evaluation.json) for `column`,
    beside the real-vs-real ceiling and the other model's figures, with the protocol notes."""
    table = evaluation["table"]
    others = [c for c in evaluation["columns"] if c not in (column, "real vs real") and "−" not in c]
    summary: Dict[str, Any] = {"source": source, "protocol": evaluation["notes"], "model": {}, "real_vs_real": {}}
    for row, key in SUMMARY_ROWS.items():
        cells = table.get(row, {})
        summary["model"][key] = cells.get(column)
        if cells.get("real vs real") is not None:
            summary["real_vs_real"][key] = cells["real vs real"]
        for other in others:
            summary.setdefault("baseline", {"name": other})[key] = cells.get(other)
    return summary


@torch.no_grad()
def float16_check(state: Dict[str, Any], corpus, seq_len: int, *, seed: int = 0, n_boot: int = 200) -> Dict[str, Any]:
    """Test NLL (bits/token) of a checkpoint's EMA weights in float32 and rounded to float16, on the
    same test windows and masking times, with the paired float16 - float32 interval."""
    from . import metrics
    from .diffusion import bits_per_token, sequence_nlls
    from .evaluation import padded_batches, reference_windows
    from .model import SMDIM, SMDIMConfig
    from .tokenizer import mask_id, pad_id

    tok = corpus.tokenizer
    batches = list(padded_batches(reference_windows(corpus, "test", seq_len), seq_len, pad_id(tok)))
    nlls = {}
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16)):
        model = SMDIM(SMDIMConfig.from_dict(state["model_config"]))
        model.load_state_dict({k: v.to(dtype).float() for k, v in ema_weights(state).items()})
        nlls[name] = sequence_nlls(model.eval(), batches, mask_id=mask_id(tok), seed=seed)
    diff = metrics.paired_bootstrap_ci(bits_per_token, nlls["float16"], nlls["float32"], n_boot=n_boot, seed=seed)
    return {"test_windows": len(nlls["float32"]), "nll_float32": bits_per_token(nlls["float32"]),
            "nll_float16": bits_per_token(nlls["float16"]),
            "float16_minus_float32": {"value": diff.value, "low": diff.low, "high": diff.high}}
