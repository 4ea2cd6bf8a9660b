"""Ancestral sampling of the masked diffusion model: generation, infilling, continuation,
sliding-window generation beyond the training length, and constrained sampling.

One step goes from time t to s < t (K steps from t = 1 to 0). order="random" (ancestral): every
masked position is revealed with probability (t - s) / t, drawing its token from the denoiser's SUBS
distribution. order="confidence": each step reveals the same expected number of tokens, (t - s) / t
of the masked ones, but picks the positions whose drawn token the model is most sure of (log-prob of
the draw plus Gumbel noise scaled by t, so early steps still explore), as MaskGIT does for images. Visible
tokens never change (so clamped tokens of an infilling or a prefix are kept exactly). The model has no
time input, so when a step reveals nothing its last forward pass is reused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from .diffusion import model_device, subs_log_probs, to_device, uniform


@dataclass
class Constraints:
    """Sampling-time constraints, enforced by masking the logits of tokens that would break them.

    pitch_of_token: (vocab,) int64, the MIDI pitch of each Pitch token, -1 for other tokens.
    is_boundary: (vocab,) bool, True for tokens that start a new onset group (Bar, Position).
    pitch_range: (low, high) inclusive; Pitch tokens outside it are never sampled.
    max_chord: at most this many notes start at one onset (Pitch tokens between two boundary
        tokens); None = unlimited.
    banned: (vocab,) bool, tokens never sampled (e.g. Bar and TimeSig when infilling, so the bar
        grid, and with it every note outside the region, stays where it was); None = none.
    banned_at: (L, vocab) or (batch, L, vocab) bool, tokens never sampled at that position of the
        sequence (e.g. Positions past a bar's end); it must match the length sampled — `window`
        slices it for windowed infilling. None = none.
    """
    pitch_of_token: torch.Tensor
    is_boundary: torch.Tensor
    pitch_range: Optional[Sequence[int]] = None
    max_chord: Optional[int] = None
    banned: Optional[torch.Tensor] = None
    banned_at: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.pitch_range is not None:
            low, high = self.pitch_range
            if not 0 <= low <= high <= 127:
                raise ValueError(f"pitch_range must be (low, high) with 0 <= low <= high <= 127; "
                                 f"got {self.pitch_range}")
        if self.max_chord is not None and self.max_chord < 1:
            raise ValueError(f"max_chord must be >= 1; got {self.max_chord}")

    @property
    def is_pitch(self):
        return self.pitch_of_token >= 0

    def static_logit_mask(self):
        """(vocab,) bool: tokens never allowed (pitches out of range, `banned`)."""
        banned = torch.zeros_like(self.is_boundary) if self.banned is None else self.banned.clone()
        if self.pitch_range is not None:
            low, high = self.pitch_range
            banned |= self.is_pitch & ((self.pitch_of_token < low) | (self.pitch_of_token > high))
        return banned

    def window(self, start, stop):
        """These constraints for the positions [start, stop) of the sequence."""
        if self.banned_at is None:
            return self
        return replace(self, banned_at=self.banned_at[..., start:stop, :])

    def _spans(self, x, mask_id):
        """(span id, known Pitch) per position, both (batch, L): a known boundary opens a new span."""
        known = x != mask_id
        boundary = self.is_boundary.to(x.device)[x] & known
        pitch = self.is_pitch.to(x.device)[x] & known
        return torch.cumsum(boundary.long(), dim=1), pitch

    @staticmethod
    def _per_span(span, values):
        """The sum of `values` (batch, L) over each position's span -> (batch, L)."""
        return torch.zeros_like(span).scatter_add_(1, span, values.long()).gather(1, span)

    def chord_counts(self, x, mask_id):
        """For every position, the number of known Pitch tokens in its onset span: the tokens between
        the nearest known boundary on the left and the nearest known boundary on the right (MASKs
        inside may later split the span, so this over-counts — safe). x: (batch, L) -> (batch, L)."""
        span, pitch = self._spans(x, mask_id)
        return self._per_span(span, pitch)

    def overflow(self, x, mask_id, newly_revealed):
        """Newly revealed Pitch tokens beyond max_chord in their span (the rightmost ones) -> bool (batch, L)."""
        if self.max_chord is None:
            return torch.zeros_like(newly_revealed)
        span, pitch = self._spans(x, mask_id)
        old_counts = self._per_span(span, pitch & ~newly_revealed)
        new = pitch & newly_revealed
        seen = torch.cumsum(new.long(), dim=1)                 # new pitches up to and including i
        before = torch.full_like(span, torch.iinfo(torch.int64).max).scatter_reduce_(
            1, span, seen - new.long(), "amin", include_self=True)  # new pitches before each span starts
        rank = seen - before.gather(1, span)                   # 1-based rank among the span's new pitches
        return new & (old_counts + rank > self.max_chord)

    def apply(self, log_probs, x, mask_id):
        """Ban out-of-range pitches everywhere and any Pitch where the span is full. In place."""
        banned = self.static_logit_mask().to(log_probs.device)
        log_probs[..., banned] = -math.inf
        if self.banned_at is not None:
            if self.banned_at.shape[-2] != x.shape[1]:
                raise ValueError(f"banned_at covers {self.banned_at.shape[-2]} positions; "
                                 f"the sequence has {x.shape[1]}")
            log_probs.masked_fill_(self.banned_at.to(log_probs.device), -math.inf)
        if self.max_chord is not None:
            full = self.chord_counts(x, mask_id) >= self.max_chord          # (batch, L)
            pitch_cols = self.is_pitch.to(log_probs.device)
            log_probs.masked_fill_(full[..., None] & pitch_cols, -math.inf)
        return log_probs


def check_temperature(temperature):
    """Sampling temperature: > 0 scales the logits, 0 = greedy (argmax); negative is an error."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")


ORDERS = ("random", "confidence")
#: the sampling defaults of the command line and the studio, chosen from the quality study's steps
#: curves (README): confidence order at 32 steps is within the intervals of random order at 128 steps,
#: or better, on every SMDIM cell, with the fewest invalid tokens
DEFAULT_STEPS = 32
DEFAULT_ORDER = "confidence"


def _gumbel(shape, generator, device):
    return -torch.log(-torch.log(uniform(shape, generator, device).clamp_min(1e-20)))


def _draw(log_probs, where, temperature, generator):
    """Categorical draws from log_probs (batch, L, vocab) at the positions `where` (batch, L) is True,
    via Gumbel-max (noise only for those rows); temperature 0 takes the argmax. -> (n,) token ids."""
    rows = log_probs[where]                                               # (n, vocab)
    if temperature == 0:
        return rows.argmax(dim=-1)
    return torch.argmax(rows / temperature + _gumbel(rows.shape, generator, rows.device), dim=-1)


def _confident_reveal(x, masked, log_probs, temperature, generator, count, noise, priority=None):
    """(x with `count` (batch,) masked positions per row revealed, the revealed positions): every masked
    position draws a token; the rows keep the `count` draws of highest log-prob + noise * Gumbel
    (+ priority[token] when given)."""
    drawn = torch.zeros_like(x)
    drawn[masked] = _draw(log_probs, masked, temperature, generator)
    score = log_probs.gather(-1, drawn[..., None]).squeeze(-1)
    if priority is not None:
        score = score + priority.to(score.device)[drawn]
    if noise > 0:
        score = score + noise * _gumbel(score.shape, generator, score.device)
    score = score.masked_fill(~masked, -math.inf)
    rank = score.argsort(dim=1, descending=True).argsort(dim=1)
    reveal = masked & (rank < count[:, None])
    return torch.where(reveal, drawn, x), reveal


def _reveal(x, where, log_probs, temperature, generator):
    """x with the positions `where` replaced by draws from log_probs."""
    x = x.clone()
    x[where] = _draw(log_probs, where, temperature, generator)
    return x


@torch.no_grad()
def sample(model, x_init, *, steps, mask_id, generator=None, temperature=1.0,
           constraints: Optional[Constraints] = None, progress=False, desc="sampling", order="random",
           confidence_noise=1.0, priority=None, on_step=None):
    """Fill every MASK of x_init (batch, L) in `steps` steps; other tokens are kept. x_init is moved
    to the model's device; temperature 0 = greedy; order: "random" (ancestral) or "confidence" (see
    the module doc; `confidence_noise` scales its Gumbel noise, times t; `priority`, (vocab,) float,
    is added to the confidence of a drawn token, e.g. a large value for Bar tokens reveals the bar
    lines first; `on_step(done, steps)` is called after every step, e.g. for a progress display).
    Returns (tokens (batch, L) on the model's device, number of denoiser calls)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}; got {order!r}")
    if priority is not None and order != "confidence":
        raise ValueError("priority needs order='confidence'")
    check_temperature(temperature)
    x = to_device(model_device(model), x_init).long()
    cached, calls = None, 0
    initially_masked = (x == mask_id).sum(dim=1)
    bar = tqdm(range(steps, 0, -1), desc=desc, disable=not progress, leave=False)
    for k in bar:
        masked = x == mask_id
        if not masked.any():
            break
        t, s = k / steps, (k - 1) / steps
        if cached is None:
            cached = subs_log_probs(model(x), mask_id)
            calls += 1
        log_probs = cached if constraints is None else constraints.apply(cached.clone(), x, mask_id)
        if order == "confidence":
            # as many as the schedule leaves masked at time s: floor(s * initially masked)
            count = masked.sum(dim=1) - torch.div(initially_masked * (k - 1), steps, rounding_mode="floor")
            x, reveal = _confident_reveal(x, masked, log_probs, temperature, generator, count.clamp_min(0),
                                          confidence_noise * t, priority)
        else:
            reveal = masked & (uniform(x.shape, generator, x.device) < (t - s) / t)
            if k == 1:
                reveal = masked
            x = _reveal(x, reveal, log_probs, temperature, generator)
        if constraints is not None and constraints.max_chord is not None:
            undo = constraints.overflow(x, mask_id, reveal)
            x = torch.where(undo, torch.full_like(x, mask_id), x)
            reveal &= ~undo
        if reveal.any():
            cached = None
        if on_step is not None:
            on_step(steps - k + 1, steps)
    # Constraint repairs can leave a few masks after the last step: finish them (at most a few rounds).
    for _ in range(16):
        masked = x == mask_id
        if not masked.any():
            break
        log_probs = subs_log_probs(model(x), mask_id)
        calls += 1
        if constraints is not None:
            log_probs = constraints.apply(log_probs, x, mask_id)
        x = _reveal(x, masked, log_probs, temperature, generator)
        if constraints is not None and constraints.max_chord is not None:
            x = torch.where(constraints.overflow(x, mask_id, masked), torch.full_like(x, mask_id), x)
    if (x == mask_id).any():
        raise RuntimeError("sampling left masked tokens after the repair rounds; this is a bug")
    return x, calls


def generate(model, batch, length, *, steps, mask_id, **kwargs):
    """Unconditional generation: (batch, length) tokens from all-MASK, on the model's device."""
    return sample(model, _with_prefix(model, batch, length, mask_id), steps=steps, mask_id=mask_id, **kwargs)[0]


def infill(model, tokens, region, *, steps, mask_id, window=None, progress=False, **kwargs):
    """Regenerate tokens where `region` (same shape (batch, L), bool) is True; every other token
    is kept. Both are moved to the model's device (so is the result).

    window: the training length. A longer input is infilled window by window: each window of
    `window` tokens holds the next masked span with known context on both sides (centred on the
    span when it fits, else a quarter window of left context), and its masked tokens are filled
    before the next window is placed, so nothing is ever sampled at a length the model has not
    seen."""
    if region.shape != tokens.shape:
        raise ValueError(f"region must have the shape of tokens {tuple(tokens.shape)}; got {tuple(region.shape)}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    tokens, region = to_device(model_device(model), tokens, region)
    x = torch.where(region.bool(), torch.full_like(tokens, mask_id), tokens)
    length = x.shape[1]
    if window is None or length <= window:
        return sample(model, x, steps=steps, mask_id=mask_id, **kwargs)[0]
    bar = tqdm(total=int((x == mask_id).sum()), desc="infilling windows", disable=not progress, leave=False)
    while True:
        columns = (x == mask_id).any(dim=0).nonzero().flatten()
        if columns.numel() == 0:
            break
        first = int(columns[0])
        last = int(columns[columns < first + window][-1])      # the span this window can hold
        span = last - first + 1
        start = first - (window - span) // 2 if span <= window // 2 else first - window // 4
        start = max(0, min(start, length - window))
        before = int((x == mask_id).sum())
        window_kwargs = dict(kwargs)
        if window_kwargs.get("constraints") is not None:
            window_kwargs["constraints"] = window_kwargs["constraints"].window(start, start + window)
        x[:, start:start + window] = sample(model, x[:, start:start + window], steps=steps, mask_id=mask_id,
                                            **window_kwargs)[0]
        bar.update(before - int((x == mask_id).sum()))
    bar.close()
    return x


def continue_sequence(model, prefix, total_length, *, steps, mask_id, window=None, bar_id=None, **kwargs):
    """Extend prefix (batch, P) to total_length tokens; the prefix is kept exactly. Longer than
    `window` (the training length) is generated by sliding windows starting at bar lines when
    `bar_id` is given (see `generate_long`). The result is on the model's device."""
    batch, plen = prefix.shape
    if total_length < plen:
        raise ValueError(f"total_length ({total_length}) must be >= the prefix length ({plen})")
    if window is None or total_length <= window:
        x = _with_prefix(model, batch, total_length, mask_id, prefix)
        return sample(model, x, steps=steps, mask_id=mask_id, **kwargs)[0]
    return generate_long(model, batch, total_length, window=window, steps=steps, mask_id=mask_id, prefix=prefix,
                         bar_id=bar_id, **kwargs)


def _with_prefix(model, batch, length, mask_id, prefix=None):
    """(batch, length) int64 MASKs on the model's device, starting with `prefix` (batch, P) if given."""
    x = torch.full((batch, length), mask_id, dtype=torch.long, device=model_device(model))
    if prefix is not None:
        x[:, :prefix.shape[1]] = prefix.to(x.device)
    return x


def generate_long(model, batch, length, *, window, steps, mask_id, hop=None, prefix=None, bar_id=None,
                  progress=False, **kwargs):
    """Sliding-window generation of `length` tokens with a model trained on `window` tokens: each new
    window fills the next `hop` tokens with up to `window - hop` known tokens before them as context.

    bar_id: the Bar token. Given, each window's context starts at a bar line (the first Bar at or
    after the earliest start that fits), as training crops do; the rows of the batch then get
    their own windows. Without it the context is the last `window - hop` tokens."""
    hop = window // 2 if hop is None else hop
    if not 0 < hop <= window:
        raise ValueError(f"hop must be in (0, window={window}]; got {hop}")
    out = _with_prefix(model, batch, length, mask_id, prefix)
    end = min(window, length)
    out[:, :end] = sample(model, out[:, :end], steps=steps, mask_id=mask_id, **kwargs)[0]
    bar = tqdm(total=length, initial=end, desc="sliding windows", disable=not progress, leave=False)
    while end < length:
        new_end = min(end + hop, length)
        earliest = max(0, new_end - window)
        if bar_id is None:
            out[:, earliest:new_end] = sample(model, out[:, earliest:new_end], steps=steps, mask_id=mask_id,
                                              **kwargs)[0]
        else:
            for row in range(batch):
                start = _first_bar(out[row, earliest:end], bar_id, earliest)
                out[row:row + 1, start:new_end] = sample(model, out[row:row + 1, start:new_end], steps=steps,
                                                         mask_id=mask_id, **kwargs)[0]
        bar.update(new_end - end)
        end = new_end
    bar.close()
    return out


def _first_bar(context, bar_id, offset):
    """The position (offset + index) of the first Bar token of `context` (L,), or offset if none."""
    found = (context == bar_id).nonzero().flatten()
    return offset + (int(found[0]) if found.numel() else 0)
