"""The MFA block (Mamba -> FeedForward -> self-attention, pre-norm residual) and a stack of them.

Residual stream as in mamba_ssm's `Block`: a block receives (hidden_states, residual), adds
them inside the fused add+norm of its first sub-layer, and returns its last sub-layer's output
with the running residual; the stack's final norm adds the last output. So a block computes
    r1 = x + r;      h = mixer(norm(r1))
    r2 = h + r1;     h = mlp(norm2(r2))
    r3 = h + r2;     h = attn(norm3(r3))          -> returns (h, r3)
"""
from __future__ import annotations

import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..validation import check_tensor
from .attention import SelfAttention
from .feedforward import FeedForward
from .mamba import Mamba
from .norm import make_norm

DEFAULT_ATTN_WINDOW = 128
DEFAULT_FFN_EXPANSION = 2


class MFABlock(nn.Module):
    """Pre-norm residual Mamba -> FeedForward -> SelfAttention, with fused residual-add + norm.

    (batch, L, d_model) -> (batch, L, d_model). Defaults (our choices; the paper publishes none):
    bidirectional Mamba (the denoiser reads both directions); a GELU feed-forward of hidden width
    2*d_model, since the Mamba layer's expand-2 gated projections already act as a wide MLP (the
    block then has about the parameters of a transformer block with a 4*d_model FFN); and
    non-causal local-window attention, each token seeing `attn_window` = 128 neighbours on each
    side, the paper's "light local refinement": O(L * window) instead of O(L^2).
    `attn_window=None` gives full attention (then the block costs more than a transformer block).
    """

    def __init__(self, d_model, num_heads=8, d_state=16, d_conv=4, expand=2, dt_rank="auto", bidirectional=True,
                 ffn="gelu", ffn_hidden=None, attn_window=DEFAULT_ATTN_WINDOW, causal=False, norm="layernorm",
                 norm_eps=1e-5, residual_in_fp32=True, attn_dropout=0.0, use_fast_path=True, layer_idx=None,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.residual_in_fp32 = residual_in_fp32
        self.layer_idx = layer_idx
        if ffn_hidden is None:
            ffn_hidden = DEFAULT_FFN_EXPANSION * d_model
        self.norm = make_norm(norm, d_model, norm_eps, **factory)
        self.mixer = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                           bidirectional=bidirectional, use_fast_path=use_fast_path, layer_idx=layer_idx, **factory)
        self.norm2 = make_norm(norm, d_model, norm_eps, **factory)
        self.mlp = FeedForward(d_model, hidden_features=ffn_hidden, activation=ffn, **factory)
        self.norm3 = make_norm(norm, d_model, norm_eps, **factory)
        self.attn = SelfAttention(d_model, num_heads, causal=causal, window=attn_window, dropout=attn_dropout,
                                  **factory)

    def forward(self, hidden_states, residual=None):
        """hidden_states, residual: (batch, L, d_model) (residual None in the first block).
        Returns (hidden_states, residual), both (batch, L, d_model)."""
        check_tensor("hidden_states", hidden_states)
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"hidden_states must be (batch, L, d_model={self.d_model}); "
                             f"got shape {tuple(hidden_states.shape)}")
        for norm, layer in ((self.norm, self.mixer), (self.norm2, self.mlp), (self.norm3, self.attn)):
            normed, residual = norm(hidden_states, residual, prenorm=True, residual_in_fp32=self.residual_in_fp32)
            hidden_states = layer(normed)
        return hidden_states, residual

    def extra_repr(self):
        return f"d_model={self.d_model}, residual_in_fp32={self.residual_in_fp32}"


def residual_stack(layers, hidden_states, norm_f, gradient_checkpointing=False):
    """Run blocks with the (hidden_states, residual) interface, then the final add+norm:
    (batch, L, d) -> (batch, L, d). gradient_checkpointing re-runs each block in the backward."""
    residual = None
    for layer in layers:
        if gradient_checkpointing:
            hidden_states, residual = checkpoint(layer, hidden_states, residual, use_reentrant=False)
        else:
            hidden_states, residual = layer(hidden_states, residual)
    return norm_f(hidden_states, residual)


class MFAStack(nn.Module):
    """`n_layers` MFA blocks and a final norm: (batch, L, d_model) -> (batch, L, d_model).

    Block keyword arguments (num_heads, attn_window, ffn, ...) go to every MFABlock.
    gradient_checkpointing=True re-runs each block in the backward instead of keeping its
    activations (for long sequences in training).
    """

    def __init__(self, n_layers, d_model, norm="layernorm", norm_eps=1e-5, gradient_checkpointing=False,
                 device=None, dtype=None, **block_kwargs):
        super().__init__()
        if int(n_layers) != n_layers or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer; got {n_layers!r}")
        self.d_model = d_model
        self.gradient_checkpointing = gradient_checkpointing
        self.layers = nn.ModuleList(
            MFABlock(d_model, norm=norm, norm_eps=norm_eps, layer_idx=i, device=device, dtype=dtype, **block_kwargs)
            for i in range(int(n_layers)))
        self.norm_f = make_norm(norm, d_model, norm_eps, device=device, dtype=dtype)

    def forward(self, hidden_states):
        """hidden_states: (batch, L, d_model) -> normalised output (batch, L, d_model)."""
        return residual_stack(self.layers, hidden_states, self.norm_f,
                              gradient_checkpointing=self.gradient_checkpointing and self.training)

    def extra_repr(self):
        return (f"n_layers={len(self.layers)}, d_model={self.d_model}, "
                f"gradient_checkpointing={self.gradient_checkpointing}")
