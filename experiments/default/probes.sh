#!/bin/bash
# Issue #29's SFT-only val probes (experiments/README.md, "Does the improver use its draft?"): does M_PIT's SFT use
# its draft under each task variant? M_P = its SFT, seed 0, the val split; then the table of their draft use.
#   bash experiments/default/probes.sh [runs_dir]     (about 15-20 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/default/job.sh
RUNS=${1:-multirun/probes}
PY=${PY:-.venv/bin/python}
export PIT_CACHE_DIR="$RUNS/cache"
COMMON=("objective.stages=[sft_policy,sft_pit,judge,evaluate]" evaluate.split=val evaluate.iterations=1)
run_job "$RUNS/p0_default" "${COMMON[@]}"
run_job "$RUNS/p1_random_words" "${COMMON[@]}" dataset.filler=null
run_job "$RUNS/p2_fresh_improver" "${COMMON[@]}" train.sft_pit.init_from=null
run_job "$RUNS/p3_fresh_random" "${COMMON[@]}" dataset.filler=null train.sft_pit.init_from=null
"$PY" experiments/default/tables.py probes experiments/default/results_probes.json "$RUNS"/p*/
