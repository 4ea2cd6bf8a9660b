"""Naive PyTorch Mamba mixer with in_proj and out_proj, optionally bidirectional: the oracle of
`mamba_mixer_fn`."""
from __future__ import annotations

import torch.nn.functional as F

from ..mamba_inner.reference import mamba_inner_ref


def mamba_mixer_ref(hidden_states, in_proj_weight, in_proj_bias, conv1d_weight, conv1d_bias, x_proj_weight,
                    dt_proj_weight, dt_proj_bias, A, D, out_proj_weight, out_proj_bias, conv1d_weight_b=None,
                    conv1d_bias_b=None, x_proj_weight_b=None, dt_proj_weight_b=None, dt_proj_bias_b=None,
                    A_b=None, D_b=None, delta_softplus=True, chunk_size=None):
    """Reference `mamba_mixer_fn` (same signature; plain autograd; chunk_size is ignored).

    xz = in_proj(hidden_states) (x then z); the forward branch runs `mamba_inner_ref` on xz, the
    reverse branch (the *_b tensors, if given) on xz read right to left with its result flipped
    back; the gated outputs are averaged and out_proj maps them to (batch, L, d_model).
    """
    xz = F.linear(hidden_states, in_proj_weight, in_proj_bias).transpose(1, 2)  # (batch, 2*d_inner, L)
    y = mamba_inner_ref(xz, conv1d_weight, conv1d_bias, x_proj_weight, dt_proj_weight, None, None, A, None, None,
                        D, dt_proj_bias, delta_softplus=delta_softplus)
    if A_b is not None:
        y_b = mamba_inner_ref(xz.flip(-1), conv1d_weight_b, conv1d_bias_b, x_proj_weight_b, dt_proj_weight_b, None,
                              None, A_b, None, None, D_b, dt_proj_bias_b, delta_softplus=delta_softplus)
        y = (y + y_b.flip(-1)) * 0.5
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)
