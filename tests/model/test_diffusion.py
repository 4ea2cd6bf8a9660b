"""Masked diffusion: times, masking, the NELBO against a hand computation, the sampler's
unmasking schedule and caching, clamping, sliding windows and constrained sampling."""
import math

import pytest
import torch

from smdim.diffusion import T_MIN, diffusion_loss, mask_tokens, sample_times, subs_log_probs
from smdim.sampling import Constraints, continue_sequence, generate, generate_long, infill, sample

PAD, MASK, BAR, POS = 0, 1, 2, 3
PITCHES = list(range(4, 14))  # token ids of MIDI pitches 60..69
VOCAB = 14


class TableModel(torch.nn.Module):
    """A denoiser whose logits depend only on the token id at each position (plus a fixed bias)."""

    def __init__(self, vocab=VOCAB, seed=0, max_len=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g))
        self.calls = 0
        self.max_len = max_len

    def forward(self, tokens):
        self.calls += 1
        if self.max_len is not None:
            assert tokens.shape[1] <= self.max_len, "the sampler passed a window longer than the model's"
        return self.table[tokens]


def test_sample_times_are_stratified():
    t = sample_times(8, torch.Generator().manual_seed(3))
    assert t.min() >= T_MIN and t.max() <= 1
    u = torch.sort((t - T_MIN) / (1 - T_MIN)).values
    gaps = u[1:] - u[:-1]
    torch.testing.assert_close(gaps, torch.full_like(gaps, 1 / 8), atol=1e-6, rtol=0)


def test_masking_rate_and_maskable():
    x0 = torch.randint(2, VOCAB, (4, 5000))
    maskable = torch.ones_like(x0, dtype=torch.bool)
    maskable[:, :100] = False
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    x_t, masked = mask_tokens(x0, t, MASK, maskable, torch.Generator().manual_seed(0))
    assert not masked[:, :100].any()
    assert torch.equal(x_t[masked], torch.full_like(x_t[masked], MASK))
    assert torch.equal(x_t[~masked], x0[~masked])
    rates = masked[:, 100:].float().mean(1)
    torch.testing.assert_close(rates, t, atol=0.02, rtol=0)


def test_subs_never_predicts_mask():
    log_probs = subs_log_probs(torch.randn(2, 3, VOCAB), MASK)
    assert torch.isneginf(log_probs[..., MASK]).all()
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 3))


def test_loss_matches_hand_computation():
    model = TableModel()
    x0 = torch.tensor([[5, 6, 7, 8, PAD], [9, 2, 3, 4, 10]])
    pad_mask = x0 != PAD
    t = torch.tensor([0.4, 0.8])
    g = torch.Generator().manual_seed(11)
    result = diffusion_loss(model, x0, pad_mask, mask_id=MASK, generator=g, t=t)
    # Redo the same draws by hand.
    x_t, masked = mask_tokens(x0, t, MASK, pad_mask, torch.Generator().manual_seed(11))
    total = 0.0
    for b in range(2):
        for i in range(5):
            if masked[b, i]:
                logits = model.table[x_t[b, i]].detach().clone()
                logits[MASK] = -math.inf
                total += -torch.log_softmax(logits, -1)[x0[b, i]].item() / t[b].item()
    expected = total / 9  # nine real tokens
    assert masked.any()
    assert result.loss.item() == pytest.approx(expected, rel=1e-6)
    assert result.bits_per_token == pytest.approx(expected / math.log(2), rel=1e-6)
    assert result.n_tokens == 9
    result.loss.backward()
    assert model.table.grad is not None


def test_one_step_reveals_everything_and_the_model_runs_at_most_once_per_step():
    model = TableModel()
    x = torch.full((1, 20000), MASK)
    g = torch.Generator().manual_seed(0)
    first, calls = sample(model, x, steps=1, mask_id=MASK, generator=g)
    assert not (first == MASK).any() and calls == 1
    model.calls = 0
    out, calls = sample(model, x, steps=10, mask_id=MASK, generator=g)
    # 20000 masks: every one of the 10 steps reveals some, so every step needs one fresh forward pass.
    assert not (out == MASK).any() and calls == 10 and model.calls == calls


def test_reveal_fraction_per_step_empirically():
    class Recorder(TableModel):
        def __init__(self):
            super().__init__()
            self.masked_counts = []

        def forward(self, tokens):
            self.masked_counts.append(int((tokens == MASK).sum()))
            return super().forward(tokens)

    model = Recorder()
    n, steps = 40000, 4
    sample(model, torch.full((1, n), MASK), steps=steps, mask_id=MASK, generator=torch.Generator().manual_seed(1))
    # Remaining masked fraction after step k is (k-1)/K of the start: 1, 3/4, 1/2, 1/4.
    fractions = [c / n for c in model.masked_counts]
    assert fractions == pytest.approx([1.0, 0.75, 0.5, 0.25], abs=0.01)


def test_cache_reused_when_nothing_changes():
    model = TableModel()
    out, calls = sample(model, torch.full((1, 1), MASK), steps=200, mask_id=MASK,
                        generator=torch.Generator().manual_seed(0))
    assert calls == 1 and model.calls == 1 and out.item() != MASK


def test_same_seed_same_samples():
    model = TableModel()
    a = generate(model, 2, 30, steps=8, mask_id=MASK, generator=torch.Generator().manual_seed(5))
    b = generate(model, 2, 30, steps=8, mask_id=MASK, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_infill_and_continuation_keep_clamped_tokens():
    model = TableModel()
    tokens = torch.randint(2, VOCAB, (3, 50))
    region = torch.zeros_like(tokens, dtype=torch.bool)
    region[:, 10:30] = True
    out = infill(model, tokens, region, steps=5, mask_id=MASK, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[~region], tokens[~region]) and not (out == MASK).any()
    prefix = tokens[:, :17]
    cont = continue_sequence(model, prefix, 40, steps=5, mask_id=MASK, generator=torch.Generator().manual_seed(0))
    assert cont.shape == (3, 40) and torch.equal(cont[:, :17], prefix)


def test_sliding_windows_beyond_the_training_length():
    model = TableModel(max_len=32)
    prefix = torch.randint(2, VOCAB, (2, 10))
    out = continue_sequence(model, prefix, 100, window=32, steps=4, mask_id=MASK,
                            generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 100) and torch.equal(out[:, :10], prefix) and not (out == MASK).any()
    long = generate_long(model, 1, 75, window=32, hop=12, steps=3, mask_id=MASK)
    assert long.shape == (1, 75) and not (long == MASK).any()


class WindowRecorder(TableModel):
    """A TableModel that refuses windows longer than its training length and records every input."""

    def __init__(self, max_len):
        super().__init__(max_len=max_len)
        self.inputs = []

    def forward(self, tokens):
        self.inputs.append(tokens.clone())
        return super().forward(tokens)


def test_infill_of_a_long_input_uses_windows_with_context_on_both_sides():
    model = WindowRecorder(max_len=32)
    tokens = torch.randint(4, VOCAB, (2, 200))
    region = torch.zeros_like(tokens, dtype=torch.bool)
    region[:, 100:110] = True                                   # a short region: one centred window
    region[:, 150:200] = True                                   # a long one, to the end: several windows
    out = infill(model, tokens, region, window=32, steps=3, mask_id=MASK, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[~region], tokens[~region]) and not (out == MASK).any()
    assert all(x.shape[1] == 32 for x in model.inputs)
    first = model.inputs[0][0]                                  # the window around 100..109: 11 known tokens each side
    masked = (first == MASK).nonzero().flatten()
    assert masked.numel() == 10 and int(masked[0]) == 11 and int(masked[-1]) == 20
    with pytest.raises(ValueError, match="window must be >= 1"):
        infill(model, tokens, region, window=0, steps=1, mask_id=MASK)


def test_sliding_windows_start_at_bar_lines():
    model = WindowRecorder(max_len=32)
    with torch.no_grad():
        model.table[:, BAR] = -math.inf                         # bar lines come only from the prefix
    prefix = torch.tensor([[BAR, 5, 6, 7, 8, BAR, 9, 10, 11, BAR, 5, 6]]).repeat(2, 1)
    prefix[1, 9], prefix[1, 11] = 7, BAR                        # row 1: bar lines at 0, 5, 11
    out = continue_sequence(model, prefix, 56, window=32, hop=8, steps=1, mask_id=MASK, bar_id=BAR,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :12], prefix) and not (out == MASK).any()
    # Window 1 fills 32..39 with context from the first bar line at or after 8 (row 0: 9, row 1: 11);
    # window 2 fills 40..47 and its context (16..) holds no bar line, so it takes the last 24 tokens.
    shapes = [tuple(x.shape) for x in model.inputs]
    assert shapes == [(2, 32), (1, 31), (1, 29), (1, 32), (1, 32), (1, 32), (1, 32)]
    assert model.inputs[1][0, 0] == BAR and model.inputs[2][0, 0] == BAR
    assert torch.equal(model.inputs[1][0, :23], out[0, 9:32]) and torch.equal(model.inputs[2][0, :21], out[1, 11:32])


def make_constraints(pitch_range=None, max_chord=None):
    pitch_of_token = torch.full((VOCAB,), -1, dtype=torch.long)
    pitch_of_token[PITCHES] = torch.arange(60, 70)
    is_boundary = torch.zeros(VOCAB, dtype=torch.bool)
    is_boundary[[BAR, POS]] = True
    return Constraints(pitch_of_token, is_boundary, pitch_range=pitch_range, max_chord=max_chord)


def chord_sizes(row, constraints):
    sizes, current = [], 0
    for tok in row.tolist():
        if constraints.is_boundary[tok]:
            sizes.append(current)
            current = 0
        elif constraints.pitch_of_token[tok] >= 0:
            current += 1
    return sizes + [current]


class PitchHeavyModel(TableModel):
    """Prefers Pitch tokens strongly, with a few boundaries: unconstrained chords get large."""

    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.table.zero_()
            self.table[:, PITCHES] = 3.0
            self.table[:, POS] = 1.0


@pytest.mark.parametrize("steps", [1, 4, 16])
def test_constraints_hold_in_every_sample(steps):
    model = PitchHeavyModel()
    free = generate(model, 8, 64, steps=steps, mask_id=MASK, generator=torch.Generator().manual_seed(0))
    constraints = make_constraints(pitch_range=(62, 65), max_chord=2)
    assert max(max(chord_sizes(r, constraints)) for r in free) > 2  # the test can fail
    out = generate(model, 8, 64, steps=steps, mask_id=MASK, constraints=constraints,
                   generator=torch.Generator().manual_seed(0))
    assert not (out == MASK).any()
    pitches = constraints.pitch_of_token[out]
    pitches = pitches[pitches >= 0]
    assert pitches.numel() > 0 and pitches.min() >= 62 and pitches.max() <= 65
    for row in out:
        assert max(chord_sizes(row, constraints)) <= 2


def test_constraints_respect_known_tokens_in_infilling():
    model = PitchHeavyModel()
    constraints = make_constraints(max_chord=3)
    tokens = torch.tensor([[POS, 4, 5, MASK, MASK, MASK, POS, MASK, MASK, MASK, MASK, BAR]])
    out = sample(model, tokens, steps=3, mask_id=MASK, constraints=constraints,
                 generator=torch.Generator().manual_seed(2))[0]
    assert max(chord_sizes(out[0], constraints)) <= 3
    assert out[0, 1] == 4 and out[0, 2] == 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="pitch_range"):
        make_constraints(pitch_range=(70, 60))
    with pytest.raises(ValueError, match="max_chord"):
        make_constraints(max_chord=0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(TableModel(), torch.full((1, 3), MASK), steps=0, mask_id=MASK)
    with pytest.raises(ValueError, match="x0 must be"):
        diffusion_loss(TableModel(), torch.zeros(3, dtype=torch.long), mask_id=MASK)


def test_per_sequence_nll_adds_up_to_the_batch_nll():
    from smdim.diffusion import bits_per_token, evaluate_nll, sequence_nlls

    model = TableModel()
    x0 = torch.randint(2, VOCAB, (5, 20))
    pad_mask = torch.ones_like(x0, dtype=torch.bool)
    pad_mask[0, -4:] = False
    per_sequence = sequence_nlls(model, [(x0, pad_mask)], mask_id=MASK, seed=3)
    assert [k for _, k in per_sequence] == [16, 20, 20, 20, 20]
    assert bits_per_token(per_sequence) == pytest.approx(evaluate_nll(model, [(x0, pad_mask)], mask_id=MASK, seed=3),
                                                         rel=1e-6)  # fp32 sums in another order


class NoTensorModel(torch.nn.Module):
    """A denoiser without parameters or buffers (uniform logits)."""

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, VOCAB)


def test_model_device_and_inputs_already_there_are_not_copied():
    from smdim.diffusion import model_device, to_device

    assert model_device(NoTensorModel()) == torch.device("cpu")
    assert model_device(TableModel()) == torch.device("cpu")
    x, pad = torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
    moved = to_device(model_device(TableModel()), x, pad, None)
    assert moved[0] is x and moved[1] is pad and moved[2] is None
    # A model without tensors used to break generation (next(model.parameters()) raised StopIteration).
    out = generate(NoTensorModel(), 2, 5, steps=2, mask_id=MASK, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 5) and not (out == MASK).any()


def test_token_dtype_is_int64_whatever_the_input():
    model = TableModel()
    prefix = torch.randint(2, VOCAB, (2, 6), dtype=torch.int32)
    out = continue_sequence(model, prefix, 12, steps=3, mask_id=MASK, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.long and torch.equal(out[:, :6], prefix.long())
    filled = sample(model, torch.full((1, 4), MASK, dtype=torch.int32), steps=2, mask_id=MASK)[0]
    assert filled.dtype == torch.long
    empty = torch.tensor([]).repeat(2, 1)  # torch.tensor of no ids is float32 (what --prefix-bars 0 produced)
    assert continue_sequence(model, empty, 5, steps=2, mask_id=MASK).dtype == torch.long


def test_double_precision_model_samples_and_scores():
    model = TableModel().double()
    x0 = torch.randint(2, VOCAB, (2, 10))
    assert torch.isfinite(diffusion_loss(model, x0, mask_id=MASK, generator=torch.Generator().manual_seed(0)).loss)
    assert generate(model, 1, 8, steps=2, mask_id=MASK).dtype == torch.long


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cpu_inputs_for_a_cuda_model():
    from smdim.diffusion import evaluate_nll, sequence_nlls

    model = TableModel().cuda()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731 (CPU generators work for CUDA models)
    tokens = torch.randint(2, VOCAB, (2, 20))
    region = torch.zeros_like(tokens, dtype=torch.bool)
    region[:, 5:9] = True
    assert sample(model, torch.full((1, 6), MASK), steps=2, mask_id=MASK, generator=g())[0].is_cuda
    assert infill(model, tokens, region, steps=2, mask_id=MASK, generator=g()).is_cuda
    assert continue_sequence(model, tokens[:, :4], 12, steps=2, mask_id=MASK, generator=g()).is_cuda
    assert continue_sequence(model, tokens[:, :4], 40, window=16, steps=2, mask_id=MASK, generator=g()).is_cuda
    assert generate_long(model, 1, 40, window=16, steps=2, mask_id=MASK, prefix=tokens[:1, :3]).is_cuda
    constraints = make_constraints(pitch_range=(62, 65), max_chord=2)
    assert generate(model, 1, 16, steps=2, mask_id=MASK, constraints=constraints).is_cuda
    pad = tokens != PAD
    assert diffusion_loss(model, tokens, pad, mask_id=MASK, generator=g(), t=torch.full((2,), 0.5)).loss.is_cuda
    assert len(sequence_nlls(model, [(tokens, pad)], mask_id=MASK)) == 2
    assert evaluate_nll(model, [(tokens, pad)], mask_id=MASK) > 0


def test_temperature_zero_is_greedy_and_negative_is_rejected():
    model = TableModel()
    out = sample(model, torch.full((2, 7), MASK), steps=1, mask_id=MASK, temperature=0,
                 generator=torch.Generator().manual_seed(0))[0]
    best = subs_log_probs(model.table[MASK].detach(), MASK).argmax()
    assert (out == best).all()
    for fn, args in ((sample, (torch.full((1, 3), MASK),)), (generate, (1, 3))):
        with pytest.raises(ValueError, match=r"temperature must be >= 0 \(0 = greedy\); got -0.5"):
            fn(model, *args, steps=2, mask_id=MASK, temperature=-0.5)


def test_gumbel_noise_only_for_the_revealed_positions(monkeypatch):
    import smdim.sampling

    shapes = []

    def recording_uniform(shape, generator=None, device=None):
        shapes.append(tuple(shape))
        return torch.rand(shape, generator=generator, device=device)

    monkeypatch.setattr(smdim.sampling, "uniform", recording_uniform)
    batch, length = 3, 40
    sample(TableModel(), torch.full((batch, length), MASK), steps=4, mask_id=MASK,
           generator=torch.Generator().manual_seed(0))
    noise = [s for s in shapes if len(s) == 2 and s[1] == VOCAB]
    assert all(len(s) == 2 for s in shapes), shapes  # never a (batch, L, vocab) draw
    assert sum(n for n, _ in noise) == batch * length  # one row of noise per revealed token


def test_nll_needs_at_least_one_time():
    from smdim.diffusion import evaluate_nll, sequence_nlls

    batches = [(torch.randint(2, VOCAB, (2, 8)), None)]
    for fn in (sequence_nlls, evaluate_nll):
        with pytest.raises(ValueError, match="n_times must be >= 1; got 0"):
            fn(TableModel(), batches, mask_id=MASK, n_times=0)


def test_chord_counts_and_overflow_by_hand():
    constraints = make_constraints(max_chord=2)
    x = torch.tensor([[POS, 4, 5, 6, POS, 7, MASK, BAR, 8, 9]])
    assert constraints.chord_counts(x, MASK).tolist() == [[3, 3, 3, 3, 1, 1, 1, 2, 2, 2]]
    new = torch.tensor([[False, False, True, True, False, True, False, False, True, True]])
    # Span 1 has one old pitch (4): the first new one (5) fits, 6 overflows; span 2 has room; span 3 holds 8, 9.
    assert constraints.overflow(x, MASK, new).nonzero()[:, 1].tolist() == [3]


# --- confidence-ordered unmasking -------------------------------------------------------------
def test_confidence_order_follows_the_schedule_exactly():
    class Recorder(TableModel):
        def __init__(self):
            super().__init__()
            self.masked_counts = []

        def forward(self, tokens):
            self.masked_counts.append(int((tokens == MASK).sum(dim=1)[0]))
            return super().forward(tokens)

    model = Recorder()
    out, calls = sample(model, torch.full((2, 40), MASK), steps=4, mask_id=MASK, order="confidence",
                        generator=torch.Generator().manual_seed(1))
    # floor(s * 40) masks left after each step, s = 3/4, 1/2, 1/4, 0: exactly 40, 30, 20, 10 seen
    assert model.masked_counts == [40, 30, 20, 10] and calls == 4 and not (out == MASK).any()


def test_confidence_order_reveals_the_surest_positions_first():
    class Peaked(torch.nn.Module):
        """Flat logits except at positions 3 and 7, where one token is almost certain."""

        def forward(self, tokens):
            logits = torch.zeros(*tokens.shape, VOCAB)
            logits[:, 3, PITCHES[0]] = 30.0
            logits[:, 7, PITCHES[1]] = 30.0
            return logits

    x = torch.full((1, 10), MASK)
    # 5 steps over 10 masks: the first step reveals 2 positions; without noise they are 3 and 7
    first_step = []

    class Spy(Peaked):
        def forward(self, tokens):
            first_step.append(tokens.clone())
            return super().forward(tokens)

    sample(Spy(), x, steps=5, mask_id=MASK, order="confidence", confidence_noise=0.0,
           generator=torch.Generator().manual_seed(0))
    revealed = (first_step[1][0] != MASK).nonzero().flatten().tolist()
    assert revealed == [3, 7]
    assert first_step[1][0, 3] == PITCHES[0] and first_step[1][0, 7] == PITCHES[1]


def test_confidence_order_keeps_clamped_tokens_and_is_seeded():
    model = TableModel()
    tokens = torch.randint(4, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    region = torch.zeros_like(tokens, dtype=torch.bool)
    region[:, 5:15] = True
    a = infill(model, tokens, region, steps=6, mask_id=MASK, order="confidence",
               generator=torch.Generator().manual_seed(3))
    b = infill(model, tokens, region, steps=6, mask_id=MASK, order="confidence",
               generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(a[~region], tokens[~region]) and not (a == MASK).any()
    with pytest.raises(ValueError, match="order"):
        sample(model, tokens, steps=2, mask_id=MASK, order="left-to-right")


def test_priority_reveals_chosen_tokens_first():
    """order='confidence' with a priority on the Bar token: bar lines come before anything else."""
    class FlatWithBars(torch.nn.Module):
        def forward(self, tokens):
            logits = torch.zeros(*tokens.shape, VOCAB)
            logits[:, ::5, BAR] = 2.0      # every 5th position prefers a Bar, but not surely
            logits[:, 1::5, PITCHES[0]] = 8.0  # these are surer, yet not prioritised
            return logits

    seen = []

    class Spy(FlatWithBars):
        def forward(self, tokens):
            seen.append(tokens.clone())
            return super().forward(tokens)

    priority = torch.zeros(VOCAB)
    priority[BAR] = 1e4
    out, _ = sample(Spy(), torch.full((1, 20), MASK), steps=5, mask_id=MASK, order="confidence",
                    confidence_noise=0.0, priority=priority, generator=torch.Generator().manual_seed(0))
    first = (seen[1][0] != MASK).nonzero().flatten().tolist()  # 4 revealed by the first step
    assert all(seen[1][0, i] == BAR for i in first) and len(first) == 4
    with pytest.raises(ValueError, match="priority"):
        sample(Spy(), torch.full((1, 4), MASK), steps=2, mask_id=MASK, priority=priority)
