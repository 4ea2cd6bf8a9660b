"""The model-level benchmarks: the SMDIM denoiser against its transformer-diffusion baseline.

Suite "model". Size presets of smdim.model (`MODEL_PRESETS`: "tiny", "small" and the paper-scale
"base"; the batch-1 table runs `MODEL_CONFIGS` = tiny and base by default), each against
`matched_baseline_config` of it: the same skeleton and width (embedding -> Conv1d stride 4 -> blocks on
the compressed sequence -> ConvTranspose1d -> tied head), attention + 4*d_model FFN blocks with full
attention and sinusoidal positions, and the depth whose parameter count is closest to SMDIM's
(required within 10 %; the guard asserts it again). Nothing in either config limits the length (no
position table: sinusoidal positions are computed per call).

    smdim     SMDIM(preset_config(config, ...)): MFA blocks (bidirectional Mamba -> FFN -> local attention)
    baseline  SMDIM(matched_baseline_config(...)): transformer blocks, full attention

Inputs: B sequences of L tokens, fp32, drawn uniformly from the non-special ids of the default REMI
tokenizer (smdim.tokenizer.make_tokenizer(): vocabulary 286, PAD 0, MASK 3): the cost of a
denoiser does not depend on which tokens it reads, so no corpus is needed. Two tables:

    batch 1    B = 1 at every L of the plan (ids "tiny-fwd-L512-smdim", groups "model tiny fwd L=512");
    batched    the batches users train and sample with: short crops, B x L = 4096 tokens by default
               (`smdim train`'s batches: smdim.pipeline.TOKENS_PER_BATCH), ids "tiny-train-B16xL256-smdim",
               groups "model tiny train B=16 L=256". A batched shape with B = 1 (1x4096) is a case of its
               own ("tiny-fwd-B1xL4096-smdim"), so the batched table is complete whatever the batch-1 plan;
               it samples only shapes with B <= BATCHED_SAMPLE_MAX_BATCH and L <= BATCHED_SAMPLE_MAX_L
               (the studio's), and the report gives their time per generated piece (time / B).

Passes:

    fwd     one denoiser forward, eval mode under no_grad: logits (B, L, vocab). The cost of one
            sampling step.
    train   one training step as smdim.train.Trainer takes it: the MDLM loss (smdim.diffusion.
            diffusion_loss: mask, forward, SUBS cross-entropy) forward + backward, gradient clipping
            at 1.0, AdamW step (Trainer's parameter groups, lr, betas, weight decay); the gradients are
            freed after the step. Not included: the LR scheduler and EMA update (O(parameters) each).
    sample  a full unconditional sample (smdim.sampling.sample from all-MASK, K = SAMPLE_STEPS steps
            in SAMPLE_ORDER: `smdim generate`'s defaults, 32 steps in confidence order since 2026-12-03,
            64 in random order before). The sampler reuses its last forward when a
            step reveals nothing, so the number of denoiser calls (reported) can be below K. Its
            peak memory is measured on a MEMORY_SAMPLE_STEPS-step sample: every step runs the same
            denoiser forward over the same buffers, so the peak does not grow with K.

Each (config, implementation) model is built once per process, seeded; the train pass has its own
copy with its optimizer (its weights move; the other passes' do not).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from smdim.model import PRESETS
from smdim.sampling import DEFAULT_ORDER, DEFAULT_STEPS

from .passes import FORWARD

MODEL_SUITE = "model"
SMDIM_IMPL, BASELINE_IMPL = "smdim", "baseline"
MODEL_IMPLEMENTATIONS = (SMDIM_IMPL, BASELINE_IMPL)
TRAIN, SAMPLE = "train", "sample"
MODEL_PASSES = (FORWARD, TRAIN, SAMPLE)
MODEL_PRESETS = tuple(PRESETS)  # every size preset, smallest first: tiny, small, base
MODEL_CONFIGS = ("tiny", "base")  # the batch-1 table's default presets
SAMPLE_STEPS, SAMPLE_ORDER = DEFAULT_STEPS, DEFAULT_ORDER  # `smdim generate`'s defaults (tests check the CLI)
BATCHED_SAMPLE_MAX_BATCH, BATCHED_SAMPLE_MAX_L = 8, 2048  # the studio's shapes: batched samples only up to these
DTYPE = torch.float32
PARAMETER_TOLERANCE = 0.10  # the baseline's parameter count within 10 % of SMDIM's
WARMUP_LENGTH = 512  # longer than 2 x any preset's attention window (in tokens): the local path warms up
WARMUP_SAMPLE_STEPS = 2
MEMORY_SAMPLE_STEPS = 4  # the sample's peak memory does not depend on K (see the module docstring)
SEED = 0


def shape_label(length: int, batch: int = 1, batched: bool = False) -> str:
    """Where a case ran, as groups and reports write it: 'L=512' (batch-1 table) or 'B=16 L=256' (batched)."""
    return f"B={batch} L={length}" if batched or batch != 1 else f"L={length}"


@dataclass(frozen=True)
class ModelCase:
    """One benchmark of the model suite: a config's implementation running one pass on `batch`
    sequences of `length` tokens. `batched`: a case of the batched table (set for any batch > 1);
    its id and group name the batch, so a batched 1x4096 is not the batch-1 table's L=4096."""

    config: str
    impl: str
    pass_name: str
    length: int
    batch: int = 1
    batched: bool = False

    def __post_init__(self):
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1; got {self.batch}")
        if self.batch > 1 and not self.batched:
            object.__setattr__(self, "batched", True)  # only the batched table has batches

    @property
    def shape(self) -> str:
        """'L512' (batch-1 table) or 'B16xL256' (batched table)."""
        return f"B{self.batch}xL{self.length}" if self.batched else f"L{self.length}"

    @property
    def group(self) -> str:
        return f"{MODEL_SUITE} {self.config} {self.pass_name} {shape_label(self.length, self.batch, self.batched)}"

    @property
    def id(self) -> str:
        """Test id, usable in `-k` expressions ("B16xL256" selects one batched shape)."""
        return f"{self.config}-{self.pass_name}-{self.shape}-{self.impl}"

    @property
    def single_shot(self) -> bool:
        """A full sample is K denoiser forwards (minutes at base/8192): it is timed over exactly one
        run."""
        return self.pass_name == SAMPLE


# --- tokens and configs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSpace:
    vocab_size: int
    pad_id: int
    mask_id: int
    first_regular_id: int  # ids below this are special (PAD, BOS, EOS, MASK)


@functools.lru_cache(maxsize=None)
def token_space() -> TokenSpace:
    """Vocabulary facts of the default tokenizer (the one `smdim train` builds)."""
    from smdim import tokenizer

    tok = tokenizer.make_tokenizer()
    specials = tokenizer.special_ids(tok)
    return TokenSpace(tokenizer.vocab_size(tok), tokenizer.pad_id(tok), tokenizer.mask_id(tok), max(specials) + 1)


@functools.lru_cache(maxsize=None)
def model_config(config: str, impl: str):
    """SMDIMConfig of `impl` for the preset `config`."""
    from smdim.model import preset_config

    if impl not in MODEL_IMPLEMENTATIONS:
        raise ValueError(f"unknown model implementation {impl!r}; expected one of {MODEL_IMPLEMENTATIONS}")
    tokens = token_space()
    return preset_config(config, tokens.vocab_size, tokens.pad_id, tokens.mask_id,
                         block="mfa" if impl == SMDIM_IMPL else "transformer")


def build_model(config: str, impl: str, device: str = "cpu", seed: int = SEED) -> torch.nn.Module:
    """A freshly initialised (seeded) denoiser on `device`, fp32, in training mode."""
    from smdim.model import SMDIM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SMDIM(model_config(config, impl))
    return model.to(device=device, dtype=DTYPE)


@functools.lru_cache(maxsize=None)
def parameter_count(config: str, impl: str) -> int:
    from smdim.model import SMDIM

    return SMDIM(model_config(config, impl)).num_parameters()


def parameter_gap(config: str) -> float:
    """(baseline - SMDIM) / SMDIM parameters."""
    ours = parameter_count(config, SMDIM_IMPL)
    return (parameter_count(config, BASELINE_IMPL) - ours) / ours


def check_parameter_match(config: str) -> str:
    """A one-line summary; AssertionError if the baseline is not within PARAMETER_TOLERANCE of SMDIM."""
    ours, theirs = parameter_count(config, SMDIM_IMPL), parameter_count(config, BASELINE_IMPL)
    gap = parameter_gap(config)
    summary = f"{config}: smdim {ours:,} parameters, baseline {theirs:,} ({gap:+.1%})"
    assert abs(gap) <= PARAMETER_TOLERANCE, (f"{summary}: not within {PARAMETER_TOLERANCE:.0%} — the comparison "
                                             "would not be at equal parameter count")
    return summary


def describe_config(config: str, impl: str) -> Dict[str, Any]:
    """What the report prints about a model: width, depth, attention window, parameters."""
    c = model_config(config, impl)
    return {"d_model": c.d_model, "d_embed": c.d_embed, "n_layers": c.n_layers, "num_heads": c.num_heads,
            "attn_window": c.attn_window, "compression": c.compression, "block": c.block,
            "parameters": parameter_count(config, impl), "vocab_size": c.vocab_size}


def make_tokens(length: int, device: str = "cpu", seed: int = SEED, batch: int = 1) -> torch.Tensor:
    """(batch, length) int64 token ids, uniform over the regular (non-special) ids."""
    space = token_space()
    gen = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(space.first_regular_id, space.vocab_size, (batch, length), generator=gen)
    return tokens.to(device)


# --- models kept per process -----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def inference_model(config: str, impl: str, device: str = "cpu") -> torch.nn.Module:
    """The model the fwd and sample passes run (eval mode, weights never change)."""
    return build_model(config, impl, device).eval()


@functools.lru_cache(maxsize=None)
def training_state(config: str, impl: str, device: str = "cpu"):
    """(model, AdamW, gradient-clipping norm) of the train pass, as smdim.train.Trainer builds them (the
    model is its own copy: its weights move)."""
    from smdim.train import TrainConfig, make_optimizer

    model = build_model(config, impl, device).train()
    defaults = TrainConfig()
    return model, make_optimizer(model, defaults), defaults.grad_clip


# --- runners ---------------------------------------------------------------------------------------


@dataclass
class ModelRunner:
    """A no-argument callable running one (config, implementation, pass, batch, L).

    Returns logits (B, L, vocab) for fwd, the detached loss (scalar) for train, and (tokens (B, L),
    denoiser calls) for sample. `check(result)` validates a result (AssertionError) and returns
    what to report about it."""

    pass_name: str
    model: torch.nn.Module
    tokens: torch.Tensor  # (B, L): the input (fwd, train) or the all-MASK start (sample)
    mask_id: int
    vocab_size: int
    steps: int = SAMPLE_STEPS
    optimizer: Optional[torch.optim.Optimizer] = None
    grad_clip: float = 1.0

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(SEED + 2)  # the same masks / draws every round

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """The MDLM training loss of `tokens` (what a train step differentiates)."""
        from smdim.diffusion import diffusion_loss

        return diffusion_loss(self.model, tokens, mask_id=self.mask_id, generator=self._generator()).loss

    def __call__(self):
        if self.pass_name == FORWARD:
            with torch.no_grad():
                return self.model(self.tokens)
        if self.pass_name == TRAIN:
            loss = self.loss(self.tokens)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            # Freed here rather than at the next step's start (as Trainer does): the same work, and each
            # step's gradients count in its own peak memory instead of hiding in the next one's baseline.
            self.optimizer.zero_grad(set_to_none=True)
            return loss.detach()
        from smdim.sampling import sample

        return sample(self.model, self.tokens, steps=self.steps, mask_id=self.mask_id, generator=self._generator(),
                      order=SAMPLE_ORDER)

    def check(self, result) -> Dict[str, Any]:
        """AssertionError unless `result` is right for this pass; {"denoiser_calls": n} for sample."""
        batch, length = self.tokens.shape
        if self.pass_name == FORWARD:
            assert tuple(result.shape) == (batch, length, self.vocab_size), (
                f"logits of shape {tuple(result.shape)}; expected {(batch, length, self.vocab_size)}")
            assert bool(torch.isfinite(result).all()), "non-finite logits"
            return {}
        if self.pass_name == TRAIN:
            assert math.isfinite(float(result)), f"training loss {float(result)} is not finite"
            return {}
        tokens, calls = result
        assert tuple(tokens.shape) == (batch, length), (
            f"sample of shape {tuple(tokens.shape)}; expected {(batch, length)}")
        assert not bool((tokens == self.mask_id).any()), "the sample still holds MASK tokens"
        assert int(tokens.min()) >= 0 and int(tokens.max()) < self.vocab_size, "sampled ids outside the vocabulary"
        assert 1 <= calls <= self.steps + 16, f"{calls} denoiser calls for {self.steps} steps"
        return {"denoiser_calls": int(calls)}

    def count_gflop(self) -> Tuple[Optional[float], str]:
        """(GFLOP, note) of the whole batch — fwd: one forward; train: loss forward + backward (AdamW's
        elementwise update counts 0); sample: one denoiser forward (the caller multiplies by the calls made).
        None and the reason where smdim_kernels.flops is missing."""
        from .layers import FLOP_CONVENTION, flops_unavailable_reason

        reason = flops_unavailable_reason()
        if reason is not None:
            return None, f"n/a: {reason}"
        from smdim_kernels.flops import count_flops

        if self.pass_name == TRAIN:
            try:
                total = count_flops(self.loss, self.tokens, backend="torch", backward=True).total
            finally:  # count_flops' backward accumulates into .grad: drop it
                self.optimizer.zero_grad(set_to_none=True)
            return total / 1e9, FLOP_CONVENTION
        tokens = self.tokens if self.pass_name == FORWARD else torch.full_like(self.tokens, self.mask_id)
        with torch.no_grad():
            total = count_flops(self.model, tokens, backend="torch").total
        return total / 1e9, FLOP_CONVENTION


def make_model_runner(config: str, impl: str, pass_name: str, length: int, device: str = "cpu",
                      steps: int = SAMPLE_STEPS, batch: int = 1) -> ModelRunner:
    """The runner of one case on (batch, length) tokens; inputs are seeded, so both implementations
    get the same tokens."""
    if pass_name not in MODEL_PASSES:
        raise ValueError(f"unknown model pass {pass_name!r}; expected one of {MODEL_PASSES}")
    space = token_space()
    if pass_name == TRAIN:
        model, optimizer, grad_clip = training_state(config, impl, device)
        return ModelRunner(pass_name, model, make_tokens(length, device, batch=batch), space.mask_id,
                           space.vocab_size, optimizer=optimizer, grad_clip=grad_clip)
    model = inference_model(config, impl, device)
    tokens = (make_tokens(length, device, batch=batch) if pass_name == FORWARD
              else torch.full((batch, length), space.mask_id, dtype=torch.long, device=device))
    return ModelRunner(pass_name, model, tokens, space.mask_id, space.vocab_size, steps=steps)


def make_warmup_runner(config: str, impl: str, pass_name: str, device: str = "cpu", batch: int = 1) -> ModelRunner:
    """The same pass on the same model at (batch, WARMUP_LENGTH) (a sample: WARMUP_SAMPLE_STEPS steps):
    pays the one-time costs and, for train, creates AdamW's state, before a measurement.

    At the case's batch, not 1: the kernels split their work over batch x channels (the C++ kernels'
    thread partitioning, cuBLAS' per-shape algorithm choice), so a batch-1 warm-up could leave a
    batch-dependent first-call cost in the measured run. WARMUP_LENGTH tokens per sequence as in the
    batch-1 table (the local-attention path warms up); at most 2x a default batched case's tokens."""
    return make_model_runner(config, impl, pass_name, WARMUP_LENGTH, device, steps=WARMUP_SAMPLE_STEPS, batch=batch)
