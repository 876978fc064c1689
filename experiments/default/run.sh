#!/bin/bash
# The pre-registered default experiment (experiments/README.md): for each seed and each arm (a gap loss) PIT with
# the compute-matched control, then the curriculum / no-SFT ablations; then the tables.
#   bash experiments/default/run.sh [runs_dir [tables]]   (about 15 min on 2 cores, the three seeds in parallel)
#   SEEDS="3 4 5" OBJECTIVES="pit_control pit_no_rl" ONLY_ARM=residual bash experiments/default/run.sh <runs_dir>
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/default/job.sh
RUNS=${1:-multirun/default}
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0 1 2}
OBJECTIVES=${OBJECTIVES:-pit_control pit_no_rl pit_round1_only pit_round2_only pit_no_sft}   # what selects first
ONLY_ARM=${ONLY_ARM:-}   # a replication: this arm alone, and no tables (summarize.py --replication prints them)
ARMS=("residual"                          # the fourth protocol's arms on the current default (β 1.0 everywhere);
      "full gap=full")                    # the third's (gap loss x rounds' β) are in git history, commit 0ffc68d

one_seed() {
  local seed=$1
  export OMP_NUM_THREADS=1 PIT_CACHE_DIR="$RUNS/cache-$seed"   # one cache per seed: the seeds share no stage
  for objective in $OBJECTIVES; do
    for arm in "${ARMS[@]}"; do
      set -- $arm
      [ -n "$ONLY_ARM" ] && [ "$1" != "$ONLY_ARM" ] && continue
      local out="$RUNS/seed$seed/$1/$objective"
      shift
      run_job "$out" seed="$seed" objective="$objective" "$@"
    done
  done
}

for seed in $SEEDS; do one_seed "$seed" & done
wait
if [ -z "$ONLY_ARM" ]; then
  "$PY" experiments/default/summarize.py "$RUNS" "${2:-experiments/default/results}"
fi
