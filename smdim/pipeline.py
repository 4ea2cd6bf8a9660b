"""The run plumbing shared by the command line and the demo: user errors, devices, data, model
configs, training a run (refusing to overwrite one), and loading a trained run with its data
record.

    corpus = load_data("han")
    trainer, result = train_model(corpus, "runs/tiny", preset="tiny", time_budget=300)
    run = load_run("runs/tiny/checkpoint.pt")          # model + tokenizer + training length + record
    test = recorded_corpus(run)                         # the corpus with the run's recorded splits

Generation code reaches the training module only through `train_model` (imported there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

from .checkpoint import CheckpointError, data_record_dict, load_checkpoint, load_model, tokenizer_dict, training_length
from .data import HAN_SOURCE, Corpus, DataRecord, SplitChanges, load_corpus
from .diffusion import default_device
from .music21_corpora import NAMED_CORPORA, source_name

#: the defaults of a new training run (`smdim train`); a resumed run takes the recorded values
TRAIN_DEFAULTS = dict(preset="tiny", model="smdim", attn_window=None, seq_len=256, steps=2000, batch_size=None,
                      lr=1e-3, warmup=100, transpose=3, time_budget=None, eval_every=200, seed=0,
                      gradient_checkpointing=False, clock="wall", compile=False)
#: tokens per batch of a run whose batch size is not given (16 windows at 256 tokens, 2 at 2048)
TOKENS_PER_BATCH = 4096
#: settings a resumed run may change (how long it goes on, and how memory and compilation trade for time)
RESUME_MAY_CHANGE = ("steps", "time_budget", "eval_every", "gradient_checkpointing", "compile")


class UserError(Exception):
    """A mistake in the command line or its files: reported in one line, without a traceback."""


def resolve_device(name=None) -> torch.device:
    """The torch device of a --device value (None: cuda if available, else cpu); CUDA must be there."""
    device = torch.device(name) if name is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    return device


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def load_data(data=None, *, layout="auto", tokenizer=None, cache_dir=None, seed=0) -> Corpus:
    """The corpus of a --data value: None or "han" for the embedded Han folk songs, a named music21
    corpus ("bach", "palestrina", ...; `smdim corpora` lists them), else a path."""
    if data in (None, "han", HAN_SOURCE):
        return load_corpus(None, layout="auto" if layout == "han" else layout, tokenizer=tokenizer, seed=seed,
                           cache_dir=cache_dir)
    if source_name(data) is not None:
        return load_corpus(data, layout=layout, tokenizer=tokenizer, seed=seed, cache_dir=cache_dir)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data: {path} does not exist (a folder or file of music, 'han', or a corpus named by "
                        f"`smdim corpora`: {', '.join(NAMED_CORPORA)})")
    return load_corpus(path, layout=layout, tokenizer=tokenizer, seed=seed, cache_dir=cache_dir)


def corpus_of_record(record: DataRecord, tokenizer, *, data=None, layout="auto", cache_dir=None,
                     log: Callable[[str], None] = print) -> Tuple[Corpus, SplitChanges]:
    """The corpus a run was trained on (its recorded source, or `data` when it names the same
    source) with the recorded splits; what changed since training is logged in one line."""
    if data is None:
        data, layout = record.source, record.layout
    corpus = load_data(data, layout=layout, tokenizer=tokenizer, cache_dir=cache_dir, seed=record.split_seed)
    if corpus.source != record.source:
        raise UserError(f"--data {data} is not the corpus this run was trained on ({record.source}); to score the "
                        "model on another corpus, pass --cross-corpus to smdim evaluate")
    corpus, changes = corpus.with_record(record)
    if changes:
        log(f"note: the data changed since training: {changes.describe()}; only recorded pieces are used")
    return corpus, changes


def model_config(tok, preset="tiny", model="smdim", attn_window=None):
    """The SMDIMConfig of a preset for a tokenizer; model="transformer" gives the matched baseline."""
    from .model import preset_config
    from .tokenizer import mask_id, pad_id, vocab_size

    overrides = {}
    if attn_window is not None:
        overrides["attn_window"] = None if attn_window == 0 else attn_window
    block = "transformer" if model == "transformer" else "mfa"
    return preset_config(preset, vocab_size(tok), pad_id(tok), mask_id(tok), block=block, **overrides)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _settings_of(state) -> dict:
    """The TRAIN_DEFAULTS settings a checkpoint was trained with (the "settings" field that
    train_model writes; else what its train config tells)."""
    if state.get("settings"):
        return dict(state["settings"])
    train = state.get("train_config", {})
    return dict(seq_len=training_length(state, "checkpoint"), steps=train.get("steps"),
                batch_size=train.get("batch_size"), lr=train.get("lr"), warmup=train.get("warmup_steps"),
                time_budget=train.get("time_budget_s"), eval_every=train.get("eval_every"),
                seed=train.get("seed"), gradient_checkpointing=train.get("gradient_checkpointing", False),
                compile=train.get("compile", False))


def check_run_folder(out, *, resume=False, overwrite=False) -> Path:
    """The checkpoint path of run folder `out`, after refusing what would lose a run: a new run in a
    folder that holds one (without overwrite), or a resume without a checkpoint."""
    path = Path(out) / "checkpoint.pt"
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if resume and not path.exists():
        raise UserError(f"--resume: no checkpoint at {path}")
    if not resume and path.exists() and not overwrite:
        raise UserError(f"--out {out} already holds a run ({path}); pass --resume to continue it or --overwrite to "
                        "replace it")
    return path


def auto_batch_size(seq_len: int) -> int:
    """Windows per batch when none is given: TOKENS_PER_BATCH tokens, at least one window."""
    return max(1, TOKENS_PER_BATCH // int(seq_len))


def train_model(corpus: Optional[Corpus], out, *, resume=False, overwrite=False, progress=True, device=None,
                data=None, layout="auto", cache_dir=None, log: Callable[[str], None] = print,
                pause_at: Optional[float] = None, **settings):
    """Train (or, with resume=True, continue) the run in folder `out`; returns (trainer, result).

    settings: any of TRAIN_DEFAULTS (None or absent = the default for a new run, the recorded
    value for a resumed one). A new run refuses a folder that already holds a checkpoint unless
    overwrite=True. A resumed run uses its recorded model config, training length and data split,
    reading the recorded source (or `data`, which must name the same source; with `layout` and
    `cache_dir`) with the recorded tokenizer when corpus is None; it may change only RESUME_MAY_CHANGE.
    pause_at: stop (with a checkpoint) at this many trained seconds (`Trainer.train`)."""
    from .data import TokenDataset
    from .tokenizer import tokenizer_from_dict, tokenizer_to_dict
    from .train import TrainConfig, Trainer, init_distributed

    unknown = set(settings) - set(TRAIN_DEFAULTS)
    if unknown:
        raise TypeError(f"train_model: unknown settings {sorted(unknown)}")
    given = {k: v for k, v in settings.items() if v is not None}
    out = Path(out)
    checkpoint_path = check_run_folder(out, resume=resume, overwrite=overwrite)
    state = None
    if resume:
        state = load_checkpoint(checkpoint_path)
        if data_record_dict(state) is None:
            raise UserError(f"--resume: {checkpoint_path} was written by an older smdim without a data record, so "
                            "its training split cannot be recovered; start a new run (--overwrite)")
        record = DataRecord.from_dict(data_record_dict(state))
        recorded = _settings_of(state)
        clashes = [k for k, v in given.items() if k in recorded and k not in RESUME_MAY_CHANGE and v != recorded[k]]
        if clashes:
            raise UserError(f"--resume: {', '.join('--' + k.replace('_', '-') for k in clashes)} differ from the "
                            f"recorded run (only --steps, --time-budget, --eval-every, --gradient-checkpointing and "
                            f"--compile may change)")
        values = dict(TRAIN_DEFAULTS, **recorded)
        if values["batch_size"] is None:
            values["batch_size"] = auto_batch_size(values["seq_len"])
        values.update({k: v for k, v in given.items() if k in RESUME_MAY_CHANGE})
        tok = tokenizer_from_dict(tokenizer_dict(state, checkpoint_path))
        if corpus is None:
            corpus, _ = corpus_of_record(record, tok, data=data, layout=layout, cache_dir=cache_dir, log=log)
        else:
            if tokenizer_to_dict(corpus.tokenizer) != tokenizer_to_dict(tok):
                raise ValueError("train_model: the corpus was tokenized with another tokenizer than the run's")
            if corpus.source != record.source:
                raise UserError(f"--resume: --data is {corpus.source}, but the run was trained on {record.source}")
            corpus, changes = corpus.with_record(record)
            if changes:
                log(f"note: the data changed since training: {changes.describe()}; only recorded pieces are used")
        from .model import SMDIMConfig

        config = SMDIMConfig.from_dict(state["model_config"])
    else:
        if corpus is None:
            raise ValueError("train_model: a new run needs a corpus")
        values = dict(TRAIN_DEFAULTS, **given)
        if values["batch_size"] is None:
            values["batch_size"] = auto_batch_size(values["seq_len"])
        tok = corpus.tokenizer
        config = model_config(tok, values["preset"], values["model"], values["attn_window"])
        record = corpus.record(values["seq_len"])

    device = init_distributed(resolve_device(device))
    seq_len = values["seq_len"]
    train_set = TokenDataset(corpus, seq_len, split="train", train=True, transpose=values["transpose"])
    if len(train_set) == 0:
        raise UserError(f"the training split of {corpus.source} is empty")
    valid_set = TokenDataset(corpus, seq_len, split="valid", train=False)
    train_config = TrainConfig(steps=values["steps"], batch_size=values["batch_size"], lr=values["lr"],
                               warmup_steps=min(values["warmup"], values["steps"]), eval_every=values["eval_every"],
                               checkpoint_every=values["eval_every"], seed=values["seed"],
                               time_budget_s=values["time_budget"], clock=values.get("clock") or "wall",
                               gradient_checkpointing=values["gradient_checkpointing"],
                               compile=values["compile"])
    trainer = Trainer(config, train_config, train_set, valid_set, out_dir=out, tokenizer_config=tokenizer_to_dict(tok),
                      data_record=record.to_dict(), run_settings=values, device=device, progress=progress, log=log)
    if state is not None:
        step = trainer.resume(state=state)
        log(f"resumed from step {step}")
    if trainer.rank == 0:
        kind = "transformer" if config.block == "transformer" else "smdim"
        log(f"training {kind} ({trainer.model.num_parameters() / 1e6:.2f} M parameters) on {len(train_set)} windows "
            f"of {seq_len} tokens ({len(corpus.splits['train'])} pieces of {corpus.source}); run folder {out}")
    return trainer, trainer.train(pause_at=pause_at)


# --------------------------------------------------------------------------------------------
# loading a trained run
# --------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A trained model with what it needs to be used and evaluated honestly."""

    model: torch.nn.Module
    tokenizer: object
    seq_len: int
    record: Optional[DataRecord]    # None for a checkpoint written before data records existed
    path: Path
    format_version: int
    style: str = "model"            # what it plays: its corpus (`han`, `bach`, a folder's name)


def style_of_source(source: str, fallback: str = "model") -> str:
    """A short style name for a corpus source string (`han`, `bach`, a folder's name)."""
    if source == HAN_SOURCE:
        return "han"
    if source.startswith("music21:"):
        return source.split(":", 1)[1]
    return Path(source).name if source else fallback


def load_run(checkpoint, *, use_ema=True, device=None) -> Run:
    """The model (eval mode, on `device`), tokenizer, training length and data record of a checkpoint."""
    from .tokenizer import tokenizer_from_dict

    path = Path(checkpoint).expanduser()
    device = resolve_device(device)
    model, state = load_model(path, use_ema=use_ema)
    tok = tokenizer_from_dict(tokenizer_dict(state, path))
    record = data_record_dict(state)
    try:
        record = None if record is None else DataRecord.from_dict(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its data record is unreadable ({exc})") from None
    style = style_of_source(record.source if record is not None else "", path.parent.name or "model")
    return Run(model=model.to(device), tokenizer=tok, seq_len=training_length(state, path), record=record, path=path,
               format_version=int(state["format_version"]), style=style)


def require_record(run: Run) -> DataRecord:
    """The run's data record; a format-1 checkpoint gets a message saying what to do."""
    if run.record is None:
        raise UserError(f"{run.path} was written by an older smdim (checkpoint format {run.format_version}) and "
                        "records no data split, so its held-out pieces are unknown; re-train it with this version, "
                        "or score it on music it never saw with --cross-corpus --data DIR")
    return run.record


def enough_left(remaining: int, recorded: int, what="test") -> None:
    """Refuse an evaluation when fewer than half of the recorded `what` pieces (or fewer than 2) remain."""
    if remaining < max(2, math.ceil(recorded / 2)):
        raise UserError(f"only {remaining} of the {recorded} recorded {what} pieces are still in the data; too few to "
                        "evaluate (restore the missing files, or evaluate on another corpus with --cross-corpus)")
