"""Piano-roll pictures of generated pieces (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def notes_of(score):
    """(start_beats, duration_beats, pitch) of every note of every track."""
    tpq = score.ticks_per_quarter
    out = []
    for track in score.tracks:
        for note in track.notes:
            out.append((note.start / tpq, note.duration / tpq, note.pitch))
    return out


def save_pianoroll(score, path, *, title: str = "", highlight: Optional[Sequence[Tuple[float, float]]] = None,
                   beats_per_bar: float = 4.0) -> Path:
    """Draw `score` as a piano roll to `path` (PNG). highlight: (start, end) beat spans to shade,
    e.g. an infilled region."""
    notes = notes_of(score)
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
    if notes:
        ax.barh([p for _, _, p in notes], [d for _, d, _ in notes], left=[s for s, _, _ in notes], height=0.8,
                color="#3b6ea8", edgecolor="#1d3a5c", linewidth=0.3)
        end = max(s + d for s, d, _ in notes)
        low, high = min(p for *_, p in notes), max(p for *_, p in notes)
        ax.set_ylim(low - 2, high + 2)
        ax.set_xlim(0, end)
        for bar in range(int(end // beats_per_bar) + 1):
            ax.axvline(bar * beats_per_bar, color="#cccccc", linewidth=0.5, zorder=0)
    else:
        ax.text(0.5, 0.5, "(no notes)", ha="center", va="center", transform=ax.transAxes)
    for start, stop in highlight or ():
        ax.axvspan(start, stop, color="#f2b134", alpha=0.25, zorder=0)
    ax.set_xlabel("beats")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or "piano roll", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
