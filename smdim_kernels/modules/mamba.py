"""Drop-in Mamba layer (mamba_ssm's `Mamba`), optionally bidirectional, on the fused ops.

Parameter names follow mamba_ssm's `Mamba` and transformers' `MambaMixer` (in_proj, conv1d, x_proj,
dt_proj, A_log, D, out_proj), so their state_dicts load unchanged. The maths lives in the ops
(`mamba_mixer_fn`, `causal_conv1d_fn`, `selective_scan_fn`); this module holds parameters,
initialisation and the decoding cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops._gemm import batched_mm
from ..ops.causal_conv1d import causal_conv1d_fn, causal_conv1d_update
from ..ops.mamba_mixer import DEFAULT_CHUNK_SIZE, mamba_mixer_fn
from ..ops.selective_scan import selective_scan_fn, selective_state_update
from ..validation import check_tensor


def _fp32(t):
    """Half-precision parameters enter the scan in fp32 (as in mamba_ssm); fp64 stays fp64."""
    return t if t is None or t.dtype in (torch.float32, torch.float64) else t.float()


@dataclass
class InferenceParams:
    """Decoding state shared by the layers of a model (mamba_ssm's `InferenceParams`).

    `key_value_memory_dict[layer_idx]` holds each layer's (conv_state, ssm_state); a forward with
    `seqlen_offset == 0` fills them from a prompt, later calls with one token advance them.
    `batch_size_offset` is kept so that mamba_ssm generation code can construct it; the Mamba
    layers do not read it (nor do mamba_ssm's).
    """
    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    batch_size_offset: int = 0
    key_value_memory_dict: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def reset(self, max_seqlen: int, max_batch_size: int) -> None:
        self.max_seqlen, self.max_batch_size, self.seqlen_offset = max_seqlen, max_batch_size, 0


class Mamba(nn.Module):
    """Mamba selective-state-space mixer: (batch, L, d_model) -> (batch, L, d_model).

    in_proj splits into x and z (d_inner = expand * d_model each); x goes through the causal conv1d
    + SiLU, x_proj gives (dt, B, C), dt_proj and softplus give delta, the selective scan with D skip
    runs, gated by silu(z), and out_proj maps back to d_model.

    bidirectional=True adds a reverse branch with its own conv1d_b, x_proj_b, dt_proj_b, A_b_log and
    D_b (Vision Mamba "v2" names) that reads the sequence right to left; in_proj and out_proj are
    shared, and the two branches' gated outputs are AVERAGED before out_proj. Decoding (step) is
    only defined for the causal (unidirectional) layer.

    use_fast_path=True runs the whole layer as one op, `mamba_mixer_fn`: a sequence of up to
    `chunk_size` steps at once, keeping its activations for the backward; a longer one in chunks of
    `chunk_size` steps (memory grows with chunk_size, not L; its backward recomputes in_proj and the
    scan instead of keeping (batch, d_inner, L) activations). False runs the same maths as separate
    ops (in_proj, conv1d, GEMMs, selective scan).
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
                 dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False,
                 use_fast_path=True, layer_idx=None, bidirectional=False, chunk_size=DEFAULT_CHUNK_SIZE,
                 device=None, dtype=None):
        super().__init__()
        if int(d_model) != d_model or d_model < 1:
            raise ValueError(f"d_model must be a positive integer; got {d_model!r}")
        for name, value in (("d_state", d_state), ("d_conv", d_conv)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if dt_init not in ("constant", "random"):
            raise ValueError(f"dt_init must be 'constant' or 'random'; got {dt_init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = int(d_model), int(d_state), int(d_conv), expand
        self.d_inner = int(expand * self.d_model)
        if self.d_inner < 1:
            raise ValueError(f"expand * d_model must be >= 1; got expand={expand}, d_model={d_model}")
        self.dt_rank = math.ceil(self.d_model / 16) if dt_rank == "auto" else int(dt_rank)
        if self.dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or a positive integer; got {dt_rank!r}")
        self.use_fast_path = use_fast_path
        if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        self.chunk_size = int(chunk_size)
        self.layer_idx = layer_idx
        self.bidirectional = bidirectional
        self.activation = "silu"

        self.in_proj = nn.Linear(self.d_model, self.d_inner * 2, bias=bias, **factory)
        init = dict(dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale, dt_init_floor=dt_init_floor)
        self._make_branch("", conv_bias, init, factory)
        if bidirectional:
            self._make_branch("_b", conv_bias, init, factory)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias, **factory)

    def _make_branch(self, suffix, conv_bias, init, factory):
        """conv1d, x_proj, dt_proj, A_log, D (suffix "") or their reverse twins (suffix "_b")."""
        d_inner, d_state = self.d_inner, self.d_state
        conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=self.d_conv, groups=d_inner, padding=self.d_conv - 1,
                           bias=conv_bias, **factory)
        x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True, **factory)
        dt_std = self.dt_rank ** -0.5 * init["dt_scale"]
        with torch.no_grad():
            if init["dt_init"] == "constant":
                nn.init.constant_(dt_proj.weight, dt_std)
            else:
                nn.init.uniform_(dt_proj.weight, -dt_std, dt_std)
            # dt_proj.bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max].
            log_min, log_max = math.log(init["dt_min"]), math.log(init["dt_max"])
            dt = torch.exp(torch.rand(d_inner, device=factory["device"]) * (log_max - log_min) + log_min)
            dt = dt.clamp(min=init["dt_init_floor"])
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        dt_proj.bias._no_reinit = True
        # S4D-real initialisation: A = -(1..N) per channel, stored as log in fp32.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=factory["device"]).repeat(d_inner, 1)
        A_log = nn.Parameter(torch.log(A))
        A_log._no_weight_decay = True
        D = nn.Parameter(torch.ones(d_inner, device=factory["device"]))
        D._no_weight_decay = True
        self.add_module("conv1d" + suffix, conv1d)
        self.add_module("x_proj" + suffix, x_proj)
        self.add_module("dt_proj" + suffix, dt_proj)
        self.register_parameter("A_b_log" if suffix else "A_log", A_log)
        self.register_parameter("D" + suffix, D)

    def _branch(self, suffix):
        A_log = self.A_b_log if suffix else self.A_log
        return (getattr(self, "conv1d" + suffix), getattr(self, "x_proj" + suffix),
                getattr(self, "dt_proj" + suffix), A_log, getattr(self, "D" + suffix))

    def extra_repr(self):
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"dt_rank={self.dt_rank}, bidirectional={self.bidirectional}, use_fast_path={self.use_fast_path}, "
                f"chunk_size={self.chunk_size}")

    # --- full sequences ---------------------------------------------------------------------

    def forward(self, hidden_states, inference_params: Optional[InferenceParams] = None):
        """hidden_states: (batch, L, d_model) -> (batch, L, d_model).

        With `inference_params` (unidirectional only): at seqlen_offset 0 the prompt is processed
        and the layer's decoding states are filled; afterwards one token per call is decoded.
        """
        self._check_input(hidden_states)
        batch, length, _ = hidden_states.shape
        conv_state = ssm_state = None
        if inference_params is not None:
            if self.bidirectional:
                raise ValueError("inference_params: a bidirectional Mamba reads the whole sequence and cannot "
                                 "decode token by token; build it with bidirectional=False to decode")
            conv_state, ssm_state = self._states_from_cache(inference_params, batch)
            if inference_params.seqlen_offset > 0:
                out, _, _ = self.step(hidden_states, conv_state, ssm_state)
                return out
        if self.use_fast_path and conv_state is None:
            return self._fused(hidden_states)
        # xz: (batch, 2*d_inner, L), channel-major as the kernels want it.
        xz = batched_mm(self.in_proj.weight, hidden_states.transpose(1, 2))
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
        return self._unfused(xz, conv_state, ssm_state)

    def _fused(self, hidden_states):
        reverse_branch = self._branch_tensors("_b") if self.bidirectional else {}
        return mamba_mixer_fn(hidden_states, self.in_proj.weight, self.in_proj.bias,
                              *self._branch_tensors("").values(), self.out_proj.weight, self.out_proj.bias,
                              **{name + "_b": t for name, t in reverse_branch.items()},
                              delta_softplus=True, chunk_size=self.chunk_size)

    def _branch_tensors(self, suffix):
        """The tensors of one branch as mamba_mixer_fn takes them (A and D, dt bias in fp32)."""
        conv1d, x_proj, dt_proj, A_log, D = self._branch(suffix)
        return {"conv1d_weight": conv1d.weight, "conv1d_bias": conv1d.bias, "x_proj_weight": x_proj.weight,
                "dt_proj_weight": dt_proj.weight, "dt_proj_bias": _fp32(dt_proj.bias),
                "A": -torch.exp(_fp32(A_log)), "D": _fp32(D)}

    def _unfused(self, xz, conv_state=None, ssm_state=None):
        x, z = xz.chunk(2, dim=1)
        y = self._scan_branch(x, z, "", conv_state, ssm_state)
        if self.bidirectional:
            y_bwd = self._scan_branch(x.flip(-1), z.flip(-1), "_b", None, None).flip(-1)
            y = (y + y_bwd) * 0.5
        return self._out_proj(y)

    def _out_proj(self, y):
        """(batch, d_inner, L) -> (batch, L, d_model), reading y transposed in place."""
        out = batched_mm(y.transpose(1, 2), self.out_proj.weight.t())
        return out if self.out_proj.bias is None else out + self.out_proj.bias

    def _scan_branch(self, x, z, suffix, conv_state, ssm_state):
        """One direction as separate ops; fills the decoding states when given. -> (batch, d_inner, L)."""
        conv1d, x_proj, dt_proj, A_log, D = self._branch(suffix)
        if conv_state is not None:  # the last d_conv inputs, left-padded with zeros
            conv_state.copy_(F.pad(x, (self.d_conv - x.shape[-1], 0))[..., -self.d_conv:])
        x = causal_conv1d_fn(x, conv1d.weight.reshape(self.d_inner, self.d_conv), conv1d.bias, self.activation)
        dt, B, C = torch.split(x_proj(x.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = batched_mm(dt_proj.weight, dt.transpose(1, 2))
        y = selective_scan_fn(x, delta, -torch.exp(_fp32(A_log)), B.transpose(1, 2).contiguous(),
                              C.transpose(1, 2).contiguous(), _fp32(D), z, _fp32(dt_proj.bias),
                              delta_softplus=True, return_last_state=ssm_state is not None)
        if ssm_state is not None:
            y, last_state = y
            ssm_state.copy_(last_state)
        return y

    # --- token-by-token decoding ------------------------------------------------------------

    def step(self, hidden_states, conv_state, ssm_state):
        """Decode one token: hidden_states (batch, 1, d_model); conv_state (batch, d_inner, d_conv)
        and ssm_state (batch, d_inner, d_state) are updated in place. Returns (out, conv_state,
        ssm_state) with out (batch, 1, d_model)."""
        if self.bidirectional:
            raise RuntimeError("step: a bidirectional Mamba cannot decode token by token (its reverse branch "
                               "needs the future); use bidirectional=False")
        self._check_input(hidden_states)
        if hidden_states.shape[1] != 1:
            raise ValueError(f"hidden_states: step decodes one token, expected (batch, 1, {self.d_model}); "
                             f"got shape {tuple(hidden_states.shape)}")
        batch = hidden_states.shape[0]
        for name, state, shape in (("conv_state", conv_state, (batch, self.d_inner, self.d_conv)),
                                   ("ssm_state", ssm_state, (batch, self.d_inner, self.d_state))):
            check_tensor(name, state)
            if tuple(state.shape) != shape:
                raise ValueError(f"{name} must be {shape}; got shape {tuple(state.shape)} "
                                 f"(allocate_inference_cache makes both)")
        xz = self.in_proj(hidden_states[:, 0])  # (batch, 2*d_inner)
        x, z = xz.chunk(2, dim=-1)
        x = causal_conv1d_update(x, conv_state, self.conv1d.weight.reshape(self.d_inner, self.d_conv),
                                 self.conv1d.bias, self.activation)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)
        y = selective_state_update(ssm_state, x, dt, -torch.exp(_fp32(self.A_log)), B, C, _fp32(self.D), z=z,
                                   dt_bias=_fp32(self.dt_proj.bias), dt_softplus=True)
        return self.out_proj(y).unsqueeze(1), conv_state, ssm_state

    def allocate_inference_cache(self, batch_size, max_seqlen=None, dtype=None, **kwargs):
        """Zeroed decoding states: conv_state (batch, d_inner, d_conv) in the conv weight's dtype
        (or `dtype`), ssm_state (batch, d_inner, d_state) in fp32 (fp64 for fp64 weights)."""
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = torch.float64 if self.in_proj.weight.dtype == torch.float64 else torch.float32
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def _states_from_cache(self, inference_params, batch_size):
        if self.layer_idx is None:
            raise ValueError("layer_idx: set layer_idx when constructing Mamba to use inference_params")
        cache = inference_params.key_value_memory_dict
        if self.layer_idx not in cache:
            cache[self.layer_idx] = self.allocate_inference_cache(batch_size, inference_params.max_seqlen)
        conv_state, ssm_state = cache[self.layer_idx]
        if inference_params.seqlen_offset == 0:
            conv_state.zero_()
            ssm_state.zero_()
        return conv_state, ssm_state

    def _check_input(self, hidden_states):
        check_tensor("hidden_states", hidden_states)
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"hidden_states must be (batch, L, d_model={self.d_model}); "
                             f"got shape {tuple(hidden_states.shape)}")
        if not hidden_states.is_floating_point():
            raise TypeError(f"hidden_states must be a floating tensor; got {hidden_states.dtype}")
