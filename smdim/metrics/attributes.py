"""Attribute OA: the KDE overlap of the pooled attribute values, generated vs reference.

For each attribute of `ATTRIBUTES` the values of all pieces of a set are pooled, each set's distribution is
a 1-D Gaussian KDE, and the score is ∫ min(f_gen, f_ref) ∈ [0, 1]; "mean_oa" averages the attributes. This
is not Yang & Lerch (2020), who compare intra-set and inter-set distributions of pairwise distances between
pieces; here the value distributions themselves are overlapped.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .notes import ScoreLike, prepare, require_notes, to_piece

#: Attributes of `attribute_oa`, in report order.
ATTRIBUTES = ("pitch", "duration", "velocity", "ioi", "notes_per_bar", "polyphony")

#: Floor on the KDE bandwidth (all six attributes are integers: semitones, 16th notes, MIDI velocity steps,
#: counts): half a unit, so a set whose values are all equal still has a density.
BANDWIDTH_FLOOR = 0.5


def attribute_values(score: ScoreLike) -> dict:
    """The per-note / per-onset / per-bar values of one piece for each attribute of `ATTRIBUTES`.

    * pitch — MIDI pitch of every note; velocity — MIDI velocity of every note;
    * duration — every note's duration in 16th notes (grid-quantised, ≥ 1);
    * ioi — gaps between consecutive distinct onsets, in 16th notes (chord notes share one onset);
    * notes_per_bar — number of notes starting in each bar from bar 0 to the last onset's bar (empty bars
      count as 0);
    * polyphony — at each distinct onset, the number of notes sounding (onset ≤ t < end, on the 16th grid).
    """
    p = to_piece(score, "score")
    if "attributes" in p._cache:
        return p._cache["attributes"]
    on, end = p.grid()
    if len(p) == 0:
        z = np.zeros(0, dtype=np.int64)
        vals = {a: z for a in ATTRIBUTES}
    else:
        uniq = np.unique(on)
        ends = np.sort(end)
        sounding = np.searchsorted(on, uniq, side="right") - np.searchsorted(ends, uniq, side="right")
        vals = {
            "pitch": p.pitch,
            "duration": end - on,
            "velocity": p.velocity,
            "ioi": np.diff(uniq),
            "notes_per_bar": np.bincount(p.bars, minlength=p.n_bars),
            "polyphony": sounding.astype(np.int64),
        }
    p._cache["attributes"] = vals
    return vals


def _scott_bandwidth(x: np.ndarray) -> float:
    if x.size < 2:
        return 0.0
    return float(np.std(x, ddof=1) * x.size ** (-0.2))


def _kde_on_grid(x: np.ndarray, bw: float, grid: np.ndarray) -> np.ndarray:
    if np.issubdtype(x.dtype, np.integer):  # the usual case here: bincount beats sorting
        lo = int(x.min())
        counts = np.bincount(x - lo)
        vals = np.nonzero(counts)[0]
        counts, vals = counts[vals], (vals + lo).astype(np.float64)
    else:
        vals, counts = np.unique(x, return_counts=True)
    z = (grid[None, :] - vals[:, None]) / bw
    f = counts.astype(np.float64) @ np.exp(-0.5 * np.minimum(z * z, 1e4))
    return f / _trapezoid(f, grid)


def _trapezoid(f, x):
    return float(np.sum((f[1:] + f[:-1]) * np.diff(x)) / 2.0)


def kde_overlap(x, y, *, bandwidth_floor: float = BANDWIDTH_FLOOR, max_grid: int = 8192) -> float:
    """Overlapping area ∫ min(f_x, f_y) of two 1-D Gaussian KDEs (numpy; no scipy needed).

    Each sample gets its own Scott's-rule bandwidth (std·n^(−1/5), as scipy.stats.gaussian_kde), floored at
    ``bandwidth_floor``; both densities are evaluated on one shared uniform grid covering both samples ± 6
    bandwidths (step ≤ the smaller bandwidth / 4 while that fits in ``max_grid`` points; for integer data
    the grid is aligned on the integers and never coarser than 1), normalised to integrate to 1 on it, and
    the minimum is integrated with the trapezoid rule. Identical samples give exactly 1.
    """
    x, y = (np.asarray(v).reshape(-1) for v in (x, y))
    x, y = (v if np.issubdtype(v.dtype, np.integer) else v.astype(np.float64) for v in (x, y))
    if x.size == 0 or y.size == 0:
        raise ValueError("kde_overlap: both samples must be non-empty")
    if not bandwidth_floor > 0:
        raise ValueError(f"bandwidth_floor must be positive; got {bandwidth_floor}")
    bx = max(_scott_bandwidth(x), bandwidth_floor)
    by = max(_scott_bandwidth(y), bandwidth_floor)
    lo = float(min(x.min(), y.min())) - 6.0 * max(bx, by)
    hi = float(max(x.max(), y.max())) + 6.0 * max(bx, by)
    if np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer):
        # Integer data: a grid of step 1/k aligned on the integers, so every kernel's peak is a grid point
        # even when a wide range forces a coarse grid.
        lo, hi = math.floor(lo), math.ceil(hi)
        k = max(1, min(math.ceil(4.0 / min(bx, by)), (max_grid - 1) // max(hi - lo, 1)))
        grid = lo + np.arange((hi - lo) * k + 1) / k
    else:
        step = min(bx, by) / 4.0
        grid = np.linspace(lo, hi, int(min(max_grid, math.ceil((hi - lo) / step) + 1)))
    m = np.minimum(_kde_on_grid(x, bx, grid), _kde_on_grid(y, by, grid))
    return float(min(1.0, max(0.0, _trapezoid(m, grid))))


def attribute_oa(scores_gen, scores_ref, *, attributes: Sequence[str] = ATTRIBUTES,
                 bandwidth_floor: float = BANDWIDTH_FLOOR, empty_gen_as_zero: bool = False) -> dict:
    """KDE overlap of the pooled attribute values, generated vs reference, per attribute, and their mean.

    Values are pooled over all pieces of a set (`attribute_values`) and overlapped with `kde_overlap`.
    Returns {attr: OA in [0, 1], ..., "mean_oa": average}. An attribute with no values in exactly one set
    scores 0.0; with no values in either set it is NaN and left out of "mean_oa".

    ``empty_gen_as_zero``: an empty generated piece carries no density mass, so each OA (and mean_oa) is
    multiplied by the fraction of generated pieces that have notes; a generated set of only empty pieces
    scores 0.0 instead of raising. Otherwise empty generated pieces are simply absent from the pool.
    """
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes:
        raise ValueError(f"attributes must be a non-empty subset of {ATTRIBUTES}; got {tuple(attributes)}")
    gen = prepare(scores_gen, "scores_gen")
    ref = prepare(scores_ref, "scores_ref")
    require_notes(ref, "scores_ref")
    filled = [p for p in gen if len(p)]
    if not empty_gen_as_zero:
        require_notes(gen, "scores_gen")
    frac = len(filled) / len(gen) if empty_gen_as_zero else 1.0
    return values_oa([attribute_values(p) for p in filled], [attribute_values(p) for p in ref], attributes=attributes,
                     bandwidth_floor=bandwidth_floor, scale=frac)


def values_oa(gen_values: Sequence[dict], ref_values: Sequence[dict], *, attributes: Sequence[str] = ATTRIBUTES,
              bandwidth_floor: float = BANDWIDTH_FLOOR, scale: float = 1.0) -> dict:
    """The attribute OA of two sets given as attribute-value dicts (one per piece, as `attribute_values`
    returns; also parts of pieces): {attr: scale * KDE overlap of the pooled values, ..., "mean_oa"}."""
    out = {}
    for a in attributes:
        x = np.concatenate([v[a] for v in gen_values]) if gen_values else np.zeros(0, np.int64)
        y = np.concatenate([v[a] for v in ref_values]) if ref_values else np.zeros(0, np.int64)
        if x.size and y.size:
            out[a] = scale * kde_overlap(x, y, bandwidth_floor=bandwidth_floor)
        else:
            out[a] = 0.0 if (x.size or y.size) else float("nan")
    finite = [v for v in out.values() if not math.isnan(v)]
    out["mean_oa"] = float(np.mean(finite)) if finite else float("nan")
    return out
