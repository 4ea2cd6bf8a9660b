"""smdim_kernels.Mamba: drop-in equivalence with transformers' MambaMixer, fused vs unfused,
bidirectional maths, token-by-token decoding, state_dict handling and input errors."""
import pytest
import torch

from smdim_kernels import InferenceParams, Mamba, mamba_inner_ref

transformers = pytest.importorskip("transformers", reason="transformers is a test dependency: pip install -e '.[dev]'")
from transformers import MambaConfig  # noqa: E402
from transformers.models.mamba.modeling_mamba import MambaMixer  # noqa: E402


def mixer_pair(d_model=32, d_state=8, d_conv=4, expand=2, dt_rank=5, bias=False, conv_bias=True, seed=0):
    """A random transformers MambaMixer and our Mamba loaded from its state_dict."""
    torch.manual_seed(seed)
    config = MambaConfig(hidden_size=d_model, state_size=d_state, expand=expand, conv_kernel=d_conv,
                         time_step_rank=dt_rank, use_bias=bias, use_conv_bias=conv_bias, num_hidden_layers=1)
    theirs = MambaMixer(config, layer_idx=0)
    with torch.no_grad():  # move every parameter off its init so that each one matters
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, bias=bias,
                 conv_bias=conv_bias)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


@pytest.mark.parametrize("bias,conv_bias", [(False, True), (True, False)])
@pytest.mark.parametrize("use_fast_path", [True, False])
def test_matches_transformers_mamba_mixer(bias, conv_bias, use_fast_path):
    theirs, ours = mixer_pair(bias=bias, conv_bias=conv_bias)
    ours.use_fast_path = use_fast_path
    x = torch.randn(2, 45, 32)
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_theirs, out_ours = theirs(x_theirs), ours(x_ours)
    torch.testing.assert_close(out_ours, out_theirs, atol=1e-4, rtol=1e-4)
    dout = torch.randn_like(out_theirs)
    out_theirs.backward(dout)
    out_ours.backward(dout)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, atol=1e-4, rtol=1e-4)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs_params[name].grad, atol=1e-4, rtol=1e-4,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


def test_state_dict_keys_equal_transformers_and_mamba_ssm_names():
    theirs, ours = mixer_pair()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
            "A_log", "D", "out_proj.weight"} == set(ours.state_dict())


def _grads(module, x):
    x = x.clone().requires_grad_()
    out = module(x)
    out.backward(torch.ones_like(out) / out.numel() ** 0.5)
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    return out, x.grad, grads


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_and_unfused_paths_agree(bidirectional):
    torch.manual_seed(1)
    m = Mamba(24, d_state=16, bidirectional=bidirectional).double()
    x = torch.randn(2, 70, 24, dtype=torch.float64)
    m.use_fast_path = True
    fused = _grads(m, x)
    m.use_fast_path = False
    unfused = _grads(m, x)
    torch.testing.assert_close(fused[0], unfused[0], atol=1e-11, rtol=1e-11)
    torch.testing.assert_close(fused[1], unfused[1], atol=1e-11, rtol=1e-11)
    for name in fused[2]:
        torch.testing.assert_close(fused[2][name], unfused[2][name], atol=1e-11, rtol=1e-11,
                                   msg=lambda msg, name=name: f"{name}: {msg}")


def test_bidirectional_averages_a_reverse_branch():
    """out = out_proj((y_forward + flip(y_reverse(flip(xz)))) / 2), each branch with its own parameters."""
    torch.manual_seed(2)
    m = Mamba(16, d_state=4, bidirectional=True, bias=True).double()
    assert {"conv1d_b.weight", "x_proj_b.weight", "dt_proj_b.weight", "dt_proj_b.bias", "A_b_log", "D_b"} <= set(
        m.state_dict())
    with torch.no_grad():  # make the two branches differ
        for name, p in m.named_parameters():
            if name.endswith("_b") or "_b." in name:
                p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(2, 33, 16, dtype=torch.float64)
    xz = (x @ m.in_proj.weight.T + m.in_proj.bias).transpose(1, 2)

    def branch(xz, conv1d, x_proj, dt_proj, A_log, D):
        return mamba_inner_ref(xz, conv1d.weight, conv1d.bias, x_proj.weight, dt_proj.weight, None, None,
                               -torch.exp(A_log), D=D, delta_bias=dt_proj.bias)

    y_fwd = branch(xz, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D)
    y_rev = branch(xz.flip(-1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b).flip(-1)
    expected = m.out_proj(((y_fwd + y_rev) / 2).transpose(1, 2))
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, atol=1e-11, rtol=1e-11)
    # The layer really reads the future: changing the last token changes the first output.
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(m(x2)[:, 0], m(x)[:, 0])


def test_step_decoding_matches_full_forward():
    torch.manual_seed(3)
    m = Mamba(16, d_state=8, layer_idx=0).double().eval()
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    with torch.no_grad():
        full = m(x)
        params = InferenceParams(max_seqlen=23, max_batch_size=2)
        prompt = m(x[:, :10], inference_params=params)  # prefill fills the layer's states
        outs = [prompt]
        for t in range(10, 23):
            params.seqlen_offset = t
            outs.append(m(x[:, t:t + 1], inference_params=params))
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-11, rtol=1e-11)


def test_step_from_allocated_cache_matches_forward():
    torch.manual_seed(4)
    m = Mamba(8, d_state=4, d_conv=3).eval()
    x = torch.randn(3, 9, 8)
    conv_state, ssm_state = m.allocate_inference_cache(batch_size=3, max_seqlen=9)
    assert conv_state.shape == (3, 16, 3) and ssm_state.shape == (3, 16, 4)
    with torch.no_grad():
        steps = [m.step(x[:, t:t + 1], conv_state, ssm_state)[0] for t in range(9)]
        torch.testing.assert_close(torch.cat(steps, dim=1), m(x), atol=1e-5, rtol=1e-5)


def test_prefill_shorter_than_conv_width():
    torch.manual_seed(5)
    m = Mamba(8, d_state=4, d_conv=4, layer_idx=3).double().eval()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        params = InferenceParams(max_seqlen=6, max_batch_size=1)
        outs = [m(x[:, :2], inference_params=params)]
        for t in range(2, 6):
            params.seqlen_offset = t
            outs.append(m(x[:, t:t + 1], inference_params=params))
        torch.testing.assert_close(torch.cat(outs, 1), m(x), atol=1e-11, rtol=1e-11)


def test_same_seed_same_initialisation():
    torch.manual_seed(7)
    a = Mamba(16, bidirectional=True)
    torch.manual_seed(7)
    b = Mamba(16, bidirectional=True)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_initialisation_follows_mamba():
    m = Mamba(64, d_state=16, dt_min=0.001, dt_max=0.1)
    assert m.dt_rank == 4 and m.d_inner == 128
    torch.testing.assert_close(m.A_log.exp(), torch.arange(1, 17.0).repeat(128, 1))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    assert m.A_log._no_weight_decay and m.D._no_weight_decay
    assert "bidirectional=False" in repr(m) and "d_inner=128" in repr(m)


def test_torch_compile_fullgraph():
    torch.manual_seed(8)
    m = Mamba(16, d_state=4, bidirectional=True).double()
    x = torch.randn(2, 19, 16, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out_c = compiled(x)
    g_c = torch.autograd.grad(out_c.square().sum(), [x] + list(m.parameters()))
    out = m(x)
    g = torch.autograd.grad(out.square().sum(), [x] + list(m.parameters()))
    torch.testing.assert_close(out_c, out, atol=1e-11, rtol=1e-11)
    for a, b in zip(g_c, g):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_state_dict_missing_and_unexpected_keys_are_named():
    theirs, _ = mixer_pair()
    bidir = Mamba(32, d_state=8, dt_rank=5, bidirectional=True)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: .*\"conv1d_b.weight\""):
        bidir.load_state_dict(theirs.state_dict())
    uni = Mamba(32, d_state=8, dt_rank=5)
    extra = dict(theirs.state_dict(), extra_weight=torch.zeros(1))
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"extra_weight\""):
        uni.load_state_dict(extra)
    wrong = Mamba(32, d_state=16, dt_rank=5)
    with pytest.raises(RuntimeError, match=r"size mismatch for A_log"):
        wrong.load_state_dict(theirs.state_dict())


@pytest.mark.parametrize("make,call,error,pattern", [
    (lambda: Mamba(16), lambda m: m(torch.randn(2, 5, 8)), ValueError,
     r"hidden_states must be \(batch, L, d_model=16\); got shape \(2, 5, 8\)"),
    (lambda: Mamba(16), lambda m: m(torch.randn(5, 16)), ValueError, r"hidden_states must be \(batch, L, d_model"),
    (lambda: Mamba(16), lambda m: m(torch.zeros(1, 5, 16, dtype=torch.long)), TypeError,
     r"hidden_states must be a floating tensor"),
    (lambda: Mamba(16), lambda m: m("tokens"), TypeError, r"hidden_states must be a torch.Tensor"),
    (lambda: Mamba(16, bidirectional=True), lambda m: m.step(torch.randn(1, 1, 16), None, None), RuntimeError,
     r"bidirectional Mamba cannot decode"),
    (lambda: Mamba(16, bidirectional=True, layer_idx=0),
     lambda m: m(torch.randn(1, 3, 16), inference_params=InferenceParams(3, 1)), ValueError,
     r"inference_params: a bidirectional Mamba"),
    (lambda: Mamba(16), lambda m: m(torch.randn(1, 3, 16), inference_params=InferenceParams(3, 1)), ValueError,
     r"layer_idx"),
    (lambda: Mamba(16), lambda m: m.step(torch.randn(1, 2, 16), *m.allocate_inference_cache(1)), ValueError,
     r"step decodes one token"),
    (lambda: Mamba(16), lambda m: m.step(torch.randn(2, 1, 16), *m.allocate_inference_cache(1)), ValueError,
     r"conv_state must be \(2, 32, 4\)"),
])
def test_bad_input_is_named(make, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(make())


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(d_model=0), r"d_model must be a positive integer"),
    (dict(d_model=8, d_state=0), r"d_state must be a positive integer"),
    (dict(d_model=8, dt_init="zeros"), r"dt_init must be 'constant' or 'random'"),
    (dict(d_model=8, dt_min=0.2, dt_max=0.1), r"dt_min <= dt_max"),
    (dict(d_model=8, dt_rank=0), r"dt_rank must be 'auto' or a positive integer"),
    (dict(d_model=8, chunk_size=0), r"chunk_size must be a positive integer"),
])
def test_bad_constructor_arguments_are_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Mamba(**kwargs)
