"""`smdim study`: the paper's quality table, reproduced here, cell by cell and resumable.

    smdim study --out runs/study                      # han@256, bach@1024, palestrina@2048, palestrina@4096
    smdim study --out runs/study --cells bach@1024:900 palestrina@2048
    smdim study --quick --out /tmp/study              # tiny budgets (CI)

A cell is ``corpus@length[:budget]``. For each cell SMDIM and the parameter-matched transformer
baseline are trained for the same budget (seconds on the "cpu" clock: this process's CPU seconds
per thread, fair between runs even when other work shares the machine), in alternating turns of
a minute (ABBA order, so that the machine's drift in speed over the hour hits both alike), then
evaluated together (`smdim.evaluation.evaluate`: the published framewise OA protocol and
ours, attribute OA, NLL bits/token, invalid-token and copy rates, real-vs-real ceilings, paired
SMDIM − transformer intervals), sampled at several step counts and both unmasking orders (quality
vs denoiser calls), and, for long cells, scored quarter by quarter at the training length and at
twice it (sliding windows) for drift.

Every stage writes its own file under OUT/<cell>/ when it finishes (checkpoints are written during
training too, and Ctrl-C or `kill` saves one), so a study run again with the same OUT goes on where
it stopped; finished stages are kept. OUT/study.md, OUT/study.json and OUT/plots/ are rebuilt from
the stage files after every stage.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from . import metrics
from .checkpoint import ema_weights, load_checkpoint
from .evaluation import oa_scores, reference_windows, sample_like
from .files import atomic_write
from .pipeline import UserError, corpus_of_record, load_data, load_run, train_model
from .train import next_turn

MODELS = (("SMDIM", "smdim"), ("transformer", "transformer"))
DEFAULT_CELLS = ("han@256:600", "bach@1024:1200", "palestrina@2048:1800", "palestrina@4096:1800")
QUICK_CELLS = ("han@128:20", "bach@512:20")
STUDY_FORMAT = 1
#: unmasking orders compared: ancestral, confidence-ordered, and confidence-ordered with bar lines first
ORDERS = ("random", "confidence", "anchors")
#: what a study stored before a setting existed ran with (slice_s: the models trained one after the other)
LEGACY_SETTINGS = {"slice_s": 0.0}


def order_kwargs(order: str, tok) -> dict:
    """The `sample` arguments of a study order; "anchors" reveals Bar and TimeSig tokens before
    anything else (bar-level anchors first, then the notes between them)."""
    if order == "random":
        return {"order": "random"}
    if order == "confidence":
        return {"order": "confidence"}
    if order == "anchors":
        from .tokenizer import token_ids_by_type, vocab_size

        priority = torch.zeros(vocab_size(tok))
        ids = token_ids_by_type(tok)
        priority[ids.get("Bar", []) + ids.get("TimeSig", [])] = 1e4
        return {"order": "confidence", "priority": priority}
    raise UserError(f"unknown unmasking order {order!r}; expected one of {ORDERS}")


@dataclass(frozen=True)
class Cell:
    corpus: str
    seq_len: int
    budget: float

    @property
    def name(self) -> str:
        return f"{self.corpus}@{self.seq_len}"


def parse_cell(text: str, default_budget: Optional[float] = None) -> Cell:
    """"corpus@length[:budget seconds]" -> Cell."""
    head, _, budget = text.partition(":")
    corpus, _, length = head.partition("@")
    try:
        seq_len = int(length)
        seconds = float(budget) if budget else default_budget
    except ValueError:
        seq_len, seconds = -1, None
    if not corpus or seq_len < 16 or seq_len % 4 or seconds is None or not seconds > 0:
        raise UserError(f"--cells: expected corpus@length[:seconds] with a length >= 16 divisible by 4 and a budget "
                        f"(here or --budget); got {text!r}")
    return Cell(corpus, seq_len, seconds)


@dataclass
class StudyConfig:
    """What a study measures; stored in OUT/study_config.json (a rerun must agree with it)."""

    cells: List[str] = field(default_factory=lambda: list(DEFAULT_CELLS))
    preset: str = "tiny"
    n: int = 48                          # evaluated pieces per model
    steps: int = 32                      # denoising steps of the main table
    curve_steps: Tuple[int, ...] = (8, 16, 32, 64, 128)
    curve_n: int = 16                    # pieces per point of the quality-vs-steps curve
    orders: Tuple[str, ...] = ORDERS
    drift_min_len: int = 2048            # cells at least this long get the drift stage
    drift_n: int = 16
    n_boot: int = 200
    seed: int = 0
    clock: str = "cpu"
    slice_s: float = 60.0                # the two models train in alternating turns of this many seconds (0: not)
    lr: float = 1e-3
    warmup: int = 100

    @classmethod
    def quick(cls) -> "StudyConfig":
        return cls(cells=list(QUICK_CELLS), n=8, curve_steps=(4, 8), curve_n=4, drift_min_len=512, drift_n=4,
                   n_boot=20, warmup=10, slice_s=10.0)

    @classmethod
    def from_dict(cls, data: dict) -> "StudyConfig":
        """A stored config (study_config.json); settings it predates get the value they had then."""
        data = dict(LEGACY_SETTINGS, **{k: v for k, v in data.items() if k != "format"})
        return cls(**{k: tuple(v) if isinstance(v, list) and k != "cells" else v for k, v in data.items()})

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def _write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=1, default=jsonable).encode()
    atomic_write(path, lambda fh: fh.write(text))


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def jsonable(v):
    """json.dumps' `default` for the study's results: intervals, paths and tensor/numpy scalars."""
    if isinstance(v, metrics.CI):
        return {"value": v.value, "low": v.low, "high": v.high}
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"not JSON data: {type(v).__name__}")


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------
class Study:
    def __init__(self, out, config: StudyConfig, *, cache_dir=None, device=None, log=print, progress=True):
        self.out = Path(out)
        self.config = config
        self.cache_dir = cache_dir
        self.device = device
        self.log = log
        self.progress = progress
        self.cells = [parse_cell(c) for c in config.cells]
        names = [c.name for c in self.cells]
        if len(set(names)) != len(names):
            raise UserError(f"--cells: a corpus@length appears twice ({names})")

    # config agreement -----------------------------------------------------------------------
    def check_folder(self) -> None:
        """Store the config in a new study folder; refuse one whose stored config differs."""
        path = self.out / "study_config.json"
        stored = _read_json(path)
        mine = dict(self.config.to_dict(), format=STUDY_FORMAT)
        if stored is None:
            if self.out.exists() and any(self.out.iterdir()):
                raise UserError(f"--out {self.out} is not empty and holds no study; choose another folder")
            _write_json(path, mine)
            return
        differ = [k for k in mine if k != "cells" and stored.get(k, LEGACY_SETTINGS.get(k)) != mine[k]]
        if differ:
            raise UserError(f"--out {self.out} holds a study with other settings ({', '.join(differ)}); rerun it "
                            "with its own settings (smdim study --out DIR continues it) or choose another folder")
        kept = {c.split(":")[0]: c for c in stored.get("cells", [])}
        for cell in self.config.cells:
            name = cell.split(":")[0]
            if name in kept and kept[name] != cell and parse_cell(kept[name]).budget != parse_cell(cell).budget:
                raise UserError(f"--cells {cell}: the study in {self.out} runs {kept[name]}; a cell's budget cannot "
                                "change once it started")
        cells = list(stored.get("cells", [])) + [c for c in self.config.cells if c.split(":")[0] not in kept]
        _write_json(path, dict(mine, cells=cells))

    def run(self) -> Path:
        self.check_folder()
        for cell in self.cells:
            self.run_cell(cell)
        return self.write_report()

    # one cell -------------------------------------------------------------------------------
    def cell_dir(self, cell: Cell) -> Path:
        return self.out / cell.name

    def run_cell(self, cell: Cell) -> None:
        folder = self.cell_dir(cell)
        corpus = None
        while (turn := self._next_turn(cell)) is not None:
            label, kind, step, pause_at = turn
            if corpus is None:
                corpus = load_data(cell.corpus, cache_dir=self.cache_dir, seed=self.config.seed)
            until = f"{pause_at:g} of {cell.budget:g} s" if pause_at is not None else f"{cell.budget:g} s"
            self.log(f"[study] {cell.name}: training {label} to {until} ({self.config.clock} clock)"
                     + (f", resuming at step {step}" if step is not None else ""))
            _, result = train_model(corpus, folder / kind, resume=step is not None, progress=self.progress,
                                    device=self.device, cache_dir=self.cache_dir, log=self.log, pause_at=pause_at,
                                    preset=self.config.preset, model=kind, seq_len=cell.seq_len, steps=10**8,
                                    lr=self.config.lr, warmup=self.config.warmup, time_budget=cell.budget,
                                    eval_every=_eval_every(cell.seq_len), seed=self.config.seed,
                                    clock=self.config.clock)
            if result.interrupted:
                raise KeyboardInterrupt
            if not result.paused:
                finish_run(folder / kind)
                self.write_report()
        stages = (("evaluation", self.evaluate_cell), ("curve", self.curve_cell))
        if cell.seq_len >= self.config.drift_min_len:
            stages += (("drift", self.drift_cell),)
        loaded = None
        for stage, fn in stages:
            path = folder / f"{stage}.json"
            stored = _read_json(path) if path.exists() else None
            if stored is not None and stored.get("format", 1) >= STAGE_FORMATS.get(stage, 1):
                continue
            if loaded is None:
                loaded = self._load_cell(cell)
            self.log(f"[study] {cell.name}: {stage}" + (" (recomputed: the stage changed since)" if stored else ""))
            started = time.monotonic()
            data = fn(cell, *loaded)
            data["seconds"] = time.monotonic() - started
            data["format"] = STAGE_FORMATS.get(stage, 1)
            _write_json(path, data)
            self.write_report()

    def _next_turn(self, cell: Cell):
        """Which run of the cell trains next: (label, kind, its step or None when new, pause_at or
        None); None when both are finished. With slice_s > 0 the two models take turns of slice_s
        seconds (`next_turn`: SMDIM, transformer, transformer, SMDIM, ...), so that a drift of the
        machine's speed over the cell's hour hits both alike; slice_s = 0 trains one after the other.
        Read from the runs' checkpoints, so an interrupted study resumes in the same order."""
        trained, steps = [], []
        for _, kind in MODELS:
            run_dir = self.cell_dir(cell) / kind
            path = run_dir / "checkpoint.pt"
            state = None if (run_dir / FINAL).exists() or not path.exists() else load_checkpoint(path)
            seconds = float(state.get("seconds", 0.0)) if state is not None else 0.0
            if state is not None and seconds >= cell.budget:
                finish_run(run_dir)
            done = (run_dir / FINAL).exists()
            trained.append(None if done else seconds)
            steps.append(None if state is None else int(state["step"]))
            del state
        turn = next_turn(trained, cell.budget, self.config.slice_s)
        if turn is None:
            return None
        index, pause_at = turn
        return MODELS[index][0], MODELS[index][1], steps[index], pause_at

    def _load_cell(self, cell: Cell):
        runs = {label: load_run(self.cell_dir(cell) / kind / FINAL, device=self.device) for label, kind in MODELS}
        first = runs[MODELS[0][0]]
        corpus, _ = corpus_of_record(first.record, first.tokenizer, cache_dir=self.cache_dir, log=self.log)
        return runs, corpus

    def evaluate_cell(self, cell: Cell, runs, corpus) -> dict:
        from .evaluation import evaluate

        models = {label: run.model for label, run in runs.items()}
        result = evaluate(models, corpus, n=self.config.n, seq_len=cell.seq_len, steps=self.config.steps,
                          seed=self.config.seed, n_boot=self.config.n_boot, progress=self.progress,
                          test_label=f"the recorded test split of {corpus.source} ({len(corpus.splits['test'])} "
                                     "pieces)")
        (self.cell_dir(cell) / "evaluation.md").write_text(result.format() + "\n")
        training = {}
        for label, kind in MODELS:
            state = load_checkpoint(self.cell_dir(cell) / kind / FINAL)
            training[label] = {"steps": state["step"], "seconds": state.get("seconds"),
                               "machines": state.get("machines"),   # None: trained before this was recorded
                               "parameters": sum(v.numel() for v in ema_weights(state).values()),
                               "curve": [{k: r[k] for k in ("step", "seconds", "valid_bits") if k in r}
                                         for r in state["history"] if "valid_bits" in r]}
        return {"table": result.table, "notes": result.notes, "columns": result.columns, "training": training,
                "steps_matched": steps_matched(training)}

    def curve_cell(self, cell: Cell, runs, corpus) -> dict:
        """Quality vs denoiser calls: mean attribute OA and invalid tokens at each step count and order."""
        tok = corpus.tokenizer
        refs = reference_windows(corpus, "test", cell.seq_len, self.config.n, self.config.seed)
        lengths = [len(r) for r in refs][:self.config.curve_n]
        ref_pieces = [metrics.Piece.from_score(_decode(tok, r)) for r in refs]
        points = []
        for label, run in runs.items():
            for order in self.config.orders:
                for steps in self.config.curve_steps:
                    started = time.process_time()
                    seqs, calls = sample_like(run.model, tok, lengths, cell.seq_len, steps=steps, seed=self.config.seed,
                                              return_calls=True, **order_kwargs(order, tok))
                    seconds = (time.process_time() - started) / max(1, torch.get_num_threads())
                    pieces = [metrics.Piece.from_score(_decode(tok, s)) for s in seqs]
                    oa = metrics.bootstrap_ci(lambda g, r: {"mean_oa": oa_scores(g, r)["mean_oa"]}, pieces, ref_pieces,
                                              n_boot=self.config.n_boot, seed=self.config.seed)["mean_oa"]
                    points.append({"model": label, "order": order, "steps": steps, "calls_per_piece": calls,
                                   "seconds_per_piece": seconds / len(lengths), "mean_oa": oa,
                                   "invalid": metrics.invalid_token_rate(tok, seqs)})
                    self.log(f"[study] {cell.name}: {label} {order} {steps} steps: mean OA {oa.value:.3f}, "
                             f"invalid {points[-1]['invalid']:.3f}")
        real = reference_windows(corpus, ("train", "valid"), cell.seq_len, self.config.curve_n, self.config.seed + 1)
        real_oa = metrics.bootstrap_ci(lambda g, r: {"mean_oa": oa_scores(g, r)["mean_oa"]},
                                       [metrics.Piece.from_score(_decode(tok, s)) for s in real], ref_pieces,
                                       n_boot=self.config.n_boot, seed=self.config.seed)["mean_oa"]
        return {"points": points, "real_vs_real": real_oa, "pieces": len(lengths), "references": len(refs)}

    def drift_cell(self, cell: Cell, runs, corpus) -> dict:
        """Quarter-by-quarter attribute OA at the training length and at twice it (sliding windows):
        drift_n generated pieces per model and order, each quarter scored against the same quarter of
        real windows of that length (when at least 2 exist; the count is stored) and against every
        held-out window at the training length ("whole": needs no long real pieces)."""
        from .sampling import generate_long
        from .tokenizer import bar_id, mask_id

        tok = corpus.tokenizer
        held_out = [metrics.Piece.from_score(_decode(tok, w)) for w in reference_windows(corpus, "test", cell.seq_len)]
        out = {"lengths": {}, "held_out_windows": len(held_out)}
        (a, b) = [label for label, _ in MODELS]
        for factor in (1, 2):
            length = cell.seq_len * factor
            refs, where = _long_references(corpus, length, self.config.drift_n, self.config.seed)
            ref_pieces = [metrics.Piece.from_score(_decode(tok, r)) for r in refs]
            entry = {"references": len(refs), "reference_source": where or "none", "generated": self.config.drift_n,
                     "sets": {}, "whole": {}}
            if len(refs) >= 2:
                half = len(ref_pieces) // 2
                entry["real_vs_real"] = _drift_ci(ref_pieces[:half], ref_pieces[half:], self.config)
                entry["whole"]["real (long windows)"] = _drift_ci(ref_pieces, held_out, self.config, "whole")
            sets = {}
            for label, run in runs.items():
                for order in self.config.orders:
                    generator = torch.Generator().manual_seed(self.config.seed)
                    tokens = generate_long(run.model, self.config.drift_n, length, window=cell.seq_len,
                                           steps=self.config.steps, mask_id=mask_id(tok), bar_id=bar_id(tok),
                                           generator=generator, **order_kwargs(order, tok))
                    pieces = [metrics.Piece.from_score(_decode(tok, s)) for s in tokens.cpu().tolist()]
                    sets[(label, order)] = pieces
                    key = f"{label}/{order}"
                    entry["whole"][key] = _drift_ci(pieces, held_out, self.config, "whole")
                    if len(refs) >= 2:
                        entry["sets"][key] = _drift_ci(pieces, ref_pieces, self.config)
                    q = entry["whole"][key]
                    self.log(f"[study] {cell.name}: drift at {length} tokens, {label} {order} (vs all held-out): "
                             + ", ".join(f"q{k} {q[f'q{k}'].value:.3f}" for k in range(1, 5)))
            for reference, target, group in (("whole", held_out, "whole"), ("parts", ref_pieces, "sets")):
                if reference == "parts" and len(refs) < 2:
                    continue
                for order in self.config.orders:
                    entry[group][f"{a} − {b}/{order}"] = metrics.paired_bootstrap_ci(
                        functools.partial(_drift_means, reference=reference), sets[(a, order)], sets[(b, order)],
                        target, n_boot=self.config.n_boot, seed=self.config.seed)
                    if order != "random" and "random" in self.config.orders:
                        entry[group][f"{a}/{order} − random"] = metrics.paired_bootstrap_ci(
                            functools.partial(_drift_means, reference=reference), sets[(a, order)],
                            sets[(a, "random")], target, n_boot=self.config.n_boot, seed=self.config.seed)
            out["lengths"][str(length)] = entry
        return out

    # the report -----------------------------------------------------------------------------
    def write_report(self) -> Path:
        from .study_report import write_study_report

        return write_study_report(self.out, self.config, [c for c in self._all_cells()])

    def _all_cells(self) -> List[Cell]:
        stored = _read_json(self.out / "study_config.json") or {}
        return [parse_cell(c) for c in stored.get("cells", self.config.cells)]


#: version of each stage's result; a stored result of an older version is computed again on the next run
#: (drift 2: as many generated pieces as drift_n whatever the number of long real windows, and every
#: quarter also scored against all held-out windows at the training length)
STAGE_FORMATS = {"drift": 2}

#: a finished run's file: its EMA weights and records, without the optimiser state (a quarter of the size)
FINAL = "final.pt"


def finish_run(run_dir: Path) -> Path:
    """Replace a finished run's training checkpoint by FINAL (what evaluation needs: the EMA weights,
    model config, tokenizer, data record, settings, history, step and seconds)."""
    from .checkpoint import save_checkpoint

    state = load_checkpoint(run_dir / "checkpoint.pt")
    keep = ("format_version", "ema", "model_config", "tokenizer", "data", "settings", "history", "step", "seconds",
            "train_config", "machines")
    path = save_checkpoint(run_dir / FINAL, {k: state[k] for k in keep if k in state})
    (run_dir / "checkpoint.pt").unlink()
    return path


def _eval_every(seq_len: int) -> int:
    """Validation interval in steps: about as often per token for every length (200 steps at 256)."""
    return max(10, 200 * 256 // seq_len)


def _decode(tok, ids):
    from .tokenizer import decode

    return decode(tok, ids)


def _drift_means(gen, ref, reference="parts") -> dict:
    out = metrics.drift_oa(gen, ref, reference=reference)
    return {f"q{k}": out[f"q{k}"] for k in range(1, 5)}


def _drift_ci(gen, ref, config: StudyConfig, reference="parts") -> dict:
    return metrics.bootstrap_ci(functools.partial(_drift_means, reference=reference), gen, ref,
                                n_boot=config.n_boot, seed=config.seed)


def _long_references(corpus, length, n, seed) -> Tuple[List[List[int]], str]:
    """Real windows of at least 90 % of `length` tokens: from the test split, topped up from the
    validation split and then the training split when the test pieces are too short (said in the
    returned label)."""
    chosen, used = [], []
    for split in ("test", "valid", "train"):
        windows = [w for w in reference_windows(corpus, split, length) if len(w) >= 0.9 * length]
        if windows:
            used.append(f"{split} {min(len(windows), n - len(chosen))}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(windows), generator=generator).tolist()
        chosen += [windows[i] for i in order[:n - len(chosen)]]
        if len(chosen) >= n:
            break
    return chosen, ", ".join(used)


def steps_matched(training: Dict[str, dict]) -> dict:
    """Each model's validation NLL at the step count both reached (the smaller final step),
    interpolated linearly between its logged validation points."""
    common = min(t["steps"] for t in training.values())
    out = {"steps": common}
    for label, t in training.items():
        points = [(r["step"], r["valid_bits"]) for r in t["curve"] if "valid_bits" in r]
        out[label] = _interpolate(points, common)
    return out


def _interpolate(points, x):
    if not points:
        return None
    points = sorted(points)
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1)
    return points[-1][1]


def run_study(out, config: StudyConfig, **kwargs) -> Path:
    """Run (or continue) the study in folder `out`; returns the path of study.md."""
    return Study(out, config, **kwargs).run()


__all__ = ["Cell", "DEFAULT_CELLS", "QUICK_CELLS", "Study", "StudyConfig", "parse_cell", "run_study", "steps_matched"]
