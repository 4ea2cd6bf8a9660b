#!/usr/bin/env bash
# Is the transformer baseline handicapped at 1024 tokens? A short screen on bach@1024
# (tiny preset, 300 CPU-seconds each, one thread per run, two runs side by side so each
# pair shares the machine alike). Each run's final validation bits/token is in its
# checkpoint; `python studies/baseline_sweep/report.py` tabulates them into results.md.
set -euo pipefail
out=${1:-studies/baseline_sweep/runs}
budget=${BUDGET:-300}
common=(--data bach --seq-len 1024 --preset tiny --time-budget "$budget" --clock cpu --eval-every 100 --seed 0)
run() {  # name, then extra train arguments
    local name=$1; shift
    if [ -f "$out/$name/final.done" ]; then return; fi
    smdim --threads 1 train "${common[@]}" --out "$out/$name" --overwrite "$@" > "$out/$name.log" 2>&1
    touch "$out/$name/final.done"
}
mkdir -p "$out"
pair() { run "$1" ${2} & run "$3" ${4} & wait; }
pair transformer_lr1e-3 "--model transformer --lr 1e-3"  transformer_lr3e-4 "--model transformer --lr 3e-4"
pair transformer_lr3e-3 "--model transformer --lr 3e-3"  transformer_win32 "--model transformer --lr 1e-3 --attn-window 32"
pair smdim_lr1e-3 "--model smdim --lr 1e-3"              smdim_lr3e-3 "--model smdim --lr 3e-3"
