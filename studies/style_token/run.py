"""One model with a style token, or one model per style? (issue 12: the bundled model's shape.)

    python studies/style_token/run.py            # train (resumable: run it again), then evaluate
    python studies/style_token/run.py --budget 60 --out /tmp/style_token   # a smoke run

Per style, the bundled models are the quality study's SMDIM cells (han@256: 600 CPU-s, 4,227 steps;
bach@1024: 1200 CPU-s, 7,891 steps, on a machine ~1.6x faster per step than the one this ran on).
Against them: ONE SMDIM-tiny with a learned style vector (SMDIMConfig.n_styles) trained on both
corpora for the SUM of their steps (12,118 steps of 4096 tokens: the same training tokens and about
the same FLOPs, whatever the machine), each batch from one style at that style's own training
length and batch size (data.StyleBatches: 16 x 256 han windows or 4 x 1024 bach windows, styles in
proportion to their training windows), with the study's settings otherwise (lr 1e-3, warm-up 100,
transposition +-3, EMA 0.999, seed 0) and the per-style models' recorded splits. (--budget S trains
for S CPU-seconds instead, for a comparison on one machine.) Then each style is evaluated as the study does (its
recorded test split, n = 48, 32 steps, random order, 200 bootstrap replicates), the style-token
model beside the per-style model with paired intervals. Writes OUT/results.md and OUT/results.json.
Run it alone on the machine (the budget is CPU time; busy neighbours slow it).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STYLES = (("han", 256, "han@256"), ("bach", 1024, "bach@1024"))
ROWS = ("NLL test (bits/token, MDLM bound)", "attribute OA, mean (KDE overlap)",
        "framewise pitch consistency (published)", "invalid tokens")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "studies" / "style_token"))
    parser.add_argument("--study", default=str(ROOT / "studies" / "quality"), help="the per-style models' study")
    parser.add_argument("--budget", type=float, help="CPU-seconds of the style-token model (default: equal steps)")
    parser.add_argument("--steps", type=int, help="steps of the style-token model (default: the per-style sum)")
    parser.add_argument("--n", type=int, default=48)
    args = parser.parse_args(argv)

    import torch

    from smdim.checkpoint import load_model
    from smdim.data import DataRecord, StyleBatches, TokenDataset
    from smdim.evaluation import evaluate
    from smdim.machine import cpu_name
    from smdim.model import StyleBound
    from smdim.pipeline import auto_batch_size, corpus_of_record, model_config
    from smdim.study import jsonable
    from smdim.tokenizer import tokenizer_from_dict, tokenizer_to_dict
    from smdim.train import TrainConfig, Trainer

    out, study = Path(args.out), Path(args.study)
    per_style, corpora = {}, {}
    for name, _seq_len, cell in STYLES:
        path = study / cell / "smdim" / "final.pt"
        model, state = load_model(path)
        tok = tokenizer_from_dict(state["tokenizer"])
        corpora[name], _ = corpus_of_record(DataRecord.from_dict(state["data"]), tok, log=print)
        per_style[name] = (model, state)
    tok = corpora[STYLES[0][0]].tokenizer
    train = StyleBatches([(TokenDataset(corpora[n], L, split="train", train=True, transpose=3), auto_batch_size(L))
                          for n, L, _ in STYLES])
    valid = StyleBatches([(TokenDataset(corpora[n], L, split="valid", train=False), auto_batch_size(L))
                          for n, L, _ in STYLES], train=False)
    config = replace(model_config(tok, "tiny"), n_styles=len(STYLES))
    steps = args.steps or (10**8 if args.budget else sum(int(state["step"]) for _, state in per_style.values()))
    train_config = TrainConfig(steps=steps, batch_size=1, lr=1e-3, warmup_steps=100, eval_every=200,
                               checkpoint_every=200, eval_batches=len(valid), seed=0, time_budget_s=args.budget,
                               clock="cpu")
    run_dir = out / "run"
    trainer = Trainer(config, train_config, train, valid, out_dir=run_dir, tokenizer_config=tokenizer_to_dict(tok),
                      data_record={n: per_style[n][1]["data"] for n, _, _ in STYLES},
                      run_settings={"styles": [n for n, _, _ in STYLES], "budget": args.budget, "steps": steps,
                                    "recipe": __doc__})
    if (run_dir / "checkpoint.pt").exists():
        print(f"resuming at step {trainer.resume()}")
    if trainer.step < steps and (args.budget is None or trainer.seconds < args.budget):
        result = trainer.train()
        if result.interrupted:
            sys.exit(130)
    ema = trainer.ema.module.eval()

    results = {"budget_seconds": args.budget, "steps": trainer.step, "seconds": trainer.seconds, "machine": cpu_name(),
               "parameters": ema.num_parameters(), "styles": {}}
    lines = ["# One style-token model vs one model per style", "",
             f"Style-token SMDIM-tiny ({ema.num_parameters() / 1e6:.2f} M parameters): {trainer.step} steps in "
             f"{trainer.seconds:.0f} CPU-s ({cpu_name()}) on han@256 + bach@1024 batches; per-style models: the "
             "quality study's cells (equal steps in total, 4096 tokens per step). Evaluation: each style's "
             "recorded test split, the study's protocol (n = 48, 32 steps, random "
             "order); ± half the 95 % bootstrap interval; 'style-token − per-style' is paired.", "",
             "| style | per-style model (CPU-s, steps) | " + " | ".join(ROWS) + " |",
             "| --- | --- | " + " | ".join("---" for _ in ROWS) + " |"]
    for s, (name, seq_len, _cell) in enumerate(STYLES):
        model, state = per_style[name]
        torch.manual_seed(0)
        table = evaluate({"style-token": StyleBound(ema, s), "per-style": model}, corpora[name], n=args.n,
                         seq_len=seq_len, steps=32, seed=0, n_boot=200, progress=True,
                         test_label=f"the recorded test split of {corpora[name].source}")
        results["styles"][name] = {"per_style_steps": state["step"], "per_style_seconds": state["seconds"],
                                   "table": table.table, "notes": table.notes}
        for column in ("style-token", "per-style", "style-token − per-style"):
            cells = [_cell(table.table[row].get(column)) for row in ROWS]
            what = f"{state['seconds']:.0f} s, {state['step']} steps" if column == "per-style" else ""
            lines.append(f"| {name}@{seq_len} {column} | {what} | " + " | ".join(cells) + " |")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=jsonable) + "\n")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cell(cell):
    if cell is None:
        return "—"
    if hasattr(cell, "value"):
        return f"{cell.value:.3f} ± {(cell.high - cell.low) / 2:.3f}"
    return f"{cell:.3f}"


if __name__ == "__main__":
    main()
