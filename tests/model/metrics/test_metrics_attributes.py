"""smdim.metrics.attributes: attribute values by hand, the KDE overlap, attribute OA and empty pieces."""
import numpy as np
import pytest

from metrics_helpers import Q, S16, TPQ, make_score, melody, phi, random_set, symusic
from smdim import metrics as M


def test_attribute_values_by_hand():
    # Bar 0: a 2-note chord (half note) then two quarters; bar 2: one note (bar 1 empty).
    notes = [(0, 2 * Q, 60, 90), (0, 2 * Q, 64, 90), (2 * Q, Q, 67, 70), (3 * Q, Q, 65, 70), (8 * Q, Q, 62, 50)]
    v = M.attribute_values(make_score(notes))
    assert sorted(v["pitch"].tolist()) == [60, 62, 64, 65, 67]
    assert sorted(v["duration"].tolist()) == [4, 4, 4, 8, 8]
    assert sorted(v["velocity"].tolist()) == [50, 70, 70, 90, 90]
    assert v["ioi"].tolist() == [8, 4, 20]
    assert v["notes_per_bar"].tolist() == [4, 0, 1]
    assert v["polyphony"].tolist() == [2, 1, 1, 1]
    assert all(x.size == 0 for x in M.attribute_values(symusic.Score(TPQ)).values())


def test_kde_overlap_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 4000)
    y = rng.normal(1, 1, 4000)
    # Large samples approach the exact Gaussian overlap 2Φ(−0.5) ≈ 0.617.
    assert M.kde_overlap(x, y) == pytest.approx(2 * phi(-0.5), abs=0.04)
    assert M.kde_overlap([5, 5, 5], [5, 5, 5]) == pytest.approx(1.0)  # zero spread: floored bandwidth
    assert M.kde_overlap([0, 0], [100, 100]) < 1e-6
    with pytest.raises(ValueError):
        M.kde_overlap([], [1])
    with pytest.raises(ValueError, match="bandwidth_floor"):
        M.kde_overlap([1], [1], bandwidth_floor=0)


def test_attribute_oa_self_is_one_and_disjoint_is_zero():
    ref = random_set(3, 8)
    same = M.attribute_oa(ref, ref)
    assert set(same) == set(M.ATTRIBUTES) | {"mean_oa"}
    for k, v in same.items():
        assert v == pytest.approx(1.0, abs=1e-9), k
    # Low, soft, monophonic 16ths vs high, loud, 6-note whole-note chords: nothing in common.
    low = [make_score(melody([30 + (i % 10) for i in range(64)], dur=S16, vel=20)) for _ in range(3)]
    high = [make_score([(b * 4 * Q, 4 * Q, 90 + k, 120) for b in range(8) for k in range(6)]) for _ in range(3)]
    for k, v in M.attribute_oa(low, high).items():
        assert v < 0.01, (k, v)
    mid = M.attribute_oa(random_set(4, 8, center=70), ref)
    assert 0.2 < mid["pitch"] < 0.9 and 0.0 < mid["mean_oa"] < 1.0
    # The mean is over the requested attributes only.
    two = M.attribute_oa(random_set(4, 8, center=70), ref, attributes=("pitch", "velocity"))
    assert set(two) == {"pitch", "velocity", "mean_oa"}
    assert two["mean_oa"] == pytest.approx((mid["pitch"] + mid["velocity"]) / 2)


def test_attribute_oa_empty_gen_as_zero():
    gen, ref = random_set(5, 6), random_set(6, 6)
    empty = symusic.Score(TPQ)
    base = M.attribute_oa(gen, ref)
    assert M.attribute_oa(gen + [empty, empty], ref) == base  # empty pieces add no values by default
    scaled = M.attribute_oa(gen + [empty, empty], ref, empty_gen_as_zero=True)
    for k in base:
        assert scaled[k] == pytest.approx(base[k] * 6 / 8), k
    assert M.attribute_oa(gen, ref, empty_gen_as_zero=True) == base  # no empty piece: unchanged
    zero = M.attribute_oa([empty], ref, empty_gen_as_zero=True)
    assert all(v == 0.0 for v in zero.values())
    with pytest.raises(ValueError, match="scores_gen holds no notes"):
        M.attribute_oa([empty], ref)


def test_attribute_oa_errors():
    with pytest.raises(ValueError, match="scores_ref"):
        M.attribute_oa(random_set(0, 1), [symusic.Score(TPQ)])
    with pytest.raises(ValueError, match="scores_ref"):
        M.attribute_oa(random_set(0, 1), [symusic.Score(TPQ)], empty_gen_as_zero=True)
    with pytest.raises(ValueError, match="attributes"):
        M.attribute_oa(random_set(0, 1), random_set(1, 1), attributes=("tempo",))
