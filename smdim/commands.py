"""What each `smdim` command does: thin adapters from the parsed arguments (cli.py) to the run
plumbing (pipeline.py), sampling and evaluation."""
from __future__ import annotations

from pathlib import Path

import torch

from .pipeline import (
    TRAIN_DEFAULTS,
    UserError,
    check_run_folder,
    corpus_of_record,
    enough_left,
    load_data,
    load_run,
    require_record,
    resolve_device,
    train_model,
)


def run_corpora(args):
    from .data import cached_summary, load_corpus
    from .metrics import format_table
    from .music21_corpora import NAMED_CORPORA

    names = list(NAMED_CORPORA)
    if args.prepare:
        wanted = names if "all" in args.prepare else args.prepare
        unknown = [n for n in wanted if n not in NAMED_CORPORA]
        if unknown:
            raise UserError(f"--prepare: unknown corpus {unknown[0]!r}; named corpora: {', '.join(names)}")
        for name in wanted:
            corpus = load_corpus(name, cache_dir=args.cache_dir, progress=True)
            print(f"{name}: {len(corpus)} pieces ({'from the cache' if corpus.from_cache else 'converted'}, "
                  f"{corpus.load_seconds:.0f} s)")
    table = {}
    for name in names:
        info = cached_summary(name, cache_dir=args.cache_dir)
        corpus = NAMED_CORPORA[name]
        unit = "tunes" if corpus.kind == "abc" else "files"
        if info["cached"]:
            skipped = sum(info["skipped"].values())
            pieces = f"{info['pieces']}" + (f" ({skipped} skipped)" if skipped else "")
            lengths = f"{info['median']:.0f} / {info['p90']:.0f} / {info['max']}"
        else:
            pieces, lengths = "-", "-"
        table[name] = {"style": corpus.style + (f"; {corpus.note}" if corpus.note else ""),
                       "source": info["source"], "items": f"{info['items']} {unit}",
                       "pieces": pieces, "tokens median / p90 / max": lengths,
                       "cached": "yes" if info["cached"] else "no"}
    columns = ["corpus", "items", "pieces", "tokens median / p90 / max", "cached", "style", "source"]
    print(format_table(table, columns=columns, index="corpus"))
    if not all(row["cached"] == "yes" for row in table.values()):
        print("\nlengths are known once a corpus is cached: smdim corpora --prepare NAME (or train on it)")


def run_models(args):
    from .bundled import bundled_models
    from .metrics import format_table

    models = bundled_models()
    if not models:
        raise UserError("no bundled model is installed (this copy of smdim ships none); train one with smdim train")

    def ci(cell, digits=3):
        if cell is None:
            return "-"
        if isinstance(cell, dict):
            return f"{cell['value']:.{digits}f} ± {(cell['high'] - cell['low']) / 2:.{digits}f}"
        return f"{cell:.{digits}f}"

    table = {}
    for m in models:
        r, ev = m.record, m.record["evaluation"]
        train = r["training"]
        table[m.name] = {
            "styles": ", ".join(m.styles), "tokens": m.seq_len, "parameters": f"{r['parameters'] / 1e6:.1f} M",
            "MB": f"{m.weights.stat().st_size / 1e6:.1f}",
            "trained": f"{train['budget_seconds']:.0f} CPU-s, {train['steps']} steps, seed {train['seed']}",
            "test NLL (bits/token)": ci(ev["model"]["nll_bits_per_token"]),
            "mean OA, random 32": ci(ev["model"]["mean_attribute_oa"]),
            "mean OA, defaults": ci(r.get("evaluation_at_defaults", {}).get("model", {}).get("mean_attribute_oa")),
            "real vs real": ci(ev["real_vs_real"].get("mean_attribute_oa")),
            "invalid, defaults": ci(r.get("evaluation_at_defaults", {}).get("model", {}).get("invalid_tokens")),
        }
    columns = ["model", "styles", "tokens", "parameters", "MB", "trained", "test NLL (bits/token)",
               "mean OA, random 32", "mean OA, defaults", "real vs real", "invalid, defaults"]
    print(format_table(table, columns=columns, index="model"))
    first = models[0].record["evaluation"]["protocol"][0]
    print(f"\nEvaluation (smdim study, per model): held-out test windows of the recorded split; e.g. {models[0].name}: "
          f"{first}\n'defaults': the shipped float16 model by the same protocol at the sampling defaults (32 steps, "
          "confidence order). Intervals: ± half the 95 % bootstrap interval. Rebuilt by: python "
          f"scripts/bundle_models.py. Files: {models[0].weights.parent}")


def run_train(args):
    check_run_folder(args.out, resume=args.resume, overwrite=args.overwrite)  # before the data is loaded
    if args.preset is not None:
        from .model import PRESETS

        if args.preset not in PRESETS:
            raise UserError(f"--preset: preset must be one of {sorted(PRESETS)}; got {args.preset!r}")
    corpus = None  # a resumed run reads its recorded source (or --data) with its recorded tokenizer
    if not args.resume:
        corpus = load_data(args.data, layout=args.layout, cache_dir=args.cache_dir,
                           seed=args.seed if args.seed is not None else TRAIN_DEFAULTS["seed"])
    settings = {k: getattr(args, k) for k in TRAIN_DEFAULTS}
    _, result = train_model(corpus, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device,
                            data=args.data, layout=args.layout, cache_dir=args.cache_dir, **settings)
    print(f"stopped at step {result.step}; checkpoint: {result.checkpoint}")
    return 130 if result.interrupted else 0


def _constraints(tok, args, region_of=None):
    from .generation import infill_constraints, make_constraints

    if region_of is not None:
        return infill_constraints(tok, *region_of, pitch_range=args.pitch_range, max_chord=args.max_chord)
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


def _sampling(run, args, region_of=None):
    """Sampler keywords from the arguments; region_of = (tokens, region) when infilling (keeps the
    bar grid and every note outside the region, see generation.infill_constraints)."""
    from .tokenizer import mask_id

    return dict(steps=args.steps, mask_id=mask_id(run.tokenizer), temperature=args.temperature, order=args.order,
                constraints=_constraints(run.tokenizer, args, region_of),
                generator=torch.Generator().manual_seed(args.seed))


def _check_wav(args):
    """Fail before any sampling when --wav cannot be honoured (the message names the install line)."""
    if getattr(args, "wav", False):
        from .audio import AudioUnavailable, check_available

        try:
            check_available()
        except AudioUnavailable as exc:
            raise UserError(str(exc)) from None


def _model_run(args):
    """The run a sampling command uses: its --checkpoint, else the bundled model of --style."""
    if args.checkpoint is not None:
        if args.style is not None:
            raise UserError("--style picks a bundled model; a --checkpoint plays the style it was trained on")
        return load_run(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    return _bundled_run(args.style, args)


def _bundled_run(style, args):
    import sys

    from .bundled import load_bundled

    if args.no_ema:
        raise UserError("--no-ema: a bundled model holds only its EMA weights (give --checkpoint for a run's raw ones)")
    run = load_bundled(style, device=args.device)
    print(f"smdim: the bundled {run.style} model ({run.seq_len} tokens; --checkpoint PATH uses a run of your own)",
          file=sys.stderr)
    return run


def run_generate(args):
    from .generation import write_piece
    from .sampling import generate_long
    from .tokenizer import bar_id

    _check_wav(args)
    run = _model_run(args)
    tokens = generate_long(run.model, args.n, args.length or run.seq_len, window=run.seq_len,
                           bar_id=bar_id(run.tokenizer), progress=True, **_sampling(run, args))
    for i, ids in enumerate(tokens.tolist()):
        midi, png, score = write_piece(run.tokenizer, ids, args.out, f"sample_{i}", wav=args.wav)
        print(f"wrote {_written(midi, png, args)} ({score.note_num()} notes)")


def run_infill(args):
    from .generation import bar_beats, bar_region, write_piece
    from .sampling import infill
    from .tokenizer import encode

    _check_wav(args)
    run = _model_run(args)
    tok = run.tokenizer
    ids = encode(tok, _read_midi(args.midi))
    if not ids:
        raise UserError(f"--midi: {args.midi} has no notes in the tokenizer's pitch range")
    tokens = torch.tensor(ids, dtype=torch.long)
    region = bar_region(tok, tokens, *args.bars)
    out = infill(run.model, tokens.repeat(args.n, 1), region.repeat(args.n, 1), window=run.seq_len, progress=True,
                 **_sampling(run, args, region_of=(tokens, region)))
    span = bar_beats(tok, ids, *args.bars)
    write_piece(tok, ids, args.out, "original", highlight=[span], wav=args.wav)
    for i, row in enumerate(out.tolist()):
        midi, png, _ = write_piece(tok, row, args.out, f"infill_{i}", highlight=[span],
                                   title=f"infill of bars {args.bars[0]}-{args.bars[1]}", wav=args.wav)
        print(f"wrote {_written(midi, png, args)}")


def run_continue(args):
    from .generation import prefix_tokens, write_piece
    from .sampling import continue_sequence
    from .tokenizer import bar_id

    _check_wav(args)
    run = _model_run(args)
    ids = prefix_tokens(run.tokenizer, _read_midi(args.midi), args.prefix_bars)
    prefix = torch.tensor(ids, dtype=torch.long).repeat(args.n, 1)
    length = args.length or 2 * run.seq_len
    if length <= prefix.shape[1]:
        raise UserError(f"--length ({length}) must exceed the prefix ({prefix.shape[1]} tokens)")
    out = continue_sequence(run.model, prefix, length, window=run.seq_len, bar_id=bar_id(run.tokenizer),
                            **_sampling(run, args))
    for i, row in enumerate(out.tolist()):
        midi, png, _ = write_piece(run.tokenizer, row, args.out, f"continuation_{i}", wav=args.wav)
        print(f"wrote {_written(midi, png, args)}")


def _written(midi, png, args):
    return f"{midi}, {png} and {midi.with_suffix('.wav')}" if args.wav else f"{midi} and {png}"


def _test_corpus(run, args, baseline=None):
    """(corpus whose test split is what gets scored, label for the table)."""
    from dataclasses import replace

    if args.cross_corpus:
        if args.data is None:
            raise UserError("--cross-corpus needs --data (the corpus to score the model on)")
        corpus = load_data(args.data, layout=args.layout, tokenizer=run.tokenizer, cache_dir=args.cache_dir,
                           seed=args.seed)
        trained = set()
        for r in (run.record, None if baseline is None else baseline.record):
            if r is not None:
                trained |= {r.pieces[name] for s in ("train", "valid") for name in r.split_names(s) if name in r.pieces}
        hashes = corpus.piece_hashes()
        test = [i for i in corpus.splits["test"] if hashes[corpus.names[i]] not in trained]
        corpus = replace(corpus, splits=dict(corpus.splits, test=test))
        origin = run.record.source if run.record is not None else "an unrecorded corpus"
        return corpus, (f"CROSS-CORPUS: the test split of {corpus.source} ({len(test)} pieces, content split with "
                        f"seed {args.seed}), not the corpus the model was trained on ({origin})")
    record = require_record(run)
    corpus, _ = corpus_of_record(record, run.tokenizer, data=args.data, layout=args.layout, cache_dir=args.cache_dir)
    test = corpus.splits["test"]
    label = f"the recorded test split of {record.source} ({len(test)} pieces held out from training)"
    if baseline is not None:
        other = require_record(baseline)
        if other.fingerprint != record.fingerprint or other.splits != record.splits:
            held_out = set(other.split_names("test"))
            test = [i for i in test if corpus.names[i] in held_out]
            label += f"; {len(test)} of them also held out by the baseline (its record differs)"
        corpus = replace(corpus, splits=dict(corpus.splits, test=test))
    enough_left(len(test), len(record.split_names("test")))
    return corpus, label


def run_evaluate(args):
    from .evaluation import evaluate

    run = _model_run(args)
    models = {"model": run.model}
    baseline = None
    if args.baseline:
        from .tokenizer import tokenizer_to_dict

        baseline = load_run(args.baseline, use_ema=not args.no_ema, device=args.device)
        if tokenizer_to_dict(baseline.tokenizer) != tokenizer_to_dict(run.tokenizer):
            raise UserError("--baseline was trained with a different tokenizer; they cannot be compared")
        if baseline.seq_len != run.seq_len:
            raise UserError(f"--baseline was trained at {baseline.seq_len} tokens, the model at {run.seq_len}; "
                            "compare runs of one length")
        models["baseline"] = baseline.model
    corpus, label = _test_corpus(run, args, baseline)
    result = evaluate(models, corpus, n=args.n, seq_len=run.seq_len, steps=args.steps, seed=args.seed,
                      n_boot=args.bootstrap, constraints=_constraints(run.tokenizer, args),
                      temperature=args.temperature, order=args.order, progress=True, test_label=label)
    text = result.format()
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.md").write_text(text + "\n")
    print(f"wrote {out / 'evaluation.md'}")


def run_study(args):
    import json

    from .study import StudyConfig, parse_cell, run_study

    stored = Path(args.out) / "study_config.json"
    if stored.exists():
        config = StudyConfig.from_dict(json.loads(stored.read_text()))
    else:
        config = StudyConfig.quick() if args.quick else StudyConfig()
    if args.cells:
        config.cells = [f"{cell.name}:{cell.budget:g}" for cell in (parse_cell(c, args.budget) for c in args.cells)]
    for name, field in (("preset", "preset"), ("n", "n"), ("steps", "steps"), ("slice", "slice_s")):
        if getattr(args, name) is not None:
            setattr(config, field, getattr(args, name))
    path = run_study(args.out, config, cache_dir=args.cache_dir, device=resolve_device(args.device))
    print(f"wrote {path}")


def run_demo(args):
    from .demo import run_demo as demo

    _check_wav(args)
    return demo(out=Path(args.out), time_budget=args.time_budget, seed=args.seed, n=args.n,
                cache_dir=args.cache_dir, device=resolve_device(args.device), overwrite=args.overwrite, wav=args.wav)


def run_serve(args):
    import socket

    from .bundled import bundled_models
    from .studio.corpus import HeldOutPieces
    from .studio.server import Limits, create_app, serve

    models = {}
    if args.checkpoint:
        for path in args.checkpoint:
            run = load_run(path, use_ema=not args.no_ema, device=args.device)
            style = run.style if run.style not in models else f"{run.style} ({Path(path).parent.name or path})"
            models[style] = run
    else:
        for bundled in bundled_models():
            run = _bundled_run(bundled.styles[0], args)
            models[run.style] = run
        if not models:
            raise UserError("no bundled model is installed; give --checkpoint PATH (a run of smdim train)")
    limits = Limits(max_upload_bytes=args.max_upload_kb * 1024, max_tokens=args.max_tokens, queue_size=args.queue)
    app = create_app(models, limits=limits, corpus_pieces=HeldOutPieces(models))
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        raise UserError(f"--port: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    host, port = sock.getsockname()[:2]
    print(f"smdim studio: http://{host}:{port}/  (styles: {', '.join(models)}; Ctrl-C stops it)", flush=True)
    serve(app, sock)
