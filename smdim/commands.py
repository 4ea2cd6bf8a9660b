"""What each `smdim` command does (argument parsing lives in cli.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from .cli import UserError


def _corpus(data, layout, seed, cache_dir=None):
    from .data import load_corpus

    source = None if data in (None, "han") else data
    if source is not None and not Path(source).expanduser().exists():
        raise UserError(f"--data: {source} does not exist (use 'han' for the embedded folk songs)")
    return load_corpus(None if source is None else Path(source).expanduser(), layout=layout, seed=seed,
                       cache_dir=cache_dir)


def _model_config(tok, preset, model, attn_window=None):
    from .model import preset_config
    from .tokenizer import mask_id, pad_id, vocab_size

    overrides = {}
    if attn_window is not None:
        overrides["attn_window"] = None if attn_window == 0 else attn_window
    block = "transformer" if model == "transformer" else "mfa"
    return preset_config(preset, vocab_size(tok), pad_id(tok), mask_id(tok), block=block, **overrides)


def _device(name):
    """The torch device of a --device value (None: cuda if available, else cpu); CUDA must be there."""
    from .train import default_device

    device = torch.device(name) if name is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    return device


def train_model(corpus, out, *, preset="tiny", model="smdim", attn_window=None, seq_len=256, steps=2000,
                batch_size=16, lr=1e-3, warmup=100, transpose=3, time_budget=None, eval_every=200, seed=0,
                resume=False, progress=True, device=None, gradient_checkpointing=False):
    from .data import TokenDataset
    from .tokenizer import tokenizer_to_dict
    from .train import TrainConfig, Trainer, init_distributed

    device = init_distributed(_device(device))
    tok = corpus.tokenizer
    train_set = TokenDataset(corpus, seq_len, split="train", train=True, transpose=transpose)
    valid_set = TokenDataset(corpus, seq_len, split="valid", train=False)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(warmup, steps),
                         eval_every=eval_every, checkpoint_every=eval_every, seed=seed, time_budget_s=time_budget,
                         gradient_checkpointing=gradient_checkpointing)
    trainer = Trainer(_model_config(tok, preset, model, attn_window), config, train_set, valid_set, out_dir=out,
                      tokenizer_config=dict(tokenizer_to_dict(tok), seq_len=seq_len), device=device,
                      progress=progress)
    if resume:
        if not trainer.checkpoint_path.exists():
            raise UserError(f"--resume: no checkpoint at {trainer.checkpoint_path}")
        step = trainer.resume()
        print(f"resumed from step {step}")
    n_params = trainer.model.num_parameters()
    if trainer.rank == 0:
        print(f"training {model} ({preset}, {n_params / 1e6:.2f} M parameters) on {len(train_set)} windows of "
              f"{seq_len} tokens; run folder {out}")
    result = trainer.train()
    return trainer, result


def run_train(args):
    corpus = _corpus(args.data, args.layout, args.seed, args.cache_dir)
    _, result = train_model(corpus, args.out, preset=args.preset, model=args.model, attn_window=args.attn_window,
                            seq_len=args.seq_len, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            warmup=args.warmup, transpose=args.transpose, time_budget=args.time_budget,
                            eval_every=args.eval_every, seed=args.seed, resume=args.resume, device=args.device,
                            gradient_checkpointing=args.gradient_checkpointing)
    print(f"stopped at step {result.step}; checkpoint: {result.checkpoint}")
    return 130 if result.interrupted else 0


def _load(checkpoint, no_ema=False, device=None):
    """(model on `device` in eval mode, tokenizer, training length) of a checkpoint."""
    from .checkpoint import require_fields
    from .tokenizer import tokenizer_from_dict
    from .train import load_model

    path = Path(checkpoint).expanduser()
    device = _device(device)
    model, state = load_model(path, use_ema=not no_ema)
    require_fields(state, path, "tokenizer")
    tok_config = dict(state["tokenizer"])
    require_fields(tok_config, f"{path} (tokenizer config)", "seq_len")
    seq_len = tok_config.pop("seq_len")
    model.split_seed = state.get("train_config", {}).get("seed", 0)  # the seed that split the corpus
    return model.to(device), tokenizer_from_dict(tok_config), seq_len


def _constraints(tok, args):
    from .generation import make_constraints

    return make_constraints(tok, args.pitch_range, args.max_chord)


def _read_midi(path):
    from symusic import Score

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--midi: {path} does not exist")
    try:
        return Score(str(path))
    except Exception as exc:
        raise UserError(f"--midi: cannot read {path} as MIDI ({exc})") from None


def run_generate(args):
    from .generation import write_piece
    from .sampling import generate_long
    from .tokenizer import mask_id

    model, tok, seq_len = _load(args.checkpoint, args.no_ema, args.device)
    length = args.length or seq_len
    generator = torch.Generator().manual_seed(args.seed)
    tokens = generate_long(model, args.n, length, window=seq_len, steps=args.steps, mask_id=mask_id(tok),
                           generator=generator, temperature=args.temperature, constraints=_constraints(tok, args),
                           progress=True)
    for i, ids in enumerate(tokens.tolist()):
        midi, png, score = write_piece(tok, ids, args.out, f"sample_{i}")
        print(f"wrote {midi} ({score.note_num()} notes) and {png}")


def run_infill(args):
    from .generation import bar_beats, bar_region, write_piece
    from .sampling import infill
    from .tokenizer import encode, mask_id

    model, tok, seq_len = _load(args.checkpoint, args.no_ema, args.device)
    ids = encode(tok, _read_midi(args.midi))
    if not ids:
        raise UserError(f"--midi: {args.midi} has no notes in the tokenizer's pitch range")
    tokens = torch.tensor(ids, dtype=torch.long)
    region = bar_region(tok, tokens, *args.bars)
    generator = torch.Generator().manual_seed(args.seed)
    batch = tokens.repeat(args.n, 1)
    out = infill(model, batch, region.repeat(args.n, 1), steps=args.steps, mask_id=mask_id(tok), generator=generator,
                 temperature=args.temperature, constraints=_constraints(tok, args))
    span = bar_beats(tok, ids, *args.bars)
    write_piece(tok, ids, args.out, "original", highlight=[span])
    for i, row in enumerate(out.tolist()):
        midi, png, _ = write_piece(tok, row, args.out, f"infill_{i}", highlight=[span],
                                   title=f"infill of bars {args.bars[0]}-{args.bars[1]}")
        print(f"wrote {midi} and {png}")


def run_continue(args):
    from .generation import prefix_tokens, write_piece
    from .sampling import continue_sequence
    from .tokenizer import mask_id

    model, tok, seq_len = _load(args.checkpoint, args.no_ema, args.device)
    ids = prefix_tokens(tok, _read_midi(args.midi), args.prefix_bars)
    prefix = torch.tensor(ids, dtype=torch.long).repeat(args.n, 1)
    length = args.length or 2 * seq_len
    if length <= prefix.shape[1]:
        raise UserError(f"--length ({length}) must exceed the prefix ({prefix.shape[1]} tokens)")
    out = continue_sequence(model, prefix, length, window=seq_len, steps=args.steps, mask_id=mask_id(tok),
                            generator=torch.Generator().manual_seed(args.seed), temperature=args.temperature,
                            constraints=_constraints(tok, args))
    for i, row in enumerate(out.tolist()):
        midi, png, _ = write_piece(tok, row, args.out, f"continuation_{i}")
        print(f"wrote {midi} and {png}")


def run_evaluate(args):
    from .evaluation import evaluate, format_evaluation
    from .tokenizer import tokenizer_to_dict

    model, tok, seq_len = _load(args.checkpoint, args.no_ema, args.device)
    models = {"model": model}
    if args.baseline:
        baseline, tok_b, _ = _load(args.baseline, args.no_ema, args.device)
        if tokenizer_to_dict(tok_b) != tokenizer_to_dict(tok):
            raise UserError("--baseline was trained with a different tokenizer; they cannot be compared")
        models["baseline"] = baseline
    # The test split must be the one the model was trained without: split with its training seed.
    corpus = _corpus(args.data, args.layout, model.split_seed, args.cache_dir)
    if tokenizer_to_dict(corpus.tokenizer) != tokenizer_to_dict(tok):
        from .data import load_corpus

        corpus = load_corpus(None if args.data == "han" else Path(args.data), layout=args.layout, tokenizer=tok,
                             seed=model.split_seed,
                             cache_dir=args.cache_dir)
    table = evaluate(models, corpus, n=args.n, seq_len=seq_len, steps=args.steps, seed=args.seed,
                     n_boot=args.bootstrap, constraints=_constraints(tok, args), temperature=args.temperature,
                     progress=True)
    text = format_evaluation(table)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.md").write_text(text + "\n")
    print(f"wrote {out / 'evaluation.md'}")


def run_demo(args):
    from .demo import run_demo as demo

    return demo(out=Path(args.out), time_budget=args.time_budget, seed=args.seed, n=args.n,
                cache_dir=args.cache_dir, device=_device(args.device))
