"""Which benchmark cases run and how long each is timed, from the environment (or --quick).

    SMDIM_BENCH_QUICK=1                quick mode (also `pytest benchmarks/ --quick`): L=512 only, few
                                       rounds, no naive forward+backward, no MambaMixer forward+backward,
                                       model suite on the tiny preset only (batched: 16x256 only)
    SMDIM_BENCH_THREADS=N              torch threads (default: the core count)
    SMDIM_BENCH_LENGTHS=512,1024       sequence lengths of every suite (default 512..8192; quick: 512)

Selective scan (test_selective_scan.py):
    SMDIM_BENCH_NAIVE_FWD_MAX_L=L      longest L for the naive reference forward (default 8192)
    SMDIM_BENCH_NAIVE_FWDBWD_MAX_L=L   ... its forward+backward (default 512; quick: 0 = never)
    SMDIM_BENCH_PSCAN_MAX_L=L          longest L for mamba.py's pscan, both passes (default 8192)

Layers (test_layers.py; a length list takes "0" or "none" for never):
    SMDIM_BENCH_HF_FWD_LENGTHS=2048    lengths of transformers' MambaMixer forward (about 1 s at 2048)
                                       (default 2048; quick: 512)
    SMDIM_BENCH_HF_FWDBWD_LENGTHS=2048 lengths of its forward+backward: a Python loop over time under
                                       autograd, about 8 minutes at L=2048, so it runs exactly once per
                                       length (one cold run in the fresh process that also measures its
                                       memory). Default 2048: the full run `pytest benchmarks/
                                       --benchmark-only` includes it once; quick mode never runs it
                                       (default none); SMDIM_BENCH_HF_FWDBWD_LENGTHS=0 leaves it out of a
                                       full run, or deselect it: -k "not fwdbwd-L2048-hf"
    SMDIM_BENCH_LAYER_PSCAN_MAX_L=L    longest L for mamba.py's Mamba layer, both passes (default 8192;
                                       its forward+backward needs about 8 GB there)
    SMDIM_BENCH_FULL_ATTN_MAX_L=L      longest L for the O(L^2) full-attention blocks (mfa_full and both
                                       transformer blocks), both passes (default 8192)
A peer's lengths are intersected with SMDIM_BENCH_LENGTHS.

transformers suite (test_hf_mamba.py, hf_mamba.py): transformers' Mamba model unpatched vs with
smdim enabled, at SMDIM_BENCH_LENGTHS up to 4096; the unpatched forward+backward only at
SMDIM_BENCH_HF_FWDBWD_LENGTHS (as above).

Model suite (test_models.py; SMDIM vs the transformer-diffusion baseline, models.py):
    SMDIM_BENCH_MODEL_CONFIGS=tiny,base presets of the batch-1 table, at SMDIM_BENCH_LENGTHS (default
                                       tiny,base; quick: tiny; any of tiny, small, base)
    SMDIM_BENCH_SAMPLE_MAX_L=L         longest L of the full K-step sample (default 8192: every L; at
                                       base/8192 one sample is about 2 minutes per model)
    SMDIM_BENCH_MODEL_BATCHES=16x256   the batched table's shapes, comma-separated BATCHxLENGTH (tokens per
                                       sequence): default 16x256,8x512,4x1024,2x2048,1x4096 (4096 tokens
                                       each, as `smdim train` batches); quick: 16x256; "0" or "none": no
                                       batched cases. fwd and train at every shape, the full sample only
                                       at B <= 8 and L <= 2048 (and L <= SMDIM_BENCH_SAMPLE_MAX_L). 1x4096
                                       is a batched case of its own (id ...-B1xL4096-...), apart from
                                       the batch-1 table's L=4096
    SMDIM_BENCH_BATCHED_CONFIGS=tiny   presets of the batched table (default tiny,small,base; quick: tiny)
    SMDIM_BENCH_DEVICE=auto|cpu|cuda   the model suite's device (default auto; see cuda.py)

An explicit variable wins over the quick-mode default.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .cuda import bench_device
from .layers import FULL_ATTENTION_IMPLEMENTATIONS, HF, SUITE_IMPLEMENTATIONS, LayerCase
from .layers import PSCAN as LAYER_PSCAN  # mamba.py's Mamba layer, planned apart from its scan
from .machine import bench_threads
from .models import (BATCHED_SAMPLE_MAX_BATCH, BATCHED_SAMPLE_MAX_L, MODEL_CONFIGS, MODEL_IMPLEMENTATIONS,
                     MODEL_PASSES, MODEL_PRESETS, SAMPLE, ModelCase)
from .passes import FORWARD, PASSES
from .scan_cases import BOUND, NAIVE, PSCAN, SCAN_IMPLEMENTATIONS, ScanCase

QUICK_ENV = "SMDIM_BENCH_QUICK"
LENGTHS_ENV = "SMDIM_BENCH_LENGTHS"
NAIVE_FWD_MAX_ENV = "SMDIM_BENCH_NAIVE_FWD_MAX_L"
NAIVE_FWDBWD_MAX_ENV = "SMDIM_BENCH_NAIVE_FWDBWD_MAX_L"
PSCAN_MAX_ENV = "SMDIM_BENCH_PSCAN_MAX_L"
HF_FWD_LENGTHS_ENV = "SMDIM_BENCH_HF_FWD_LENGTHS"
HF_FWDBWD_LENGTHS_ENV = "SMDIM_BENCH_HF_FWDBWD_LENGTHS"
LAYER_PSCAN_MAX_ENV = "SMDIM_BENCH_LAYER_PSCAN_MAX_L"
FULL_ATTN_MAX_ENV = "SMDIM_BENCH_FULL_ATTN_MAX_L"
MODEL_CONFIGS_ENV = "SMDIM_BENCH_MODEL_CONFIGS"
SAMPLE_MAX_ENV = "SMDIM_BENCH_SAMPLE_MAX_L"
MODEL_BATCHES_ENV = "SMDIM_BENCH_MODEL_BATCHES"
BATCHED_CONFIGS_ENV = "SMDIM_BENCH_BATCHED_CONFIGS"

FULL_LENGTHS = (512, 1024, 2048, 4096, 8192)
QUICK_LENGTHS = (512,)
HF_FULL_LENGTHS = (2048,)  # DESIGN.md §6: MambaMixer forward 1.06 s, forward+backward ~491 s at L=2048
QUICK_MODEL_CONFIGS = ("tiny",)
Shape = Tuple[int, int]  # (batch, length): sequences per batch, tokens per sequence
# 4096 tokens per batch, as `smdim train` batches a run without --batch-size (smdim.pipeline.TOKENS_PER_BATCH)
FULL_MODEL_BATCHES: Tuple[Shape, ...] = ((16, 256), (8, 512), (4, 1024), (2, 2048), (1, 4096))
QUICK_MODEL_BATCHES: Tuple[Shape, ...] = ((16, 256),)
# side-by-side rounds of the batched table (SMDIM and the baseline alternating): at least 6, so that the
# range of the per-round ratios is a 97 % interval of their median
PAIRED_MIN_ROUNDS = 6
BATCHED_CONFIGS = MODEL_PRESETS
QUICK_BATCHED_CONFIGS = ("tiny",)
SHAPE_PATTERN = re.compile(r"(\d+)\s*[xX]\s*(\d+)")


def shape_order(shape: Shape) -> Tuple[int, int]:
    """Sort key of (batch, length) shapes: by length, then batch."""
    batch, length = shape
    return length, batch


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer; got {value!r}") from None


def _env_lengths(default: Tuple[int, ...], name: str = LENGTHS_ENV, allow_none: bool = False) -> Tuple[int, ...]:
    """Comma-separated lengths from $name; with allow_none, "0" or "none" means no length at all."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if allow_none and value.lower() in ("0", "none"):
        return ()
    try:
        lengths = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers; got {value!r}") from None
    if not lengths or min(lengths) < 1:
        raise ValueError(f"{name} must name positive lengths{' (or be 0 / none)' if allow_none else ''}; "
                         f"got {value!r}")
    return lengths


def _env_configs(default: Tuple[str, ...], name: str = MODEL_CONFIGS_ENV) -> Tuple[str, ...]:
    """Comma-separated model presets from $name, in MODEL_PRESETS order (smallest first)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    names = {part.strip() for part in value.split(",") if part.strip()}
    unknown = sorted(names - set(MODEL_PRESETS))
    if unknown or not names:
        raise ValueError(f"{name} must name presets among {','.join(MODEL_PRESETS)}; got {value!r}")
    return tuple(config for config in MODEL_PRESETS if config in names)


def _env_shapes(default: Tuple[Shape, ...], name: str = MODEL_BATCHES_ENV) -> Tuple[Shape, ...]:
    """Comma-separated BATCHxLENGTH shapes from $name, by length then batch; "0" or "none": no shape."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value.lower() in ("0", "none"):
        return ()
    matches = [SHAPE_PATTERN.fullmatch(part.strip()) for part in value.split(",") if part.strip()]
    shapes = {(int(m.group(1)), int(m.group(2))) for m in matches if m is not None}
    if not matches or None in matches or min(min(shape) for shape in shapes) < 1:
        raise ValueError(f"{name} must be comma-separated BATCHxLENGTH shapes of positive integers, like "
                         f"16x256,8x512 (or 0 / none); got {value!r}")
    return tuple(sorted(shapes, key=shape_order))


@dataclass(frozen=True)
class BenchSettings:
    """The benchmark plan: cases to run, thread count and per-case timing budget."""

    quick: bool
    threads: int
    lengths: Tuple[int, ...]
    naive_forward_max_len: int
    naive_backward_max_len: int
    pscan_max_len: int
    time_budget_s: float  # aim for about this much timed work per case
    min_rounds: int
    max_rounds: int
    slow_case_s: float  # a case at least this slow is timed once, without warm-up
    hf_forward_lengths: Tuple[int, ...] = HF_FULL_LENGTHS
    hf_backward_lengths: Tuple[int, ...] = HF_FULL_LENGTHS
    layer_pscan_max_len: int = 8192
    full_attention_max_len: int = 8192
    model_configs: Tuple[str, ...] = MODEL_CONFIGS
    sample_max_len: int = 8192
    model_device: str = "cpu"
    model_batches: Tuple[Shape, ...] = FULL_MODEL_BATCHES  # the batched table's (batch, length) shapes
    batched_configs: Tuple[str, ...] = BATCHED_CONFIGS

    @classmethod
    def from_env(cls, quick: Optional[bool] = None) -> "BenchSettings":
        quick = bool(quick) or _env_flag(QUICK_ENV)
        return cls(
            quick=quick,
            threads=bench_threads(),
            lengths=_env_lengths(QUICK_LENGTHS if quick else FULL_LENGTHS),
            naive_forward_max_len=_env_int(NAIVE_FWD_MAX_ENV, 8192),
            naive_backward_max_len=_env_int(NAIVE_FWDBWD_MAX_ENV, 0 if quick else 512),
            pscan_max_len=_env_int(PSCAN_MAX_ENV, 8192),
            time_budget_s=0.5 if quick else 3.0,
            min_rounds=3,
            max_rounds=10 if quick else 50,
            slow_case_s=1.0,
            hf_forward_lengths=_env_lengths(QUICK_LENGTHS if quick else HF_FULL_LENGTHS, HF_FWD_LENGTHS_ENV, True),
            hf_backward_lengths=_env_lengths(() if quick else HF_FULL_LENGTHS, HF_FWDBWD_LENGTHS_ENV, True),
            layer_pscan_max_len=_env_int(LAYER_PSCAN_MAX_ENV, 8192),
            full_attention_max_len=_env_int(FULL_ATTN_MAX_ENV, 8192),
            model_configs=_env_configs(QUICK_MODEL_CONFIGS if quick else MODEL_CONFIGS),
            sample_max_len=_env_int(SAMPLE_MAX_ENV, 8192),
            model_device=bench_device(),
            model_batches=_env_shapes(QUICK_MODEL_BATCHES if quick else FULL_MODEL_BATCHES),
            batched_configs=_env_configs(QUICK_BATCHED_CONFIGS if quick else BATCHED_CONFIGS, BATCHED_CONFIGS_ENV),
        )

    def runs_scan(self, impl: str, pass_name: str, length: int) -> bool:
        """Whether the plan includes this (scan implementation, pass, L)."""
        if impl == BOUND:
            return pass_name == FORWARD
        if impl == NAIVE:
            limit = self.naive_forward_max_len if pass_name == FORWARD else self.naive_backward_max_len
            return length <= limit
        if impl == PSCAN:
            return length <= self.pscan_max_len
        return True

    def scan_cases(self) -> List[ScanCase]:
        """Every planned case of the scan suite, pass by pass, then by L, then by implementation."""
        return [ScanCase(impl, pass_name, length)
                for pass_name in PASSES for length in self.lengths for impl in SCAN_IMPLEMENTATIONS
                if self.runs_scan(impl, pass_name, length)]

    def runs_layer(self, impl: str, pass_name: str, length: int) -> bool:
        """Whether the plan includes this (layer implementation, pass, L)."""
        if impl == HF:
            return length in (self.hf_forward_lengths if pass_name == FORWARD else self.hf_backward_lengths)
        if impl == LAYER_PSCAN:
            return length <= self.layer_pscan_max_len
        if impl in FULL_ATTENTION_IMPLEMENTATIONS:
            return length <= self.full_attention_max_len
        return True

    def layer_cases(self, suite: str) -> List[LayerCase]:
        """Every planned case of a layer suite, pass by pass, then by L, then by implementation."""
        return [LayerCase(suite, impl, pass_name, length)
                for pass_name in PASSES for length in self.lengths for impl in SUITE_IMPLEMENTATIONS[suite]
                if self.runs_layer(impl, pass_name, length)]

    def runs_batched_sample(self, batch: int, length: int) -> bool:
        """Whether the batched table samples (batch, length): the studio's shapes only (B <=
        BATCHED_SAMPLE_MAX_BATCH, L <= BATCHED_SAMPLE_MAX_L), and L <= SMDIM_BENCH_SAMPLE_MAX_L."""
        return batch <= BATCHED_SAMPLE_MAX_BATCH and length <= min(BATCHED_SAMPLE_MAX_L, self.sample_max_len)

    def model_cases(self) -> List[ModelCase]:
        """Every planned case of the model suite: the batch-1 table's, config by config, pass by pass, then by
        L, then model; then the batched table's, config by config, pass by pass, then by shape, then model."""
        per_length = [ModelCase(config, impl, pass_name, length)
                      for config in self.model_configs for pass_name in MODEL_PASSES for length in self.lengths
                      for impl in MODEL_IMPLEMENTATIONS if pass_name != SAMPLE or length <= self.sample_max_len]
        batched = [ModelCase(config, impl, pass_name, length, batch, batched=True)
                   for config in self.batched_configs for pass_name in MODEL_PASSES
                   for batch, length in self.model_batches for impl in MODEL_IMPLEMENTATIONS
                   if pass_name != SAMPLE or self.runs_batched_sample(batch, length)]
        return per_length + batched

    def paired_rounds_for(self, seconds_pair: float) -> int:
        """Alternating rounds of a side-by-side timing (paired.py) whose two calls took `seconds_pair`
        together: twice the time budget's worth, at least PAIRED_MIN_ROUNDS and at most max_rounds."""
        return max(PAIRED_MIN_ROUNDS, min(self.max_rounds, int(2 * self.time_budget_s / max(seconds_pair, 1e-6))))

    def rounds_for(self, seconds_once: float) -> Tuple[int, int]:
        """(rounds, warm-up rounds) for a case that took `seconds_once` once."""
        if seconds_once >= self.slow_case_s:
            return 1, 0
        rounds = int(self.time_budget_s / max(seconds_once, 1e-6))
        return max(self.min_rounds, min(self.max_rounds, rounds)), 1

