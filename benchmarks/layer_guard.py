"""Correctness guard of the layer suites (layers.py): never time wrong code or a strawman peer.

The Mamba layer is checked against transformers' MambaMixer and mamba.py's MambaBlock on the same
weights; the MFA suite's outputs must be finite, its transformer peers must run SDPA's flash
kernel, and the parameter-matched transformer must match the MFA block's parameter count.
"""
from __future__ import annotations

from typing import Dict, Tuple

from .error_measures import MAX_RELATIVE_ERROR, max_abs_error, max_relative_error
from .layers import (FLASH_KERNEL, HF, MAMBA_SUITE, MFA, MFA_SUITE, OURS, PARAMETER_TOLERANCE, PSCAN,
                     SUITE_IMPLEMENTATIONS, TRANSFORMER_IMPLEMENTATIONS, TRANSFORMER_MATCHED, all_finite,
                     make_layer_runner, ops_run, parameter_mismatch, reference_layer, unavailable_reason)
from .passes import FORWARD

LAYER_OUTPUT_ATOL = 1e-4  # forward outputs: max |ours - peer| (outputs are O(0.1-1) at this init)
LAYER_SHORT_LENGTH = 64  # forward+backward against MambaMixer's Python loop: at a short L only
MFA_CHECK_MAX_LENGTH = 256  # the MFA suite's checks run at min(L, this): local attention runs from L = window + 2


class LayerGuard:
    """Checks the layer suites once per (suite, pass, L) before anything of that group is timed.

    mamba_layer, forward: ours against transformers' MambaMixer (max abs error of the output
        <= 1e-4) and mamba.py's MambaBlock at L (where the plan runs it), same weights and input;
        with neither installed, against the layer in plain PyTorch (in_proj + mamba_inner_ref).
    mamba_layer, forward+backward: output and the gradients of the input and of every parameter
        (max relative error <= 1e-4) against mamba.py at L, else MambaMixer at L=64 (its backward
        is a Python loop), else the plain-PyTorch layer at L=64.
    mfa_block: every implementation's outputs (and gradients) are finite at min(L, 256); both
        transformer blocks' attention runs SDPA's flash kernel in the timed pass (a peer that
        materialised L x L scores would be a strawman); the parameter-matched transformer block's
        parameter count is within 1 % of the MFA block's. MFABlock's maths is tested in
        tests/kernels/modules/test_mfa.py.
    """

    def __init__(self, pscan_max_len: int = 8192, max_relative_error: float = MAX_RELATIVE_ERROR,
                 output_atol: float = LAYER_OUTPUT_ATOL):
        self.pscan_max_len = pscan_max_len
        self.max_relative_error = max_relative_error
        self.output_atol = output_atol
        self._verdicts: Dict[Tuple[str, str, int], Tuple[bool, str]] = {}

    def verify(self, suite: str, pass_name: str, length: int) -> str:
        """A one-line summary if the checks pass; AssertionError (not benchmarking) if not."""
        # The MFA checks run at min(L, 256): one verdict serves every longer L.
        key = (suite, pass_name, length if suite == MAMBA_SUITE else min(length, MFA_CHECK_MAX_LENGTH))
        if key not in self._verdicts:
            compare = self._mamba if suite == MAMBA_SUITE else self._mfa
            self._verdicts[key] = compare(pass_name, length)
        ok, summary = self._verdicts[key]
        if not ok:
            raise AssertionError(f"correctness guard failed, not benchmarking: {summary}")
        return summary

    # mamba_layer

    def mamba_peers(self, pass_name: str, length: int):
        """[(peer name, L to check at)]: the peers ours is compared with."""
        have_pscan = unavailable_reason(PSCAN) is None and length <= self.pscan_max_len
        have_hf = unavailable_reason(HF) is None
        if pass_name == FORWARD:
            peers = ([(HF, length)] if have_hf else []) + ([(PSCAN, length)] if have_pscan else [])
        elif have_pscan:
            peers = [(PSCAN, length)]
        else:
            peers = [(HF, min(length, LAYER_SHORT_LENGTH))] if have_hf else []
        return peers or [("reference", length if pass_name == FORWARD else min(length, LAYER_SHORT_LENGTH))]

    def _mamba(self, pass_name: str, length: int) -> Tuple[bool, str]:
        ok, parts, details = True, [], []
        for peer, check_length in self.mamba_peers(pass_name, length):
            ours_runner = make_layer_runner(OURS, pass_name, check_length)
            ours = ours_runner()
            module = reference_layer() if peer == "reference" else None
            runner = make_layer_runner(peer if module is None else OURS, pass_name, check_length, module=module)
            theirs = runner()
            if pass_name == FORWARD:
                error = max_abs_error(ours[0], theirs[0])
                passed = error <= self.output_atol
                parts.append(f"ours vs {peer} fwd L={check_length}: max abs error {error:.1e} "
                             f"(tolerance {self.output_atol:.0e})")
            else:
                (out, grads), (peer_out, peer_grads) = ours, theirs
                peer_by_name = dict(zip(runner.leaf_names, peer_grads))  # parameter order differs between peers
                if set(peer_by_name) != set(ours_runner.leaf_names):
                    raise AssertionError(f"{peer}'s parameters {sorted(peer_by_name)} are not ours "
                                         f"{sorted(ours_runner.leaf_names)}")
                errors = {"out": max_relative_error(out[0], peer_out[0])}
                errors.update({f"d{name}": max_relative_error(g, peer_by_name[name])
                               for name, g in zip(ours_runner.leaf_names, grads)})
                worst = max(errors, key=errors.get)
                passed = all(err <= self.max_relative_error for err in errors.values())
                parts.append(f"ours vs {peer} fwd+bwd L={check_length}: max relative error {errors[worst]:.1e} "
                             f"({worst}; tolerance {self.max_relative_error:.0e})")
                if not passed:
                    details.append(", ".join(f"{name} {err:.1e}" for name, err in errors.items()))
            ok = ok and passed
        return ok, "; ".join(parts + details)

    # mfa_block

    def _mfa(self, pass_name: str, length: int) -> Tuple[bool, str]:
        check_length = min(length, MFA_CHECK_MAX_LENGTH)
        ok, parts = True, []
        finite = []
        if unavailable_reason(TRANSFORMER_MATCHED) is None:
            mismatch = parameter_mismatch(TRANSFORMER_MATCHED, MFA)
            ok = mismatch is None
            parts.append(mismatch or f"{TRANSFORMER_MATCHED} parameters within {PARAMETER_TOLERANCE:.0%} of {MFA}'s")
        for impl in SUITE_IMPLEMENTATIONS[MFA_SUITE]:
            if unavailable_reason(impl) is not None:
                continue
            runner = make_layer_runner(impl, pass_name, check_length)
            if impl in TRANSFORMER_IMPLEMENTATIONS:
                ops = ops_run(runner)
                if FLASH_KERNEL not in ops:
                    ok = False
                    attention = [name for name in ops if "attention" in name or "softmax" in name]
                    parts.append(f"the {impl} block's attention does not run {FLASH_KERNEL} in {pass_name} "
                                 f"(ran: {', '.join(attention) or 'no attention op'})")
                else:
                    parts.append(f"{impl} attention runs {FLASH_KERNEL.split('::')[-1]}")
            if all_finite(runner()):
                finite.append(impl)
            else:
                ok = False
                parts.append(f"{impl} {pass_name} L={check_length}: non-finite outputs or gradients")
        checked = "outputs" if pass_name == FORWARD else "outputs and gradients"
        parts.insert(0, f"{pass_name} L={check_length}: finite {checked} ({', '.join(finite) or 'none'})")
        return ok, "; ".join(parts)
