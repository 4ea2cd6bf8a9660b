"""Correctness guard of the selective-scan suite: never time wrong code.

Before the first benchmark at each (pass, L), run our scan and mamba.py's on the same inputs and
require the outputs (and, for forward+backward, every input's gradient) to agree. Without
mambapy the naive reference checks instead: the forward at L, the gradients at a short L (its
backward takes about a minute at L=512). The layer suites' guard is layer_guard.py, the model
suite's model_guard.py.
"""
from __future__ import annotations

from typing import Dict, Tuple

from .error_measures import MAX_RELATIVE_ERROR, max_relative_error
from .passes import FORWARD, FORWARD_BACKWARD
from .scan_cases import NAIVE, OURS, PSCAN, SCAN_INPUT_NAMES, make_scan_problem, make_scan_runner
from .scan_peers import mambapy_available

NAIVE_GRADIENT_CHECK_LENGTH = 64


class ScanGuard:
    """Checks ours against a peer once per (pass, L); remembers the verdict."""

    def __init__(self, max_relative_error: float = MAX_RELATIVE_ERROR):
        self.max_relative_error = max_relative_error
        self._verdicts: Dict[Tuple[str, int], Tuple[bool, str]] = {}

    @staticmethod
    def peer_and_length(pass_name: str, length: int) -> Tuple[str, int]:
        """The implementation ours is checked against, and at which L."""
        if mambapy_available():
            return PSCAN, length
        if pass_name == FORWARD:
            return NAIVE, length
        return NAIVE, min(length, NAIVE_GRADIENT_CHECK_LENGTH)

    def verify(self, pass_name: str, length: int) -> str:
        """Return a one-line summary if ours agrees with the peer; raise AssertionError if not."""
        key = (pass_name, length)
        if key not in self._verdicts:
            self._verdicts[key] = self._compare(pass_name, length)
        ok, summary = self._verdicts[key]
        if not ok:
            raise AssertionError(f"correctness guard failed, not benchmarking: {summary}")
        return summary

    def _compare(self, pass_name: str, length: int) -> Tuple[bool, str]:
        peer, length = self.peer_and_length(pass_name, length)
        problem = make_scan_problem(length, requires_grad=pass_name == FORWARD_BACKWARD)
        ours = make_scan_runner(OURS, pass_name, problem)()
        theirs = make_scan_runner(peer, pass_name, problem)()
        if pass_name == FORWARD:
            pairs = [("out", ours, theirs)]
        else:
            (out, grads), (peer_out, peer_grads) = ours, theirs
            pairs = [("out", out, peer_out)] + [(f"d{name}", g, pg)
                                                 for name, g, pg in zip(SCAN_INPUT_NAMES, grads, peer_grads)]
        errors = {name: max_relative_error(a, b) for name, a, b in pairs}
        worst = max(errors, key=errors.get)
        ok = all(err <= self.max_relative_error for err in errors.values())
        summary = (f"ours vs {peer} {pass_name} L={length}: max relative error {errors[worst]:.1e} "
                   f"({worst}; tolerance {self.max_relative_error:.0e})")
        if not ok:
            summary += "; " + ", ".join(f"{name} {err:.1e}" for name, err in errors.items())
        return ok, summary
