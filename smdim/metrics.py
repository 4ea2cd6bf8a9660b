"""Evaluation metrics for symbolic music, computed on decoded notes.

Every metric here works on notes, not tokens (except `copy_rate` and `invalid_token_rate`): the inputs are
`symusic.Score` objects (any time unit; converted to ticks), MIDI file paths, or `Piece` objects (the notes of
one score extracted once, with cached derived statistics — pass these when a metric is evaluated many times,
as `bootstrap_ci` does). Notes come from every non-drum track; times are in ticks of
``score.ticks_per_quarter``; the bar length comes from ``score.time_signatures`` (4/4 when there is none).

Metrics (DESIGN §5):

* `framewise_oa` — the framewise overlapping-area consistency/variance of Mittal et al. (2021), as used by
  SCHmUBERT: notes quantised to 16ths, 4-bar windows with a 2-bar hop, a Gaussian fitted to the pitches and to
  the durations of the notes starting in each window, the exact overlap of neighbouring windows' Gaussians;
  over a set, mean μ and variance σ² of all those overlap values (pooled over every neighbouring-window pair
  of every piece; ``pooling="pieces"`` uses one mean value per piece instead); consistency = 1 − |μ_ref − μ_gen|/μ_ref, variance = 1 − |σ²_ref − σ²_gen|/σ²_ref.
* `attribute_oa` — Yang & Lerch (2020) style overlapping area of the generated and the real distributions of
  six note attributes (pitch, duration, velocity, inter-onset interval, notes per bar, polyphony), each
  estimated by a Gaussian KDE on the values pooled over a set; "mean_oa" = their average.
* `bootstrap_ci` (piece-resampling percentile intervals) and `real_vs_real` (two disjoint halves of the
  reference set: the ceiling a generator's scores should reach).
* Failure-mode rates for constrained sampling: `pitch_outlier_rate`, `max_polyphony`, `dense_chord_rate`;
  memorisation: `copy_rate`; token validity: `invalid_token_rate`.
* `format_table` — a markdown table of values with intervals (ours vs baseline vs real-vs-real).

All randomness goes through ``numpy.random.default_rng(seed)``: results are deterministic under a seed.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "BANDWIDTH_FLOOR",
    "CI",
    "Piece",
    "SIGMA_FLOOR",
    "attribute_oa",
    "attribute_values",
    "bootstrap_ci",
    "compare",
    "consistency_score",
    "copy_rate",
    "dense_chord_rate",
    "format_table",
    "framewise_oa",
    "gaussian_overlap",
    "invalid_token_rate",
    "kde_overlap",
    "max_polyphony",
    "piece_framewise_oa",
    "pitch_outlier_rate",
    "prepare",
    "real_vs_real",
    "variance_score",
]

#: Grid of the quantisation: 4 steps per quarter note (16th notes).
STEPS_PER_QUARTER = 4

#: Floor on a window Gaussian's standard deviation in `framewise_oa` (in semitones for pitch, in 16th notes
#: for duration). A window whose notes all share one pitch (or one duration) has σ = 0 and no density; the
#: floor is the standard deviation of a value spread uniformly over one quantisation step, 1/√12 ≈ 0.289, so
#: two constant windows one step apart overlap by 2Φ(−√3) ≈ 0.083 and identical ones by 1.
SIGMA_FLOOR = 1.0 / math.sqrt(12.0)

#: Attributes of `attribute_oa`, in report order.
ATTRIBUTES = ("pitch", "duration", "velocity", "ioi", "notes_per_bar", "polyphony")

#: Floor on the KDE bandwidth of `attribute_oa` (all six attributes are integers: semitones, 16th notes,
#: MIDI velocity steps, counts): half a unit, so a set whose values are all equal still has a density.
BANDWIDTH_FLOOR = 0.5

ScoreLike = Any  # symusic.Score (any time unit), a path to a MIDI file, or a Piece


# ----------------------------------------------------------------------------------------------------------
# Notes of one piece
# ----------------------------------------------------------------------------------------------------------
class Piece:
    """The notes of one score (all non-drum tracks), sorted by onset then pitch, with its time signatures.

    Attributes (numpy arrays, one entry per note): ``onset``, ``duration`` (ticks, int64), ``pitch``,
    ``velocity`` (int64); ``tpq`` (ticks per quarter); ``ts_time``/``ts_num``/``ts_den`` (time signatures,
    at least one: 4/4 at tick 0 when the score has none). Derived quantities (16th-note grid, bar indices,
    per-window statistics, attribute values) are computed once and cached on the object.
    """

    __slots__ = ("onset", "duration", "pitch", "velocity", "tpq", "ts_time", "ts_num", "ts_den", "_cache")

    def __init__(self, onset, duration, pitch, velocity, tpq: int = 480, time_signatures=()):
        onset = np.asarray(onset, dtype=np.int64).reshape(-1)
        duration = np.asarray(duration, dtype=np.int64).reshape(-1)
        pitch = np.asarray(pitch, dtype=np.int64).reshape(-1)
        velocity = np.asarray(velocity, dtype=np.int64).reshape(-1)
        if not (onset.shape == duration.shape == pitch.shape == velocity.shape):
            raise ValueError("Piece: onset, duration, pitch and velocity must have the same length")
        if int(tpq) <= 0:
            raise ValueError(f"Piece: tpq must be positive; got {tpq}")
        order = np.lexsort((pitch, onset))
        self.onset, self.duration = onset[order], np.maximum(duration[order], 0)
        self.pitch, self.velocity = pitch[order], velocity[order]
        self.tpq = int(tpq)
        ts = sorted((int(t), int(n), int(d)) for t, n, d in time_signatures if int(n) > 0 and int(d) > 0)
        dedup = {}
        for t, n, d in ts:  # the last signature written at a tick wins
            dedup[t] = (n, d)
        if not dedup:
            dedup = {0: (4, 4)}
        times = sorted(dedup)
        self.ts_time = np.array(times, dtype=np.float64)
        self.ts_time[0] = 0.0  # the first signature also governs anything before it
        self.ts_num = np.array([dedup[t][0] for t in times], dtype=np.float64)
        self.ts_den = np.array([dedup[t][1] for t in times], dtype=np.float64)
        self._cache = {}

    @classmethod
    def from_score(cls, score) -> "Piece":
        """Extract the notes of every non-drum track of a `symusic.Score` (converted to ticks if needed)."""
        import symusic

        if not isinstance(score, symusic.core.ScoreTick):
            score = score.to("tick")
        cols = {"time": [], "duration": [], "pitch": [], "velocity": []}
        for track in score.tracks:
            if track.is_drum or len(track.notes) == 0:
                continue
            arr = track.notes.numpy()
            for k in cols:
                cols[k].append(np.asarray(arr[k], dtype=np.int64))
        cat = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in cols.items()}
        ts = [(t.time, t.numerator, t.denominator) for t in score.time_signatures]
        return cls(cat["time"], cat["duration"], cat["pitch"], cat["velocity"], score.ticks_per_quarter, ts)

    def __len__(self) -> int:
        return int(self.onset.shape[0])

    def __repr__(self) -> str:
        return f"Piece(notes={len(self)}, tpq={self.tpq}, bars={self.n_bars})"

    # 16th-note grid ---------------------------------------------------------------------------------------
    def _grid(self):
        if "grid" not in self._cache:
            step = self.tpq / STEPS_PER_QUARTER
            on = np.floor(self.onset / step + 0.5).astype(np.int64)
            end = np.floor((self.onset + self.duration) / step + 0.5).astype(np.int64)
            end = np.maximum(end, on + 1)  # every note lasts at least one 16th
            self._cache["grid"] = (on, end)
        return self._cache["grid"]

    @property
    def onset16(self) -> np.ndarray:
        """Onsets on the 16th-note grid (rounded)."""
        return self._grid()[0]

    @property
    def duration16(self) -> np.ndarray:
        """Durations in 16th notes: rounded end − rounded onset, at least 1."""
        on, end = self._grid()
        return end - on

    @property
    def bars(self) -> np.ndarray:
        """Index of the bar each note starts in (time-signature aware; a change mid-bar starts a new bar)."""
        if "bars" not in self._cache:
            t = self.onset16 * (self.tpq / STEPS_PER_QUARTER)  # quantised onsets, in ticks
            bar_len = self.tpq * 4.0 * self.ts_num / self.ts_den
            spans = np.diff(self.ts_time) / bar_len[:-1]
            offsets = np.concatenate([[0.0], np.cumsum(np.ceil(spans - 1e-9))])
            seg = np.clip(np.searchsorted(self.ts_time, t, side="right") - 1, 0, None)
            idx = offsets[seg] + np.floor((t - self.ts_time[seg]) / bar_len[seg] + 1e-9)
            self._cache["bars"] = np.maximum(idx, 0).astype(np.int64)
        return self._cache["bars"]

    @property
    def n_bars(self) -> int:
        """Number of bars up to the one holding the last onset (0 for an empty piece)."""
        return int(self.bars.max()) + 1 if len(self) else 0


def _is_score(x) -> bool:
    try:
        import symusic.core as core
    except ImportError:  # pragma: no cover - symusic is a dependency of smdim
        return False
    return isinstance(x, (core.ScoreTick, core.ScoreQuarter, core.ScoreSecond))


def _to_piece(x, name: str) -> Piece:
    if isinstance(x, Piece):
        return x
    if _is_score(x):
        return Piece.from_score(x)
    if isinstance(x, (str, os.PathLike)):
        import symusic

        try:
            return Piece.from_score(symusic.Score(os.fspath(x)))
        except Exception as exc:  # noqa: BLE001 - report which file and why
            raise ValueError(f"{name}: cannot read {os.fspath(x)!r} as MIDI ({exc})") from exc
    raise TypeError(f"{name}: expected symusic.Score objects, MIDI paths or metrics.Piece; got {type(x).__name__}")


def prepare(scores, name: str = "scores") -> list:
    """Turn one score / path / Piece, or an iterable of them, into a list of `Piece` (extracted once).

    Raises ValueError naming ``name`` when the input is empty.
    """
    if scores is None:
        raise ValueError(f"{name} is None: expected a list of symusic.Score objects")
    if isinstance(scores, Piece) or _is_score(scores) or isinstance(scores, (str, os.PathLike)):
        scores = [scores]
    try:
        items = list(scores)
    except TypeError:
        raise TypeError(f"{name}: expected a list of symusic.Score objects; got {type(scores).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty: expected at least one symusic.Score")
    return [_to_piece(x, f"{name}[{i}]") for i, x in enumerate(items)]


def _count_notes(pieces, name):
    if sum(len(p) for p in pieces) == 0:
        raise ValueError(f"{name} holds no notes (all {len(pieces)} pieces are empty or drum-only)")


# ----------------------------------------------------------------------------------------------------------
# Gaussian overlap and the framewise OA (Mittal et al. 2021)
# ----------------------------------------------------------------------------------------------------------
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _norm_cdf(x, mu, sigma):
    return 0.5 * (1.0 + _erf((x - mu) / (sigma * math.sqrt(2.0))))


def gaussian_overlap(mu1, sigma1, mu2, sigma2):
    """Exact overlapping area ∫ min(N(mu1, sigma1²), N(mu2, sigma2²)) dx, elementwise over arrays.

    Same value as ``statistics.NormalDist(mu1, sigma1).overlap(NormalDist(mu2, sigma2))``, vectorised: the
    two densities cross at the roots of a quadratic, and the overlap is 1 minus the total-variation distance,
    read off the two CDFs at those crossings. Sigmas must be positive (apply a floor first).
    """
    mu1, s1, mu2, s2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (mu1, sigma1, mu2, sigma2)))
    if np.any(~(s1 > 0)) or np.any(~(s2 > 0)):
        raise ValueError("gaussian_overlap: sigmas must be positive (apply a floor such as SIGMA_FLOOR)")
    swap = s2 < s1  # make (mu1, s1) the narrower one
    ma, sa = np.where(swap, mu2, mu1), np.where(swap, s2, s1)
    mb, sb = np.where(swap, mu1, mu2), np.where(swap, s1, s2)
    va, vb = sa * sa, sb * sb
    dv = vb - va
    dm = np.abs(mb - ma)
    equal = dv <= 1e-12 * vb
    out = np.empty(ma.shape, dtype=np.float64)
    # Equal variances: the densities cross once, at the midpoint.
    if np.any(equal):
        out[equal] = 1.0 - _erf(dm[equal] / (2.0 * sa[equal] * math.sqrt(2.0)))
    ne = ~equal
    if np.any(ne):
        ma_, mb_, sa_, sb_, va_, vb_, dv_, dm_ = (a[ne] for a in (ma, mb, sa, sb, va, vb, dv, dm))
        a = ma_ * vb_ - mb_ * va_
        b = sa_ * sb_ * np.sqrt(dm_ * dm_ + dv_ * np.log(vb_ / va_))
        x1, x2 = (a + b) / dv_, (a - b) / dv_
        tv = np.abs(_norm_cdf(x1, mb_, sb_) - _norm_cdf(x1, ma_, sa_)) + np.abs(
            _norm_cdf(x2, mb_, sb_) - _norm_cdf(x2, ma_, sa_)
        )
        out[ne] = 1.0 - tv
    out = np.clip(out, 0.0, 1.0)
    return out if out.ndim else float(out)


def _window_pairs(piece: Piece, window_bars: int, hop_bars: int, sigma_floor: float):
    """Overlap values of neighbouring windows of one piece: {"pitch": array, "duration": array}."""
    key = ("framewise", window_bars, hop_bars, float(sigma_floor))
    if key in piece._cache:
        return piece._cache[key]
    empty = {"pitch": np.zeros(0), "duration": np.zeros(0)}
    nb = piece.n_bars
    if nb == 0:
        piece._cache[key] = empty
        return empty
    bars = piece.bars
    # Full windows only: starts 0, hop, 2·hop, … while the window fits in the piece.
    starts = np.arange(0, max(nb - window_bars, 0) + 1, hop_bars)
    stops = np.minimum(starts + window_bars, nb)

    def window_sums(weights):
        per_bar = np.bincount(bars, weights=weights, minlength=nb).astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(per_bar)])
        return csum[stops] - csum[starts]

    count = window_sums(None)
    ok = (count[:-1] > 0) & (count[1:] > 0)  # neighbouring windows that both hold notes
    res = {}
    for attr, x in (("pitch", piece.pitch), ("duration", piece.duration16)):
        x = x.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = window_sums(x) / count
            var = np.maximum(window_sums(x * x) / count - mu * mu, 0.0)
        sd = np.maximum(np.sqrt(var), sigma_floor)
        if np.any(ok):
            res[attr] = gaussian_overlap(mu[:-1][ok], sd[:-1][ok], mu[1:][ok], sd[1:][ok])
        else:
            res[attr] = np.zeros(0)
    piece._cache[key] = res
    return res


def piece_framewise_oa(score: ScoreLike, *, window_bars: int = 4, hop_bars: int = 2,
                       sigma_floor: float = SIGMA_FLOOR) -> dict:
    """Framewise OA of one piece: {"pitch": mean, "duration": mean, "n_pairs": k, "pitch_values": array,
    "duration_values": array}; the means are NaN when the piece has no two neighbouring non-empty windows."""
    p = _to_piece(score, "score")
    _check_window(window_bars, hop_bars, sigma_floor)
    v = _window_pairs(p, window_bars, hop_bars, sigma_floor)
    n = int(v["pitch"].shape[0])
    return {
        "pitch": float(v["pitch"].mean()) if n else float("nan"),
        "duration": float(v["duration"].mean()) if n else float("nan"),
        "n_pairs": n,
        "pitch_values": v["pitch"],
        "duration_values": v["duration"],
    }


def _check_window(window_bars, hop_bars, sigma_floor):
    if int(window_bars) < 1 or int(hop_bars) < 1:
        raise ValueError(f"window_bars and hop_bars must be >= 1; got {window_bars}, {hop_bars}")
    if not sigma_floor > 0:
        raise ValueError(f"sigma_floor must be positive; got {sigma_floor}")


def consistency_score(mu_ref: float, mu_gen: float) -> float:
    """1 − |μ_ref − μ_gen| / μ_ref, clipped to [0, 1] (1.0 when both are 0, 0.0 when only μ_ref is 0)."""
    return _relative_score(mu_ref, mu_gen)


def variance_score(var_ref: float, var_gen: float) -> float:
    """1 − |σ²_ref − σ²_gen| / σ²_ref, clipped to [0, 1] (1.0 when both are 0, 0.0 when only σ²_ref is 0)."""
    return _relative_score(var_ref, var_gen)


def _relative_score(ref, gen):
    ref, gen = float(ref), float(gen)
    if math.isnan(ref) or math.isnan(gen):
        return float("nan")
    if ref == 0.0:
        return 1.0 if gen == 0.0 else 0.0
    return float(min(1.0, max(0.0, 1.0 - abs(ref - gen) / abs(ref))))


def _pooled_pairs(pieces, name, window_bars, hop_bars, sigma_floor):
    vals = [_window_pairs(p, window_bars, hop_bars, sigma_floor) for p in pieces]
    out = {}
    for attr in ("pitch", "duration"):
        out[attr] = np.concatenate([v[attr] for v in vals]) if vals else np.zeros(0)
        out[attr + "_pieces"] = np.array([v[attr].mean() for v in vals if v[attr].size])
    out["n_pieces"] = int(out["pitch_pieces"].size)
    if out["pitch"].size == 0:
        raise ValueError(
            f"{name} has no two neighbouring non-empty {window_bars}-bar windows in any of its {len(pieces)} "
            f"pieces (pieces need at least {window_bars + hop_bars} bars)"
        )
    return out


def framewise_oa(scores_gen, scores_ref, *, window_bars: int = 4, hop_bars: int = 2,
                 sigma_floor: float = SIGMA_FLOOR, pooling: str = "pairs") -> dict:
    """Framewise OA consistency and variance of a generated set against a reference set (Mittal et al. 2021).

    For each piece: 16th-note grid, windows of ``window_bars`` bars every ``hop_bars`` bars (full windows
    only, starting at bar 0), a Gaussian (mean, population std floored at ``sigma_floor``) fitted to the
    pitches and to the durations (16ths) of the notes starting in each window, and the exact overlap of
    neighbouring windows' Gaussians (pairs with an empty window are skipped). For each set, μ and σ² are the
    mean and population variance of the OA values of the set: with ``pooling="pairs"`` (default, Mittal's
    definition) every neighbouring-window pair of every piece is one value; with ``pooling="pieces"`` each
    piece's mean OA is one value. Returns, for attr in (pitch, duration):

    * ``{attr}_consistency`` = 1 − |μ_ref − μ_gen|/μ_ref, ``{attr}_variance`` = 1 − |σ²_ref − σ²_gen|/σ²_ref
      (both clipped to [0, 1]);
    * ``{attr}_mu_gen``, ``{attr}_mu_ref``, ``{attr}_var_gen``, ``{attr}_var_ref`` — the raw μ and σ²;
    * ``{attr}_piece_mean_gen``, ``{attr}_piece_mean_ref`` — the mean over pieces of each piece's mean OA;

    plus ``n_pairs_gen``/``n_pairs_ref`` (window pairs) and ``n_pieces_gen``/``n_pieces_ref`` (pieces that
    contributed at least one pair).
    """
    _check_window(window_bars, hop_bars, sigma_floor)
    if pooling not in ("pairs", "pieces"):
        raise ValueError(f"pooling must be 'pairs' or 'pieces'; got {pooling!r}")
    gen = prepare(scores_gen, "scores_gen")
    ref = prepare(scores_ref, "scores_ref")
    g = _pooled_pairs(gen, "scores_gen", window_bars, hop_bars, sigma_floor)
    r = _pooled_pairs(ref, "scores_ref", window_bars, hop_bars, sigma_floor)
    sfx = "" if pooling == "pairs" else "_pieces"
    out = {}
    for attr in ("pitch", "duration"):
        gv, rv = g[attr + sfx], r[attr + sfx]
        mu_g, var_g = float(gv.mean()), float(gv.var())
        mu_r, var_r = float(rv.mean()), float(rv.var())
        out[f"{attr}_consistency"] = consistency_score(mu_r, mu_g)
        out[f"{attr}_variance"] = variance_score(var_r, var_g)
        out[f"{attr}_mu_gen"], out[f"{attr}_mu_ref"] = mu_g, mu_r
        out[f"{attr}_var_gen"], out[f"{attr}_var_ref"] = var_g, var_r
        out[f"{attr}_piece_mean_gen"] = float(g[attr + "_pieces"].mean())
        out[f"{attr}_piece_mean_ref"] = float(r[attr + "_pieces"].mean())
    out["n_pairs_gen"], out["n_pairs_ref"] = int(g["pitch"].size), int(r["pitch"].size)
    out["n_pieces_gen"], out["n_pieces_ref"] = g["n_pieces"], r["n_pieces"]
    return out


# ----------------------------------------------------------------------------------------------------------
# Attribute OA (Yang & Lerch 2020 style)
# ----------------------------------------------------------------------------------------------------------
def attribute_values(score: ScoreLike) -> dict:
    """The per-note / per-onset / per-bar values of one piece for each attribute of `ATTRIBUTES`.

    * pitch — MIDI pitch of every note; velocity — MIDI velocity of every note;
    * duration — every note's duration in 16th notes (grid-quantised, ≥ 1);
    * ioi — gaps between consecutive distinct onsets, in 16th notes (chord notes share one onset);
    * notes_per_bar — number of notes starting in each bar from bar 0 to the last onset's bar (empty bars
      count as 0);
    * polyphony — at each distinct onset, the number of notes sounding (onset ≤ t < end, on the 16th grid).
    """
    p = _to_piece(score, "score")
    if "attributes" in p._cache:
        return p._cache["attributes"]
    on, end = p._grid()
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
    total = _trapezoid(f, grid)
    return f / total


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
    fx = _kde_on_grid(x, bx, grid)
    fy = _kde_on_grid(y, by, grid)
    m = np.minimum(fx, fy)
    return float(min(1.0, max(0.0, _trapezoid(m, grid))))


def attribute_oa(scores_gen, scores_ref, *, attributes: Sequence[str] = ATTRIBUTES,
                 bandwidth_floor: float = BANDWIDTH_FLOOR) -> dict:
    """Overlapping area of the generated and the reference distribution of each attribute, and their mean.

    Values are pooled over all pieces of a set (see `attribute_values` for the definitions) and each set's
    distribution is a Gaussian KDE (`kde_overlap`). Returns {attr: OA in [0, 1], ..., "mean_oa": average}.
    An attribute with no values in exactly one set scores 0.0 (nothing overlaps); with no values in either
    set it is NaN and left out of "mean_oa".
    """
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes:
        raise ValueError(f"attributes must be a non-empty subset of {ATTRIBUTES}; got {tuple(attributes)}")
    gen = prepare(scores_gen, "scores_gen")
    ref = prepare(scores_ref, "scores_ref")
    _count_notes(gen, "scores_gen")
    _count_notes(ref, "scores_ref")
    gv = [attribute_values(p) for p in gen]
    rv = [attribute_values(p) for p in ref]
    out = {}
    for a in attributes:
        x = np.concatenate([v[a] for v in gv])
        y = np.concatenate([v[a] for v in rv])
        if x.size and y.size:
            out[a] = kde_overlap(x, y, bandwidth_floor=bandwidth_floor)
        else:
            out[a] = 0.0 if (x.size or y.size) else float("nan")
    finite = [v for v in out.values() if not math.isnan(v)]
    out["mean_oa"] = float(np.mean(finite)) if finite else float("nan")
    return out


def compare(scores_gen, scores_ref, **kwargs) -> dict:
    """`framewise_oa` and `attribute_oa` in one flat dict (attribute OAs prefixed "oa_", plus "mean_oa").

    Keyword arguments go to the function that accepts them (window_bars, hop_bars, sigma_floor, pooling /
    attributes, bandwidth_floor)."""
    fw_keys = {"window_bars", "hop_bars", "sigma_floor", "pooling"}
    at_keys = {"attributes", "bandwidth_floor"}
    bad = set(kwargs) - fw_keys - at_keys
    if bad:
        raise TypeError(f"compare: unexpected keyword arguments {sorted(bad)}")
    gen = prepare(scores_gen, "scores_gen")
    ref = prepare(scores_ref, "scores_ref")
    out = framewise_oa(gen, ref, **{k: v for k, v in kwargs.items() if k in fw_keys})
    att = attribute_oa(gen, ref, **{k: v for k, v in kwargs.items() if k in at_keys})
    for k, v in att.items():
        out[k if k == "mean_oa" else "oa_" + k] = v
    return out


# ----------------------------------------------------------------------------------------------------------
# Intervals and the real-vs-real ceiling
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CI:
    """A point estimate with a bootstrap percentile interval [low, high] and the bootstrap std."""

    value: float
    low: float
    high: float
    std: float = float("nan")
    n_boot: int = 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def format(self, digits: int = 3, style: str = "pm") -> str:
        """"0.812 ± 0.021" (style "pm", half the interval's width) or "0.812 [0.790, 0.833]" ("interval")."""
        if math.isnan(self.value):
            return "—"
        if math.isnan(self.low) or math.isnan(self.high):
            return f"{self.value:.{digits}f}"
        if style == "interval":
            return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        if style != "pm":
            raise ValueError(f"style must be 'pm' or 'interval'; got {style!r}")
        return f"{self.value:.{digits}f} ± {self.half_width:.{digits}f}"

    def __str__(self) -> str:
        return self.format()


def _prepare_items(items, name):
    """Scores/paths become Pieces (extracted once); other items (token sequences, …) pass unchanged."""
    if items is None:
        raise ValueError(f"{name} is None")
    if isinstance(items, Piece) or _is_score(items):
        items = [items]
    items = list(items)
    if not items:
        raise ValueError(f"{name} is empty: nothing to resample")
    return [Piece.from_score(x) if _is_score(x) else x for x in items]


def _numeric(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def bootstrap_ci(metric_fn: Callable, gen, ref=None, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 resample_ref: bool = True):
    """Percentile bootstrap interval of ``metric_fn(gen, ref)`` (or ``metric_fn(gen)`` when ref is None).

    Each replicate resamples the pieces of ``gen`` (and, when ``resample_ref``, of ``ref``) with replacement
    and recomputes the metric; the interval is the [alpha/2, 1 − alpha/2] percentiles of the replicates.
    Scores in the inputs are converted to `Piece` once, so metric_fn receives lists of Pieces (all metrics of
    this module accept them); other items (e.g. token sequences) are passed as they are. Replicates on which
    metric_fn raises ValueError (e.g. too few windows) are dropped. Returns a `CI` for a float metric, or
    {key: CI} for each numeric entry of a dict metric; the point estimate is the metric on the full sets.
    Note that metrics capped at 1 (OA, clipped scores) have a bootstrap distribution biased below a point
    estimate at the cap.
    """
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    g = _prepare_items(gen, "gen")
    r = _prepare_items(ref, "ref") if ref is not None else None

    def call(gs, rs):
        return metric_fn(gs, rs) if r is not None else metric_fn(gs)

    point = call(g, r)
    scalar = not isinstance(point, Mapping)
    keys = ["value"] if scalar else [k for k, v in point.items() if _numeric(v)]
    if not keys:
        raise ValueError("bootstrap_ci: metric_fn returned no numeric values")
    rng = np.random.default_rng(seed)
    reps = np.full((int(n_boot), len(keys)), np.nan)
    for b in range(int(n_boot)):
        gi = rng.integers(0, len(g), len(g))
        ri = rng.integers(0, len(r), len(r)) if (r is not None and resample_ref) else None
        gs = [g[i] for i in gi]
        rs = None if r is None else (r if ri is None else [r[i] for i in ri])
        try:
            res = call(gs, rs)
        except ValueError:
            continue
        reps[b] = [float(res)] if scalar else [float(res[k]) for k in keys]
    out = {}
    for j, k in enumerate(keys):
        col = reps[:, j]
        col = col[~np.isnan(col)]
        val = float(point) if scalar else float(point[k])
        if col.size == 0:
            out[k] = CI(val, float("nan"), float("nan"), float("nan"), 0)
            continue
        lo, hi = np.quantile(col, [alpha / 2.0, 1.0 - alpha / 2.0])
        out[k] = CI(val, float(lo), float(hi), float(col.std(ddof=1)) if col.size > 1 else 0.0, int(col.size))
    return out["value"] if scalar else out


def real_vs_real(ref_scores, n: int, seed: int = 0, *, metric_fn: Optional[Callable] = None, n_boot: int = 0,
                 alpha: float = 0.05):
    """The real-vs-real ceiling: ``metric_fn(A, B)`` for two disjoint random halves A, B of n pieces each.

    ``metric_fn`` defaults to `compare` (framewise OA + attribute OA). The split is drawn with
    ``numpy.random.default_rng(seed)``; A plays "generated", B "reference". With ``n_boot > 0`` the result
    carries bootstrap intervals (`bootstrap_ci` with the same seed), giving the band a generator's scores at
    the same sample count n should fall in.
    """
    pieces = prepare(ref_scores, "ref_scores")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if 2 * n > len(pieces):
        raise ValueError(f"ref_scores holds {len(pieces)} pieces; two disjoint halves of n={n} need {2 * n}")
    fn = compare if metric_fn is None else metric_fn
    perm = np.random.default_rng(seed).permutation(len(pieces))
    a = [pieces[i] for i in perm[:n]]
    b = [pieces[i] for i in perm[n:2 * n]]
    if n_boot:
        return bootstrap_ci(fn, a, b, n_boot=n_boot, seed=seed, alpha=alpha)
    return fn(a, b)


# ----------------------------------------------------------------------------------------------------------
# Failure modes of constrained sampling; memorisation; token validity
# ----------------------------------------------------------------------------------------------------------
def pitch_outlier_rate(scores, low: int, high: int) -> dict:
    """Notes outside the inclusive pitch range [low, high].

    Returns {"note_rate": outlier notes / all notes, "piece_rate": pieces with any outlier / pieces,
    "n_notes": all notes, "n_outliers": outlier notes}. Empty pieces count as pieces without outliers.
    """
    if not int(low) <= int(high):
        raise ValueError(f"low must be <= high; got low={low}, high={high}")
    pieces = prepare(scores, "scores")
    _count_notes(pieces, "scores")
    bad = [int(np.count_nonzero((p.pitch < low) | (p.pitch > high))) for p in pieces]
    n_notes = sum(len(p) for p in pieces)
    return {
        "note_rate": sum(bad) / n_notes,
        "piece_rate": sum(1 for b in bad if b) / len(pieces),
        "n_notes": n_notes,
        "n_outliers": sum(bad),
    }


def _onset_counts(p: Piece, mode: str) -> np.ndarray:
    """Per distinct onset tick: notes starting there ("onset") or sounding there ("sounding")."""
    if len(p) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, starting = np.unique(p.onset, return_counts=True)
    if mode == "onset":
        return starting
    ends = np.sort(p.onset + np.maximum(p.duration, 1))
    return np.searchsorted(p.onset, uniq, side="right") - np.searchsorted(ends, uniq, side="right")


def _check_mode(mode):
    if mode not in ("onset", "sounding"):
        raise ValueError(f"mode must be 'onset' or 'sounding'; got {mode!r}")


def max_polyphony(score: ScoreLike, mode: str = "sounding") -> int:
    """Largest number of notes sounding at once ("sounding": onset ≤ t < onset + duration, exact ticks,
    zero-length notes last one tick) or starting at the same tick ("onset") in one piece; 0 if empty."""
    _check_mode(mode)
    c = _onset_counts(_to_piece(score, "score"), mode)
    return int(c.max()) if c.size else 0


def dense_chord_rate(scores, max_simultaneous: int, mode: str = "onset") -> dict:
    """How often more than ``max_simultaneous`` notes start together (mode "onset", the limit the sampler's
    ``Constraints.max_chord`` enforces) or sound together (mode "sounding") — on exact ticks, all non-drum
    tracks merged.

    Returns {"onset_rate": distinct onsets over the limit / distinct onsets (pooled over the set),
    "piece_rate": pieces with any onset over the limit / pieces, "max": the largest count seen}.
    """
    _check_mode(mode)
    if int(max_simultaneous) < 1:
        raise ValueError(f"max_simultaneous must be >= 1; got {max_simultaneous}")
    pieces = prepare(scores, "scores")
    _count_notes(pieces, "scores")
    counts = [_onset_counts(p, mode) for p in pieces]
    over = [int(np.count_nonzero(c > max_simultaneous)) for c in counts]
    n_onsets = sum(c.size for c in counts)
    return {
        "onset_rate": sum(over) / n_onsets,
        "piece_rate": sum(1 for o in over if o) / len(pieces),
        "max": max(int(c.max()) for c in counts if c.size),
    }


def _mix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (xor-shift-multiply) applied elementwise to uint64."""
    x = x.copy()
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


def _as_int_rows(seqs, name):
    try:
        import torch  # optional: accept tensors

        if isinstance(seqs, torch.Tensor):
            seqs = seqs.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(seqs, np.ndarray):
        seqs = [seqs] if seqs.ndim == 1 else list(seqs)
    out = []
    for s in seqs:
        if hasattr(s, "ids"):  # miditok TokSequence
            s = s.ids
        if hasattr(s, "detach"):
            s = s.detach().cpu().numpy()
        out.append(np.asarray(s, dtype=np.int64).reshape(-1))
    if not out:
        raise ValueError(f"{name} is empty: expected at least one token sequence")
    return out


def _ngram_hashes(seq: np.ndarray, n: int, ignore: np.ndarray) -> np.ndarray:
    """64-bit hashes of the length-n windows of seq that contain no ignored id."""
    if seq.size < n:
        return np.zeros(0, dtype=np.uint64)
    win = np.lib.stride_tricks.sliding_window_view(seq, n)
    keep = ~np.isin(win, ignore).any(axis=1) if ignore.size else np.ones(win.shape[0], bool)
    win = win[keep]
    h = np.zeros(win.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = _mix64(h * np.uint64(0x9E3779B97F4A7C15) + _mix64(win[:, i].astype(np.uint64) + np.uint64(i + 1)))
    return h


def copy_rate(gen_token_seqs, train_token_seqs, n: int = 16, *, ignore_ids: Iterable[int] = (0,)) -> float:
    """Fraction of the generated n-gram token windows that occur anywhere in the training sequences.

    Windows containing an id of ``ignore_ids`` (pass PAD and MASK, e.g. ``(tokenizer.pad_token_id,
    mask_id)``; default: PAD = 0) are left out on both sides. Training windows are stored as 64-bit hashes
    (collision probability ≈ windows_gen · windows_train / 2^64). Sequences: lists of ints, 1-D arrays or
    tensors, a 2-D array/tensor (one row per sequence), or miditok TokSequences.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    ignore = np.asarray(sorted(set(int(i) for i in ignore_ids)), dtype=np.int64)
    gen = _as_int_rows(gen_token_seqs, "gen_token_seqs")
    train = _as_int_rows(train_token_seqs, "train_token_seqs")
    th = [_ngram_hashes(s, n, ignore) for s in train]
    train_h = np.unique(np.concatenate(th)) if th else np.zeros(0, np.uint64)
    if train_h.size == 0:
        raise ValueError(f"train_token_seqs holds no {n}-token window free of ignored ids {ignore.tolist()}")
    gh = np.concatenate([_ngram_hashes(s, n, ignore) for s in gen])
    if gh.size == 0:
        raise ValueError(f"gen_token_seqs holds no {n}-token window free of ignored ids {ignore.tolist()}")
    idx = np.clip(np.searchsorted(train_h, gh), 0, train_h.size - 1)
    return float(np.mean(train_h[idx] == gh))


def invalid_token_rate(tokenizer, token_seqs, *, ignore_ids: Iterable[int] = (0,)) -> float:
    """Mean over sequences of miditok's ``tokenizer.tokens_errors`` (its fraction of tokens that break the
    token-type grammar), each sequence of ids wrapped in a ``miditok.TokSequence`` (ids BPE-encoded when the
    tokenizer is trained); ids of ``ignore_ids`` (PAD, MASK) are removed first."""
    from miditok import TokSequence

    seqs = _as_int_rows(token_seqs, "token_seqs")
    ignore = set(int(i) for i in ignore_ids)
    encoded = bool(getattr(tokenizer, "is_trained", False))
    rates = []
    for s in seqs:
        ids = [int(t) for t in s if int(t) not in ignore]
        if ids:
            rates.append(float(tokenizer.tokens_errors(TokSequence(ids=ids, are_ids_encoded=encoded))))
    if not rates:
        raise ValueError("token_seqs holds no tokens besides ignored ids")
    return float(np.mean(rates))


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------
def _cell(v, digits: int, style: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, CI):
        s = v.format(digits, style)
    elif isinstance(v, tuple) and len(v) == 3 and all(_numeric(x) for x in v):
        s = CI(float(v[0]), float(v[1]), float(v[2])).format(digits, style)
    elif isinstance(v, (bool, np.bool_)):
        s = str(bool(v))
    elif isinstance(v, (int, np.integer)):
        s = str(int(v))
    elif _numeric(v):
        s = "—" if math.isnan(float(v)) else f"{float(v):.{digits}f}"
    else:
        s = str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def format_table(rows: Union[Mapping[str, Mapping[str, Any]], Sequence[Mapping[str, Any]]],
                 columns: Optional[Sequence[str]] = None, *, index: str = "metric", digits: int = 3,
                 style: str = "pm") -> str:
    """A markdown table. ``rows``: {row label: {column: cell}} or a list of {column: cell} dicts.

    Cells: a `CI` or a (value, low, high) tuple → "value ± half-width" ("value [low, high]" with
    style="interval"); floats with ``digits`` decimals; NaN/None → "—"; anything else via str. Columns
    default to the union of the rows' keys in first-seen order (with ``index`` first for a mapping).
    """
    if isinstance(rows, Mapping):
        rows = [{index: label, **dict(cols)} for label, cols in rows.items()]
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to format")
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    columns = list(columns)
    lines = ["| " + " | ".join(_cell(c, digits, style) for c in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c), digits, style) for c in columns) + " |")
    return "\n".join(lines)
