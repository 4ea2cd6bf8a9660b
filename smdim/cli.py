"""The `smdim` command line: corpora, train, generate, infill, continue, evaluate, study, models, serve, demo."""
from __future__ import annotations

import argparse
import os
import sys

EXAMPLES = """examples:
  smdim demo --out smdim_demo                       # train, generate, infill, evaluate on the Han folk songs
  smdim corpora                                     # the named corpora: pieces, lengths, cached or not
  smdim train --data palestrina --seq-len 2048 --out runs/pal --time-budget 3600
  smdim train --data han --out runs/tiny --preset tiny --time-budget 300
  smdim train --data ~/midi --out runs/mine --resume
  smdim generate --n 2 --wav                        # the bundled han model, MIDI + PNG + WAV in smdim_out/
  smdim generate --style bach --n 2                 # the bundled chorale model
  smdim generate --checkpoint runs/tiny/checkpoint.pt --n 4 --pitch-range 48 84 --max-chord 4
  smdim infill --checkpoint runs/tiny/checkpoint.pt --midi song.mid --bars 2 3
  smdim continue --checkpoint runs/tiny/checkpoint.pt --midi song.mid --prefix-bars 4 --length 512
  smdim evaluate --checkpoint runs/tiny/checkpoint.pt --baseline runs/base/checkpoint.pt
"""


def positive_int(text):
    """argparse type: an integer >= 1."""
    return _bounded(int, text, 1, "an integer >= 1")


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _bounded(int, text, 0, "an integer >= 0")


def non_negative_float(text):
    """argparse type: a number >= 0."""
    return _bounded(float, text, 0, "a number >= 0")


def _bounded(kind, text, low, expected):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value >= low:
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
    return value


def device_name(text):
    """argparse type: a torch device name (cpu, cuda, cuda:N)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N; got {text!r}")
    return str(device)


def _add_device_arg(p):
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")


def _add_model_args(p):
    p.add_argument("--checkpoint", help="a checkpoint written by smdim train (default: the bundled model of --style)")
    p.add_argument("--style", help="which bundled model plays when no --checkpoint is given (han, bach, palestrina; "
                                   "default han; `smdim models` lists them)")


def _add_sampling_args(p, order=None):
    from .sampling import DEFAULT_ORDER, DEFAULT_STEPS

    order = order or DEFAULT_ORDER
    p.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                   help=f"denoising steps (default {DEFAULT_STEPS})")
    p.add_argument("--temperature", type=non_negative_float, default=1.0,
                   help="sampling temperature (default 1.0; 0 = greedy)")
    p.add_argument("--order", choices=("random", "confidence"), default=order,
                   help=f"unmasking order (default {order}): confidence (each step reveals the same number of tokens, "
                        "the most confident first; at 32 steps within the intervals of random order at 128 in the "
                        "quality study, README) or random (ancestral)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same output")
    p.add_argument("--pitch-range", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="never sample pitches outside [LOW, HIGH] (MIDI numbers)")
    p.add_argument("--max-chord", type=positive_int, metavar="K", help="at most K notes may start together")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--out", default="smdim_out", help="output folder (default smdim_out)")
    _add_wav_arg(p)
    _add_device_arg(p)


def _add_wav_arg(p):
    p.add_argument("--wav", action="store_true",
                   help="also write a .wav beside every .mid (offline General-MIDI rendering; needs tinysoundfont: "
                        "pip install --no-deps tinysoundfont==0.3.7)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="smdim", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="SMDIM: long-sequence symbolic-music diffusion with Mamba-FeedForward-Attention blocks.")
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("corpora", help="list the named corpora (and convert them with --prepare)",
                       description="The corpora that --data accepts by name, read from the installed music21: piece "
                                   "count, token lengths at the current tokenizer (median / p90 / max), style and "
                                   "source, and whether their tokens are cached. Lengths are known once a corpus is "
                                   "cached: --prepare converts and caches it (score files are parsed by music21 in "
                                   "one process per core; an interrupted conversion continues where it stopped).")
    p.add_argument("--prepare", nargs="+", metavar="NAME", help="convert and cache these corpora ('all' for every one)")
    p.add_argument("--cache-dir", help="token cache folder (default $SMDIM_CACHE or ~/.cache/smdim)")

    p = sub.add_parser("train", help="train a denoiser on MIDI/ABC data", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train SMDIM (or the transformer baseline) with masked diffusion. Checkpoints "
                                   "are written atomically to OUT/checkpoint.pt; --resume continues exactly; "
                                   "Ctrl-C saves a checkpoint. Multi-process: torchrun --nproc_per_node N "
                                   "$(which smdim) train ...")
    p.add_argument("--data", help="'han' (the embedded Essen Han folk songs, default for a new run), a corpus "
                   "named by `smdim corpora` (bach, palestrina, polyphony, irish, ...), a folder of .mid/.midi, ABC or "
                   "score files, a MAESTRO v3 or POP909 folder (--resume: the recorded source)")
    p.add_argument("--layout", default="auto",
                   help="data layout: auto, han, music21, abc, midi, scores, maestro, pop909")
    p.add_argument("--out", default="runs/smdim", help="run folder (default runs/smdim)")
    p.add_argument("--preset", help="model size: tiny, small, base (default tiny)")
    p.add_argument("--model", choices=("smdim", "transformer"),
                   help="smdim (MFA blocks) or the parameter-matched transformer-diffusion baseline")
    p.add_argument("--attn-window", type=non_negative_int,
                   help="attention window in compressed steps, for either model (0 = full attention; default: "
                        "the preset's for smdim, full for the transformer baseline)")
    p.add_argument("--seq-len", type=positive_int, help="training length in tokens (default 256)")
    p.add_argument("--steps", type=positive_int, help="optimiser steps (default 2000)")
    p.add_argument("--batch-size", type=positive_int,
                   help="windows per batch per process (default: 4096 tokens per batch, i.e. 16 windows at 256 tokens, "
                        "4 at 1024, 1 at 4096 and longer)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--warmup", type=non_negative_int, help="warm-up steps (default 100)")
    p.add_argument("--transpose", type=non_negative_int,
                   help="random transposition in [-T, T] semitones (default 3)")
    p.add_argument("--time-budget", type=float,
                   help="stop after this many seconds of training, counted over resumes (a checkpoint is saved; the "
                        "learning rate decays over the budget)")
    p.add_argument("--clock", choices=("wall", "cpu"),
                   help="what --time-budget counts: wall seconds (default) or this process's CPU seconds per thread "
                        "(fair between runs when other work shares the machine)")
    p.add_argument("--eval-every", type=positive_int, help="validate every N steps (default 200)")
    p.add_argument("--seed", type=int, help="random seed, also of the data split (default 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/checkpoint.pt with its recorded settings, data and split (only --steps, "
                        "--time-budget, --eval-every, --gradient-checkpointing and --compile may change)")
    p.add_argument("--overwrite", action="store_true", help="replace a run that OUT already holds")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="re-run each block in the backward instead of storing its activations (less memory, "
                        "same gradients, one more forward pass of the blocks)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (the same training; the first steps wait for compilation, "
                        "~10-30 s on a CPU; measured on 2 CPU cores it gains little, see README); --no-compile "
                        "turns it off again on --resume")
    p.add_argument("--cache-dir", help="token cache folder (default $SMDIM_CACHE or ~/.cache/smdim)")
    _add_device_arg(p)

    p = sub.add_parser("generate", help="generate new pieces", description="Unconditional generation: writes "
                       "OUT/sample_<i>.mid and a piano-roll PNG per piece.")
    _add_model_args(p)
    p.add_argument("--n", type=positive_int, default=4, help="number of pieces (default 4)")
    p.add_argument("--length", type=positive_int, help="tokens per piece (default: the training length); longer pieces "
                   "are generated with sliding windows")
    _add_sampling_args(p)

    p = sub.add_parser("infill", help="regenerate a range of bars of a MIDI file",
                       description="Masks bars FIRST..LAST (0-based, inclusive) of the MIDI file and fills them in; "
                                   "every other token is kept exactly.")
    _add_model_args(p)
    p.add_argument("--midi", required=True, help="the MIDI file to edit")
    p.add_argument("--bars", type=non_negative_int, nargs=2, required=True, metavar=("FIRST", "LAST"))
    p.add_argument("--n", type=positive_int, default=1, help="number of variants (default 1)")
    _add_sampling_args(p)

    p = sub.add_parser("continue", help="continue a MIDI file",
                       description="Keeps the first PREFIX_BARS bars of the MIDI file and generates what follows.")
    _add_model_args(p)
    p.add_argument("--midi", required=True)
    p.add_argument("--prefix-bars", type=positive_int, default=4, help="bars of the file to keep (default 4)")
    p.add_argument("--length", type=positive_int, help="total tokens (default: twice the training length)")
    p.add_argument("--n", type=positive_int, default=1, help="number of continuations (default 1)")
    _add_sampling_args(p)

    p = sub.add_parser("evaluate", help="score a model (and a baseline) against held-out music",
                       description="Scores the model on the test pieces recorded in its checkpoint (never on its "
                                   "training pieces, also when the data folder changed since): generates N pieces "
                                   "per model and reports the test NLL bound, framewise OA (published protocol and "
                                   "ours), attribute OA, invalid-token and copy rates with bootstrap intervals, the "
                                   "real-vs-real ceiling and a paired model - baseline column. "
                                   "Sampling follows the quality study's protocol unless told otherwise: 32 steps, "
                                   "random order (--order confidence for the generation default).")
    _add_model_args(p)
    p.add_argument("--baseline", help="a second checkpoint to compare with (e.g. the transformer baseline)")
    p.add_argument("--data", help="where the training corpus is now (default: the source recorded in the "
                   "checkpoint); with --cross-corpus, another corpus to score on")
    p.add_argument("--layout", default="auto")
    p.add_argument("--cross-corpus", action="store_true",
                   help="score on the test split of another corpus (--data); the table says so")
    p.add_argument("--n", type=positive_int, default=64, help="pieces per model (default 64)")
    p.add_argument("--bootstrap", type=positive_int, default=200, help="bootstrap replicates (default 200)")
    p.add_argument("--cache-dir")
    _add_sampling_args(p, order="random")  # the quality study's protocol (README's table): 32 steps, random order

    p = sub.add_parser("study", help="the quality table: SMDIM vs the transformer per corpus and length (resumable)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="For each cell corpus@length[:seconds], trains SMDIM and the parameter-matched "
                                   "transformer baseline for the same budget (cpu clock), evaluates both (published "
                                   "framewise OA, attribute OA, NLL, invalid and copy rates, real-vs-real ceilings, "
                                   "paired SMDIM - transformer intervals), measures quality vs sampling steps for the "
                                   "random and confidence-ordered samplers, and for long cells the drift by quarter at "
                                   "the training length and twice it. Writes OUT/study.md, OUT/study.json and "
                                   "OUT/plots/. Interrupted (Ctrl-C, kill), it continues where it stopped when run "
                                   "again with the same --out; finished stages are kept.",
                       epilog="examples:\n  smdim study --out runs/study\n"
                              "  smdim study --out runs/study --cells bach@1024:900 palestrina@2048:1800\n"
                              "  smdim study --quick --out /tmp/study_quick")
    p.add_argument("--out", required=True, help="study folder (run again to continue)")
    p.add_argument("--cells", nargs="+", metavar="CELL",
                   help="corpus@length[:seconds] cells (default: han@256:600 bach@1024:1200 palestrina@2048:1800 "
                        "palestrina@4096:1800; a rerun: the stored cells)")
    p.add_argument("--budget", type=non_negative_float, help="seconds per model for cells that give none")
    p.add_argument("--quick", action="store_true", help="tiny budgets and sets (a smoke run: han@128, bach@512, 20 s)")
    p.add_argument("--preset", help="model size of both models (default tiny)")
    p.add_argument("--n", type=positive_int, help="evaluated pieces per model (default 48)")
    p.add_argument("--steps", type=positive_int, help="denoising steps of the main table (default 32)")
    p.add_argument("--slice", type=non_negative_float, metavar="SECONDS",
                   help="the two models of a cell train in alternating turns of this many seconds, in ABBA order, so "
                        "that a change in the machine's speed during the cell hits both alike (default 60; 0: one "
                        "model after the other; a rerun: the stored value)")
    p.add_argument("--cache-dir")
    _add_device_arg(p)

    sub.add_parser("models", help="the models bundled with smdim and their evaluation",
                   description="Lists the models that ship inside the package (used when a command gets no "
                               "--checkpoint): styles, training length, size, how they were trained and their "
                               "evaluation on held-out pieces against the real-vs-real ceiling.")

    p = sub.add_parser("serve", help="the studio: infill, continue and vary MIDI in the browser, with sound",
                       description="Starts the local web studio and prints its URL. Upload a MIDI file (or open a "
                                   "corpus piece, or generate one), select bars and tracks on the piano roll, lock "
                                   "notes, then infill, continue or draw variations; listen, compare A/B and "
                                   "download MIDI or WAV. Binds 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--checkpoint", action="append", metavar="PATH",
                   help="a trained run (repeat for several styles; the style is the run's corpus; default: every "
                        "bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--max-upload-kb", type=positive_int, default=2048, help="largest MIDI upload (default 2048 KB)")
    p.add_argument("--max-tokens", type=positive_int, default=16384,
                   help="longest piece, in tokens (default 16384, about 4 minutes of piano)")
    p.add_argument("--queue", type=positive_int, default=4,
                   help="sampling requests that may wait; more are refused with 'busy' (default 4)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    _add_device_arg(p)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded Han folk songs, in bounded time",
                       description="Trains SMDIM-tiny and the same-size transformer baseline on the Han folk songs "
                                   "(equal time each), generates and infills pieces, evaluates both, and writes "
                                   "MIDI, piano rolls, the training curves and report.md to OUT.")
    p.add_argument("--out", default="smdim_demo", help="output folder (default smdim_demo)")
    p.add_argument("--time-budget", type=float, default=480.0,
                   help="total seconds for training both models (default 480; the whole demo ends within ~10 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=positive_int, default=48, help="pieces per model for the evaluation (default 48)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in OUT")
    p.add_argument("--cache-dir")
    _add_wav_arg(p)
    _add_device_arg(p)
    return parser


def _describe(exc):
    """One line for a user error; OSErrors (missing or unreadable paths, permissions, a full disk)
    as "<reason>: <path>"."""
    if isinstance(exc, OSError) and exc.strerror:
        paths = [p for p in (exc.filename, exc.filename2) if p is not None]
        return ": ".join([exc.strerror] + [str(p) for p in paths])
    return " ".join(str(exc).split())


# The extra of this distribution (pyproject.toml) that brings each top-level module the commands
# import beyond torch: `pip install smdim` is the kernel library alone.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("numpy", "tqdm", "matplotlib", "miditok", "symusic", "music21", "pretty_midi", "safetensors"),
                    "music"),
    **dict.fromkeys(("fastapi", "uvicorn"), "studio"),
}


def missing_extra(exc: ImportError):
    """The extra whose absence made this import fail, else None: only a top-level module that is
    not installed at all (a module that is there but breaks, or lacks a name, is a real error)."""
    import importlib.util

    name = getattr(exc, "name", None) or ""
    if not isinstance(exc, ModuleNotFoundError) or "." in name or name not in EXTRA_OF_MODULE:
        return None
    try:
        installed = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that cannot find it may say so by raising
        installed = False
    return None if installed else EXTRA_OF_MODULE[name]


def main(argv=None):
    try:
        return _main(argv)
    except ImportError as exc:
        extra = missing_extra(exc)
        if extra is None or os.environ.get("SMDIM_DEBUG"):
            raise
        what = "smdim serve needs" if extra == "studio" else "the smdim commands need"
        print(f"smdim: error: {exc.name} is not installed; {what} the '{extra}' extra: "
              f"pip install -e '.[{extra}]' (in the smdim source folder)", file=sys.stderr)
        return 2


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .checkpoint import CheckpointError
    from .pipeline import UserError

    shown_before = _warnings_in_one_line()
    try:
        from . import commands

        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        code = getattr(commands, f"run_{args.command}")(args) or 0
    except (UserError, CheckpointError, OSError, ValueError) as exc:
        if os.environ.get("SMDIM_DEBUG"):
            raise
        print(f"smdim {args.command}: error: {_describe(exc)}  (set SMDIM_DEBUG=1 for a traceback)", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"smdim {args.command}: interrupted", file=sys.stderr)
        code = 130
    finally:
        import warnings

        warnings.showwarning = shown_before
    return _finish(args.command, code)


def _warnings_in_one_line():
    """Show warnings (e.g. skipped data files) as one 'smdim: warning: ...' line each, without the
    source line; returns the previous `warnings.showwarning` (restored when the command ends)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        text = text[len("smdim: "):] if text.startswith("smdim: ") else text
        print(f"smdim: warning: {text}", file=file or sys.stderr)

    before, warnings.showwarning = warnings.showwarning, show
    return before


def _finish(command, code):
    """The exit code; a torchrun worker of `smdim train` exits here (see smdim.train.exit_distributed)."""
    if command == "train":
        from .train import exit_distributed

        exit_distributed(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
