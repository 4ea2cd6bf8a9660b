"""What both implementations of mamba_mixer share: the op's tensor inputs read as in_proj halves
and scan branches, the channel-major projection, the saved states' dtype."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._gemm import batched_mm
from ..mamba_inner.chain import ChainWeights


def branches(tensors):
    """(forward branch, reverse branch or None) as ChainWeights, from the op's 19 tensor inputs."""
    def branch(values):
        values = list(values)
        values[0] = values[0].reshape(values[0].shape[0], values[0].shape[-1])
        return ChainWeights(*values)

    forward_branch = branch(tensors[3:10])
    reverse_values = tensors[12:19]
    return forward_branch, (branch(reverse_values) if reverse_values[0] is not None else None)


def project(weight, bias, hidden_states):
    """weight @ hidden_states^T (+ bias): (batch, rows, n), channel-major as the kernels want it."""
    out = batched_mm(weight, hidden_states.transpose(1, 2))
    return out if bias is None else out + bias.to(out.dtype)[:, None]


class InProj(NamedTuple):
    """in_proj (weight (2*d_inner, d_model), bias) and its x rows and z rows (each (d_inner, d_model))
    with their biases."""
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    x_weight: torch.Tensor
    x_bias: Optional[torch.Tensor]
    z_weight: torch.Tensor
    z_bias: Optional[torch.Tensor]

    @staticmethod
    def of(weight, bias):
        d_inner = weight.shape[0] // 2
        return InProj(weight, bias, weight[:d_inner], None if bias is None else bias[:d_inner], weight[d_inner:],
                      None if bias is None else bias[d_inner:])


