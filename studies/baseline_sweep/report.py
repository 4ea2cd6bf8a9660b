"""Tabulate the baseline screen (run.sh) into results.md: steps, final and best validation
bits/token, and the mean training loss over the last tenth of each run."""
import sys
from pathlib import Path

import torch


def summary(path):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    history = ck["history"]
    valid = [r["valid_bits"] for r in history if "valid_bits" in r]
    tail = history[-max(1, len(history) // 10):]
    s = ck["settings"]
    return dict(model=s["model"], lr=s["lr"], window=ck["model_config"]["attn_window"], steps=ck["step"],
                seconds=ck["seconds"], valid_final=valid[-1], valid_best=min(valid),
                train_tail=sum(r["loss_bits"] for r in tail) / len(tail))


def main(folder="studies/baseline_sweep/runs"):
    rows = [(p.parent.name, summary(p)) for p in sorted(Path(folder).glob("*/checkpoint.pt"))]
    lines = ["# Baseline screen on bach@1024 (tiny preset)", "",
             "Made by `studies/baseline_sweep/run.sh` (300 CPU-seconds per run, one thread each, two runs side by "
             "side, seed 0) and `python studies/baseline_sweep/report.py`. Validation: EMA weights, the recorded "
             "validation split, masked-diffusion NLL bound.", "",
             "| run | model | lr | attention window | steps | CPU s | valid bits/token (final) | best "
             "| train loss, last 10 % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows:
        lines.append(f"| {name} | {r['model']} | {r['lr']:g} | {r['window'] or 'full'} | {r['steps']} | "
                     f"{r['seconds']:.0f} | {r['valid_final']:.3f} | {r['valid_best']:.3f} | {r['train_tail']:.3f} |")
    text = "\n".join(lines) + "\n"
    Path(folder).parent.joinpath("results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
