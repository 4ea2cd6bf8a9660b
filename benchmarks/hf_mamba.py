"""The transformers suite: transformers' own Mamba-1 model, unpatched (its CPU path: a Python loop
over time) against the same model with `smdim_kernels.integrations.transformers.enable()`.

A 130M-like config (mamba-130m's shape: d_model 768, 24 layers, N 16, expand 2, d_conv 4,
dt_rank 48, vocabulary 50,280) with random weights, batch 1, fp32, threads pinned:

* ``forward``: MambaModel (embedding, layers, final norm) over L tokens, eval, no grad, no cache;
* ``forward+backward``: the same in train mode (the fused mixer with recomputation when enabled),
  backward of a fixed random projection of the last hidden state. The unpatched path's backward runs the
  loop's autograd graph, minutes per layer at L = 2048, so this pass uses ONE of the 24 layers
  (FWDBWD_LAYERS; the speed-up per layer is what the depth multiplies) and the unpatched side
  runs at SMDIM_BENCH_HF_FWDBWD_LENGTHS only (the layer suite's setting: default 2048, quick
  mode none), once;
* ``decode``: MambaForCausalLM.generate, greedy, DECODE_TOKENS new tokens after a PROMPT-token
  prompt, reported as tokens/s of its DECODE_TOKENS - 1 one-token decode steps: the time of
  generate(DECODE_TOKENS) minus that of generate(1) (the same prefill and first token).

Each case checks the enabled model against the unpatched one once: forward outputs (relative 1e-4),
the training pass's output and every parameter gradient at TRAIN_CHECK_LENGTH tokens (1e-4 / 1e-3),
decode's greedy tokens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Tuple

import torch

HF_MODEL_SUITE = "transformers"
UNPATCHED, PATCHED = "transformers", "transformers+smdim"
IMPLS = (UNPATCHED, PATCHED)
FORWARD, FWDBWD, DECODE = "forward", "forward+backward", "decode"
PASSES = (FORWARD, FWDBWD, DECODE)
CONFIG_130M = dict(vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2, conv_kernel=4,
                   time_step_rank=48, use_cache=True, pad_token_id=0, eos_token_id=0, bos_token_id=0)
FWDBWD_LAYERS = 1
PROMPT, DECODE_TOKENS = 64, 32
QUICK_LAYERS = 2


@dataclass(frozen=True)
class HFCase:
    pass_name: str
    length: int        # tokens of the forward passes; the prompt length for decode
    impl: str
    layers: int

    @property
    def id(self) -> str:
        return f"hf-{self.pass_name}-L{self.length}-{self.impl}"

    @property
    def group(self) -> str:
        return f"{HF_MODEL_SUITE} {self.pass_name} L={self.length}"

    @property
    def single_shot(self) -> bool:
        return self.impl == UNPATCHED and self.pass_name == FWDBWD


MAX_LENGTH = 4096


def hf_cases(quick: bool, lengths: Tuple[int, ...], unpatched_fwdbwd_lengths: Tuple[int, ...]) -> List[HFCase]:
    """forward at every L <= MAX_LENGTH, forward+backward (the unpatched side only at
    unpatched_fwdbwd_lengths), decode; quick mode: QUICK_LAYERS layers."""
    layers = QUICK_LAYERS if quick else CONFIG_130M["num_hidden_layers"]
    lengths = tuple(L for L in lengths if L <= MAX_LENGTH)
    cases = [HFCase(FORWARD, L, impl, layers) for L in lengths for impl in IMPLS]
    cases += [HFCase(FWDBWD, L, impl, FWDBWD_LAYERS) for L in lengths for impl in IMPLS
              if impl == PATCHED or L in unpatched_fwdbwd_lengths]
    cases += [HFCase(DECODE, PROMPT, impl, layers) for impl in IMPLS]
    return cases


@lru_cache(maxsize=4)
def build(kind: str, layers: int):
    """The model (random weights, seed 0), built once per kind and depth."""
    from transformers import MambaConfig, MambaForCausalLM, MambaModel

    torch.manual_seed(0)
    config = MambaConfig(**dict(CONFIG_130M, num_hidden_layers=layers))
    return (MambaForCausalLM if kind == "lm" else MambaModel)(config).float()


@lru_cache(maxsize=8)
def _loss_weights(shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)


def _loss(hidden: torch.Tensor) -> torch.Tensor:
    """A fixed random projection of the last hidden state (made once per shape, outside the timing
    after the first call). Not its mean square: the final RMSNorm makes that nearly constant, so
    every gradient but the norm's would be rounding noise."""
    return (hidden * _loss_weights(tuple(hidden.shape), hidden.dtype)).sum()


def _tokens(length: int) -> torch.Tensor:
    return torch.randint(1, CONFIG_130M["vocab_size"], (1, length), generator=torch.Generator().manual_seed(1))


def _enabled(impl: str):
    import contextlib

    from smdim_kernels.integrations import transformers as smdim_tf

    return smdim_tf.enabled() if impl == PATCHED else contextlib.nullcontext()


def make_task(case: HFCase) -> Tuple[Callable[[], object], dict]:
    """(the timed call, extra_info); the call runs under the case's implementation."""
    if case.pass_name == DECODE:
        model = build("lm", case.layers).eval()
        prompt = _tokens(case.length)

        def generate(new_tokens):
            return model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

        def task():
            # generate(1) is the prefill and its token; generate(N) adds N - 1 decode steps to it.
            with torch.no_grad(), _enabled(case.impl):
                start = time.perf_counter()
                generate(1)
                prefill = time.perf_counter() - start
                start = time.perf_counter()
                out = generate(DECODE_TOKENS)
                total = time.perf_counter() - start
            return out, max(total - prefill, 1e-9)
        return task, {"prompt": case.length, "new_tokens": DECODE_TOKENS, "decode_steps": DECODE_TOKENS - 1}
    model = build("backbone", case.layers)
    ids = _tokens(case.length)
    if case.pass_name == FORWARD:
        model.eval()

        def task():
            with torch.no_grad(), _enabled(case.impl):
                return model(ids, use_cache=False).last_hidden_state
        return task, {}
    model.train()

    def task():
        with _enabled(case.impl):
            model.zero_grad(set_to_none=True)
            hidden = model(ids, use_cache=False).last_hidden_state
            _loss(hidden).backward()
        return hidden.detach()
    return task, {}


def check(case: HFCase) -> str:
    """The enabled model against the unpatched one, once per (pass, L): what was compared."""
    if case.pass_name == DECODE:
        model = build("lm", min(case.layers, 2)).eval()
        prompt = _tokens(16)
        with torch.no_grad():
            want = model.generate(prompt, max_new_tokens=8, do_sample=False)
            with _enabled(PATCHED):
                got = model.generate(prompt, max_new_tokens=8, do_sample=False)
        if not torch.equal(got, want):
            raise AssertionError("greedy tokens differ with smdim enabled")
        return "same greedy tokens (2 layers, 8 new tokens)"
    if case.pass_name == FWDBWD:
        return _check_training()
    model = build("backbone", min(case.layers, 2))
    ids = _tokens(case.length)
    model.eval()
    with torch.no_grad():
        want = model(ids, use_cache=False).last_hidden_state
        with _enabled(PATCHED):
            got = model(ids, use_cache=False).last_hidden_state
    error = ((got - want).norm() / want.norm()).item()
    if error > 1e-4:
        raise AssertionError(f"enabled vs unpatched forward: relative error {error:.2e} > 1e-4")
    return f"forward relative error {error:.1e} (2 layers)"


TRAIN_CHECK_LENGTH = 96  # crosses the scan's 64-step checkpoints; the unpatched backward is slow beyond


@lru_cache(maxsize=None)
def _check_training() -> str:
    """Train mode, as the timed forward+backward runs (the fused mixer when enabled), once per run
    at TRAIN_CHECK_LENGTH tokens: output and every parameter gradient against the unpatched path."""
    model = build("backbone", 2).train()
    ids = _tokens(TRAIN_CHECK_LENGTH)
    outputs = []
    for impl in (UNPATCHED, PATCHED):
        with _enabled(impl):
            model.zero_grad(set_to_none=True)
            hidden = model(ids, use_cache=False).last_hidden_state
            _loss(hidden).backward()
        outputs.append([hidden.detach()] + [p.grad.clone() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    want, got = outputs
    errors = [((g - w).norm() / w.norm().clamp_min(1e-30)).item() for g, w in zip(got, want)]
    if errors[0] > 1e-4 or max(errors[1:]) > 1e-3:
        raise AssertionError(f"enabled vs unpatched training pass: output relative error {errors[0]:.2e}, "
                             f"largest gradient relative error {max(errors[1:]):.2e}")
    return (f"training pass at L={TRAIN_CHECK_LENGTH}: output relative error {errors[0]:.1e}, gradients "
            f"{max(errors[1:]):.1e} ({len(errors) - 1} parameters, 2 layers)")

