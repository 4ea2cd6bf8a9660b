"""Build the models bundled in smdim/bundled_models/ — the reproducible recipe.

    python scripts/bundle_models.py                 # train what is missing, then export
    python scripts/bundle_models.py --export-only   # export the study's finished cells

What it does, per style:

* data: the named corpus read from the installed music21 (han: the Han folk songs of the Essen
  collection; bach: the chorales; palestrina: the masses), its content split with seed 0
  (90 / 5 / 5 %, duplicates grouped) recorded in the model's JSON;
* training: the SMDIM model of the quality study's cell, i.e.
  ``smdim study --out studies/quality --cells han@256:600 bach@1024:1200 palestrina@2048:1800``:
  preset tiny (1.2 M parameters), seed 0, lr 1e-3, warm-up 100, EMA 0.999, batch by length, a budget of
  600 / 1200 / 1800 CPU-seconds (the cpu clock) at 256 / 1024 / 2048 tokens — the budget is the limit,
  the study's learning curves show where each stood;
* evaluation: the study's (n = 48 bar-aligned held-out test windows, 32 denoising steps, random order,
  bootstrap intervals, real vs real), copied into the JSON with its protocol notes; and the shipped
  float16 model evaluated the same way at the sampling defaults (32 steps, confidence order);
* export: the EMA weights rounded to float16 (safetensors) after measuring the test NLL in float32
  and in float16 on the same windows and masks (the JSON keeps both and their paired difference).

Training is CPU-time-bounded, so a rerun on another machine makes as many steps as that machine
manages in the budget: figures agree within the intervals, not bit for bit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: style -> (study cell with its budget, file name of the bundled model)
CELLS = {"han": "han@256:600", "bach": "bach@1024:1200", "palestrina": "palestrina@2048:1800"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "quality"), help="the quality study's folder")
    parser.add_argument("--out", default=str(ROOT / "smdim" / "bundled_models"), help="where the bundle is written")
    parser.add_argument("--styles", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--export-only", action="store_true", help="do not train: export finished cells only")
    args = parser.parse_args(argv)

    from smdim.bundled import evaluation_summary, export_model, float16_check, load_bundled, update_record
    from smdim.evaluation import evaluate
    from smdim.studio.editing import Settings
    from smdim.study import jsonable
    from smdim.checkpoint import load_checkpoint
    from smdim.data import DataRecord
    from smdim.pipeline import corpus_of_record
    from smdim.tokenizer import tokenizer_from_dict

    study = Path(args.study)
    cells = {style: CELLS[style] for style in args.styles}
    missing = [cell for cell in cells.values() if not (study / cell.split(":")[0] / "evaluation.json").is_file()]
    if missing:
        if args.export_only:
            sys.exit(f"not evaluated yet in {study}: {', '.join(missing)}")
        command = [sys.executable, "-m", "smdim.cli", "study", "--out", str(study), "--cells", *cells.values()]
        print("running", " ".join(command), flush=True)
        subprocess.run(command, check=True)

    for style, cell in cells.items():
        name = cell.split(":")[0]
        path = study / name / "smdim" / "final.pt"
        state = load_checkpoint(path)
        tok = tokenizer_from_dict(state["tokenizer"])
        corpus, _ = corpus_of_record(DataRecord.from_dict(state["data"]), tok)
        seq_len = int(state["data"]["seq_len"])
        check = float16_check(state, corpus, seq_len)
        print(f"{style}: test NLL float32 {check['nll_float32']:.4f}, float16 {check['nll_float16']:.4f} bits/token",
              flush=True)
        evaluation = json.loads((study / name / "evaluation.json").read_text())
        settings = state.get("settings", {})
        training = {"command": f"smdim study --out studies/quality --cells {cell}",
                    "recipe": "python scripts/bundle_models.py", "preset": settings.get("preset"),
                    "seq_len": seq_len, "budget_seconds": settings.get("time_budget"),
                    "clock": settings.get("clock"), "seed": settings.get("seed"), "lr": settings.get("lr"),
                    "batch_size": settings.get("batch_size"), "steps": int(state["step"]),
                    "seconds": float(state["seconds"]), "machines": state.get("machines") or "not recorded"}
        record = export_model(state, path, args.out, name=style, styles=[style], training=training,
                              evaluation=evaluation_summary(evaluation, "SMDIM", f"studies/quality/{name}"),
                              dtype_check=check)
        # the shipped (float16) model at the sampling defaults, by the study's protocol otherwise
        defaults = Settings()
        run = load_bundled(style, folder=Path(args.out))
        result = evaluate({"SMDIM": run.model}, corpus, n=48, seq_len=seq_len, steps=defaults.steps,
                          order=defaults.order, seed=0, n_boot=200, progress=True,
                          test_label=f"the recorded test split of {corpus.source} "
                                     f"({len(corpus.splits['test'])} pieces)")
        at_defaults = evaluation_summary({"table": result.table, "notes": result.notes, "columns": result.columns},
                                         "SMDIM",
                                         f"scripts/bundle_models.py ({defaults.steps} steps, {defaults.order})")
        update_record(record, evaluation_at_defaults=json.loads(json.dumps(at_defaults, default=jsonable)))
        print(f"wrote {record} and {record.with_suffix('.safetensors')}", flush=True)


if __name__ == "__main__":
    main()
