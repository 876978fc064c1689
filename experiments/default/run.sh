#!/bin/bash
# The pre-registered default experiment (experiments/README.md): for each seed, each gap loss with the
# compute-matched control, and the curriculum / no-SFT ablations; then the tables.
#   bash experiments/default/run.sh [runs_dir [tables]]   (about 35 min on 2 cores, the three seeds in parallel)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-multirun/default}
PY=${PY:-.venv/bin/python}

one_seed() {
  local seed=$1
  export OMP_NUM_THREADS=1 PIT_CACHE_DIR="$RUNS/cache-$seed"   # one cache per seed: the seeds share no stage
  for gap in rp_difference residual full ensemble; do
    for objective in pit_control pit_no_rl pit_round1_only pit_round2_only pit_no_sft; do
      local out="$RUNS/seed$seed/$gap/$objective"
      [ -f "$out/results.json" ] && grep -q wall_seconds "$out/results.json" && continue
      mkdir -p "$(dirname "$out")"
      "$PY" -m pit.run seed="$seed" objective="$objective" objective.gap_loss="$gap" logger=none \
        trainer.enable_progress_bar=false hydra.run.dir="$out" > "$out.log" 2>&1
    done
  done
}

for seed in 0 1 2; do one_seed "$seed" & done
wait
"$PY" experiments/default/summarize.py "$RUNS" "${2:-experiments/default/results}"
