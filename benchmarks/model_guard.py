"""Correctness guard of the model suite: never time a broken or unfair comparison.

Once per (config, pass), before anything of it is timed, at GUARD_LENGTH tokens (or the case's
L if shorter), for both implementations:
    always  the baseline's parameter count is within 10 % of SMDIM's (equal-size comparison);
    fwd     logits of shape (1, L, vocab), all finite;
    train   the loss is finite and the step changes the parameters (the optimizer really steps);
    sample  a full K-step sample: L tokens, no MASK left, every id in the vocabulary.
The timed runs are checked too: the last round's result (fwd, train) and the sample's one run
(inside the process that measured it).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .models import MODEL_IMPLEMENTATIONS, TRAIN, check_parameter_match, make_model_runner

GUARD_LENGTH = 512


def _snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class ModelGuard:
    """Runs the checks above once per (config, pass, check length); remembers the verdict."""

    def __init__(self, device: str = "cpu", length: int = GUARD_LENGTH):
        self.device = device
        self.length = length
        self._verdicts: Dict[Tuple[str, str, int], str] = {}

    def verify(self, config: str, pass_name: str, length: int) -> str:
        """A one-line summary if every check passes; AssertionError (not benchmarking) if not."""
        key = (config, pass_name, min(length, self.length))
        if key not in self._verdicts:
            try:
                self._verdicts[key] = self._check(*key)
            except AssertionError as exc:
                raise AssertionError(f"correctness guard failed, not benchmarking: {exc}") from None
        return self._verdicts[key]

    def _check(self, config: str, pass_name: str, length: int) -> str:
        parts = [check_parameter_match(config)]
        for impl in MODEL_IMPLEMENTATIONS:
            runner = make_model_runner(config, impl, pass_name, length, self.device)
            before = _snapshot(runner.model) if pass_name == TRAIN else None
            try:
                facts = runner.check(runner())
            except AssertionError as exc:
                raise AssertionError(f"{config} {impl} {pass_name} L={length}: {exc}") from None
            if before is not None:
                moved = sum(not torch.equal(before[name], p.detach()) for name, p in runner.model.named_parameters())
                assert moved > 0, f"{config} {impl} train L={length}: the step left every parameter unchanged"
                facts["parameters_changed"] = f"{moved}/{len(before)}"
            parts.append(f"{impl} ok" + "".join(f", {k} {v}" for k, v in facts.items()))
        return f"{pass_name} L={length}: " + "; ".join(parts)
