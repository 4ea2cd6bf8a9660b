"""smdim_kernels.integrations.transformers: transformers' Mamba-1 on smdim's kernels gives the
unpatched model's outputs, gradients, cache and greedy tokens (the checks transformers runs on its
own Mamba: shapes, hidden states, cached prefill + decode = one pass, forward + backward with and
without gradient checkpointing, tuple = dict outputs, a half model with a float32 cache, greedy
generation), and really runs smdim's ops."""
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import MambaConfig, MambaForCausalLM, MambaModel  # noqa: E402
from transformers.models.mamba import modeling_mamba  # noqa: E402

from smdim_kernels.integrations import transformers as smdim_tf  # noqa: E402

RTOL_OUT, RTOL_GRAD = 1e-4, 1e-3


@pytest.fixture(autouse=True)
def _unpatched_after():
    yield
    smdim_tf.disable()


def config(**kw):
    base = dict(vocab_size=99, hidden_size=32, state_size=8, num_hidden_layers=2, intermediate_size=64,
                conv_kernel=4, time_step_rank=4, use_cache=True, pad_token_id=98, eos_token_id=98, bos_token_id=98)
    return MambaConfig(**dict(base, **kw))


def make(cls=MambaForCausalLM, seed=0, **kw):
    torch.manual_seed(seed)
    model = cls(config(**kw))
    with torch.no_grad():  # weights large enough that outputs and greedy tokens depend on every part
        for name, p in model.named_parameters():
            if p.dim() == 2 and "A_log" not in name:
                p.normal_(0, 0.3)
    return model


def ids(batch=3, length=23, seed=1):
    return torch.randint(0, 98, (batch, length), generator=torch.Generator().manual_seed(seed))


def close(a, b, rtol, what):
    scale = b.abs().max().item()
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


def smdim_ops_run(fn):
    """The smdim:: ops that ran inside fn()."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages() if e.key.startswith("smdim::")}


def loss_and_grads(model, input_ids, **kw):
    model.zero_grad()
    out = model(input_ids, labels=input_ids, use_cache=False, **kw)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_enable_disable_and_the_context_manager_swap_the_functions_and_back():
    names = ("mamba_inner_fn", "causal_conv1d_fn", "causal_conv1d_update", "mamba_selective_scan",
             "mamba_selective_state_update")
    originals = {n: getattr(modeling_mamba, n) for n in names}
    forward = modeling_mamba.MambaMixer.forward
    smdim_tf.enable()
    smdim_tf.enable()  # idempotent: the originals are not lost
    assert smdim_tf.is_enabled()
    assert all(getattr(modeling_mamba, n) is not originals[n] for n in names)
    assert modeling_mamba.MambaMixer.forward is not forward
    smdim_tf.disable()
    assert not smdim_tf.is_enabled()
    assert all(getattr(modeling_mamba, n) is originals[n] for n in names)
    assert modeling_mamba.MambaMixer.forward is forward
    with smdim_tf.enabled():
        assert smdim_tf.is_enabled()
        with smdim_tf.enabled():
            pass
        assert smdim_tf.is_enabled()  # an inner block does not end the outer one
    assert not smdim_tf.is_enabled() and modeling_mamba.mamba_selective_scan is originals["mamba_selective_scan"]


def test_model_outputs_and_hidden_states_match_the_unpatched_model():
    model = make(MambaModel).eval()
    x = ids()
    with torch.no_grad():
        want = model(x, output_hidden_states=True)
        with smdim_tf.enabled():
            got = model(x, output_hidden_states=True)
            ran = smdim_ops_run(lambda: model(x))
    assert got.last_hidden_state.shape == (3, 23, 32)
    assert len(got.hidden_states) == model.config.num_hidden_layers + 1
    for a, b in zip(got.hidden_states, want.hidden_states):
        close(a, b, RTOL_OUT, "hidden state")
    close(got.last_hidden_state, want.last_hidden_state, RTOL_OUT, "last hidden state")
    assert {"smdim::causal_conv1d_fwd", "smdim::selective_scan_fwd"} <= ran


def test_causal_lm_loss_and_logits_match():
    model = make().eval()
    x = ids()
    with torch.no_grad():
        want = model(x, labels=x)
        with smdim_tf.enabled():
            got = model(x, labels=x)
    assert got.loss.shape == () and got.logits.shape == (3, 23, 99)
    close(got.logits, want.logits, RTOL_OUT, "logits")
    close(got.loss, want.loss, RTOL_OUT, "loss")


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_training_forward_and_backward_match_and_run_the_fused_mixer(gradient_checkpointing):
    model = make().train()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    x = ids(length=70)  # the scan's 64-step checkpoints crossed
    want_logits, want = loss_and_grads(model, x)
    with smdim_tf.enabled():
        got_logits, got = loss_and_grads(model, x)
        ran = smdim_ops_run(lambda: loss_and_grads(model, x))
    close(got_logits, want_logits, RTOL_OUT, "logits")
    assert set(got) == set(want) and len(got) == len(list(model.parameters()))
    for name in want:
        close(got[name], want[name], RTOL_GRAD, f"gradient of {name}")
    assert {"smdim::mamba_inner_fwd", "smdim::mamba_inner_bwd"} <= ran


def test_a_padded_training_batch_matches_the_unpatched_masking():
    """transformers masks padding after the conv on its own path; the fused path would not, so a
    padded batch runs conv + scan (smdim's ops, differentiable) and matches the unpatched model."""
    model = make().train()
    x = ids()
    mask = torch.ones_like(x)
    mask[0, :6] = 0
    mask[2, :2] = 0
    want_logits, want = loss_and_grads(model, x, attention_mask=mask)
    with smdim_tf.enabled():
        got_logits, got = loss_and_grads(model, x, attention_mask=mask)
        ran = smdim_ops_run(lambda: loss_and_grads(model, x, attention_mask=mask))
    close(got_logits, want_logits, RTOL_OUT, "logits")
    for name in want:
        close(got[name], want[name], RTOL_GRAD, f"gradient of {name}")
    assert "smdim::selective_scan_bwd" in ran and "smdim::mamba_inner_fwd" not in ran


def test_cached_prefill_then_one_token_decode_equals_one_pass():
    model = make(MambaModel).eval()
    x = ids(length=12)
    kernel = model.config.conv_kernel
    with torch.no_grad(), smdim_tf.enabled():
        whole = model(x).last_hidden_state
        first = model(x[:, :-1], use_cache=True, cache_position=torch.arange(0, kernel))
        ran = smdim_ops_run(lambda: model(x[:, -1:], use_cache=True, cache_params=first.cache_params,
                                          cache_position=torch.arange(kernel, kernel + 1)))
        first = model(x[:, :-1], use_cache=True, cache_position=torch.arange(0, kernel))
        second = model(x[:, -1:], use_cache=True, cache_params=first.cache_params,
                       cache_position=torch.arange(kernel, kernel + 1))
    torch.testing.assert_close(torch.cat([first.last_hidden_state, second.last_hidden_state], 1), whole,
                               atol=1e-5, rtol=1e-5)
    assert "smdim::selective_scan_fwd" in ran  # the one-token step runs the fused state update


def test_one_token_decode_runs_the_state_update_functions(monkeypatch):
    """Decoding calls smdim's conv-state and scan-state updates (plain Python around the ops, so a
    spy, not the profiler, shows they ran), and the greedy tokens are the unpatched model's."""
    calls = []
    for name in ("causal_conv1d_update", "selective_state_update"):
        original = getattr(smdim_tf, name)
        monkeypatch.setattr(smdim_tf, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    model = make().eval()
    prompt = ids(batch=2, length=7)
    want = model.generate(prompt, max_new_tokens=5, do_sample=False)
    with smdim_tf.enabled():
        got = model.generate(prompt, max_new_tokens=5, do_sample=False)
    assert torch.equal(got, want)
    layers, steps = model.config.num_hidden_layers, 4  # the first new token comes from the prefill
    assert calls.count("causal_conv1d_update") == calls.count("selective_state_update") == layers * steps


def test_greedy_generation_gives_the_unpatched_tokens():
    model = make().eval()
    prompt = ids(batch=2, length=9)
    kw = dict(max_new_tokens=16, do_sample=False, return_dict_in_generate=True, output_scores=True)
    want = model.generate(prompt, **kw)
    with smdim_tf.enabled():
        got = model.generate(prompt, **kw)
    assert torch.equal(got.sequences, want.sequences)
    assert len(set(want.sequences[:, 9:].flatten().tolist())) > 4  # the tokens depend on the model
    for a, b in zip(got.scores, want.scores):
        close(a, b, RTOL_OUT, "scores")


def test_left_padded_batched_generation_gives_the_unpatched_tokens():
    """Two prompts of different lengths in one batch, left-padded with an attention mask: the prefill
    takes the padded conv + scan route, decoding the state updates; tokens and scores as unpatched."""
    model = make().eval()
    prompt = ids(batch=2, length=11)
    mask = torch.ones_like(prompt)
    prompt[0, :4], mask[0, :4] = model.config.pad_token_id, 0
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, return_dict_in_generate=True,
              output_scores=True)
    want = model.generate(prompt, **kw)
    with smdim_tf.enabled():
        got = model.generate(prompt, **kw)
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.scores, want.scores):
        close(a, b, RTOL_OUT, "scores")


def test_tuple_and_dict_outputs_agree():
    model = make().eval()
    x = ids()
    with torch.no_grad(), smdim_tf.enabled():
        as_tuple = model(x, labels=x, return_dict=False, output_hidden_states=True)
        as_dict = model(x, labels=x, return_dict=True, output_hidden_states=True)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    for a, b in zip(as_dict.hidden_states, as_tuple[-1]):
        torch.testing.assert_close(a, b)


def test_a_bfloat16_model_with_its_cache_matches_the_unpatched_bfloat16_model():
    model = make(MambaModel).eval()
    x = ids()
    with torch.no_grad():
        full = model(x).last_hidden_state
        model = model.to(torch.bfloat16)
        want = model(x, use_cache=True)
        with smdim_tf.enabled():
            got = model(x, use_cache=True)
    assert got.last_hidden_state.dtype == want.last_hidden_state.dtype and got.last_hidden_state.shape == full.shape
    for a, b in zip(got.cache_params.layers, want.cache_params.layers):
        assert a.recurrent_states[0].dtype == b.recurrent_states[0].dtype
        assert a.conv_states[0].dtype == b.conv_states[0].dtype

    def error(h):
        return ((h.last_hidden_state.float() - full).norm() / full.norm()).item()

    # smdim accumulates in fp32 where transformers' loop runs in bf16: no further from fp32 than it is.
    assert error(got) <= error(want) * 1.1 + 1e-3


def test_a_bare_mixer_runs_on_smdims_ops_in_inference_and_training():
    """A model that builds transformers' MambaMixer itself (no MambaModel around it) is patched too:
    inference runs the fused scan, training the fused mixer op, both matching the unpatched mixer."""
    mixer = modeling_mamba.MambaMixer(config(), layer_idx=0).eval()
    h = torch.randn(2, 17, 32)
    with torch.no_grad():
        want = mixer(h)
        with smdim_tf.enabled():
            got = mixer(h)
            ran = smdim_ops_run(lambda: mixer(h))
    close(got, want, RTOL_OUT, "mixer output")
    assert "smdim::selective_scan_fwd" in ran
    mixer.train()
    h.requires_grad_()
    want = mixer(h)
    (want_dh,) = torch.autograd.grad(want.square().sum(), h)
    with smdim_tf.enabled():
        got = mixer(h)
        (got_dh,) = torch.autograd.grad(got.square().sum(), h)
        ran = smdim_ops_run(lambda: mixer(h).sum().backward())
    close(got, want, RTOL_OUT, "training mixer output")
    close(got_dh, want_dh, RTOL_GRAD, "input gradient")
    assert {"smdim::mamba_inner_fwd", "smdim::mamba_inner_bwd"} <= ran


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_with_biases_keeps_the_models_dtype(dtype):
    """use_bias=True, no conv bias: transformers hands the fused path an fp32 out_proj bias; the
    output stays in the model's dtype, as unpatched."""
    model = make(use_bias=True, use_conv_bias=False).train().to(dtype)
    x = ids(length=30)
    want_logits, want = loss_and_grads(model, x)
    with smdim_tf.enabled():
        got_logits, got = loss_and_grads(model, x)
        ran = smdim_ops_run(lambda: loss_and_grads(model, x))
    assert got_logits.dtype == want_logits.dtype  # transformers' head returns float32 logits
    mixer = model.backbone.layers[0].mixer
    h = torch.randn(2, 9, 32, dtype=dtype)
    want_h = mixer(h)
    with smdim_tf.enabled():
        got_h = mixer(h)
    assert got_h.dtype == want_h.dtype == dtype  # the fused mixer's own output
    assert "smdim::mamba_inner_fwd" in ran
    if dtype == torch.float32:
        close(got_logits, want_logits, RTOL_OUT, "logits")
        for name in want:
            close(got[name], want[name], RTOL_GRAD, f"gradient of {name}")
    else:  # bf16: transformers' loop rounds every step; compare against the fp32 model's result
        reference, _ = loss_and_grads(model.float(), x)
        assert (got_logits.float() - reference).norm() <= 1.1 * (want_logits.float() - reference).norm() + 1e-3


def test_a_mixer_whose_activation_is_not_silu_trains_on_the_conv_and_scan_route():
    """The fused mixer (transformers' and mamba_ssm's) applies SiLU after the conv; transformers' own
    path applies config.hidden_act: a GELU model takes conv (+ GELU) + scan, matching it."""
    model = make(hidden_act="gelu").train()
    x = ids()
    want_logits, want = loss_and_grads(model, x)
    with smdim_tf.enabled():
        got_logits, got = loss_and_grads(model, x)
        ran = smdim_ops_run(lambda: loss_and_grads(model, x))
    close(got_logits, want_logits, RTOL_OUT, "logits")
    for name in want:
        close(got[name], want[name], RTOL_GRAD, f"gradient of {name}")
    assert "smdim::selective_scan_bwd" in ran and "smdim::mamba_inner_fwd" not in ran


def test_an_unknown_transformers_layout_is_refused_in_one_line(monkeypatch):
    monkeypatch.delattr(modeling_mamba, "mamba_selective_scan")
    with pytest.raises(RuntimeError, match=r"does not call mamba_selective_scan as this integration expects"):
        smdim_tf.enable()
    assert not smdim_tf.is_enabled()
