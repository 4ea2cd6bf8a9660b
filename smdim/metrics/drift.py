"""Drift along a piece: the attribute OA of each part (quarter) of generated pieces against the same
part of real pieces.

A piece of B bars is cut by bars into `parts` spans: bar b belongs to part ``b * parts // B`` (so for
B = 8 and 4 parts, bars 0-1, 2-3, 4-5, 6-7). Each attribute value of `attribute_values` goes with the
part of its bar: a note's pitch, duration and velocity with the bar of its onset, an inter-onset interval
with the bar of the later onset, the polyphony at an onset with that onset's bar, notes-per-bar with its
bar. Part q of the generated set is then scored against part q of the reference set with the pooled KDE
overlap of `attribute_oa` (its mean over the attributes is "mean_oa") — or, with reference="whole",
against the whole reference pieces (for when real pieces as long as the generated ones are too few to
cut into parts: e.g. every held-out window at the training length). Structure that drifts toward the
end of long generations shows as a falling OA in the last parts.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from .attributes import ATTRIBUTES, BANDWIDTH_FLOOR, attribute_values, values_oa
from .notes import prepare, to_piece

__all__ = ["part_values", "drift_oa"]


def part_values(score, parts: int = 4) -> List[dict]:
    """The attribute values of one piece split into `parts` bar spans (see module doc): a list of
    `parts` dicts {attribute: values}; an empty piece gives empty arrays in every part."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1; got {parts}")
    p = to_piece(score, "score")
    values = attribute_values(p)
    if len(p) == 0:
        return [{a: values[a] for a in ATTRIBUTES} for _ in range(parts)]
    n_bars = p.n_bars
    on, _ = p.grid()
    onsets = np.unique(on)
    onset_bars = p.bar_of_step(onsets)
    bar_of = {
        "pitch": p.bars, "duration": p.bars, "velocity": p.bars,
        "ioi": onset_bars[1:],
        "polyphony": onset_bars,
        "notes_per_bar": np.arange(n_bars),
    }
    out = []
    for q in range(parts):
        part = {}
        for a in ATTRIBUTES:
            which = np.asarray(bar_of[a], dtype=np.int64) * parts // n_bars
            part[a] = values[a][which == q]
        out.append(part)
    return out


def drift_oa(scores_gen, scores_ref, *, parts: int = 4, attributes: Sequence[str] = ATTRIBUTES,
             bandwidth_floor: float = BANDWIDTH_FLOOR, empty_gen_as_zero: bool = True,
             reference: str = "parts") -> dict:
    """Attribute OA of part q of the generated pieces against part q of the reference pieces
    (reference="parts") or against the whole reference pieces (reference="whole"), for q = 1..parts:
    {"q1": mean OA, ..., "q1_pitch": ..., ...} (keys "q<k>" hold the mean over the attributes). With
    `empty_gen_as_zero`, empty generated pieces scale every OA down by the fraction of pieces with
    notes, as in `attribute_oa`."""
    if reference not in ("parts", "whole"):
        raise ValueError(f"reference must be 'parts' or 'whole'; got {reference!r}")
    gen = prepare(scores_gen, "scores_gen")
    ref = prepare(scores_ref, "scores_ref")
    filled = [g for g in gen if len(g)] if empty_gen_as_zero else gen
    scale = len(filled) / len(gen) if empty_gen_as_zero else 1.0
    gen_parts = [part_values(g, parts) for g in filled]
    ref_parts = [part_values(r, parts if reference == "parts" else 1) for r in ref]
    out = {}
    for q in range(parts):
        oa = values_oa([v[q] for v in gen_parts], [v[q if reference == "parts" else 0] for v in ref_parts],
                       attributes=attributes, bandwidth_floor=bandwidth_floor, scale=scale)
        out[f"q{q + 1}"] = oa["mean_oa"]
        for a in attributes:
            out[f"q{q + 1}_{a}"] = oa[a]
    return out
