"""Training: AdamW with warm-up + cosine decay, EMA weights, gradient clipping, periodic validation
NLL, atomic checkpoints with exact resume, Ctrl-C saves, optional DDP (torchrun; gloo on CPU,
NCCL on GPU).

Exact resume: every random draw comes from (a) a per-epoch permutation seeded by (seed, epoch),
(b) the trainer's generator (diffusion times and masks) and (c) torch's global RNG (dataset crops,
dropout; and the CUDA RNG on a GPU); the checkpoint stores, for every DDP rank, the position in
the epoch and those RNG states, and each rank restores its own. Resumed with another number of
processes, the ranks are reseeded from (seed, rank, step) with a warning (the run goes on, not
bit-exactly).
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel
from smdim_kernels.compile_cache import use_versioned_compile_cache
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .diffusion import default_device, diffusion_loss, evaluate_nll, to_device
from .machine import cpu_name
from .model import SMDIM, SMDIMConfig


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    eval_every: int = 200
    eval_batches: int = 8
    checkpoint_every: int = 200
    seed: int = 0
    time_budget_s: Optional[float] = None  # stop (and checkpoint) after this much time on `clock`, over resumes
    gradient_checkpointing: bool = False    # re-run each block in the backward (less memory, same gradients)
    compile: bool = False  # torch.compile the model (Inductor: fuses what runs around the fused ops; same maths)
    checkpoint_every_s: Optional[float] = 600.0  # also checkpoint after this much time on `clock`
    clock: str = "wall"  # "wall": seconds; "cpu": this process's CPU seconds / its threads (fair when shared)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}; got {self.clock!r}")
        if self.time_budget_s is not None and not self.time_budget_s >= 0:
            raise ValueError(f"time_budget_s must be >= 0; got {self.time_budget_s}")


CLOCKS = ("wall", "cpu")


def clock_seconds(clock: str) -> float:
    """A monotonic reading of `clock`: wall seconds, or this process's CPU seconds divided by its
    torch threads (equal to wall time when the process has the cores to itself, less when other
    work shares them, so time budgets stay comparable between runs of a busy machine)."""
    if clock == "cpu":
        return time.process_time() / max(1, torch.get_num_threads())
    return time.monotonic()


def lr_factor(step, config: TrainConfig, seconds: Optional[float] = None):
    """Linear warm-up to 1, then cosine decay to min_lr_ratio at the end of the run: at `steps`,
    or, for a time-budgeted run, at the budget (`seconds` trained so far) if that comes first."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.time_budget_s is not None and seconds is not None:
        progress = max(progress, seconds / config.time_budget_s if config.time_budget_s > 0 else 1.0)
    progress = min(1.0, progress)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def next_turn(trained: Sequence[Optional[float]], budget: float, slice_s: float):
    """Which of several runs sharing one machine trains next, and until when: (index, pause_at), with
    pause_at None for "to the end of the budget"; None when every run is done.

    trained: seconds each run has trained so far (None: finished). The runs take turns of slice_s
    seconds, in forward order in even rounds and backward in odd ones (two runs: A B B A A B ...),
    so that a drift of the machine's speed hits them alike (a linear one cancels over each pair of
    rounds); slice_s = 0 trains one after the other. Computed from the seconds alone, so runs resumed
    from their checkpoints take the same turns."""
    waiting = [(int(s // slice_s) if slice_s > 0 else 0, i) for i, s in enumerate(trained)
               if s is not None and s < budget]
    if not waiting:
        return None
    rounds = min(r for r, _ in waiting)
    due = [i for r, i in waiting if r == rounds]
    end = (rounds + 1) * slice_s
    return due[0] if rounds % 2 == 0 else due[-1], (end if slice_s > 0 and end < budget else None)


def ema_multi_avg_fn(decay):
    """EMA update with warm-up: the decay is min(decay, (1 + n) / (10 + n)) after n updates, so short
    runs are not dominated by the initial weights."""
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, weight)

    return update


def param_groups(model, weight_decay):
    """Weight decay on matrices (linear, conv, embedding); none on biases, norm weights, A_log, D."""
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() < 2 or getattr(p, "_no_weight_decay", False):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# Devices whose AdamW has a fused kernel (no Python loop over the parameters, torch's CPU default). One
# step on CPU (2 threads), loop -> fused: SMDIM-tiny (129 tensors) 4.1 -> 1.3 ms, its transformer
# baseline (69) 2.4 -> 0.8 ms; SMDIM-base 145 -> 27 ms, about 6 % of its training step at 2 x 2048 tokens.
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def make_optimizer(model, config: "TrainConfig") -> torch.optim.AdamW:
    """AdamW over `param_groups`, fused where the parameters' device has the kernel (same maths)."""
    groups = param_groups(model, config.weight_decay)
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = True if devices and devices <= set(FUSED_ADAMW_DEVICES) else None
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), fused=fused)


def keep_fused(optimizer: torch.optim.Optimizer, fused) -> None:
    """After load_state_dict, which takes every group's settings from the checkpoint (a checkpoint
    written before the optimiser was fused says fused=None): keep this run's choice. The fused
    kernel wants each parameter's step count on the parameter's device, as fp32."""
    for group in optimizer.param_groups:
        group["fused"] = fused
        for p in group["params"] if fused else ():
            state = optimizer.state.get(p)
            if state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def _collate(items):
    """(tokens (batch, L), pad mask (batch, L), style (batch,) or None) of dataset items; an item
    may itself be a batch (2-D tokens, data.StyleBatches)."""
    def rows(key):
        return torch.cat([it[key].reshape(-1, it[key].shape[-1]) for it in items])

    style = torch.cat([it["style"].reshape(-1) for it in items]) if "style" in items[0] else None
    return rows("tokens"), rows("pad_mask"), style


class EpochBatches:
    """Batches of dataset indices: a permutation per epoch seeded by (seed, epoch), sharded across
    DDP ranks; (epoch, batch_index) locate the next batch exactly (for resume)."""

    def __init__(self, n_items, batch_size, seed, rank=0, world_size=1):
        if n_items < 1:
            raise ValueError("the training set is empty")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.batch_index = 0, 0
        self._order = None

    def _epoch_order(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n_items, generator=g)
        per_step = self.batch_size * self.world_size
        if order.numel() < per_step:  # tiny datasets: repeat to fill one global batch
            order = order.repeat(-(-per_step // order.numel()))
        usable = order.numel() // per_step * per_step
        return order[:usable].view(-1, self.world_size, self.batch_size)[:, self.rank]

    def next(self):
        if self._order is None:
            self._order = self._epoch_order()
        if self.batch_index >= self._order.shape[0]:
            self.epoch, self.batch_index = self.epoch + 1, 0
            self._order = self._epoch_order()
        batch = self._order[self.batch_index].tolist()
        self.batch_index += 1
        return batch

    @property
    def items_per_step(self):
        return self.batch_size * self.world_size

    def state_dict(self):
        return {"epoch": self.epoch, "batch_index": self.batch_index, "items_per_step": self.items_per_step}

    def load_state_dict(self, state):
        """Restore the position. Saved with another global batch size (batch size x processes), resume
        at the first global batch of that epoch not yet fully seen (the epoch's order is the same)."""
        consumed = state["batch_index"] * state.get("items_per_step", self.items_per_step)
        self.epoch, self.batch_index, self._order = state["epoch"], -(-consumed // self.items_per_step), None


@dataclass
class TrainResult:
    step: int
    history: List[Dict[str, float]] = field(default_factory=list)
    checkpoint: Optional[Path] = None
    interrupted: bool = False
    paused: bool = False    # stopped at `pause_at` (checkpoint saved) before the end of the run


class _Progress:
    """The training bar: steps out of `steps`, or, for a time-budgeted run that will not reach
    its step count, seconds out of the budget (with the step in the postfix), so the bar and its
    time-left estimate show when the run really ends. A resumed run's bar starts where it stopped
    (`step`, or `seconds` of the budget)."""

    def __init__(self, config: TrainConfig, step: int, enabled: bool, seconds: float = 0.0):
        # On a terminal the bar redraws often; in a log file one line every 30 s is plenty.
        interval = 0.5 if sys.stderr.isatty() else 30.0
        self.by_time = config.time_budget_s is not None
        self.steps = config.steps
        if self.by_time:
            self.bar = tqdm(total=float(config.time_budget_s), initial=min(seconds, config.time_budget_s),
                            desc="training (time budget)", unit="s", disable=not enabled, mininterval=interval,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                                       "[{elapsed}<{remaining}{postfix}]")
        else:
            self.bar = tqdm(total=config.steps, initial=step, desc="training", disable=not enabled, unit="step",
                            mininterval=interval)

    def advance(self, step, elapsed, **postfix):
        if self.by_time:
            self.bar.set_postfix(step=f"{step}/{self.steps}", **postfix, refresh=False)
            self.bar.update(min(elapsed, self.bar.total) - self.bar.n)
        else:
            self.bar.set_postfix(**postfix, refresh=False)
            self.bar.update(1)

    def write(self, text):
        self.bar.write(text)

    def close(self):
        self.bar.close()


def _distributed():
    return dist.is_available() and dist.is_initialized()


def rank_seed(seed, rank, step=0):
    """The seed of a rank's generator (step > 0: the reseed after a resume that cannot restore it)."""
    return seed * 7919 + rank + 1_000_003 * step


def _checkpoint_rank_states(state):
    """The per-rank random/data-order states of a checkpoint; older checkpoints kept one (rank 0's)
    at the top level."""
    if "ranks" in state:
        return list(state["ranks"])
    return [{key: state[key] for key in ("generator", "torch_rng", "batches")}]


class Trainer:
    """Trains an SMDIM denoiser on a TokenDataset-like object (items: dict(tokens, pad_mask))."""

    def __init__(self, model_config: SMDIMConfig, train_config: TrainConfig, train_set, valid_set=None, *,
                 out_dir, tokenizer_config=None, data_record=None, run_settings=None, device="cpu", progress=True,
                 log: Callable[[str], None] = print):
        """tokenizer_config: the tokenizer's dict; data_record: the run's `DataRecord.to_dict()`
        (source, splits, training length); run_settings: the command-level settings (preset, model,
        transpose, ...; see smdim.pipeline.TRAIN_DEFAULTS). All three are stored in every checkpoint."""
        self.model_config, self.config = model_config, train_config
        self.train_set, self.valid_set = train_set, valid_set
        self.out_dir = Path(out_dir)
        self.tokenizer_config = tokenizer_config
        self.data_record = data_record
        self.run_settings = run_settings
        self.device = torch.device(device)
        self.log = log
        self.rank = dist.get_rank() if _distributed() else 0
        self.world_size = dist.get_world_size() if _distributed() else 1
        self.progress = progress and self.rank == 0

        torch.manual_seed(train_config.seed)
        self.model = SMDIM(model_config, gradient_checkpointing=train_config.gradient_checkpointing).to(self.device)
        self.ema = AveragedModel(self.model, multi_avg_fn=ema_multi_avg_fn(train_config.ema_decay))
        if train_config.compile:  # in place, after the EMA copy: parameter names and checkpoints stay the same
            use_versioned_compile_cache()  # a cache of an older smdim_kernels would fail its size asserts
            self.model.compile()
        self.optimizer = make_optimizer(self.model, train_config)
        self.seconds = 0.0  # training time so far on the config's clock, over resumes
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda s: lr_factor(s, train_config, self.seconds))
        self.ddp_model = self.model
        if self.world_size > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.batches = EpochBatches(len(train_set), train_config.batch_size, train_config.seed, self.rank,
                                    self.world_size)
        self.generator = torch.Generator().manual_seed(rank_seed(train_config.seed, self.rank))
        self.step = 0
        self.history: List[Dict[str, float]] = []
        self.machines: List[str] = []            # CPUs of earlier sessions of this run (from its checkpoint)

    # --- checkpoints ------------------------------------------------------------------------

    @property
    def checkpoint_path(self):
        return self.out_dir / "checkpoint.pt"

    def _rank_state(self):
        """This rank's position in the data order and its RNG states (what its next draws depend on)."""
        state = {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "batches": self.batches.state_dict()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _rank_states(self, gather=True):
        """Every rank's `_rank_state()` in rank order. Under DDP this is a collective (every rank must
        call it); gather=False (after Ctrl-C, when the ranks may be out of step) keeps only this
        rank's, the others are None."""
        states = [None] * self.world_size
        states[self.rank] = self._rank_state()
        if self.world_size > 1 and gather:
            dist.all_gather_object(states, states[self.rank])
        return states

    def state_dict(self, gather=True):
        """The checkpoint contents; a collective under DDP unless gather=False (see `_rank_states`)."""
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "step": self.step, "seconds": self.seconds, "ranks": self._rank_states(gather), "history": self.history,
            "machines": sorted(set(self.machines) | {cpu_name()}),   # every CPU this run trained on
            "model_config": self.model_config.to_dict(), "train_config": asdict(self.config),
            "tokenizer": self.tokenizer_config, "data": self.data_record, "settings": self.run_settings,
        }

    def save(self, path=None, gather=True):
        """Rank 0 writes the checkpoint; under DDP every rank must call it (the rank states are gathered)."""
        state = self.state_dict(gather)
        if self.rank != 0:
            return None
        return save_checkpoint(path or self.checkpoint_path, state)

    def resume(self, path=None, state=None):
        """Continue from a checkpoint (`state`: its contents, already read; else read from `path`)."""
        # RNG states must stay CPU tensors; load_state_dict moves model/optimiser tensors to the device.
        if state is None:
            state = load_checkpoint(path or self.checkpoint_path, map_location="cpu")
        # compared as configs: a checkpoint written before a field existed has its default
        if SMDIMConfig.from_dict(state["model_config"]) != self.model_config:
            raise ValueError("resume: the checkpoint's model config differs from this run's; "
                             f"checkpoint has {state['model_config']}")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        fused = self.optimizer.param_groups[0]["fused"]
        self.optimizer.load_state_dict(state["optimizer"])
        keep_fused(self.optimizer, fused)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.seconds = float(state.get("seconds", 0.0))
        self._load_rank_state(_checkpoint_rank_states(state))
        self.history = list(state["history"])
        self.machines = list(state.get("machines", []))
        return self.step

    def _load_rank_state(self, states):
        """Restore this rank's own state; reseed (with a warning) when the checkpoint has none for it."""
        own = states[self.rank] if len(states) == self.world_size else None
        if own is None:
            return self._reseed(states)
        self.generator.set_state(own["generator"])
        torch.set_rng_state(own["torch_rng"])
        if "cuda_rng" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda_rng"], self.device)
        self.batches.load_state_dict(own["batches"])

    def _reseed(self, states):
        saved = sum(s is not None for s in states)
        self.log(f"warning: resume: the checkpoint holds the random state of {saved} of {len(states)} process(es) "
                 f"and none for rank {self.rank} of {self.world_size}; reseeding it from (seed, rank, step) - "
                 "training goes on, but not exactly as an uninterrupted run would")
        seed = rank_seed(self.config.seed, self.rank, self.step)
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)
        self.batches.load_state_dict(next(s for s in states if s is not None)["batches"])

    # --- the loop ---------------------------------------------------------------------------

    def _batch(self):
        return to_device(self.device, *_collate([self.train_set[i] for i in self.batches.next()]))

    def validate(self):
        if self.valid_set is None or len(self.valid_set) == 0:
            return None
        n = min(len(self.valid_set), self.config.eval_batches * self.config.batch_size)
        items = [self.valid_set[i] for i in range(n)]
        batches = [to_device(self.device, *_collate(items[i:i + self.config.batch_size]))
                   for i in range(0, n, self.config.batch_size)]
        batches = [(x, m) if style is None else (x, m, style) for x, m, style in batches]
        return evaluate_nll(self.ema.module, batches, mask_id=self.model_config.mask_id, seed=self.config.seed)

    def _agree(self, flag: bool) -> bool:
        """Under DDP every rank must stop at the same step: True if any rank says so."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def train(self, pause_at: Optional[float] = None) -> TrainResult:
        """Train until `steps` or the time budget (counted over resumes); checkpoints every
        `checkpoint_every` steps, every `checkpoint_every_s` seconds and at the end. Ctrl-C or
        SIGTERM saves a checkpoint and returns with `interrupted`. pause_at: also stop, with a
        checkpoint, once this many seconds (on the run's clock, over resumes) are trained, and return
        with `paused` - a run resumed from there trains on exactly as if it had not stopped (the
        schedules still end at `steps` / the time budget)."""
        c = self.config
        self.model.train()
        bar = _Progress(c, self.step, enabled=self.progress, seconds=self.seconds)
        tokens_seen, interrupted, paused, last_saved = 0, False, False, None
        first_step = self.step
        last_tick = clock_seconds(c.clock)
        saved_at = started_at = self.seconds
        restore_sigterm = _sigterm_as_interrupt()
        try:
            while self.step < c.steps:
                tokens, pad_mask, style = self._batch()
                result = diffusion_loss(self.ddp_model, tokens, pad_mask, mask_id=self.model_config.mask_id,
                                        generator=self.generator, style=style)
                self.optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
                self.optimizer.step()
                now = clock_seconds(c.clock)
                self.seconds += now - last_tick
                last_tick = now
                self.scheduler.step()
                self.ema.update_parameters(self.model)
                self.step += 1
                tokens_seen += result.n_tokens * self.world_size
                if self.step == first_step + 1:
                    bar.write(_first_step_line(self.seconds - started_at, tokens.shape, self.device))
                record = {"step": self.step, "seconds": round(self.seconds, 3), "loss_bits": result.bits_per_token,
                          "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0]}
                bar.advance(self.step, self.seconds, bits=f"{result.bits_per_token:.3f}",
                            tok_s=f"{tokens_seen / max(self.seconds - started_at, 1e-9):.0f}")
                out_of_time = self._agree(c.time_budget_s is not None and self.seconds >= c.time_budget_s)
                if self.step % c.eval_every == 0 or self.step == c.steps or out_of_time:
                    valid = self.validate() if self.rank == 0 else None
                    if valid is not None:
                        record["valid_bits"] = valid
                        bar.write(f"step {self.step}: train {result.bits_per_token:.3f} bits/token, "
                                  f"valid (EMA) {valid:.3f} bits/token")
                self.history.append(record)
                due = self._agree(c.checkpoint_every_s is not None and self.seconds - saved_at >= c.checkpoint_every_s)
                # pause_at is the same on every rank: no collective on steps of a run that never pauses
                paused = (pause_at is not None and not out_of_time and self.step < c.steps
                          and self._agree(self.seconds >= pause_at))
                if self.step % c.checkpoint_every == 0 or self.step == c.steps or out_of_time or due or paused:
                    last_saved = self.save()
                    saved_at = self.seconds
                if out_of_time:
                    bar.write(f"time budget of {c.time_budget_s:.0f} s reached at step {self.step}")
                    break
                if paused:
                    break
        except KeyboardInterrupt:
            interrupted = True
            # The ranks may have been interrupted at different points: no collective here.
            last_saved = self.save(gather=False)
            self.log(f"\ninterrupted at step {self.step}; checkpoint saved to {last_saved} "
                     f"(continue with --resume)")
        finally:
            restore_sigterm()
            bar.close()
        return TrainResult(step=self.step, history=self.history, checkpoint=last_saved, interrupted=interrupted,
                           paused=paused)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM (`kill`) raise KeyboardInterrupt in the main thread, so a killed run saves its
    checkpoint like Ctrl-C; returns the function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, OSError):  # pragma: no cover - platforms without SIGTERM handlers
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, before)


def peak_memory_bytes(device) -> int:
    """The peak memory so far: CUDA max allocated on a GPU, else this process's peak resident set."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def _first_step_line(seconds, shape, device) -> str:
    where = "CUDA peak allocated" if torch.device(device).type == "cuda" else "peak resident memory"
    return (f"first step: {seconds:.2f} s for a batch of {shape[0]} x {shape[1]} tokens; "
            f"{where} {peak_memory_bytes(device) / 2**30:.2f} GiB")


def init_distributed(device=None):
    """Initialise torch.distributed from torchrun's environment (NCCL on CUDA devices, gloo on CPU);
    returns the device this rank should use (`device`, default `default_device()`; under torchrun a
    CUDA device becomes cuda:LOCAL_RANK). No process group without torchrun."""
    device = torch.device(device) if device is not None else default_device()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
        return device
    dist.init_process_group("gloo")
    return device


def exit_distributed(code=0):
    """End a torchrun worker that ran `init_distributed`: destroy the process group, flush stdout and
    stderr and leave at once with `code`, without the interpreter's finalization. Without a
    process group this does nothing (and returns).

    Why: DDP keeps its process group alive to the end (destroy_process_group cannot free it), so
    gloo's worker threads outlive the script; a worker that frees a finished collective after
    Python began finalizing must take the GIL to free the collective's tensors and aborts the
    whole process instead (SIGABRT, "terminate called without an active exception"), a rare race
    seen as a failed run after training had finished.
    """
    if not _distributed():
        return
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
