"""The transformers suite: transformers' own Mamba-1 model, unpatched (its CPU path: a Python loop
over time) against the same model with `smdim_kernels.integrations.transformers.enable()`.

A 130M-like config (mamba-130m's shape: d_model 768, 24 layers, N 16, expand 2, d_conv 4,
dt_rank 48, vocabulary 50,280) with random weights, batch 1, fp32, threads pinned:

* ``forward``: MambaModel (embedding, layers, final norm) over L tokens, eval, no grad, no cache;
* ``forward+backward``: the same in train mode (the fused mixer with recomputation when enabled),
  backward of the mean square of the last hidden state. The unpatched path's backward runs the
  loop's autograd graph, minutes per layer at L = 2048, so this pass uses ONE of the 24 layers
  (FWDBWD_LAYERS; the speed-up per layer is what the depth multiplies) and the unpatched side
  runs at SMDIM_BENCH_HF_FWDBWD_LENGTHS only (the layer suite's setting: default 2048, quick
  mode none), once;
* ``decode``: MambaForCausalLM.generate, greedy, DECODE_TOKENS new tokens after a PROMPT-token
  prompt, reported as tokens/s of the decode steps (the prompt's prefill timed apart and taken out).

Each case checks the enabled model against the unpatched one once (outputs relative 1e-4; decode:
the same greedy tokens).
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

        def task():
            with torch.no_grad(), _enabled(case.impl):
                start = time.perf_counter()
                model(prompt, use_cache=True)
                prefill = time.perf_counter() - start
                start = time.perf_counter()
                out = model.generate(prompt, max_new_tokens=DECODE_TOKENS, do_sample=False,
                                     min_new_tokens=DECODE_TOKENS)
                total = time.perf_counter() - start
            return out, max(total - prefill, 1e-9)
        return task, {"prompt": case.length, "new_tokens": DECODE_TOKENS}
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
            hidden.square().mean().backward()
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
    model = build("backbone", min(case.layers, 2)).eval()
    ids = _tokens(case.length)
    with torch.no_grad():
        want = model(ids, use_cache=False).last_hidden_state
        with _enabled(PATCHED):
            got = model(ids, use_cache=False).last_hidden_state
    error = ((got - want).norm() / want.norm()).item()
    if error > 1e-4:
        raise AssertionError(f"enabled vs unpatched forward: relative error {error:.2e} > 1e-4")
    return f"forward relative error {error:.1e} (2 layers)"
