"""Bootstrap intervals and the real-vs-real ceiling.

`bootstrap_ci` resamples items (pieces, token sequences, …) with replacement and takes the [α/2, 1 − α/2]
percentiles of the recomputed metric; `paired_bootstrap_ci` does the same for the difference of two
generated sets whose items are paired (same masks / references); `real_vs_real` scores two disjoint random
halves of the reference set against each other. Randomness: ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np

from .notes import Piece, is_score, prepare
from .oa import compare


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


def is_numeric(v) -> bool:
    """A real number (int/float, numpy scalars), not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _prepare_items(items, name):
    """Scores/paths become Pieces (extracted once); other items (token sequences, …) pass unchanged."""
    if items is None:
        raise ValueError(f"{name} is None")
    if isinstance(items, Piece) or is_score(items):
        items = [items]
    items = list(items)
    if not items:
        raise ValueError(f"{name} is empty: nothing to resample")
    return [Piece.from_score(x) if is_score(x) else x for x in items]


def _check_args(n_boot, alpha):
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")


def _as_values(result, keys):
    """{key: float} of a metric result: a float metric under key "value", else the dict's entries."""
    if not isinstance(result, Mapping):
        return {"value": float(result)}
    return {k: float(result[k]) for k in keys}


def _intervals(point: dict, replicate: Callable[[], Optional[dict]], n_boot: int, alpha: float) -> dict:
    """{key: CI}: percentile intervals of ``n_boot`` calls of ``replicate`` (None = dropped replicate)."""
    keys = list(point)
    reps = np.full((int(n_boot), len(keys)), np.nan)
    for b in range(int(n_boot)):
        res = replicate()
        if res is not None:
            reps[b] = [res[k] for k in keys]
    out = {}
    for j, k in enumerate(keys):
        col = reps[:, j][~np.isnan(reps[:, j])]
        if col.size == 0:
            out[k] = CI(point[k], float("nan"), float("nan"), float("nan"), 0)
            continue
        lo, hi = np.quantile(col, [alpha / 2.0, 1.0 - alpha / 2.0])
        out[k] = CI(point[k], float(lo), float(hi), float(col.std(ddof=1)) if col.size > 1 else 0.0, int(col.size))
    return out


def _numeric_keys(result, name="metric_fn"):
    keys = ["value"] if not isinstance(result, Mapping) else [k for k, v in result.items() if is_numeric(v)]
    if not keys:
        raise ValueError(f"{name} returned no numeric values")
    return keys


def bootstrap_ci(metric_fn: Callable, gen, ref=None, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 resample_ref: bool = True):
    """Percentile bootstrap interval of ``metric_fn(gen, ref)`` (or ``metric_fn(gen)`` when ref is None).

    Each replicate resamples the items of ``gen`` (and, when ``resample_ref``, of ``ref``) with replacement
    and recomputes the metric. Scores in the inputs are converted to `Piece` once, so metric_fn receives
    lists of Pieces; other items (e.g. token sequences, (nats, tokens) tuples) are passed as they are.
    Replicates on which metric_fn raises ValueError are dropped. Returns a `CI` for a float metric, or
    {key: CI} for each numeric entry of a dict metric; the point estimate is the metric on the full sets.
    Metrics capped at 1 (OA, clipped scores) have a bootstrap distribution biased below a point estimate at
    the cap.
    """
    _check_args(n_boot, alpha)
    g = _prepare_items(gen, "gen")
    r = _prepare_items(ref, "ref") if ref is not None else None

    def call(gs, rs):
        return metric_fn(gs, rs) if r is not None else metric_fn(gs)

    first = call(g, r)
    keys = _numeric_keys(first)
    rng = np.random.default_rng(seed)

    def replicate():
        gs = [g[i] for i in rng.integers(0, len(g), len(g))]
        rs = r
        if r is not None and resample_ref:
            rs = [r[i] for i in rng.integers(0, len(r), len(r))]
        try:
            return _as_values(call(gs, rs), keys)
        except ValueError:
            return None

    out = _intervals(_as_values(first, keys), replicate, n_boot, alpha)
    return out["value"] if not isinstance(first, Mapping) else out


def paired_bootstrap_ci(metric_fn: Callable, gen_a, gen_b, ref=None, *, n_boot: int = 1000, seed: int = 0,
                        alpha: float = 0.05):
    """Paired percentile bootstrap interval of ``metric_fn(gen_a, ref) − metric_fn(gen_b, ref)``.

    Item k of ``gen_a`` and item k of ``gen_b`` are paired (e.g. generated from the same mask or reference),
    so ``len(gen_a) == len(gen_b)`` is required and every replicate draws ONE index vector applied to both,
    and one index vector for ``ref`` applied to both sides. Pairing removes the variance the two sets share,
    so the interval of a difference is narrower than with independent resampling. Replicates raising
    ValueError (on either side) are dropped; items that are not scores pass through as in `bootstrap_ci`.
    Returns a `CI` for a float metric, or {key: CI} for the numeric keys present in both results; the point
    estimate is the difference on the full sets.
    """
    _check_args(n_boot, alpha)
    a = _prepare_items(gen_a, "gen_a")
    b = _prepare_items(gen_b, "gen_b")
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap_ci: gen_a and gen_b must be paired item by item; got {len(a)} and "
                         f"{len(b)} items")
    r = _prepare_items(ref, "ref") if ref is not None else None

    def call(gs, rs):
        return metric_fn(gs, rs) if r is not None else metric_fn(gs)

    pa, pb = call(a, r), call(b, r)
    if isinstance(pa, Mapping) != isinstance(pb, Mapping):
        raise ValueError("paired_bootstrap_ci: metric_fn returned a dict for one set and a number for the other")
    keys = _numeric_keys(pa)
    if isinstance(pa, Mapping):
        keys = [k for k in keys if k in pb and is_numeric(pb[k])]
        if not keys:
            raise ValueError("paired_bootstrap_ci: the two results share no numeric key")

    def diff(ra, rb):
        va, vb = _as_values(ra, keys), _as_values(rb, keys)
        return {k: va[k] - vb[k] for k in keys}

    rng = np.random.default_rng(seed)

    def replicate():
        idx = rng.integers(0, len(a), len(a))
        rs = None if r is None else [r[i] for i in rng.integers(0, len(r), len(r))]
        try:
            return diff(call([a[i] for i in idx], rs), call([b[i] for i in idx], rs))
        except ValueError:
            return None

    out = _intervals(diff(pa, pb), replicate, n_boot, alpha)
    return out["value"] if not isinstance(pa, Mapping) else out


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
