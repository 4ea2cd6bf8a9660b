"""The SMDIM denoiser and its transformer-diffusion baseline (same skeleton, same width).

    tokens (batch, L) -> embedding (batch, L, d_embed)
      -> Conv1d(kernel c, stride c): (batch, L/c, d_model)      c = compression (4)
      -> n_layers blocks: MFABlock (bidirectional Mamba -> FFN -> attention) or, for the baseline,
         TransformerBlock (attention -> FFN)
      -> final norm -> ConvTranspose1d(c, stride c): (batch, L, d_embed)
      -> + embedding (token-level skip) -> norm -> head tied to the embedding: (batch, L, vocab)

Lengths not divisible by c are right-padded with PAD and the logits cropped back. The layers come
from smdim_kernels; this module only wires them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from smdim_kernels import FeedForward, LayerNorm, MFABlock, SelfAttention
from smdim_kernels.modules import residual_stack

BLOCK_TYPES = ("mfa", "transformer")


@dataclass
class SMDIMConfig:
    """Sizes and options of the denoiser (our choices: the paper publishes none).

    attn_window is counted in compressed steps (one step = `compression` tokens); None = full
    attention. Default: local, 32 steps (= 128 tokens) each side, chosen by measurement: on the Han
    songs at 256 tokens SMDIM-tiny reached the same validation NLL with it as with full attention
    after 240 s of training (1.537 vs 1.525 bits/token, within run-to-run noise), while at long
    inputs full attention makes an MFA block 2.0-2.3x slower and 2.3-2.5x costlier in FLOPs than the
    local one (8192 tokens, benchmarks/). pos_encoding adds sinusoidal positions after compression
    ("none" for SMDIM, whose Mamba layers carry order; attention-only baselines need them).
    """
    vocab_size: int
    pad_id: int
    mask_id: int
    block: str = "mfa"
    d_model: int = 256
    d_embed: int = 128
    n_layers: int = 6
    num_heads: int = 4
    d_state: int = 16
    expand: int = 2
    compression: int = 4
    attn_window: Optional[int] = 32
    ffn: str = "gelu"
    ffn_hidden: Optional[int] = None
    pos_encoding: str = "none"
    dropout: float = 0.0
    n_styles: int = 0               # > 0: a learned style vector is added to every token embedding


    def __post_init__(self):
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"block must be one of {BLOCK_TYPES}; got {self.block!r}")
        if self.pos_encoding not in ("none", "sinusoidal"):
            raise ValueError(f"pos_encoding must be 'none' or 'sinusoidal'; got {self.pos_encoding!r}")
        for name in ("vocab_size", "d_model", "d_embed", "n_layers", "num_heads", "compression"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not isinstance(self.n_styles, int) or self.n_styles < 0:
            raise ValueError(f"n_styles must be a non-negative integer; got {self.n_styles!r}")
        if self.attn_window is not None and (not isinstance(self.attn_window, int) or self.attn_window < 1):
            raise ValueError(f"attn_window must be None (full attention) or a positive integer; "
                             f"got {self.attn_window!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        for name in ("pad_id", "mask_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} must be a token id in [0, vocab_size={self.vocab_size}); "
                                 f"got {getattr(self, name)}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**values)


PRESETS = {
    # Trains in minutes on 2 CPU cores (the demo).
    "tiny": dict(d_model=128, d_embed=96, n_layers=4, num_heads=4, d_state=16, attn_window=32),
    "small": dict(d_model=256, d_embed=128, n_layers=8, num_heads=4, d_state=16, attn_window=32),
    # Near the paper's scale (SCHmUBERT's width 512, 8 heads).
    "base": dict(d_model=512, d_embed=256, n_layers=12, num_heads=8, d_state=16, attn_window=64),
}


def preset_config(name, vocab_size, pad_id, mask_id, block="mfa", **overrides):
    """SMDIMConfig of a named size preset; block="transformer" gives the parameter-matched baseline
    (full attention unless `attn_window` is overridden: the window does not change the parameters)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}; got {name!r}")
    if block not in BLOCK_TYPES:
        raise ValueError(f"block must be one of {BLOCK_TYPES}; got {block!r}")
    config = SMDIMConfig(vocab_size=vocab_size, pad_id=pad_id, mask_id=mask_id, **dict(PRESETS[name], **overrides))
    if block == "mfa":
        return config
    baseline = matched_baseline_config(config)
    return replace(baseline, attn_window=overrides["attn_window"]) if "attn_window" in overrides else baseline


class TransformerBlock(nn.Module):
    """Pre-norm residual self-attention -> FeedForward (4*d_model GELU), with the fused add+norm;
    same residual-stream interface as MFABlock: forward(h, residual) -> (h, residual)."""

    def __init__(self, d_model, num_heads, attn_window=None, ffn="gelu", ffn_hidden=None, dropout=0.0):
        super().__init__()
        self.norm = LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, window=attn_window, dropout=dropout)
        self.norm2 = LayerNorm(d_model)
        self.mlp = FeedForward(d_model, hidden_features=ffn_hidden, activation=ffn)

    def forward(self, hidden_states, residual=None):
        for norm, layer in ((self.norm, self.attn), (self.norm2, self.mlp)):
            normed, residual = norm(hidden_states, residual, prenorm=True, residual_in_fp32=True)
            hidden_states = layer(normed)
        return hidden_states, residual


def _patch_size(name, conv):
    """The kernel size of a non-overlapping-patch conv (stride == kernel_size, no padding, dilation
    or groups); anything else is rejected rather than computed wrongly."""
    k = conv.kernel_size[0]
    if conv.stride[0] != k or conv.padding[0] != 0 or conv.dilation[0] != 1 or conv.groups != 1 \
            or getattr(conv, "output_padding", (0,))[0] != 0:
        raise ValueError(f"{name} must have stride == kernel_size and no padding, dilation or groups; got {conv}")
    return k


def patch_conv(x, conv: nn.Conv1d):
    """conv (kernel_size == stride, no padding) over time-major x (batch, L, C_in) -> (batch, L/k,
    C_out). The patches do not overlap, so it is one GEMM on a view of x: no transposed copy of x
    and no im2col buffer (nn.Conv1d needs both here)."""
    k = _patch_size("conv", conv)
    weight = conv.weight.transpose(1, 2).reshape(conv.out_channels, k * conv.in_channels)  # [o, (j, i)]
    return F.linear(x.reshape(x.shape[0], x.shape[1] // k, k * x.shape[2]), weight, conv.bias)


def patch_conv_transpose(h, conv: nn.ConvTranspose1d):
    """conv (kernel_size == stride, no padding) over time-major h (batch, T, C_in) -> (batch, T*k,
    C_out), as one GEMM whose output rows are already in time order."""
    k = _patch_size("conv", conv)
    weight = conv.weight.permute(2, 1, 0).reshape(k * conv.out_channels, conv.in_channels)  # [(j, o), i]
    bias = None if conv.bias is None else conv.bias.repeat(k)
    return F.linear(h, weight, bias).reshape(h.shape[0], h.shape[1] * k, conv.out_channels)


def sinusoidal_positions(length, dim, device=None, dtype=torch.float32):
    """(length, dim) sine/cosine position table."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table.to(dtype)


class SMDIM(nn.Module):
    """The denoiser: tokens (batch, L) -> logits (batch, L, vocab_size); see the module docstring.

    gradient_checkpointing=True (a training option, not part of the config: `smdim train
    --gradient-checkpointing`) re-runs each block in the backward instead of keeping its
    activations, as smdim_kernels' MFAStack does; the loss and gradients are the same.
    """

    def __init__(self, config: SMDIMConfig, gradient_checkpointing: bool = False):
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.d_embed)
        nn.init.normal_(self.embedding.weight, std=c.d_embed ** -0.5)
        # conditioning on the corpus (the paper's "associated attributes"): zero at start, learned
        self.style_embedding = nn.Embedding(c.n_styles, c.d_embed) if c.n_styles else None
        if self.style_embedding is not None:
            nn.init.zeros_(self.style_embedding.weight)
        self.compress = nn.Conv1d(c.d_embed, c.d_model, kernel_size=c.compression, stride=c.compression)
        if c.block == "mfa":
            blocks = [MFABlock(c.d_model, num_heads=c.num_heads, d_state=c.d_state, expand=c.expand,
                               attn_window=c.attn_window, ffn=c.ffn, ffn_hidden=c.ffn_hidden,
                               attn_dropout=c.dropout, layer_idx=i) for i in range(c.n_layers)]
        else:
            blocks = [TransformerBlock(c.d_model, c.num_heads, attn_window=c.attn_window, ffn=c.ffn,
                                       ffn_hidden=c.ffn_hidden, dropout=c.dropout) for _ in range(c.n_layers)]
        self.layers = nn.ModuleList(blocks)
        self.norm_f = LayerNorm(c.d_model)
        self.expand_out = nn.ConvTranspose1d(c.d_model, c.d_embed, kernel_size=c.compression, stride=c.compression)
        self.norm_out = LayerNorm(c.d_embed)
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, tokens, style=None):
        """tokens: (batch, L) int64 [, style: (batch,) int64 style indices, for n_styles > 0]
        -> logits (batch, L, vocab_size) (fp32)."""
        c = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be an integer tensor (batch, L); got {shape}")
        batch, length = tokens.shape
        self._check_style(style, batch)
        padded = -(-length // c.compression) * c.compression
        if padded != length:
            tokens = F.pad(tokens, (0, padded - length), value=c.pad_id)
        emb = self.embedding(tokens)                                      # (batch, L', d_embed)
        if style is not None:
            emb = emb + self.style_embedding(style)[:, None, :]
        h = patch_conv(emb, self.compress)                                # (batch, L'/c, d_model)
        if c.pos_encoding == "sinusoidal":
            h = h + sinusoidal_positions(h.shape[1], c.d_model, h.device, h.dtype)
        h = self._blocks(h)
        up = patch_conv_transpose(h, self.expand_out)                     # (batch, L', d_embed)
        out = self.norm_out(up, emb)                                      # token-level skip
        logits = F.linear(out, self.embedding.weight)                    # tied head
        return logits[:, :length].float()

    def _check_style(self, style, batch):
        n = self.config.n_styles
        if n == 0:
            if style is not None:
                raise ValueError("style: this model was trained without styles (n_styles = 0); pass style=None")
            return
        if not isinstance(style, torch.Tensor) or style.shape != (batch,) or style.dtype not in (torch.int64,
                                                                                               torch.int32):
            raise ValueError(f"style: this model plays {n} styles; pass a ({batch},) integer tensor of style indices")

    def _blocks(self, h):
        """The residual stream through every block and the final norm."""
        return residual_stack(self.layers, h, self.norm_f,
                              gradient_checkpointing=self.gradient_checkpointing and self.training)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


class StyleBound(nn.Module):
    """A style-conditioned SMDIM with its style fixed: forward(tokens) like an unconditioned
    denoiser, for the samplers and evaluation."""

    def __init__(self, model: SMDIM, style: int):
        super().__init__()
        if not 0 <= style < model.config.n_styles:
            raise ValueError(f"style must be in [0, {model.config.n_styles}); got {style}")
        self.model, self.style = model, int(style)

    @property
    def config(self):
        return self.model.config

    def forward(self, tokens):
        return self.model(tokens, style=torch.full((tokens.shape[0],), self.style, dtype=torch.long,
                                                   device=tokens.device))


def _size_by_depth(config: SMDIMConfig):
    """(parameters outside the blocks, parameters per block) of a config, from two shallow builds."""
    one = SMDIM(replace(config, n_layers=1)).num_parameters()
    two = SMDIM(replace(config, n_layers=2)).num_parameters()
    return 2 * one - two, two - one


def matched_baseline_config(config: SMDIMConfig, tolerance=0.10) -> SMDIMConfig:
    """The transformer-diffusion baseline of `config`: same skeleton and width, full attention,
    sinusoidal positions, 4*d_model FFN, and the depth whose parameter count is closest to
    SMDIM's (required within `tolerance`)."""
    base, per_block = _size_by_depth(config)
    target = base + config.n_layers * per_block
    baseline = replace(config, block="transformer", attn_window=None, pos_encoding="sinusoidal",
                       ffn_hidden=4 * config.d_model)
    t_base, t_block = _size_by_depth(baseline)
    n_layers = max(1, round((target - t_base) / t_block))
    gap = abs(t_base + n_layers * t_block - target) / target
    if gap > tolerance:
        raise ValueError(f"no transformer depth matches SMDIM's {target} parameters within {tolerance:.0%}")
    return replace(baseline, n_layers=n_layers)
