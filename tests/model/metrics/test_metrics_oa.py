"""smdim.metrics.oa: `compare` bundles framewise and attribute OA; the Han corpus figures."""
import math

import pytest

from metrics_helpers import load_han_scores, make_score, melody, random_set, symusic
from smdim import metrics as M


def test_compare_is_framewise_plus_attribute_oa():
    gen, ref = random_set(1, 5), random_set(2, 5)
    out = M.compare(gen, ref)
    fw, att = M.framewise_oa(gen, ref), M.attribute_oa(gen, ref)
    assert {k: out[k] for k in fw} == fw and out["protocol"] == "published"
    assert out["mean_oa"] == att["mean_oa"]
    assert all(out["oa_" + a] == att[a] for a in M.ATTRIBUTES)
    assert set(out) == set(fw) | {"oa_" + a for a in M.ATTRIBUTES} | {"mean_oa"}


def test_compare_routes_keywords():
    gen, ref = random_set(1, 5), random_set(2, 5)
    out = M.compare(gen, ref, protocol="pooled", attributes=("pitch",), bandwidth_floor=1.0)
    assert out["protocol"] == "pooled" and "oa_duration" not in out
    assert out["pitch_variance"] == M.framewise_oa(gen, ref, protocol="pooled")["pitch_variance"]
    assert out["oa_pitch"] == M.attribute_oa(gen, ref, attributes=("pitch",), bandwidth_floor=1.0)["pitch"]
    empty = symusic.Score(480)
    z = M.compare(gen + [empty], ref, empty_gen_as_zero=True)  # goes to both
    assert z["n_pieces_gen"] == 6 and z["mean_oa"] == pytest.approx(M.compare(gen, ref)["mean_oa"] * 5 / 6)
    with pytest.raises(TypeError, match="protocol="):
        M.compare(gen, ref, pooling="pieces")
    with pytest.raises(TypeError, match="bogus"):
        M.compare(gen, ref, bogus=1)


def test_compare_with_several_protocols():
    gen, ref = random_set(1, 5), random_set(2, 5)
    out = M.compare(gen, ref, protocols=("published", "pooled"), empty_gen_as_zero=True)
    for p in ("published", "pooled"):
        fw = M.framewise_oa(gen, ref, protocol=p, empty_gen_as_zero=True)
        assert {k: out[f"{p}_{k}"] for k in M.FRAMEWISE_KEYS} == {k: fw[k] for k in M.FRAMEWISE_KEYS}
    assert "protocol" not in out and "pitch_variance" not in out and "mean_oa" in out
    assert set(M.FRAMEWISE_KEYS) == {k for k, v in M.framewise_oa(gen, ref).items() if k != "protocol"}
    with pytest.raises(TypeError, match="either"):
        M.compare(gen, ref, protocols=("pooled",), protocol="pooled")
    with pytest.raises(ValueError, match="protocol must be one of"):
        M.compare(gen, ref, protocols=("pairs",))


def test_compare_reports_nan_framewise_when_pieces_are_too_short():
    # 27 quarter notes, ending inside bar 6: one window pair under "pooled" (windows at bars 0 and 2), one
    # frame under "published" ((7 − 4)//2 = 1) and so no pair.
    short = [make_score(melody([60 + (i % 7) for i in range(27)])) for _ in range(3)]
    with pytest.raises(ValueError, match="published"):
        M.framewise_oa(short, short)
    out = M.compare(short, short, protocols=("published", "pooled"))
    assert all(math.isnan(out[f"published_{k}"]) for k in M.FRAMEWISE_KEYS)
    assert out["pooled_pitch_consistency"] == 1.0 and out["mean_oa"] == pytest.approx(1.0)
    assert math.isnan(M.compare(short, short)["pitch_variance"])


@pytest.mark.slow
def test_han_corpus_figures(capsys):
    scores = load_han_scores()
    assert len(scores) > 1200
    pieces = M.prepare(scores)
    fw = M.framewise_oa(pieces, pieces)
    pooled = M.framewise_oa(pieces, pieces, protocol="pooled")
    rvr = M.real_vs_real(pieces, 200, seed=0)
    with capsys.disabled():
        print(f"\nHan corpus: {len(scores)} tunes; published per-piece mean OA pitch {fw['pitch_mu_ref']:.4f} "
              f"duration {fw['duration_mu_ref']:.4f} ({fw['n_pieces_ref']} pieces); pooled pairs "
              f"{pooled['pitch_mu_ref']:.4f} / {pooled['duration_mu_ref']:.4f}; real-vs-real 200v200: pitch "
              f"variance {rvr['pitch_variance']:.3f}, duration variance {rvr['duration_variance']:.3f}, "
              f"mean attribute OA {rvr['mean_oa']:.3f}")
    assert fw["pitch_mu_ref"] == pytest.approx(0.816, abs=0.01)
    assert fw["duration_mu_ref"] == pytest.approx(0.842, abs=0.02)
    assert 0.9 < rvr["mean_oa"] <= 1.0
    # Pieces extracted afresh and pieces whose caches are already filled give the same values.
    fresh = M.compare(M.prepare(scores[:200]), M.prepare(scores[200:400]))
    cached = M.compare(pieces[:200], pieces[200:400])
    assert fresh == cached
