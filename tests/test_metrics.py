"""smdim.metrics: Gaussian overlap, framewise OA, attribute OA, bootstrap / real-vs-real, failure-mode rates,
copy rate and the table helper — on hand-made scores with hand-computed expectations."""
import math
import os
import re
import statistics
import time

import numpy as np
import pytest

symusic = pytest.importorskip("symusic")

from smdim import metrics as M  # noqa: E402

TPQ = 480
Q = TPQ  # one quarter note in ticks
S16 = TPQ // 4  # one 16th note in ticks


def make_score(notes, *, tpq=TPQ, ts=None, drum=(), program=0):
    """notes: iterable of (time, duration, pitch, velocity) in ticks; ts: [(time, num, den), ...]."""
    s = symusic.Score(tpq)
    t = symusic.Track(program=program)
    for time_, dur, pitch, vel in notes:
        t.notes.append(symusic.Note(int(time_), int(dur), int(pitch), int(vel)))
    s.tracks.append(t)
    if drum:
        d = symusic.Track(program=0, is_drum=True)
        for time_, dur, pitch, vel in drum:
            d.notes.append(symusic.Note(int(time_), int(dur), int(pitch), int(vel)))
        s.tracks.append(d)
    for time_, num, den in ts or ():
        s.time_signatures.append(symusic.TimeSignature(int(time_), int(num), int(den)))
    return s


def melody(pitches, dur=Q, vel=80, start=0):
    """One note after the other, each `dur` ticks long."""
    return [(start + i * dur, dur, p, vel) for i, p in enumerate(pitches)]


def random_piece(rng, bars=16, center=64, spread=5, vel=(60, 100)):
    """A random 4/4 melody of eighth and quarter notes, occasionally with a second voice."""
    notes, t = [], 0
    while t < bars * 4 * Q:
        d = int(rng.choice([Q // 2, Q, Q, 2 * Q]))
        p = int(np.clip(rng.normal(center, spread), 0, 127))
        v = int(rng.integers(*vel))
        notes.append((t, d, p, v))
        if rng.random() < 0.15:
            notes.append((t, d, max(0, p - 4), v))
        t += d
    return make_score(notes)


def random_set(seed, n, **kw):
    rng = np.random.default_rng(seed)
    return [random_piece(rng, **kw) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------
# Gaussian overlap
# ---------------------------------------------------------------------------------------------------------
def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_gaussian_overlap_hand_values():
    assert M.gaussian_overlap(3.0, 2.0, 3.0, 2.0) == pytest.approx(1.0, abs=1e-12)
    assert M.gaussian_overlap(0.0, 1.0, 100.0, 1.0) == pytest.approx(0.0, abs=1e-12)
    # Equal sigmas: the densities cross at the midpoint, OA = 2 Φ(−|Δμ| / 2σ).
    assert M.gaussian_overlap(0.0, 1.0, 1.0, 1.0) == pytest.approx(2 * phi(-0.5), abs=1e-12)
    # N(0, 1) vs N(0, 2²): crossings at ±x0 with x0² = 8 ln 2 / 3; the wide one is lower inside.
    x0 = math.sqrt(8 * math.log(2) / 3)
    expected = (2 * phi(x0 / 2) - 1) + 2 * (1 - phi(x0))
    assert M.gaussian_overlap(0.0, 1.0, 0.0, 2.0) == pytest.approx(expected, abs=1e-12)
    assert M.gaussian_overlap(0.0, 2.0, 0.0, 1.0) == pytest.approx(expected, abs=1e-12)  # symmetric


def test_gaussian_overlap_matches_statistics_normaldist():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(0, 3, 200), rng.normal(0, 3, 200)
    s1, s2 = rng.uniform(0.1, 4, 200), rng.uniform(0.1, 4, 200)
    s2[:20] = s1[:20]  # equal sigmas
    s2[20:40] = s1[20:40] * (1 + 1e-9)  # nearly equal sigmas
    got = M.gaussian_overlap(mu1, s1, mu2, s2)
    want = [statistics.NormalDist(a, b).overlap(statistics.NormalDist(c, d)) for a, b, c, d in zip(mu1, s1, mu2, s2)]
    np.testing.assert_allclose(got, want, atol=1e-7)
    with pytest.raises(ValueError, match="sigma"):
        M.gaussian_overlap(0.0, 0.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Notes, bars, framewise OA
# ---------------------------------------------------------------------------------------------------------
def test_piece_extraction_skips_drums_and_uses_time_signatures():
    s = make_score(melody([60, 62]), drum=[(0, Q, 36, 100)] * 3)
    p = M.Piece.from_score(s)
    assert len(p) == 2 and list(p.pitch) == [60, 62]
    assert list(p.ts_num) == [4] and list(p.ts_den) == [4]  # default 4/4
    # 3/4: a bar is 3 quarters; 16th grid rounds a one-tick offset away.
    s34 = make_score([(1, Q - 1, 60, 80), (3 * Q + 1, Q, 62, 80), (6 * Q, Q, 64, 80)], ts=[(0, 3, 4)])
    p34 = M.Piece.from_score(s34)
    assert list(p34.bars) == [0, 1, 2] and list(p34.onset16) == [0, 12, 24] and list(p34.duration16) == [4, 4, 4]
    # 4/4 for two bars, then 3/8 (6 sixteenths a bar).
    ch = make_score([(0, Q, 60, 80), (8 * Q, Q, 60, 80), (8 * Q + 3 * Q, Q, 60, 80), (8 * Q + 3 * Q // 2, 1, 60, 80)],
                    ts=[(0, 4, 4), (8 * Q, 3, 8)])
    assert sorted(M.Piece.from_score(ch).bars.tolist()) == [0, 2, 3, 4]
    # Quarter-time scores are converted to ticks.
    assert len(M.Piece.from_score(s.to("quarter"))) == 2


def test_constant_piece_has_framewise_oa_one():
    s = make_score(melody([60] * 64))  # 16 bars of quarter-note C4
    r = M.piece_framewise_oa(s)
    assert r["n_pairs"] == 6  # windows start at bars 0, 2, …, 12
    assert r["pitch"] == pytest.approx(1.0) and r["duration"] == pytest.approx(1.0)


def test_octave_jump_lowers_pitch_oa():
    rng = np.random.default_rng(1)
    base = list(60 + rng.integers(-2, 3, 64))
    steady = M.piece_framewise_oa(make_score(melody(base)))
    jump = M.piece_framewise_oa(make_score(melody(base[:32] + [p + 12 for p in base[32:]])))
    assert jump["pitch"] < steady["pitch"] - 0.2
    assert jump["duration"] == pytest.approx(steady["duration"])  # durations did not change
    # Windows start at bars 0, 2, …, 12; the jump is at bar 8. Pairs (2,3) and (3,4) straddle it and drop;
    # the others are the steady piece's (OA does not change when both windows shift by an octave).
    low = jump["pitch_values"] < steady["pitch_values"] - 0.3
    assert low.tolist() == [False, False, True, True, False, False]
    np.testing.assert_allclose(jump["pitch_values"][~low], steady["pitch_values"][~low])


def test_window_gaussians_by_hand():
    # 6 bars of 4/4: windows [0, 4) and [2, 6) — one pair. Bars hold quarter notes of known pitch.
    bars = [[60, 60, 62, 62], [64, 64, 64, 64], [60, 62, 64, 65], [67, 67, 67, 67], [70, 70, 72, 72], [60, 60, 60, 60]]
    pitches = [p for b in bars for p in b]
    r = M.piece_framewise_oa(make_score(melody(pitches)))
    w1 = pitches[0:16]
    w2 = pitches[8:24]
    d1 = statistics.NormalDist(np.mean(w1), np.std(w1))
    d2 = statistics.NormalDist(np.mean(w2), np.std(w2))
    assert r["n_pairs"] == 1
    assert r["pitch"] == pytest.approx(d1.overlap(d2), abs=1e-9)
    assert r["duration"] == pytest.approx(1.0)  # all quarter notes: floored sigmas, same mean
    # Fewer than window + hop bars: no pair.
    assert M.piece_framewise_oa(make_score(melody(pitches[:20])))["n_pairs"] == 0


def test_sigma_floor_is_used_for_constant_windows():
    # Window 1: all 60; window 2: all 61 (two bars each, window_bars=2, hop=2).
    s = make_score(melody([60] * 8 + [61] * 8))
    r = M.piece_framewise_oa(s, window_bars=2, hop_bars=2)
    f = M.SIGMA_FLOOR
    assert r["pitch"] == pytest.approx(statistics.NormalDist(60, f).overlap(statistics.NormalDist(61, f)))
    assert r["pitch"] == pytest.approx(2 * phi(-math.sqrt(3)), abs=1e-9)


def test_consistency_and_variance_formulas():
    assert M.consistency_score(0.8, 0.6) == pytest.approx(0.75)
    assert M.consistency_score(0.8, 1.0) == pytest.approx(0.75)
    assert M.variance_score(0.02, 0.015) == pytest.approx(0.75)
    assert M.variance_score(0.02, 0.05) == 0.0  # clipped
    assert M.variance_score(0.0, 0.0) == 1.0 and M.variance_score(0.0, 0.1) == 0.0


@pytest.mark.parametrize("pooling", ["pairs", "pieces"])
def test_framewise_oa_set_scores_by_hand(pooling):
    gen, ref = random_set(10, 6), random_set(11, 7, spread=3)
    out = M.framewise_oa(gen, ref, pooling=pooling)
    for attr in ("pitch", "duration"):
        per = {name: [M.piece_framewise_oa(s) for s in sset] for name, sset in (("gen", gen), ("ref", ref))}
        if pooling == "pairs":
            vals = {k: np.concatenate([p[attr + "_values"] for p in v]) for k, v in per.items()}
        else:
            vals = {k: np.array([p[attr] for p in v]) for k, v in per.items()}
        mg, mr = vals["gen"].mean(), vals["ref"].mean()
        vg, vr = vals["gen"].var(), vals["ref"].var()
        assert out[f"{attr}_mu_gen"] == pytest.approx(mg) and out[f"{attr}_var_ref"] == pytest.approx(vr)
        assert out[f"{attr}_consistency"] == pytest.approx(max(0.0, 1 - abs(mr - mg) / mr))
        assert out[f"{attr}_variance"] == pytest.approx(min(1.0, max(0.0, 1 - abs(vr - vg) / vr)))
        assert out[f"{attr}_piece_mean_gen"] == pytest.approx(np.mean([p[attr] for p in per["gen"]]))
    same = M.framewise_oa(ref, ref, pooling=pooling)
    assert same["pitch_consistency"] == 1.0 and same["duration_variance"] == 1.0


def test_framewise_oa_errors_name_the_argument():
    good = random_set(0, 2)
    with pytest.raises(ValueError, match="scores_gen is empty"):
        M.framewise_oa([], good)
    with pytest.raises(ValueError, match="scores_ref"):
        M.framewise_oa(good, [make_score(melody([60] * 4))])  # too short for any window pair
    with pytest.raises(TypeError, match="scores_ref"):
        M.framewise_oa(good, [1, 2])


# ---------------------------------------------------------------------------------------------------------
# Attribute OA
# ---------------------------------------------------------------------------------------------------------
def test_attribute_values_by_hand():
    # Bar 0: a 2-note chord (half note) then two quarters; bar 2: one note (bar 1 empty).
    notes = [(0, 2 * Q, 60, 90), (0, 2 * Q, 64, 90), (2 * Q, Q, 67, 70), (3 * Q, Q, 65, 70), (8 * Q, Q, 62, 50)]
    v = M.attribute_values(make_score(notes))
    assert sorted(v["pitch"].tolist()) == [60, 62, 64, 65, 67]
    assert sorted(v["duration"].tolist()) == [4, 4, 4, 8, 8]
    assert v["ioi"].tolist() == [8, 4, 20]
    assert v["notes_per_bar"].tolist() == [4, 0, 1]
    assert v["polyphony"].tolist() == [2, 1, 1, 1]


def test_attribute_oa_self_is_one_and_disjoint_is_zero():
    ref = random_set(3, 8)
    same = M.attribute_oa(ref, ref)
    assert set(same) == set(M.ATTRIBUTES) | {"mean_oa"}
    for k, v in same.items():
        assert v == pytest.approx(1.0, abs=1e-9), k
    # Low, soft, monophonic 16ths vs high, loud, 6-note whole-note chords: nothing in common.
    low = [make_score(melody([30 + (i % 10) for i in range(64)], dur=S16, vel=20)) for _ in range(3)]
    high = [make_score([(b * 4 * Q, 4 * Q, 90 + k, 120) for b in range(8) for k in range(6)]) for _ in range(3)]
    dis = M.attribute_oa(low, high)
    for k, v in dis.items():
        assert v < 0.01, (k, v)
    mid = M.attribute_oa(random_set(4, 8, center=70), ref)
    assert 0.2 < mid["pitch"] < 0.9 and 0.0 < mid["mean_oa"] < 1.0


def test_kde_overlap_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 4000)
    y = rng.normal(1, 1, 4000)
    # Large samples approach the exact Gaussian overlap 2Φ(−0.5) ≈ 0.617.
    assert M.kde_overlap(x, y) == pytest.approx(2 * phi(-0.5), abs=0.04)
    assert M.kde_overlap([5, 5, 5], [5, 5, 5]) == pytest.approx(1.0)  # zero spread: floored bandwidth
    with pytest.raises(ValueError):
        M.kde_overlap([], [1])


def test_attribute_oa_errors():
    with pytest.raises(ValueError, match="scores_ref"):
        M.attribute_oa(random_set(0, 1), [symusic.Score(TPQ)])
    with pytest.raises(ValueError, match="attributes"):
        M.attribute_oa(random_set(0, 1), random_set(1, 1), attributes=("tempo",))


# ---------------------------------------------------------------------------------------------------------
# Bootstrap and real-vs-real
# ---------------------------------------------------------------------------------------------------------
def test_bootstrap_ci_contains_point_and_is_deterministic():
    gen, ref = random_set(20, 12, center=66), random_set(21, 12)

    def mean_pitch_gap(g, r):
        return float(np.mean(np.concatenate([p.pitch for p in g])) - np.mean(np.concatenate([p.pitch for p in r])))

    ci = M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=300, seed=5)
    assert isinstance(ci, M.CI) and ci.low < ci.value < ci.high and ci.n_boot == 300
    assert M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=300, seed=5) == ci
    assert M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=300, seed=6) != ci

    cis = M.bootstrap_ci(M.attribute_oa, gen, ref, n_boot=100, seed=1)
    assert cis["pitch"].contains(cis["pitch"].value) and cis["mean_oa"].low < cis["mean_oa"].high
    assert cis == M.bootstrap_ci(M.attribute_oa, gen, ref, n_boot=100, seed=1)
    fw = M.bootstrap_ci(M.framewise_oa, gen, ref, n_boot=50, seed=1)
    assert fw["pitch_mu_gen"].contains(fw["pitch_mu_gen"].value)
    # One-set metrics: ref=None.
    one = M.bootstrap_ci(lambda g: M.pitch_outlier_rate(g, 55, 75), gen, n_boot=50, seed=0)
    assert one["note_rate"].low <= one["note_rate"].value <= one["note_rate"].high
    with pytest.raises(ValueError, match="gen is empty"):
        M.bootstrap_ci(M.attribute_oa, [], ref)


def test_real_vs_real_uses_disjoint_halves():
    ref = random_set(30, 10)

    def shared(a, b):
        return float(len({id(x) for x in a} & {id(x) for x in b})) + 10 * len(a) + 1000 * len(b)

    assert M.real_vs_real(ref, 5, seed=0, metric_fn=shared) == 5 * 10 + 5 * 1000  # no piece shared
    r1 = M.real_vs_real(ref, 5, seed=3)
    assert r1 == M.real_vs_real(ref, 5, seed=3) and "mean_oa" in r1 and "pitch_variance" in r1
    band = M.real_vs_real(ref, 4, seed=3, n_boot=20)
    assert isinstance(band["mean_oa"], M.CI)
    with pytest.raises(ValueError, match="ref_scores holds 10 pieces"):
        M.real_vs_real(ref, 6)


# ---------------------------------------------------------------------------------------------------------
# Failure modes, copy rate, table
# ---------------------------------------------------------------------------------------------------------
def test_pitch_outlier_rate():
    a = make_score(melody([20, 60, 64, 110, 21, 108]))
    b = make_score(melody([60, 62]))
    r = M.pitch_outlier_rate([a, b], 21, 108)  # bounds are inclusive
    assert r["note_rate"] == pytest.approx(2 / 8) and r["piece_rate"] == 0.5 and r["n_outliers"] == 2
    assert M.pitch_outlier_rate([b], 0, 127)["piece_rate"] == 0.0
    with pytest.raises(ValueError, match="scores is empty"):
        M.pitch_outlier_rate([], 0, 127)


def test_polyphony_and_dense_chords():
    # t=0: a 4-note chord lasting 2 quarters; t=Q: 2 notes (1 quarter); t=2Q: one note.
    notes = [(0, 2 * Q, p, 80) for p in (60, 64, 67, 72)] + [(Q, Q, 50, 80), (Q, Q, 55, 80), (2 * Q, Q, 62, 80)]
    s = make_score(notes)
    assert M.max_polyphony(s) == 6 and M.max_polyphony(s, mode="onset") == 4
    on = M.dense_chord_rate([s], 3)  # onsets with more than 3 notes starting: t=0 only
    assert on["onset_rate"] == pytest.approx(1 / 3) and on["piece_rate"] == 1.0 and on["max"] == 4
    snd = M.dense_chord_rate([s], 3, mode="sounding")  # sounding: 4, 6, 1
    assert snd["onset_rate"] == pytest.approx(2 / 3) and snd["max"] == 6
    calm = make_score(melody([60, 62, 64]))
    both = M.dense_chord_rate([s, calm], 3)
    assert both["onset_rate"] == pytest.approx(1 / 6) and both["piece_rate"] == 0.5
    with pytest.raises(ValueError, match="mode"):
        M.dense_chord_rate([s], 3, mode="bogus")


def test_copy_rate():
    rng = np.random.default_rng(0)
    train = [rng.integers(2, 300, int(rng.integers(100, 300))) for _ in range(20)]
    assert M.copy_rate([train[3]], train) == 1.0
    padded = np.concatenate([train[5][:80], np.zeros(40, dtype=np.int64)])  # PAD windows are left out
    assert M.copy_rate([padded], train, ignore_ids=(0,)) == 1.0
    fresh = [rng.integers(2, 300, 200) for _ in range(5)]
    assert M.copy_rate(fresh, train) < 0.01
    half = [np.concatenate([train[1][:100], fresh[0][:100]])]
    assert 0.3 < M.copy_rate(half, train) < 0.7
    torch = pytest.importorskip("torch")
    batch = torch.tensor(np.stack([train[0][:64], train[1][:64]]))
    assert M.copy_rate(batch, train, n=8) == 1.0
    with pytest.raises(ValueError, match="gen_token_seqs"):
        M.copy_rate([[1, 2, 3]], train)
    with pytest.raises(ValueError, match="train_token_seqs is empty"):
        M.copy_rate(fresh, [])


def test_invalid_token_rate():
    miditok = pytest.importorskip("miditok")
    tok = miditok.REMI(miditok.TokenizerConfig(use_programs=True, one_token_stream_for_programs=True))
    seq = tok.encode(make_score(melody([60, 62, 64, 65] * 4)))
    ids = (seq[0] if isinstance(seq, list) else seq).ids
    assert M.invalid_token_rate(tok, [ids, ids + [tok.pad_token_id] * 8]) == 0.0
    noise = np.random.default_rng(0).integers(len(tok.special_tokens), len(tok), 300)
    assert M.invalid_token_rate(tok, [noise]) > 0.3


def test_format_table():
    rows = {
        "mean OA": {"ours": M.CI(0.8123, 0.79, 0.83), "baseline": (0.75, 0.70, 0.80), "real-vs-real": 0.97},
        "pitch | var": {"ours": float("nan"), "baseline": None, "real-vs-real": 3},
    }
    t = M.format_table(rows)
    lines = t.splitlines()
    assert lines[0] == "| metric | ours | baseline | real-vs-real |"
    assert lines[1] == "| --- | --- | --- | --- |"
    assert lines[2] == "| mean OA | 0.812 ± 0.020 | 0.750 ± 0.050 | 0.970 |"
    assert lines[3] == "| pitch \\| var | — | — | 3 |"
    assert "0.812 [0.790, 0.830]" in M.format_table(rows, style="interval")
    assert M.format_table([{"a": 1.0}], digits=1) == "| a |\n| --- |\n| 1.0 |"


def test_midi_paths_are_accepted(tmp_path):
    s = make_score(melody([60, 62, 64, 65] * 8))
    path = tmp_path / "x.mid"
    s.dump_midi(str(path))
    assert M.pitch_outlier_rate([path], 61, 127)["n_outliers"] == 8
    with pytest.raises(ValueError, match="cannot read"):
        bad = tmp_path / "bad.mid"
        bad.write_bytes(b"not midi")
        M.prepare([bad], "scores_gen")


# ---------------------------------------------------------------------------------------------------------
# The Han corpus figures of DESIGN §5 (measurement; prints the figures)
# ---------------------------------------------------------------------------------------------------------
def load_han_scores():
    music21 = pytest.importorskip("music21")
    folder = os.path.join(os.path.dirname(music21.__file__), "corpus", "essenFolksong")
    files = [os.path.join(folder, f) for f in ("han1.abc", "han2.abc")]
    if not all(os.path.exists(f) for f in files):
        pytest.skip("music21's Essen Han corpus is not installed")
    scores = []
    for f in files:
        with open(f, encoding="latin-1") as fh:
            text = fh.read()
        for tune in re.split(r"(?m)^(?=X:)", text):
            if not tune.startswith("X:"):
                continue
            try:
                s = symusic.Score.from_abc(tune)
            except Exception:  # noqa: BLE001 - a tune symusic cannot parse is skipped
                continue
            if s.note_num():
                scores.append(s)
    return scores


@pytest.mark.slow
def test_han_corpus_figures(capsys):
    scores = load_han_scores()
    assert len(scores) > 1200
    t0 = time.perf_counter()
    pieces = M.prepare(scores)
    fw = M.framewise_oa(pieces, pieces)
    rvr = M.real_vs_real(pieces, 200, seed=0)
    rvr_pieces = M.real_vs_real(pieces, 200, seed=0, metric_fn=lambda a, b: M.framewise_oa(a, b, pooling="pieces"))
    elapsed = time.perf_counter() - t0
    t1 = time.perf_counter()
    cold = M.compare(M.prepare(scores[:200]), M.prepare(scores[200:400]))
    cold_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    band = M.real_vs_real(pieces, 200, seed=0, n_boot=200)
    boot_s = time.perf_counter() - t2
    with capsys.disabled():
        print(
            f"\nHan corpus: {len(scores)} tunes; per-piece mean OA pitch {fw['pitch_piece_mean_ref']:.4f} "
            f"duration {fw['duration_piece_mean_ref']:.4f} (pooled pairs: {fw['pitch_mu_ref']:.4f} / "
            f"{fw['duration_mu_ref']:.4f})\n"
            f"real-vs-real 200v200 seed 0, pooling=pairs: variance pitch {rvr['pitch_variance']:.3f} duration "
            f"{rvr['duration_variance']:.3f}, consistency {rvr['pitch_consistency']:.3f} / "
            f"{rvr['duration_consistency']:.3f}, mean attribute OA {rvr['mean_oa']:.3f}\n"
            f"  pooling=pieces: variance pitch {rvr_pieces['pitch_variance']:.3f} duration "
            f"{rvr_pieces['duration_variance']:.3f}\n"
            f"  bootstrap (200) pitch_variance {band['pitch_variance'].format(style='interval')}, "
            f"duration_variance {band['duration_variance'].format(style='interval')}, "
            f"mean_oa {band['mean_oa'].format(style='interval')}\n"
            f"timing: all-corpus metrics {elapsed:.2f} s, compare 200v200 from Scores {cold_s:.2f} s, "
            f"200 bootstrap replicates {boot_s:.2f} s"
        )
    assert fw["pitch_piece_mean_ref"] == pytest.approx(0.814, abs=0.01)  # DESIGN §5
    assert fw["duration_piece_mean_ref"] == pytest.approx(0.832, abs=0.02)
    assert cold_s < 10.0
