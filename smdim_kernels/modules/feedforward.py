"""Position-wise feed-forward layer: GELU MLP or SwiGLU (mamba_ssm's `GatedMLP` layout)."""
from __future__ import annotations

import torch.nn as nn

from ..ops.activation_linear.interface import ACTIVATIONS, activation_linear
from ..validation import check_tensor

__all__ = ["ACTIVATIONS", "FeedForward"]


class FeedForward(nn.Module):
    """Feed-forward layer applied to every position: (..., d_model) -> (..., d_model).

    activation="gelu":   fc1 (d_model -> hidden), exact (erf) GELU, fc2 (hidden -> d_model);
                         hidden defaults to 4 * d_model.
    activation="swiglu": fc1 (d_model -> 2 * hidden) whose output splits into [x, gate] (x first,
                         as in mamba_ssm's GatedMLP), y = x * silu(gate), fc2 (hidden -> d_model);
                         hidden defaults to int(8 * d_model / 3) rounded up to a multiple of
                         `multiple_of`. An explicit `hidden_features` is used as given (GatedMLP
                         rounds it too: pass the rounded width to load its state_dict).
    Parameters are fc1.{weight,bias} and fc2.{weight,bias}, so GatedMLP state_dicts load.
    The backward recomputes the activation from fc1's output instead of keeping it.
    """

    def __init__(self, d_model, hidden_features=None, activation="gelu", bias=True, multiple_of=128,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(d_model, bool) or int(d_model) != d_model or d_model < 1:
            raise ValueError(f"d_model must be a positive integer; got {d_model!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        if isinstance(multiple_of, bool) or int(multiple_of) != multiple_of or multiple_of < 1:
            raise ValueError(f"multiple_of must be a positive integer; got {multiple_of!r}")
        d_model, multiple_of = int(d_model), int(multiple_of)
        if hidden_features is None:
            if activation == "gelu":
                hidden_features = 4 * d_model
            else:
                hidden_features = -(-int(8 * d_model / 3) // multiple_of) * multiple_of
        elif isinstance(hidden_features, bool) or int(hidden_features) != hidden_features or hidden_features < 1:
            raise ValueError(f"hidden_features must be a positive integer or None; got {hidden_features!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.hidden_features = int(hidden_features)
        self.activation = activation
        fc1_out = 2 * self.hidden_features if activation == "swiglu" else self.hidden_features
        self.fc1 = nn.Linear(d_model, fc1_out, bias=bias, **factory)
        self.fc2 = nn.Linear(self.hidden_features, d_model, bias=bias, **factory)

    def forward(self, x):
        """x: (..., d_model) -> (..., d_model)."""
        check_tensor("x", x)
        if x.dim() < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected (..., d_model={self.d_model}); got shape {tuple(x.shape)}")
        # fc1's output is ours alone: with autograd off it is activated in place
        return activation_linear(self.fc1(x), self.fc2.weight, self.fc2.bias, self.activation, inplace=True)

    def extra_repr(self):
        return f"d_model={self.d_model}, hidden_features={self.hidden_features}, activation={self.activation!r}"
