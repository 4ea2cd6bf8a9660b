"""benchmarks/paired.py: side-by-side timing of two callables and the interval of a median ratio."""
import pytest

from benchmarks.paired import median, median_interval, time_paired
from benchmarks.settings import PAIRED_MIN_ROUNDS, BenchSettings


def test_median_interval_order_statistics():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0]
    assert median(values) == 3.5
    low, high, coverage = median_interval(values)  # n = 6: only the range reaches 95 %
    assert (low, high) == (1.0, 6.0) and coverage == pytest.approx(1 - 2 / 64)
    low, high, coverage = median_interval(list(range(10)))  # n = 10: x_(2), x_(9)
    assert (low, high) == (1, 8) and coverage == pytest.approx(1 - 2 * 11 / 1024)
    low, high, coverage = median_interval(list(range(30)))
    assert coverage >= 0.95 and median_interval(list(range(30)), level=0.99)[2] >= 0.99
    assert 0 < low < 14.5 < high < 29
    assert median_interval([2.0, 1.0, 3.0]) == (1.0, 3.0, pytest.approx(0.75))  # too few: the range, said so
    with pytest.raises(ValueError):
        median_interval([])


def test_time_paired_alternates_and_takes_per_round_ratios():
    clock = [0.0]
    calls = []

    def runner(name, seconds):
        def run():
            calls.append(name)
            clock[0] += seconds
        return run

    # the machine slows down 10x half way: each round's ratio stays 2, the medians of the times do not
    speed = iter([1.0] * 7 + [10.0] * 7)

    def slowing(name, seconds):
        def run():
            calls.append(name)
            clock[0] += seconds * next(speed)
        return run

    paired = time_paired(runner("a", 2.0), runner("b", 1.0), rounds=4, warmup_rounds=1, clock=lambda: clock[0])
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then A B, B A, ...
    assert (paired.ratio, paired.low, paired.high, paired.rounds) == (2.0, 2.0, 2.0, 4)
    assert (paired.first_ms, paired.second_ms) == (2000.0, 1000.0)
    calls.clear()
    paired = time_paired(slowing("a", 2.0), slowing("b", 1.0), rounds=6, warmup_rounds=1, clock=lambda: clock[0])
    assert paired.ratio == pytest.approx(2.0) and paired.high == pytest.approx(2.0) and len(calls) == 14
    info = paired.info()
    assert info["paired_ratio"] == 2.0 and info["paired_rounds"] == 6 and info["paired_coverage"] == 0.9688
    with pytest.raises(ValueError, match="rounds"):
        time_paired(runner("a", 1.0), runner("b", 1.0), rounds=0)


def test_paired_rounds_follow_the_budget():
    settings = BenchSettings.from_env(quick=False)
    assert settings.paired_rounds_for(10.0) == PAIRED_MIN_ROUNDS  # slow pairs: the minimum
    assert settings.paired_rounds_for(1e-4) == settings.max_rounds
    assert settings.paired_rounds_for(0.5) == int(2 * settings.time_budget_s / 0.5)
