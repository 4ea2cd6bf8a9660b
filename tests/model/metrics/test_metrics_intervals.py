"""smdim.metrics.intervals: bootstrap intervals, the paired bootstrap of a difference, real-vs-real."""
import numpy as np
import pytest

from metrics_helpers import random_set
from smdim import metrics as M


def mean_pitch_gap(g, r):
    return float(np.mean(np.concatenate([p.pitch for p in g])) - np.mean(np.concatenate([p.pitch for p in r])))


def test_bootstrap_ci_contains_point_and_is_deterministic():
    gen, ref = random_set(20, 12, center=66), random_set(21, 12)
    ci = M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=300, seed=5)
    assert isinstance(ci, M.CI) and ci.low < ci.value < ci.high and ci.n_boot == 300
    assert ci.value == pytest.approx(mean_pitch_gap(M.prepare(gen), M.prepare(ref)))
    assert M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=300, seed=5) == ci
    assert M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=300, seed=6) != ci
    fixed = M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=300, seed=5, resample_ref=False)
    assert fixed.half_width < ci.half_width  # only gen varies

    cis = M.bootstrap_ci(M.attribute_oa, gen, ref, n_boot=100, seed=1)
    assert cis["pitch"].contains(cis["pitch"].value) and cis["mean_oa"].low < cis["mean_oa"].high
    assert cis == M.bootstrap_ci(M.attribute_oa, gen, ref, n_boot=100, seed=1)
    fw = M.bootstrap_ci(M.framewise_oa, gen, ref, n_boot=50, seed=1)
    assert fw["pitch_mu_gen"].contains(fw["pitch_mu_gen"].value) and "protocol" not in fw  # strings are skipped
    # One-set metrics: ref=None.
    one = M.bootstrap_ci(lambda g: M.pitch_outlier_rate(g, 55, 75), gen, n_boot=50, seed=0)
    assert one["note_rate"].low <= one["note_rate"].value <= one["note_rate"].high
    with pytest.raises(ValueError, match="gen is empty"):
        M.bootstrap_ci(M.attribute_oa, [], ref)
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_ci(mean_pitch_gap, gen, ref, n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_ci(mean_pitch_gap, gen, ref, alpha=1.5)


def test_bootstrap_ci_drops_failing_replicates_and_passes_other_items():
    def needs_three(items):
        if len(set(items)) < 3:
            raise ValueError("too few distinct items")
        return float(np.mean(items))

    ci = M.bootstrap_ci(needs_three, [1.0, 2.0, 3.0], n_boot=200, seed=0)
    assert 0 < ci.n_boot < 200 and ci.low == ci.high == ci.value == 2.0  # only the full permutations survive

    def bits(items):  # (nats, tokens) tuples pass through unchanged
        return sum(n for n, _ in items) / sum(t for _, t in items)

    pairs = [(10.0, 5), (3.0, 3), (8.0, 2)]
    assert M.bootstrap_ci(bits, pairs, n_boot=20).value == pytest.approx(21 / 10)


# ---------------------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------------------
def mean_of(items, ref=None):
    return float(np.mean(items)) - (0.0 if ref is None else float(np.mean(ref)))


def test_paired_identical_sets_give_exactly_zero():
    x = list(np.random.default_rng(0).normal(0, 1, 40))
    ci = M.paired_bootstrap_ci(mean_of, x, x, n_boot=200)
    assert (ci.value, ci.low, ci.high) == (0.0, 0.0, 0.0) and ci.n_boot == 200
    # With a reference: one index vector for ref serves both sides, so the difference is still exactly 0.
    ref = list(np.random.default_rng(1).normal(0, 1, 30))
    ci = M.paired_bootstrap_ci(mean_of, x, x, ref, n_boot=200)
    assert (ci.value, ci.low, ci.high) == (0.0, 0.0, 0.0)


def test_paired_shift_gives_the_shift():
    x = np.random.default_rng(2).normal(0, 1, 50)
    ci = M.paired_bootstrap_ci(mean_of, list(x + 0.3), list(x), n_boot=300, seed=3)
    assert ci.value == pytest.approx(0.3) and ci.low == pytest.approx(0.3) and ci.high == pytest.approx(0.3)


def test_pairing_narrows_the_interval_on_correlated_data():
    rng = np.random.default_rng(4)
    shared = rng.normal(0, 1, 60)  # the part both models share (e.g. the same mask / reference)
    a = list(shared + 0.2 + rng.normal(0, 0.1, 60))
    b = list(shared + rng.normal(0, 0.1, 60))
    paired = M.paired_bootstrap_ci(mean_of, a, b, n_boot=500, seed=0)
    independent = M.bootstrap_ci(lambda g, r: mean_of(g) - mean_of(r), a, b, n_boot=500, seed=0)
    assert paired.value == pytest.approx(independent.value)
    assert paired.contains(paired.value) and paired.low > 0.1  # the gain is resolved
    assert paired.half_width < 0.3 * independent.half_width
    assert independent.low < 0.0  # resampled independently, the shared spread hides it


def test_paired_dict_metrics_scores_and_errors():
    gen_a, gen_b, ref = random_set(30, 6, center=66), random_set(31, 6), random_set(32, 6)
    cis = M.paired_bootstrap_ci(M.attribute_oa, gen_a, gen_b, ref, n_boot=40, seed=0)
    want = {k: M.attribute_oa(gen_a, ref)[k] - M.attribute_oa(gen_b, ref)[k] for k in cis}
    assert set(cis) == set(M.ATTRIBUTES) | {"mean_oa"}
    assert all(cis[k].value == pytest.approx(v) for k, v in want.items())
    assert cis == M.paired_bootstrap_ci(M.attribute_oa, gen_a, gen_b, ref, n_boot=40, seed=0)

    def partly(items):  # keys present in one result only, and a string, are left out
        out = {"m": mean_of(items), "name": "x"}
        if len(items) and items[0] > 0:
            out["extra"] = 1.0
        return out

    d = M.paired_bootstrap_ci(partly, [1.0, 2.0, 3.0], [-1.0, 0.0, 1.0], n_boot=50)
    assert set(d) == {"m"} and d["m"].value == pytest.approx(2.0)

    def strict(items):
        if len(set(items)) < 3:
            raise ValueError("too few")
        return mean_of(items)

    kept = M.paired_bootstrap_ci(strict, [1.0, 2.0, 3.0], [0.0, 1.0, 2.0], n_boot=100)
    assert 0 < kept.n_boot < 100 and kept.value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="paired"):
        M.paired_bootstrap_ci(mean_of, [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="gen_b is empty"):
        M.paired_bootstrap_ci(mean_of, [1.0], [])


# ---------------------------------------------------------------------------------------------------------
# Real vs real
# ---------------------------------------------------------------------------------------------------------
def test_real_vs_real_uses_disjoint_halves():
    ref = random_set(30, 10)

    def shared(a, b):
        return float(len({id(x) for x in a} & {id(x) for x in b})) + 10 * len(a) + 1000 * len(b)

    assert M.real_vs_real(ref, 5, seed=0, metric_fn=shared) == 5 * 10 + 5 * 1000  # no piece shared
    r1 = M.real_vs_real(ref, 5, seed=3)
    assert r1 == M.real_vs_real(ref, 5, seed=3) and "mean_oa" in r1 and "pitch_variance" in r1
    band = M.real_vs_real(ref, 4, seed=3, n_boot=20)
    assert isinstance(band["mean_oa"], M.CI) and band["mean_oa"].value == M.real_vs_real(ref, 4, seed=3)["mean_oa"]
    with pytest.raises(ValueError, match="ref_scores holds 10 pieces"):
        M.real_vs_real(ref, 6)
    with pytest.raises(ValueError, match="n must be >= 1"):
        M.real_vs_real(ref, 0)
