"""Framewise overlapping area (OA): consistency and variance of a generated set against a reference set.

Per piece: notes on the 16th-note grid, frames of ``window_bars`` bars every ``hop_bars`` bars; per frame a
Gaussian N(μ, σ²) of the pitches and one of the durations (16ths) of the notes starting in it; the OA of
neighbouring frames = ∫ min of the two densities (`gaussian_overlap`). Over a set, μ and σ² (population) of
the OA values; consistency = 1 − |μ_ref − μ_gen|/μ_ref, variance = 1 − |σ²_ref − σ²_gen|/σ²_ref, in [0, 1].
Two protocols (`PROTOCOLS`) differ in what one value is, which frames exist and the σ floor; tables must
say which one a number uses (DESIGN §5).
"""
from __future__ import annotations

import math

import numpy as np

from .notes import Piece, ScoreLike, prepare, to_piece

#: The framewise-OA protocols of `framewise_oa`, with a one-line description for tables.
PROTOCOLS = {
    "published": "SCHmUBERT / Mittal et al. 2021: per-piece mean OA of consecutive frames ((bars - window)//hop "
                 "of them), sigma = std + 1e-6; mu and var over pieces",
    "pooled": "every neighbouring pair of full windows of every piece pooled, sigma floored at 1/sqrt(12), "
              "pairs with an empty window skipped; mu and var over pairs",
}

#: σ added to every frame's std by the "published" protocol.
PUBLISHED_SIGMA_EPS = 1e-6

#: Floor on a window Gaussian's std in the "pooled" protocol (semitones / 16th notes): the std of a value
#: spread uniformly over one quantisation step, 1/√12 ≈ 0.289, so two constant windows one step apart
#: overlap by 2Φ(−√3) ≈ 0.083 and identical ones by 1.
SIGMA_FLOOR = 1.0 / math.sqrt(12.0)

_ATTRS = ("pitch", "duration")
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _norm_cdf(x, mu, sigma):
    return 0.5 * (1.0 + _erf((x - mu) / (sigma * math.sqrt(2.0))))


def gaussian_overlap(mu1, sigma1, mu2, sigma2):
    """Exact overlapping area ∫ min(N(mu1, sigma1²), N(mu2, sigma2²)) dx, elementwise over arrays.

    Same value as ``statistics.NormalDist(mu1, sigma1).overlap(NormalDist(mu2, sigma2))``, vectorised: the
    two densities cross at the roots of a quadratic, and the overlap is 1 minus the total-variation distance,
    read off the two CDFs at those crossings. Sigmas must be positive.
    """
    mu1, s1, mu2, s2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (mu1, sigma1, mu2, sigma2)))
    if np.any(~(s1 > 0)) or np.any(~(s2 > 0)):
        raise ValueError("gaussian_overlap: sigmas must be positive")
    swap = s2 < s1  # make (mu1, s1) the narrower one
    ma, sa = np.where(swap, mu2, mu1), np.where(swap, s2, s1)
    mb, sb = np.where(swap, mu1, mu2), np.where(swap, s1, s2)
    va, vb = sa * sa, sb * sb
    dv = vb - va
    dm = np.abs(mb - ma)
    equal = dv <= 1e-12 * vb
    out = np.empty(ma.shape, dtype=np.float64)
    if np.any(equal):  # equal variances: the densities cross once, at the midpoint
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


def check_args(protocol, window_bars, hop_bars):
    """ValueError for an unknown protocol or a window/hop below 1."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}; got {protocol!r}")
    if int(window_bars) < 1 or int(hop_bars) < 1:
        raise ValueError(f"window_bars and hop_bars must be >= 1; got {window_bars}, {hop_bars}")


def _frames(piece: Piece, protocol: str, window_bars: int, hop_bars: int):
    """(starts, stops) bar indices of the frames of one piece under a protocol."""
    if len(piece) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if protocol == "published":  # bars up to the last quantised end; (bars − window)//hop frames
        nb = int(piece.bar_of_step(piece.grid()[1].max())) + 1
        starts = hop_bars * np.arange(max((nb - window_bars) // hop_bars, 0))
    else:  # bars up to the last onset; every full window
        nb = piece.n_bars
        starts = np.arange(0, max(nb - window_bars, 0) + 1, hop_bars) if nb >= window_bars else np.zeros(0, np.int64)
    return starts.astype(np.int64), (starts + window_bars).astype(np.int64)


def _pair_values(piece: Piece, protocol: str, window_bars: int, hop_bars: int) -> dict:
    """OA of each neighbouring frame pair of one piece (cached on the Piece).

    {"pitch": (k,), "duration": (k,), "n_frames": int}; "published" keeps every consecutive pair (NaN where
    a frame is empty), "pooled" keeps only the pairs of two non-empty windows.
    """
    key = ("framewise", protocol, window_bars, hop_bars)
    if key in piece._cache:
        return piece._cache[key]
    starts, stops = _frames(piece, protocol, window_bars, hop_bars)
    res = {"n_frames": int(starts.size)}
    if starts.size < 2:
        res.update({a: np.zeros(0) for a in _ATTRS})
        piece._cache[key] = res
        return res
    nb = int(stops[-1])
    bars = piece.bars
    inside = bars < nb

    def frame_sums(x):  # sum of x over the notes starting in each frame (exact for integer x)
        per_bar = np.bincount(bars[inside], weights=None if x is None else x[inside], minlength=nb)
        csum = np.concatenate([[0], np.cumsum(np.rint(per_bar).astype(np.int64))])
        return csum[stops] - csum[starts]

    n = frame_sums(None)
    full = n > 0
    ok = full[:-1] & full[1:]
    for attr, x in (("pitch", piece.pitch), ("duration", piece.duration16)):
        s1, s2 = frame_sums(x), frame_sums(x * x)
        nn = np.maximum(n, 1)
        mu = s1 / nn
        sd = np.sqrt(np.maximum(nn * s2 - s1 * s1, 0) / (nn * nn).astype(np.float64))
        sd = sd + PUBLISHED_SIGMA_EPS if protocol == "published" else np.maximum(sd, SIGMA_FLOOR)
        oa = np.atleast_1d(gaussian_overlap(mu[:-1][ok], sd[:-1][ok], mu[1:][ok], sd[1:][ok])) if ok.any() \
            else np.zeros(0)
        if protocol == "published":  # every consecutive pair; NaN marks one with an empty frame
            res[attr] = np.full(ok.shape, np.nan)
            res[attr][ok] = oa
        else:
            res[attr] = oa
    piece._cache[key] = res
    return res


def piece_framewise_oa(score: ScoreLike, *, protocol: str = "published", window_bars: int = 4,
                       hop_bars: int = 2) -> dict:
    """Framewise OA of one piece under ``protocol``.

    Returns {"pitch": value, "duration": value, "n_pairs": k, "n_frames": f, "pitch_values": (k,),
    "duration_values": (k,)}: the pair OAs and the piece's value, their mean. "published": every consecutive
    frame pair, NaN where a frame is empty, value NaN when there is no pair or any frame is empty. "pooled":
    only pairs of two non-empty windows, value NaN when there is none.
    """
    check_args(protocol, window_bars, hop_bars)
    v = _pair_values(to_piece(score, "score"), protocol, int(window_bars), int(hop_bars))
    k = int(v["pitch"].size)
    out = {a: (float(v[a].mean()) if k else float("nan")) for a in _ATTRS}
    out.update(n_pairs=k, n_frames=v["n_frames"], pitch_values=v["pitch"], duration_values=v["duration"])
    return out


def _set_values(pieces, name, protocol, window_bars, hop_bars, empty_as_zero):
    """The OA values of one set: per piece ("published") or per pair ("pooled"), per attribute."""
    vals = {a: [] for a in _ATTRS}
    n_pieces = n_pairs = 0
    for p in pieces:
        if empty_as_zero and len(p) == 0:
            for a in _ATTRS:
                vals[a].append(np.zeros(1))
            n_pieces += 1
            continue
        v = _pair_values(p, protocol, window_bars, hop_bars)
        k = v["pitch"].size
        if k == 0 or (protocol == "published" and np.isnan(v["pitch"]).any()):
            continue
        for a in _ATTRS:
            vals[a].append(v[a] if protocol == "pooled" else np.array([v[a].mean()]))
        n_pieces += 1
        n_pairs += int(k)
    if n_pieces == 0:
        need = window_bars + (2 * hop_bars if protocol == "published" else hop_bars)
        raise ValueError(
            f"{name}: none of its {len(pieces)} pieces has two neighbouring non-empty {window_bars}-bar frames "
            f"under protocol {protocol!r} (pieces need about {need} bars and no empty frame)"
        )
    out = {a: np.concatenate(vals[a]) for a in _ATTRS}
    out.update(n_pieces=n_pieces, n_pairs=n_pairs)
    return out


#: The numeric keys of `framewise_oa` (besides "protocol").
FRAMEWISE_KEYS = tuple(f"{a}_{k}" for a in _ATTRS for k in ("consistency", "variance", "mu_gen", "mu_ref", "var_gen",
                                                            "var_ref")) + (
    "n_pieces_gen", "n_pieces_ref", "n_pairs_gen", "n_pairs_ref")


def framewise_oa(scores_gen, scores_ref, *, protocol: str = "published", window_bars: int = 4, hop_bars: int = 2,
                 empty_gen_as_zero: bool = False) -> dict:
    """Framewise OA consistency and variance of a generated set against a reference set.

    ``protocol`` (see `PROTOCOLS`):

    * "published" (SCHmUBERT's ``utils/eval_utils.py``, after Mittal et al. 2021): bars counted up to the
      bar of the last quantised note end; frames f = 0 … (bars − window)//hop − 1 covering bars
      [hop·f, hop·f + window); σ = population std + 1e-6; one value per piece = the mean OA of its
      consecutive frame pairs; a piece with no pair or with an empty frame is dropped.
    * "pooled": bars up to the last onset; every full window; σ floored at `SIGMA_FLOOR`; pairs with an
      empty window skipped; every pair of every piece is one value.

    ``empty_gen_as_zero``: generated pieces without notes are not dropped but contribute the value 0.0
    (one per-piece value, or one pair value), so empty samples count against a model.

    Returns, for attr in (pitch, duration): ``{attr}_consistency``, ``{attr}_variance`` (clipped to [0, 1]),
    ``{attr}_mu_gen``/``_mu_ref``, ``{attr}_var_gen``/``_var_ref`` (μ and population σ² of the values);
    ``n_pieces_gen``/``_ref`` (pieces that gave values), ``n_pairs_gen``/``_ref`` (frame pairs behind them;
    empty-as-zero pieces add none) and ``protocol``. ValueError when a set gives no value.
    """
    check_args(protocol, window_bars, hop_bars)
    window_bars, hop_bars = int(window_bars), int(hop_bars)
    g = _set_values(prepare(scores_gen, "scores_gen"), "scores_gen", protocol, window_bars, hop_bars,
                    empty_gen_as_zero)
    r = _set_values(prepare(scores_ref, "scores_ref"), "scores_ref", protocol, window_bars, hop_bars, False)
    out = {}
    for a in _ATTRS:
        mu_g, var_g = float(g[a].mean()), float(g[a].var())
        mu_r, var_r = float(r[a].mean()), float(r[a].var())
        out[f"{a}_consistency"] = consistency_score(mu_r, mu_g)
        out[f"{a}_variance"] = variance_score(var_r, var_g)
        out[f"{a}_mu_gen"], out[f"{a}_mu_ref"] = mu_g, mu_r
        out[f"{a}_var_gen"], out[f"{a}_var_ref"] = var_g, var_r
    out["n_pieces_gen"], out["n_pieces_ref"] = g["n_pieces"], r["n_pieces"]
    out["n_pairs_gen"], out["n_pairs_ref"] = g["n_pairs"], r["n_pairs"]
    out["protocol"] = protocol
    return out
