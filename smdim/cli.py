"""The `smdim` command line: train, generate, infill, continue, evaluate, demo."""
from __future__ import annotations

import argparse
import os
import sys

EXAMPLES = """examples:
  smdim demo --out smdim_demo                       # train, generate, infill, evaluate on the Han folk songs
  smdim train --data han --out runs/tiny --preset tiny --time-budget 300
  smdim train --data ~/midi --out runs/mine --resume
  smdim generate --checkpoint runs/tiny/checkpoint.pt --n 4 --pitch-range 48 84 --max-chord 4
  smdim infill --checkpoint runs/tiny/checkpoint.pt --midi song.mid --bars 2 3
  smdim continue --checkpoint runs/tiny/checkpoint.pt --midi song.mid --prefix-bars 4 --length 512
  smdim evaluate --checkpoint runs/tiny/checkpoint.pt --baseline runs/base/checkpoint.pt
"""


class UserError(Exception):
    """A mistake in the command line or its files: reported in one line, without a traceback."""


def _add_sampling_args(p):
    p.add_argument("--steps", type=int, default=64, help="denoising steps (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same output")
    p.add_argument("--pitch-range", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="never sample pitches outside [LOW, HIGH] (MIDI numbers)")
    p.add_argument("--max-chord", type=int, metavar="K", help="at most K notes may start together")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--out", default="smdim_out", help="output folder (default smdim_out)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="smdim", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="SMDIM: long-sequence symbolic-music diffusion with Mamba-FeedForward-Attention blocks.")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a denoiser on MIDI/ABC data", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train SMDIM (or the transformer baseline) with masked diffusion. Checkpoints "
                                   "are written atomically to OUT/checkpoint.pt; --resume continues exactly; "
                                   "Ctrl-C saves a checkpoint. Multi-process: torchrun --nproc_per_node N "
                                   "$(which smdim) train ...")
    p.add_argument("--data", default="han", help="'han' (the embedded Essen Han folk songs, default), a folder "
                   "of .mid/.midi files, a MAESTRO v3 or POP909 folder")
    p.add_argument("--layout", default="auto", help="data layout: auto, han, abc, midi, maestro, pop909")
    p.add_argument("--out", default="runs/smdim", help="run folder (default runs/smdim)")
    p.add_argument("--preset", default="tiny", help="model size: tiny, small, base (default tiny)")
    p.add_argument("--model", choices=("smdim", "transformer"), default="smdim",
                   help="smdim (MFA blocks) or the parameter-matched transformer-diffusion baseline")
    p.add_argument("--attn-window", type=int, help="MFA attention window in compressed steps (0 = full attention)")
    p.add_argument("--seq-len", type=int, default=256, help="training length in tokens (default 256)")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size per process (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    p.add_argument("--transpose", type=int, default=3, help="random transposition in [-T, T] semitones (default 3)")
    p.add_argument("--time-budget", type=float, help="stop after this many seconds (a checkpoint is saved)")
    p.add_argument("--eval-every", type=int, default=200, help="validate every N steps (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--cache-dir", help="token cache folder (default $SMDIM_CACHE or ~/.cache/smdim)")

    p = sub.add_parser("generate", help="generate new pieces", description="Unconditional generation: writes "
                       "OUT/sample_<i>.mid and a piano-roll PNG per piece.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by smdim train")
    p.add_argument("--n", type=int, default=4, help="number of pieces (default 4)")
    p.add_argument("--length", type=int, help="tokens per piece (default: the training length); longer pieces "
                   "are generated with sliding windows")
    _add_sampling_args(p)

    p = sub.add_parser("infill", help="regenerate a range of bars of a MIDI file",
                       description="Masks bars FIRST..LAST (0-based, inclusive) of the MIDI file and fills them in; "
                                   "every other token is kept exactly.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--midi", required=True, help="the MIDI file to edit")
    p.add_argument("--bars", type=int, nargs=2, required=True, metavar=("FIRST", "LAST"))
    p.add_argument("--n", type=int, default=1, help="number of variants (default 1)")
    _add_sampling_args(p)

    p = sub.add_parser("continue", help="continue a MIDI file",
                       description="Keeps the first PREFIX_BARS bars of the MIDI file and generates what follows.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--midi", required=True)
    p.add_argument("--prefix-bars", type=int, default=4, help="bars of the file to keep (default 4)")
    p.add_argument("--length", type=int, help="total tokens (default: twice the training length)")
    p.add_argument("--n", type=int, default=1)
    _add_sampling_args(p)

    p = sub.add_parser("evaluate", help="score a model (and a baseline) against held-out music",
                       description="Generates N pieces per model and reports test NLL, OA metrics with bootstrap "
                                   "intervals, the real-vs-real ceiling, invalid-token and copy rates.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--baseline", help="a second checkpoint to compare with (e.g. the transformer baseline)")
    p.add_argument("--data", default="han")
    p.add_argument("--layout", default="auto")
    p.add_argument("--n", type=int, default=64, help="pieces per model (default 64)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates (default 200)")
    p.add_argument("--cache-dir")
    _add_sampling_args(p)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded Han folk songs, in bounded time",
                       description="Trains SMDIM-tiny and the same-size transformer baseline on the Han folk songs "
                                   "(equal time each), generates and infills pieces, evaluates both, and writes "
                                   "MIDI, piano rolls, the training curves and report.md to OUT.")
    p.add_argument("--out", default="smdim_demo", help="output folder (default smdim_demo)")
    p.add_argument("--time-budget", type=float, default=480.0,
                   help="total seconds for training both models (default 480; the whole demo ends within ~10 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=48, help="pieces per model for the evaluation (default 48)")
    p.add_argument("--cache-dir")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .checkpoint import CheckpointError

    try:
        from . import commands

        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return getattr(commands, f"run_{args.command}")(args) or 0
    except (UserError, CheckpointError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("SMDIM_DEBUG"):
            raise
        print(f"smdim {args.command}: error: {exc}  (set SMDIM_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smdim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
