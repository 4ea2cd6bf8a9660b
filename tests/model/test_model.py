"""The SMDIM denoiser and its parameter-matched transformer baseline."""
import pytest
import torch

from smdim.model import (PRESETS, SMDIM, SMDIMConfig, matched_baseline_config, patch_conv, patch_conv_transpose,
                         preset_config)

VOCAB, PAD, MASK = 50, 0, 1


def tiny_config(**kw):
    values = dict(vocab_size=VOCAB, pad_id=PAD, mask_id=MASK, d_model=32, d_embed=16, n_layers=2, num_heads=2,
                  d_state=4, attn_window=4)
    values.update(kw)
    return SMDIMConfig(**values)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_patch_convs_equal_the_torch_convolutions(k, bias):
    torch.manual_seed(k)
    batch, steps, c_in, c_out = 2, 5, 7, 6
    conv = torch.nn.Conv1d(c_in, c_out, k, stride=k, bias=bias).double()
    deconv = torch.nn.ConvTranspose1d(c_out, c_in, k, stride=k, bias=bias).double()
    x = torch.randn(batch, steps * k, c_in, dtype=torch.float64, requires_grad=True)
    h = torch.randn(batch, steps, c_out, dtype=torch.float64, requires_grad=True)
    pairs = [(patch_conv(x, conv), conv(x.transpose(1, 2)).transpose(1, 2), (x, *conv.parameters())),
             (patch_conv_transpose(h, deconv), deconv(h.transpose(1, 2)).transpose(1, 2), (h, *deconv.parameters()))]
    for ours, torchs, inputs in pairs:
        assert ours.shape == torchs.shape
        torch.testing.assert_close(ours, torchs, rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(ours)
        for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(torchs, inputs, grad)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_patch_convs_reject_overlapping_convolutions():
    with pytest.raises(ValueError, match="conv must have stride == kernel_size"):
        patch_conv(torch.randn(1, 8, 3), torch.nn.Conv1d(3, 2, 4, stride=2))
    with pytest.raises(ValueError, match="conv must have stride == kernel_size"):
        patch_conv_transpose(torch.randn(1, 2, 3), torch.nn.ConvTranspose1d(3, 2, 4, stride=4, padding=1))


@pytest.mark.parametrize("length", [1, 3, 8, 37])
@pytest.mark.parametrize("block", ["mfa", "transformer"])
def test_logits_shape_for_any_length(length, block):
    torch.manual_seed(0)
    model = SMDIM(tiny_config(block=block))
    tokens = torch.randint(0, VOCAB, (2, length))
    logits = model(tokens)
    assert logits.shape == (2, length, VOCAB) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_a_length_not_divisible_by_four_is_padded_with_pad():
    """L=37 is padded to 40 inside: with PAD (as training pads), not with any other token, and cropped back."""
    torch.manual_seed(1)
    model = SMDIM(tiny_config()).eval()
    tokens = torch.randint(2, VOCAB, (1, 37))
    with torch.no_grad():
        logits = model(tokens)
        with_pad = model(torch.cat([tokens, torch.full((1, 3), PAD)], dim=1))[:, :37]
        with_other = model(torch.cat([tokens, torch.full((1, 3), MASK)], dim=1))[:, :37]
    assert logits.shape == (1, 37, VOCAB)
    torch.testing.assert_close(logits, with_pad)
    assert not torch.allclose(logits, with_other)  # the padding token matters, so the first check can fail


def test_gradients_reach_every_parameter():
    torch.manual_seed(2)
    model = SMDIM(tiny_config())
    model(torch.randint(0, VOCAB, (2, 24))).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_baseline_matches_parameters_within_ten_percent():
    for name in ("tiny", "small"):
        smdim = preset_config(name, VOCAB, PAD, MASK)
        base = preset_config(name, VOCAB, PAD, MASK, block="transformer")
        assert base.block == "transformer" and base.d_model == smdim.d_model and base.attn_window is None
        p_smdim, p_base = SMDIM(smdim).num_parameters(), SMDIM(base).num_parameters()
        assert abs(p_base - p_smdim) / p_smdim <= 0.10, (name, p_smdim, p_base)


def test_base_preset_is_near_paper_scale():
    config = preset_config("base", 300, PAD, MASK)
    assert config.d_model == 512 and config.num_heads == 8 and PRESETS["base"]["n_layers"] >= 12


def test_config_round_trip_and_errors():
    config = tiny_config()
    assert SMDIMConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model config keys"):
        SMDIMConfig.from_dict(dict(config.to_dict(), bogus=1))
    with pytest.raises(ValueError, match="block must be one of"):
        tiny_config(block="rnn")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tiny_config(num_heads=3)
    with pytest.raises(ValueError, match="mask_id must be a token id"):
        tiny_config(mask_id=VOCAB)
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_config("huge", VOCAB, PAD, MASK)
    with pytest.raises(ValueError, match=r"tokens must be an integer tensor \(batch, L\)"):
        SMDIM(config)(torch.zeros(2, 5))


@pytest.mark.parametrize("block", ["mfa", "transformer"])
def test_gradient_checkpointing_same_loss_and_gradients(block, monkeypatch):
    torch.manual_seed(3)
    config = tiny_config(block=block)
    plain, checkpointed = SMDIM(config).double(), SMDIM(config, gradient_checkpointing=True).double()
    checkpointed.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, VOCAB, (2, 16))
    calls = []
    import smdim_kernels.modules.mfa as stack_module

    original = stack_module.checkpoint
    monkeypatch.setattr(stack_module, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))

    def loss_and_grads(model):
        loss = model(tokens).square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(plain), loss_and_grads(checkpointed)
    assert len(calls) == config.n_layers  # one checkpointed call per block, only in the second model
    torch.testing.assert_close(loss_a, loss_b, atol=0, rtol=0)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    calls.clear()
    with torch.no_grad():
        checkpointed.eval()(tokens)
    assert not calls  # inference never checkpoints


def test_attention_window_of_the_baseline():
    assert preset_config("tiny", VOCAB, PAD, MASK, block="transformer").attn_window is None
    windowed = preset_config("tiny", VOCAB, PAD, MASK, block="transformer", attn_window=8)
    full = preset_config("tiny", VOCAB, PAD, MASK, block="transformer", attn_window=None)
    assert windowed.attn_window == 8 and full.attn_window is None
    assert windowed.n_layers == full.n_layers  # the window does not change the parameter match
    assert all(layer.attn.window == 8 for layer in SMDIM(windowed).layers)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="attn_window must be None"):
            tiny_config(attn_window=bad)
    with pytest.raises(ValueError, match="block must be one of"):
        preset_config("tiny", VOCAB, PAD, MASK, block="rnn")


def test_matched_baseline_uses_full_attention_and_positions():
    base = matched_baseline_config(tiny_config())
    assert base.pos_encoding == "sinusoidal" and base.ffn_hidden == 4 * 32 and base.attn_window is None


def test_style_conditioning_is_required_checked_and_bound():
    from smdim.model import SMDIM, StyleBound, preset_config

    torch.manual_seed(0)
    model = SMDIM(preset_config("tiny", 64, 0, 1, n_styles=3)).eval()
    with torch.no_grad():
        model.style_embedding.weight.normal_()
    x = torch.randint(2, 64, (2, 40))
    with pytest.raises(ValueError, match=r"style: this model plays 3 styles; pass a \(2,\) integer tensor"):
        model(x)
    with pytest.raises(ValueError, match="style"):
        model(x, style=torch.tensor([0]))
    with torch.no_grad():
        both = model(x, style=torch.tensor([2, 2]))
        assert torch.equal(StyleBound(model, 2)(x), both)
        assert not torch.allclose(model(x, style=torch.tensor([0, 0])), both)
    with pytest.raises(ValueError, match=r"style must be in \[0, 3\)"):
        StyleBound(model, 3)
    plain = SMDIM(preset_config("tiny", 64, 0, 1))
    with pytest.raises(ValueError, match="trained without styles"):
        plain(x, style=torch.tensor([0, 0]))
    assert "style_embedding.weight" not in plain.state_dict()       # old checkpoints load unchanged
