"""Held-out pieces the studio offers as starting points: up to 24 test-split pieces of each model's
recorded corpus, prepared in a background thread when a style is first asked for (the default style at
start; the first run of a corpus converts its scores, minutes for the chorales or the masses), so the
page answers at once and says what is being prepared."""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

PIECES_OFFERED = 24


class CorpusPreparing(RuntimeError):
    """The style's pieces are not ready yet; the message says so in plain words."""


class HeldOutPieces:
    """style -> [(name, token ids)]; raises CorpusPreparing until that style's corpus is loaded.

    models: style -> run (with .record and .tokenizer); the first style is prepared at once when
    `start`, any other when first asked for. A run without a data record, or whose corpus cannot be
    loaded, offers no pieces (and `note` says why)."""

    def __init__(self, models: Dict[str, Any], *, cache_dir=None, start: bool = True):
        self._models = dict(models)
        self._cache_dir = cache_dir
        self._pieces: Dict[str, List[Tuple[str, List[int]]]] = {}
        self._threads: Dict[str, threading.Thread] = {}
        self.notes: Dict[str, str] = {}
        self._lock = threading.Lock()
        if start and self._models:
            self._start(next(iter(self._models)))

    def _start(self, style: str) -> None:
        """Prepare `style` in a background thread (once); the caller holds no lock."""
        with self._lock:
            if style in self._threads:
                return
            thread = threading.Thread(target=self.prepare, args=(style,), name=f"smdim-studio-{style}", daemon=True)
            self._threads[style] = thread
        thread.start()

    def wait(self, style: str, timeout=None) -> None:
        """Block until `style`'s background preparation (if started) ends."""
        thread = self._threads.get(style)
        if thread is not None:
            thread.join(timeout)

    def prepare(self, style: str) -> None:
        """Load one style's held-out pieces now (the background thread calls this for each style)."""
        from ..pipeline import UserError, corpus_of_record

        run = self._models[style]
        pieces: List[Tuple[str, List[int]]] = []
        try:
            if run.record is None:
                raise UserError("its checkpoint records no data split")
            corpus, _ = corpus_of_record(run.record, run.tokenizer, cache_dir=self._cache_dir, log=lambda line: None)
            pieces = [(corpus.names[i], corpus.pieces[i]) for i in corpus.splits["test"][:PIECES_OFFERED]]
        except (UserError, OSError, ValueError) as exc:
            self.notes[style] = f"no held-out pieces for {style}: {exc}"
        with self._lock:
            self._pieces[style] = pieces

    def __call__(self, style: str) -> List[Tuple[str, List[int]]]:
        with self._lock:
            if style in self._pieces:
                return self._pieces[style]
        if style in self._models:
            self._start(style)
        raise CorpusPreparing(f"preparing the held-out {style} pieces (the first run converts the corpus; "
                              "a few minutes for long scores)...")

    def note(self, style: str) -> Optional[str]:
        return self.notes.get(style)
