"""Masked (absorbing-state) diffusion in the MDLM form (Sahoo et al. 2024), linear schedule.

Forward process: x_t keeps each token with probability alpha_t = 1 - t and replaces it by MASK
otherwise (PAD positions are never masked and never scored). The denoiser uses the SUBS
parameterisation: it never predicts MASK (its logit is -inf) and visible tokens are carried over
unchanged, so only masked positions enter the loss. The continuous-time NELBO is

    L = E_t [ (1/t) * sum_{i masked in x_t} -log p_theta(x0_i | x_t) ] / (number of tokens)

in nats per token; `bits_per_token` divides by ln 2. t is drawn with low-discrepancy (stratified)
sampling across the batch, which lowers the variance of the estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

T_MIN = 1e-3  # t is drawn from [T_MIN, 1]: the 1/t weight stays finite


def default_device() -> torch.device:
    """cuda if a GPU is available, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model without tensors."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(device, *tensors):
    """`tensors` on `device` (None stays None; a tensor already there is returned as is)."""
    moved = tuple(None if t is None else t.to(device) for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def uniform(shape, generator=None, device=None) -> torch.Tensor:
    """U(0, 1) draws from `generator` (on its own device), placed on `device`."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def sample_times(batch: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Low-discrepancy times: t_i = T_MIN + (1 - T_MIN) * ((u + i / batch) mod 1), u ~ U(0, 1). (batch,)"""
    u = uniform((), generator, device)
    t = (u + torch.arange(batch, device=device) / batch) % 1.0
    return T_MIN + (1.0 - T_MIN) * t


def mask_tokens(x0, t, mask_id, maskable=None, generator=None):
    """x_t: each maskable token of x0 (batch, L) becomes mask_id with probability t (batch,).
    Returns (x_t, masked) with masked the bool (batch, L) positions that were replaced."""
    draw = uniform(x0.shape, generator, x0.device)
    masked = draw < t[:, None]
    if maskable is not None:
        masked &= maskable
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def subs_log_probs(logits, mask_id):
    """SUBS: the denoiser never predicts MASK. logits (..., vocab) -> log-probabilities."""
    logits = logits.float().clone()
    logits[..., mask_id] = -math.inf
    return F.log_softmax(logits, dim=-1)


@dataclass
class DiffusionLoss:
    loss: torch.Tensor            # NELBO, nats per token (scalar, differentiable)
    bits_per_token: float         # the same in bits
    masked_fraction: float        # fraction of scored tokens that were masked
    n_tokens: int                 # tokens scored (non-PAD)
    sequence_nats: Optional[torch.Tensor] = None   # (batch,) each sequence's NELBO sum (nats), detached
    sequence_tokens: Optional[torch.Tensor] = None  # (batch,) each sequence's scored tokens


def diffusion_loss(model, x0, pad_mask=None, *, mask_id, generator=None, t=None, style=None) -> DiffusionLoss:
    """The MDLM NELBO of a batch. x0: (batch, L) token ids; pad_mask: (batch, L) bool, True at
    real tokens (None = all real). `t` (batch,) overrides the sampled times (for evaluation);
    `style` (batch,) style indices for a style-conditioned model. The inputs are moved to the
    model's device."""
    if x0.dim() != 2:
        raise ValueError(f"x0 must be (batch, L) token ids; got shape {tuple(x0.shape)}")
    x0, pad_mask, t, style = to_device(model_device(model), x0, pad_mask, t, style)
    maskable = torch.ones_like(x0, dtype=torch.bool) if pad_mask is None else pad_mask.bool()
    if t is None:
        t = sample_times(x0.shape[0], generator, x0.device)
    x_t, masked = mask_tokens(x0, t, mask_id, maskable, generator)
    log_probs = subs_log_probs(model(x_t) if style is None else model(x_t, style=style), mask_id)
    nll = -log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)                 # (batch, L)
    weighted = (nll * masked).sum(-1) / t                                      # (batch,)
    n_tokens = int(maskable.sum())
    loss = weighted.sum() / max(n_tokens, 1)
    return DiffusionLoss(loss=loss, bits_per_token=loss.item() / math.log(2),
                         masked_fraction=float(masked.sum()) / max(n_tokens, 1), n_tokens=n_tokens,
                         sequence_nats=weighted.detach(), sequence_tokens=maskable.sum(-1))


@torch.no_grad()
def sequence_nlls(model, batches, *, mask_id, n_times=4, seed=0):
    """Per-sequence NELBO over `batches` (iterable of (x0, pad_mask[, style])): a list of (nats, tokens) per
    sequence, each averaged over `n_times` stratified times (fixed seed: deterministic). Summing
    nats and tokens over any subset gives that subset's bits/token (for bootstrap intervals)."""
    if n_times < 1:
        raise ValueError(f"n_times must be >= 1; got {n_times}")
    generator = torch.Generator().manual_seed(seed)
    out = []
    was_training = model.training
    model.eval()
    try:
        for x0, pad_mask, *style in batches:
            nats = torch.zeros(x0.shape[0], dtype=torch.float64)
            for _ in range(n_times):
                result = diffusion_loss(model, x0, pad_mask, mask_id=mask_id, generator=generator,
                                        style=style[0] if style else None)
                nats += result.sequence_nats.double().cpu()
            tokens = result.sequence_tokens.cpu()
            out.extend((float(n) / n_times, int(k)) for n, k in zip(nats, tokens))
    finally:
        model.train(was_training)
    return out


def bits_per_token(items):
    """Bits/token of a list of (nats, tokens) pairs from `sequence_nlls`."""
    tokens = sum(k for _, k in items)
    return sum(n for n, _ in items) / max(tokens, 1) / math.log(2)


def evaluate_nll(model, batches, *, mask_id, n_times=4, seed=0):
    """Validation NELBO in bits/token over `batches` (iterable of (x0, pad_mask)), averaged over
    `n_times` stratified times per batch with a fixed seed (deterministic)."""
    return bits_per_token(sequence_nlls(model, batches, mask_id=mask_id, n_times=n_times, seed=seed))
