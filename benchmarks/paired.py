"""Two callables timed side by side: alternating rounds in one process, and the ratio of their times
with a distribution-free interval.

On a shared, noisy machine the speed of the whole box drifts by tens of percent over minutes, so two
cases timed one after the other (pytest-benchmark's way) can disagree by more than the difference
being measured. Here round i times both callables back to back, the first one alternating (A B, B A,
...), so a drift hits both alike; the ratio of the round's two times is one sample, and the median of
those samples comes with the order-statistics interval of a median (no assumption about their
distribution).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

INTERVAL_LEVEL = 0.95


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def median_interval(values: Sequence[float], level: float = INTERVAL_LEVEL) -> Tuple[float, float, float]:
    """(low, high, coverage): the order statistics (x_(k), x_(n+1-k)) around the median with the
    largest k whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is still >= level; with too few values
    for that (n <= 5 at 95 %), the range (k = 1) and its smaller coverage."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_interval needs at least one value")

    def coverage(k):
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


@dataclass(frozen=True)
class PairedTiming:
    """first / second from alternating rounds: the median per-round ratio and its interval."""

    ratio: float
    low: float
    high: float
    coverage: float
    rounds: int
    first_ms: float   # median of the first callable's rounds
    second_ms: float

    def info(self) -> dict:
        """The benchmark JSON's extra_info fields."""
        return {"paired_ratio": round(self.ratio, 4), "paired_low": round(self.low, 4),
                "paired_high": round(self.high, 4), "paired_coverage": round(self.coverage, 4),
                "paired_rounds": self.rounds, "paired_ms": round(self.first_ms, 4),
                "paired_other_ms": round(self.second_ms, 4)}


def time_paired(first: Callable[[], object], second: Callable[[], object], rounds: int, warmup_rounds: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> PairedTiming:
    """Time `first` and `second` in `rounds` alternating rounds (after `warmup_rounds` untimed calls of
    each): round i runs first then second for even i, second then first for odd i."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    for _ in range(warmup_rounds):
        first()
        second()
    times: List[Tuple[float, float]] = []
    for i in range(rounds):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        taken = [0.0, 0.0]
        for which in order:
            start = clock()
            (first, second)[which]()
            taken[which] = clock() - start
        times.append((taken[0], taken[1]))
    ratios = [a / b for a, b in times if b > 0]
    if not ratios:
        raise ValueError("the second callable took no measurable time")
    low, high, coverage = median_interval(ratios)
    return PairedTiming(median(ratios), low, high, coverage, rounds, median([a for a, _ in times]) * 1e3,
                        median([b for _, b in times]) * 1e3)
