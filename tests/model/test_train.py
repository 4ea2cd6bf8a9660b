"""Training: atomic checkpoints, exact resume, Ctrl-C saves, EMA, schedules, and DDP with 2 processes."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from smdim.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from smdim.model import SMDIMConfig
from smdim.checkpoint import load_model
from smdim.train import EpochBatches, TrainConfig, Trainer, lr_factor, make_optimizer, next_turn

VOCAB, PAD, MASK = 40, 0, 1


class RandomTokens(torch.utils.data.Dataset):
    """Windows of 16 tokens; the last few of every other item are PAD. Random crops use torch's global RNG
    (like the real dataset), so resume must restore it."""

    def __init__(self, n=24, seq_len=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, VOCAB - 2, (n, 1), generator=g)  # learnable: runs of consecutive ids
        self.data = (starts + torch.arange(seq_len + 8)) % (VOCAB - 2) + 2
        self.seq_len = seq_len

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        start = int(torch.randint(0, 9, ()))
        tokens = self.data[i, start:start + self.seq_len].clone()
        pad_mask = torch.ones(self.seq_len, dtype=torch.bool)
        if i % 2:
            tokens[-3:] = PAD
            pad_mask[-3:] = False
        return {"tokens": tokens, "pad_mask": pad_mask}


def model_config():
    return SMDIMConfig(vocab_size=VOCAB, pad_id=PAD, mask_id=MASK, d_model=32, d_embed=16, n_layers=1, num_heads=2,
                       d_state=4, attn_window=2)


def train_config(**kw):
    values = dict(steps=6, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=3, eval_batches=1, checkpoint_every=3,
                  ema_decay=0.9, seed=5)
    values.update(kw)
    return TrainConfig(**values)


def make_trainer(tmp_path, **kw):
    return Trainer(model_config(), train_config(**kw), RandomTokens(), RandomTokens(n=8, seed=1), out_dir=tmp_path,
                   tokenizer_config={"name": "test"}, progress=False)


def test_training_lowers_the_loss_and_records_history(tmp_path):
    trainer = make_trainer(tmp_path, steps=40, eval_every=40, checkpoint_every=40, ema_decay=0.5)
    before = trainer.validate()
    result = trainer.train()
    assert result.history[-1]["valid_bits"] < before - 0.5
    assert "valid_bits" in result.history[-1] and result.checkpoint == tmp_path / "checkpoint.pt"


def interrupt_at_batch(trainer, n, monkeypatch):
    """Make the trainer's n-th batch fetch raise KeyboardInterrupt (as Ctrl-C would)."""
    calls = {"n": 0}
    original = trainer._batch

    def batch():
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original()

    monkeypatch.setattr(trainer, "_batch", batch)


def assert_resumes_exactly(make, tmp_path, monkeypatch):
    """A run interrupted at its 4th batch and resumed ends exactly like an uninterrupted one."""
    straight = make(tmp_path / "a")
    straight.train()
    half = make(tmp_path / "b")
    interrupt_at_batch(half, 4, monkeypatch)
    assert half.train().interrupted
    resumed = make(tmp_path / "b")
    assert resumed.resume() == 3
    resumed.train()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["loss_bits"] for r in straight.history] == [r["loss_bits"] for r in resumed.history]


def test_resume_continues_exactly(tmp_path, monkeypatch):
    assert_resumes_exactly(make_trainer, tmp_path, monkeypatch)


def test_the_optimiser_is_fused_adamw_with_the_loops_maths():
    """On CPU the trainer's AdamW is the fused kernel; its steps match torch's per-parameter loop."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    twin.load_state_dict(model.state_dict())
    config = train_config(weight_decay=0.1)
    fused = make_optimizer(model, config)
    assert all(g["fused"] for g in fused.param_groups)
    assert [g["weight_decay"] for g in fused.param_groups] == [0.1, 0.0]  # matrices decay, biases/norms not
    loop = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                              for g in make_optimizer(twin, config).param_groups],
                             lr=config.lr, betas=config.betas, foreach=False)
    x = torch.randn(4, 7)
    for _ in range(5):
        for m, opt in ((model, fused), (twin, loop)):
            m(x).square().sum().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model[0].weight, torch.nn.Linear(7, 5).weight)


def run_and_resume_edited(tmp_path, monkeypatch, edit):
    """(an uninterrupted run, a run interrupted at its 4th batch whose checkpoint `edit(state) -> state`
    rewrites, resumed from it but not trained further)."""
    straight = make_trainer(tmp_path / "a")
    straight.train()
    half = make_trainer(tmp_path / "b")
    interrupt_at_batch(half, 4, monkeypatch)
    half.train()
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    save_checkpoint(tmp_path / "b" / "checkpoint.pt", edit(state))
    resumed = make_trainer(tmp_path / "b")
    assert resumed.resume() == 3
    return straight, resumed


def test_a_checkpoint_of_the_unfused_optimiser_resumes_fused(tmp_path, monkeypatch):
    """Checkpoints written before the optimiser was fused hold fused=None in their groups; a resumed
    run keeps the fused kernel and ends as an uninterrupted run does."""
    def unfused(state):
        for group in state["optimizer"]["param_groups"]:
            group["fused"] = None
        return state

    straight, resumed = run_and_resume_edited(tmp_path, monkeypatch, unfused)
    assert all(g["fused"] for g in resumed.optimizer.param_groups)
    resumed.train()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_checkpoint_contents_and_ema_model(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    for key in ("model", "ema", "optimizer", "scheduler", "step", "tokenizer", "model_config", "train_config"):
        assert key in state, key
    assert state["step"] == 6 and state["tokenizer"] == {"name": "test"}
    model, _ = load_model(tmp_path / "checkpoint.pt")
    ema = trainer.ema.module.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, ema[name]), name
    assert not model.training


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "bad": Boom()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_corrupt_or_foreign_checkpoints_are_reported(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="is not an smdim checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_two_runs_taking_turns_train_as_if_each_ran_alone(tmp_path, monkeypatch):
    """The study's turns: two runs paused at `pause_at` and resumed by fresh trainers in one process,
    alternately, end exactly like each run trained straight through (the data order and the RNG
    states, global ones included, travel in the checkpoint)."""
    ticks = {"n": 0.0}

    def clock(kind):  # every reading one second later: steps of one second each
        ticks["n"] += 1.0
        return ticks["n"]

    monkeypatch.setattr("smdim.train.clock_seconds", clock)
    straight = {}
    for seed in (5, 6):  # one after the other: a trainer's init seeds torch's global RNG, which the crops use
        straight[seed] = make_trainer(tmp_path / f"straight{seed}", seed=seed)
        straight[seed].train()
    turns, last = [], {}
    for pause_at in (2, 2, 4, 4, None, None):
        seed = 5 if len(turns) % 4 in (0, 3) else 6   # ABBA
        trainer = make_trainer(tmp_path / f"turns{seed}", seed=seed)
        if (tmp_path / f"turns{seed}" / "checkpoint.pt").exists():
            trainer.resume()
        result = trainer.train(pause_at=pause_at)
        turns.append((seed, result.step, result.paused))
        last[seed] = trainer
    assert turns == [(5, 2, True), (6, 2, True), (6, 4, True), (5, 4, True), (5, 6, False), (6, 6, False)]
    for seed, trainer in last.items():
        for (name, a), b in zip(straight[seed].model.state_dict().items(), trainer.model.state_dict().values()):
            assert torch.equal(a, b), (seed, name)
        assert [r["loss_bits"] for r in straight[seed].history] == [r["loss_bits"] for r in trainer.history]
        assert load_checkpoint(tmp_path / f"turns{seed}" / "checkpoint.pt")["step"] == 6


def test_next_turn_alternates_abba_and_ends_at_the_budget():
    order, trained = [], [0.0, 0.0]
    while (turn := next_turn(trained, 10.0, 3.0)) is not None:
        index, pause_at = turn
        order.append((index, pause_at))
        trained[index] = None if pause_at is None else pause_at + 0.1   # a turn overruns by part of a step
    assert order == [(0, 3.0), (1, 3.0), (1, 6.0), (0, 6.0), (0, 9.0), (1, 9.0), (1, None), (0, None)]
    assert next_turn([0.0, 0.0], 10.0, 0.0) == (0, None)        # no turns: one after the other
    assert next_turn([None, 4.0], 10.0, 0.0) == (1, None)
    assert next_turn([7.9, 2.0], 10.0, 3.0) == (1, 3.0)         # a run behind (an overrun turn) catches up first
    assert next_turn([None, 10.0], 10.0, 3.0) is None


def test_keyboard_interrupt_saves_a_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, steps=50, checkpoint_every=100)
    interrupt_at_batch(trainer, 4, monkeypatch)
    result = trainer.train()
    assert result.interrupted and result.step == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3


def test_time_budget_stops_and_saves(tmp_path):
    result = make_trainer(tmp_path, steps=10_000, time_budget_s=0.0).train()
    assert result.step == 1 and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1


def test_lr_schedule_and_epoch_batches():
    config = train_config(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1) and lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(100, config) == pytest.approx(0.1)
    batches = EpochBatches(10, 3, seed=0)
    epoch0 = [batches.next() for _ in range(3)]
    assert sorted(sum(epoch0, [])) == sorted(set(sum(epoch0, [])))  # no repeats within an epoch
    state = batches.state_dict()
    nxt = batches.next()
    again = EpochBatches(10, 3, seed=0)
    again.load_state_dict(state)
    assert again.next() == nxt
    shards = [EpochBatches(12, 3, seed=0, rank=r, world_size=2).next() for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1])


def test_gradient_checkpointing_gives_the_same_training(tmp_path):
    plain = make_trainer(tmp_path / "a", steps=3)  # each trainer seeds torch's global RNG: build, then train
    plain.train()
    checkpointed = make_trainer(tmp_path / "b", steps=3, gradient_checkpointing=True)
    checkpointed.train()
    assert checkpointed.model.gradient_checkpointing and not plain.model.gradient_checkpointing
    assert [r["loss_bits"] for r in plain.history] == pytest.approx([r["loss_bits"] for r in checkpointed.history],
                                                                    rel=1e-6)
    for a, b in zip(plain.model.parameters(), checkpointed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["train_config"]["gradient_checkpointing"] is True


def test_compiled_training_is_the_same_training(tmp_path):
    """--compile: torch.compile runs the same maths; checkpoints keep the plain parameter names."""
    plain = make_trainer(tmp_path / "a", steps=2)
    plain.train()
    compiled = make_trainer(tmp_path / "b", steps=2, compile=True)
    compiled.train()
    assert [r["loss_bits"] for r in plain.history] == pytest.approx([r["loss_bits"] for r in compiled.history],
                                                                    rel=1e-5)
    for a, b in zip(plain.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["train_config"]["compile"] is True
    assert set(state["model"]) == set(plain.model.state_dict())


def test_resume_with_another_number_of_processes_reseeds_with_a_warning(tmp_path):
    from smdim.train import rank_seed

    trainer = make_trainer(tmp_path, steps=3)
    trainer.train()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert len(state["ranks"]) == 1 and state["ranks"][0]["batches"]["items_per_step"] == 4
    # As if written by 2 processes (global batch 8) after 3 steps.
    two = [dict(state["ranks"][0], batches={"epoch": 0, "batch_index": 1, "items_per_step": 8}) for _ in range(2)]
    save_checkpoint(tmp_path / "two.pt", dict(state, ranks=two))
    logged = []
    resumed = Trainer(model_config(), train_config(steps=6), RandomTokens(), None, out_dir=tmp_path / "r",
                      progress=False, log=logged.append)
    assert resumed.resume(tmp_path / "two.pt") == 3
    assert len(logged) == 1 and "reseeding" in logged[0] and "rank 0 of 1" in logged[0]
    expected = torch.Generator().manual_seed(rank_seed(5, 0, 3)).get_state()
    assert torch.equal(resumed.generator.get_state(), expected)
    assert resumed.batches.state_dict() == {"epoch": 0, "batch_index": 2, "items_per_step": 4}  # 8 items seen
    resumed.train()
    assert resumed.step == 6


def test_resume_from_a_checkpoint_of_the_older_layout(tmp_path, monkeypatch):
    """Older checkpoints kept one generator/torch_rng/batches state at the top level: still exact."""
    def older_layout(state):
        own = state.pop("ranks")[0]
        return dict(state, **own)

    straight, resumed = run_and_resume_edited(tmp_path, monkeypatch, older_layout)
    resumed.train()
    assert [r["loss_bits"] for r in straight.history] == [r["loss_bits"] for r in resumed.history]


def test_epoch_batches_resume_under_another_global_batch():
    two = [EpochBatches(24, 3, seed=1, rank=r, world_size=2) for r in (0, 1)]
    seen = [i for _ in range(2) for b in two for i in b.next()]  # two global steps: 12 items
    one = EpochBatches(24, 3, seed=1)
    one.load_state_dict(two[0].state_dict())
    rest = [i for _ in range(4) for i in one.next()]
    assert one.epoch == 0 and sorted(seen + rest) == list(range(24))  # the epoch goes on where it stopped


DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_train import RandomTokens, model_config, train_config
    from smdim.train import Trainer, exit_distributed, init_distributed

    def make(folder):
        return Trainer(model_config(), train_config(steps=4, checkpoint_every=2), RandomTokens(), None,
                       out_dir={out!r} + folder, progress=False, device=device)

    def gather(obj):
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    def flat_parameters(trainer):
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    device = init_distributed()
    rank = dist.get_rank()
    straight = make("/straight")
    save = straight.save

    def save_and_keep_step_2(path=None, gather=True):  # every rank calls save: keep step 2's checkpoint too
        if straight.step == 2:
            save({out!r} + "/step2.pt", gather)
        return save(path, gather)

    straight.save = save_and_keep_step_2
    straight.train()

    resumed = make("/resumed")
    assert resumed.resume({out!r} + "/step2.pt") == 2
    generators = gather(resumed.generator.get_state())
    drawn, next_batch = [], resumed.batches.next
    resumed.batches.next = lambda: drawn.append(next_batch()) or drawn[-1]
    resumed.train()
    gathered = gather(flat_parameters(resumed))
    result = dict(
        rank=rank, step=resumed.step, ranks_agree=torch.equal(gathered[0], gathered[1]),
        exact=torch.equal(flat_parameters(straight), flat_parameters(resumed)),
        same_losses=[r["loss_bits"] for r in straight.history[2:]] == [r["loss_bits"] for r in resumed.history[2:]],
        own_generator=not torch.equal(generators[0], generators[1]),
        batches_after_resume=drawn)
    with open({out!r} + f"/rank{{rank}}.json", "w") as f:
        json.dump(result, f)
    exit_distributed(0)  # what `smdim train` does: no interpreter finalization racing gloo's threads
    raise AssertionError("exit_distributed returned under torchrun")
""")


def test_ddp_two_cpu_processes_and_exact_resume(tmp_path):
    """2 processes (gloo): the ranks stay in sync; a resume restores each rank's own random state and
    data order (they draw different masks and batches) and continues exactly."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in results:
        assert result["step"] == 4 and result["ranks_agree"], result
        assert result["own_generator"], "every rank got the same generator state back"
        assert result["exact"] and result["same_losses"], f"rank {result['rank']} did not resume exactly"
    for batch_0, batch_1 in zip(results[0]["batches_after_resume"], results[1]["batches_after_resume"]):
        assert not set(batch_0) & set(batch_1)  # each step, the ranks draw different items
    state = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert state["step"] == 4 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["generator"], state["ranks"][1]["generator"])


def test_a_time_budgeted_run_shows_progress_against_its_budget(capsys):
    from smdim.train import _Progress

    bar = _Progress(TrainConfig(steps=100_000, time_budget_s=240.0), 0, enabled=True)
    bar.advance(17, 60.0, bits="1.000")
    assert bar.bar.total == 240.0 and bar.bar.n == 60.0
    bar.advance(18, 300.0, bits="1.000")          # past the budget: the bar stops at 100 %
    bar.close()
    err = capsys.readouterr().err
    assert "240/240 s" in err and "step=18/100000" in err and "100000 step" not in err.replace("step=18/100000", "")
    resumed = _Progress(TrainConfig(steps=100_000, time_budget_s=240.0), 17, enabled=True, seconds=60.0)
    assert resumed.bar.n == 60.0                    # a resumed run's bar starts where it stopped
    resumed.advance(18, 90.0)
    assert resumed.bar.n == 90.0
    resumed.close()
    steps = _Progress(TrainConfig(steps=50), 10, enabled=True)
    steps.advance(11, 1.0)
    assert steps.bar.total == 50 and steps.bar.n == 11
    steps.close()


def test_a_time_budget_counts_over_resumes(tmp_path):
    first = make_trainer(tmp_path, steps=3, time_budget_s=1e6)
    first.train()
    trained = load_checkpoint(tmp_path / "checkpoint.pt")["seconds"]
    assert trained > 0
    # resumed with a budget already spent: one more step, then it stops (the budget is not restarted)
    again = make_trainer(tmp_path, steps=10_000, time_budget_s=trained)
    again.resume()
    assert again.seconds == pytest.approx(trained)
    result = again.train()
    assert result.step == 4 and load_checkpoint(tmp_path / "checkpoint.pt")["seconds"] > trained
    assert all("seconds" in r for r in result.history)


def test_the_learning_rate_decays_over_the_time_budget():
    config = train_config(steps=10**8, warmup_steps=10, min_lr_ratio=0.1, time_budget_s=100.0)
    assert lr_factor(50, config, seconds=0.0) == pytest.approx(1.0, abs=1e-5)
    assert lr_factor(50, config, seconds=50.0) == pytest.approx(0.55)
    assert lr_factor(50, config, seconds=100.0) == pytest.approx(0.1)


def test_cpu_clock_and_bad_clock(tmp_path):
    result = make_trainer(tmp_path, steps=2, clock="cpu").train()
    assert result.step == 2 and load_checkpoint(tmp_path / "checkpoint.pt")["seconds"] > 0
    with pytest.raises(ValueError, match="clock"):
        train_config(clock="gpu")


def test_sigterm_saves_a_checkpoint_like_ctrl_c(tmp_path, monkeypatch):
    import signal

    trainer = make_trainer(tmp_path, steps=100, checkpoint_every=1000)
    batch = trainer._batch
    calls = []

    def killed_at_third(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch(*args)

    monkeypatch.setattr(trainer, "_batch", killed_at_third)
    before = signal.getsignal(signal.SIGTERM)
    result = trainer.train()
    assert result.interrupted and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == result.step == 2
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_first_step_reports_time_and_memory(tmp_path, capsys):
    make_trainer(tmp_path, steps=2).train()
    out = capsys.readouterr()
    assert "first step:" in out.out + out.err and "GiB" in out.out + out.err


def test_checkpoints_record_every_machine_the_run_trained_on(tmp_path, monkeypatch):
    """Step counts at a CPU budget depend on the CPU, so a run lists each one it trained on (a resumed run
    keeps the earlier ones)."""
    import smdim.train as train_module

    monkeypatch.setattr(train_module, "cpu_name", lambda: "CPU A")
    first = make_trainer(tmp_path, steps=2, eval_every=2, checkpoint_every=2)
    first.train()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["machines"] == ["CPU A"]
    monkeypatch.setattr(train_module, "cpu_name", lambda: "CPU B")
    again = make_trainer(tmp_path, steps=4, eval_every=2, checkpoint_every=2)
    again.resume()
    again.train()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["machines"] == ["CPU A", "CPU B"]


# --- one style-conditioned model over sources of different lengths ----------------------------------
class ShiftedTokens(RandomTokens):
    """A second 'style' at another length: windows of one repeated id, which only the style tells
    when every token is masked."""

    def __init__(self, n=12, seq_len=24, seed=2):
        super().__init__(n, seq_len, seed)
        self.data = torch.full_like(self.data, 7)


def make_style_trainer(tmp_path, **kw):
    from dataclasses import replace

    from smdim.data import StyleBatches

    train = StyleBatches([(RandomTokens(), 4), (ShiftedTokens(), 2)])
    valid = StyleBatches([(RandomTokens(n=8, seed=1), 4), (ShiftedTokens(n=4, seed=3), 2)], train=False)
    values = dict(batch_size=1, eval_batches=len(valid))
    values.update(kw)
    return Trainer(replace(model_config(), n_styles=2), train_config(**values), train, valid, out_dir=tmp_path,
                   tokenizer_config={"name": "test"}, progress=False)


def test_style_batches_keep_one_style_and_length_per_batch():
    from smdim.data import StyleBatches

    batches = StyleBatches([(RandomTokens(n=10), 4), (ShiftedTokens(n=5), 2)])
    assert len(batches) == 3 + 3                        # ceil(10/4) + ceil(5/2): styles in proportion to data
    shapes = {}
    for i in range(len(batches)):
        item = batches[i]
        style = int(item["style"][0])
        assert torch.equal(item["style"], torch.full((item["tokens"].shape[0],), style))
        shapes.setdefault(style, set()).add(tuple(item["tokens"].shape))
    assert shapes == {0: {(4, 16)}, 1: {(2, 24)}}
    valid = StyleBatches([(RandomTokens(n=10), 4)], train=False)
    assert [valid[i]["tokens"].shape[0] for i in range(len(valid))] == [4, 4, 2]   # every item once
    with pytest.raises(ValueError, match="at least one"):
        StyleBatches([])


def test_style_conditioned_training_learns_both_styles_and_resumes_exactly(tmp_path, monkeypatch):
    trainer = make_style_trainer(tmp_path / "long", steps=60, eval_every=60, checkpoint_every=60, ema_decay=0.5)
    before = trainer.validate()
    trainer.train()
    assert trainer.history[-1]["valid_bits"] < before - 0.5
    # the style is used: swapping it makes the second style's windows less likely
    from smdim.diffusion import evaluate_nll
    from smdim.model import StyleBound

    x = torch.stack([ShiftedTokens(n=4, seed=3)[i]["tokens"] for i in range(4)])
    batch = [(x, x != PAD)]
    own = evaluate_nll(StyleBound(trainer.ema.module, 1), batch, mask_id=MASK)
    other = evaluate_nll(StyleBound(trainer.ema.module, 0), batch, mask_id=MASK)
    assert own < other
    assert_resumes_exactly(make_style_trainer, tmp_path, monkeypatch)
