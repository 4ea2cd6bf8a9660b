"""The studio suite: what a user waits for with a bundled model, at the studio's default settings.

Two tasks per bundled model (quick mode: the default model only):

* ``infill-16-bars``: bars 2-17 of the first held-out test piece of the model's corpus with at
  least 20 bars are redrawn (`smdim.studio.editing.infill_piece`, all tracks, nothing locked; a
  piece longer than the model's training length is infilled window by window);
* ``generate-512``: one new piece of 512 tokens (`generate_piece`; sliding windows when the
  training length is shorter).

Each is timed once in this process after a warm-up call (torch's one-time costs), with the
threads pinned like every suite; the check: notes outside the bars unchanged / no MASK left.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import List

STUDIO_SUITE = "studio"
INFILL, GENERATE = "infill-16-bars", "generate-512"
TASKS = (INFILL, GENERATE)
INFILL_BARS = (2, 17)                 # 16 bars, 0-based inclusive
GENERATE_TOKENS = 512
MIN_BARS = 20
LATENCY_TARGET_S = 5.0                # "a few seconds" (issue 12); longer runs show a progress bar


@dataclass(frozen=True)
class StudioCase:
    style: str
    task: str

    @property
    def id(self) -> str:
        return f"studio-{self.style}-{self.task}"


def studio_cases(quick: bool) -> List[StudioCase]:
    from smdim.bundled import DEFAULT_STYLE, bundled_models

    styles = [m.styles[0] for m in bundled_models()]
    if quick:
        styles = [s for s in styles if s == DEFAULT_STYLE][:1]
    return [StudioCase(style, task) for style in styles for task in TASKS]


@lru_cache(maxsize=None)
def bundled_run(style: str):
    from smdim.bundled import load_bundled

    return load_bundled(style, device="cpu")


@lru_cache(maxsize=None)
def infill_piece_of(style: str):
    """(name, StudioPiece) of the first held-out test piece with at least MIN_BARS bars."""
    from smdim.pipeline import corpus_of_record
    from smdim.studio.piece import TrackInfo, from_ids

    run = bundled_run(style)
    corpus, _ = corpus_of_record(run.record, run.tokenizer, log=lambda line: None)
    for i in corpus.splits["test"]:
        piece = from_ids(run.tokenizer, corpus.pieces[i], name=corpus.names[i], tracks=[TrackInfo("piano", 0)])
        if len(piece.bars) >= MIN_BARS:
            return corpus.names[i], piece
    raise LookupError(f"no held-out {style} piece has {MIN_BARS} bars")


def make_task(case: StudioCase):
    """(callable running the task once -> result pieces, description dict, check(result) -> dict)."""
    from smdim.studio.editing import Settings, generate_piece, infill_piece

    run, settings = bundled_run(case.style), Settings()
    info = {"style": case.style, "task": case.task, "steps": settings.steps, "order": settings.order,
            "training_length": run.seq_len}
    if case.task == INFILL:
        name, piece = infill_piece_of(case.style)
        first, last = INFILL_BARS
        info.update(piece=name, piece_tokens=len(piece.ids), bars=f"{first}-{last}")

        def task():
            return infill_piece(run, piece, first, last, settings=settings)

        outside = Counter(key for key, note in zip(piece.keys(), piece.notes) if not first <= note.bar <= last)

        def check(result):
            assert not outside - Counter(result[0].keys()), "a note outside the infilled bars changed"
            return {"result_tokens": len(result[0].ids)}
    else:
        info.update(tokens=GENERATE_TOKENS)

        def task():
            return generate_piece(run, GENERATE_TOKENS, settings=settings)

        def check(result):
            from smdim.tokenizer import mask_id

            assert mask_id(run.tokenizer) not in result[0].ids and result[0].ids, "an unfinished or empty piece"
            return {"result_tokens": len(result[0].ids)}
    return task, info, check
